"""Broker outages, told once: the processor says when the broker goes away and
when it is back, and nothing else in between.

aiokafka logs every failed connection attempt at ERROR (70-80 lines a second
from a Faust worker while the broker was down); its records are routed to
DEBUG here, and :class:`BrokerWatch` probes the bootstrap addresses instead:
one line when none answers, one when one does again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

log = logging.getLogger("dashfrog.streams")

# How often the watch probes, and for how long a probe waits on a connection.
PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 2.0
# Consecutive failed probes before the broker counts as gone (a restart of
# one node in a cluster, or a blip, is not an outage).
FAILED_PROBES = 2


# The name of the SDK's sender thread (dashfrog._producer).
_SDK_SENDER_THREAD = "dashfrog-sender"


class _LibraryToDebug(logging.Filter):
    """Turns a library's records into DEBUG records, shown only when the
    ``dashfrog.streams`` logger is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName == _SDK_SENDER_THREAD:
            # The SDK's sender in this process (dashfrog up with an app, tests)
            # reads these records to notice an outage and filters them itself.
            return True
        if record.levelno > logging.DEBUG:
            record.msg = f"[{record.levelname}] {record.msg}"
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return log.isEnabledFor(logging.DEBUG)


_to_debug = _LibraryToDebug()


def route_library_logs_to_debug() -> None:
    """Every ``aiokafka`` logger (the package's and its modules') sends its
    records at DEBUG; idempotent."""
    import aiokafka  # noqa: F401 - its modules create their loggers on import

    names = ["aiokafka", *(n for n in logging.root.manager.loggerDict if n.startswith("aiokafka."))]
    for name in names:
        logger = logging.getLogger(name)
        if _to_debug not in logger.filters:
            logger.addFilter(_to_debug)
        # The level check comes before filters: let ERROR and below reach it.
        if logger.level > logging.DEBUG and log.isEnabledFor(logging.DEBUG):
            logger.setLevel(logging.DEBUG)


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` → [(host, port)] (port 9092 when left out)."""
    out: list[tuple[str, int]] = []
    for entry in bootstrap.split(","):
        entry = entry.strip()
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            host, port = entry, "9092"
        out.append((host.strip("[]"), int(port)))
    return out


class BrokerWatch:
    """Probes the bootstrap addresses with a TCP connection every second.

    ``down_since`` is the wall-clock time the broker went away, None while it
    is reachable. A transition is logged once each way.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.addresses = bootstrap_addresses(bootstrap)
        self.down_since: float | None = None
        self.outages = 0
        self.last_error: str | None = None
        self._failed = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dashfrog-broker-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def probe(self) -> bool:
        """True when one of the bootstrap addresses accepts a connection."""
        for host, port in self.addresses:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return True
        return False

    def note(self, reachable: bool) -> None:
        """Record one probe's outcome; log the transitions."""
        if reachable:
            self._failed = 0
            if self.down_since is not None:
                log.warning(
                    "dashfrog: Kafka broker at %s is back after %.0f s; consuming and committing again",
                    self.bootstrap,
                    time.time() - self.down_since,
                )
                self.down_since = None
            return
        self._failed += 1
        if self._failed == FAILED_PROBES and self.down_since is None:
            self.down_since = time.time()
            self.outages += 1
            log.warning(
                "dashfrog: cannot reach the Kafka broker at %s (%s); nothing is consumed or committed "
                "until it is back (one line when it is; set the dashfrog.streams logger to DEBUG for aiokafka's)",
                self.bootstrap,
                self.last_error or "no answer",
            )

    async def _run(self) -> None:
        while True:
            self.note(await self.probe())
            await asyncio.sleep(PROBE_EVERY_S)
