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
    up = subprocess.Popen([str(BIN / "dashfrog"), "up"])
    demo = subprocess.Popen([sys.executable, str(HERE / "app" / "main.py")])
    children = (up, demo)

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
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
