"""What several web test modules share: a real uvicorn server on a free
loopback port, run in a thread for the length of a ``with`` block."""

from __future__ import annotations

import threading
import time
from typing import Any

from dashfrog.runtime._broker import free_port


class Server:
    """``lifespan="on"`` runs the app's lifespan (the alert evaluator) as ``dashfrog api`` does."""

    def __init__(self, app: Any, lifespan: str = "off") -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan=lifespan,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, name=f"uvicorn-{self.port}", daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
