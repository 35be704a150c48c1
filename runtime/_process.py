"""What every long-running command does around its work.

It sits above ``dashfrog.storage`` (it opens the store) and below
``dashfrog.streams`` and ``dashfrog.web``, whose commands run under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from dashfrog._settings import Settings
    from dashfrog.storage import Store


def install_stop_signals(stop: asyncio.Event) -> None:
    """Ctrl-C and SIGTERM set ``stop``; a second Ctrl-C exits at once."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            sys.exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Faust and aiokafka are chatty at INFO about every rebalance step.
    for noisy in ("faust", "mode", "aiokafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def run_with_store(
    settings: Settings, loglevel: str, main: Callable[[asyncio.Event, Store], Awaitable[int]]
) -> int:
    """Configure logging, open the store, let Ctrl-C and SIGTERM set ``stop``,
    and close the store after ``main(stop, store)`` returns its exit code."""
    # Imported here: the CLI imports this package on an SDK-only install.
    from dashfrog.storage import open_store

    configure_logging(loglevel)

    async def run() -> int:
        stop = asyncio.Event()
        install_stop_signals(stop)
        store = open_store(settings.clickhouse_url)
        try:
            return await main(stop, store)
        finally:
            store.close()

    return asyncio.run(run())


def redact(url: str) -> str:
    """A store URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
