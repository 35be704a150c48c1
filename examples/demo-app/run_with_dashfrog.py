"""`make up`: run `dashfrog up` and the demo app side by side until Ctrl-C.

The demo app starts at once: the SDK queues its events until the broker that
`dashfrog up` starts is listening.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent


def main() -> int:
    # Own process groups: a terminal's Ctrl-C reaches only this script, which
    # passes it on exactly once (a second one makes `dashfrog up` exit at once).
    up = subprocess.Popen([str(BIN / "dashfrog"), "up"], start_new_session=True)
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
    return up.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
