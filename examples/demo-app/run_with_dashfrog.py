"""`make up`: run `dashfrog up` and the demo app side by side until Ctrl-C.

The demo app starts once `dashfrog up` says it runs (its broker listening), so
its SDK does not begin with a "cannot reach Kafka" warning; should that take
longer than a minute, the demo starts anyway and its SDK queues events.
If `dashfrog up` exits first (a second `make up`, say), its one-line reason is
all that is printed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
READY_WAIT_S = 60.0
# `dashfrog up` prints this at the end of the line that says it is running.
READY_MARK = "Ctrl-C stops."


def forward(up: subprocess.Popen[str], ready: threading.Event) -> None:
    """Pass `dashfrog up`'s output on, line by line; set ``ready`` at its ready line."""
    assert up.stdout is not None
    for line in up.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if READY_MARK in line:
            ready.set()


def wait_until_ready(up: subprocess.Popen[str], ready: threading.Event) -> bool:
    """True once `dashfrog up` runs (or still starts after a minute); False if it exited."""
    deadline = time.monotonic() + READY_WAIT_S
    while not ready.wait(0.2):
        if up.poll() is not None:
            return False
        if time.monotonic() > deadline:
            break
    return up.poll() is None


def interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, interrupt)
    # Own process groups: a terminal's Ctrl-C reaches only this script, which
    # passes it on exactly once (a second one makes `dashfrog up` exit at once).
    up = subprocess.Popen(
        [str(BIN / "dashfrog"), "up"], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    ready = threading.Event()
    forwarder = threading.Thread(target=forward, args=(up, ready), daemon=True)
    forwarder.start()
    try:
        started = wait_until_ready(up, ready)
    except KeyboardInterrupt:  # stopped while `dashfrog up` was starting
        up.send_signal(signal.SIGINT)
        up.wait()
        forwarder.join(5)
        return 0
    if not started:  # it exited, and said why
        forwarder.join(5)
        return up.wait() or 1
    demo = subprocess.Popen([sys.executable, str(HERE / "app" / "main.py")], start_new_session=True)
    children = (up, demo)
    signalled: set[int] = set()

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None and child.pid not in signalled:
                signalled.add(child.pid)
                child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        forwarder.join(5)
    return up.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
