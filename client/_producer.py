"""The background sender: events leave the application through a bounded queue.

Application threads encode each event to Avro as they emit it and append
the bytes to an in-memory deque (never block unless ``queue_block_ms`` allows
it, never raise). Encoding at once keeps a queued event at about 250 bytes
instead of a dict of Python objects three times that size, which is what
bounds memory while the broker is away. One daemon thread runs its own
asyncio loop with an aiokafka producer: it drains the queue every
``linger_ms``, groups events by the partition their flow id maps to under
Kafka's default partitioner (murmur2 of the key), frames each group as one
Avro ``EventBatch`` message keyed by a flow id of the group, and sends it.
Events whose send failed go back to the front of the queue; what does not fit
is dropped, counted, and reported in a rate-limited log line.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from dashfrog import schemas
from dashfrog._settings import Settings

log = logging.getLogger("dashfrog")

_THREAD_NAME = "dashfrog-sender"
# The aiokafka loggers a producer writes to.
_LIBRARY_LOGGERS = ("aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.producer.producer", "aiokafka.producer.sender")

_MAX_MESSAGE_BYTES = 900_000
_LOG_EVERY_S = 10.0
_UNREACHABLE_EVERY_S = 60.0
_RETRY_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
# aiokafka's murmur2 is pure Python (about 5 µs a key) and runs under the GIL
# the application needs; a flow's events share their key, so hashes are kept.
_KEY_HASH_CACHE = 65_536
# What a queued event costs beyond its Avro bytes and flow id text, at most:
# the bytes and str headers (33 + 49), the 2-tuple (56), its deque slot (8)
# and the allocator rounding each of the three objects up to 16 bytes (45).
_EVENT_OVERHEAD = 192
# Partition keys of ``metrics`` events (dashfrog.metrics) start with this; flow
# ids are hex. Each such event leaves in a message of its own, marked with
# schemas.METRICS_HEADER, so a processor routes it without decoding every message.
METRICS_KEY_PREFIX = "dashfrog-metrics/"


# A queued event: its flow id (the partition key) and its Avro encoding.
Queued = tuple[str, bytes]


def queued(event: schemas.Event) -> Queued:
    """What the queue keeps of an event. Raises if Avro cannot encode it."""
    return event["flow_id"], schemas.encode_event(event)


def cost(item: Queued) -> int:
    """Bytes a queued event counts against ``queue_max_bytes``."""
    return len(item[0]) + len(item[1]) + _EVENT_OVERHEAD


class Sender:
    """Owns the queue, the sender thread and its aiokafka producer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._queue: deque[Queued] = deque()
        self._capacity = settings.queue_size
        self._max_bytes = settings.queue_max_bytes
        self._inflight = 0  # events handed to aiokafka, not yet acknowledged
        self._bytes = 0  # cost() of the queued and in-flight events, under _space
        self._key_hashes: dict[str, int] = {}  # flow id → murmur2, sender thread only
        # Guards _bytes (written by application threads and the sender) and
        # lets a caller wait for space when queue_block_ms allows it.
        self._space = threading.Condition(threading.Lock())
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._started = threading.Event()
        self._pid = os.getpid()
        self.queued = 0
        self.sent = 0
        self.dropped = 0
        self.errors = 0
        self.messages = 0
        self.last_error: str | None = None
        self._reported_dropped = 0
        self._last_report = 0.0
        self._last_unreachable_report: float | None = None
        # Monotonic time of the first failure of the outage under way, and
        # the drop total when it began (None: Kafka answers).
        self._unreachable_since: float | None = None
        self._dropped_before_outage = 0
        # The drop total when Kafka last acknowledged a send: an outage's drops
        # count from there (they may start before the outage is noticed).
        self._dropped_at_last_ack = 0
        _quiet_library_logs()
        self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
        self._thread.start()

    # -- application side ----------------------------------------------------

    def emit(self, event: schemas.Event) -> None:
        """Queue one event. Never raises; drops and counts when the queue is full."""
        if len(self._queue) + self._inflight >= self._capacity and self.settings.queue_block_ms <= 0:
            self._drop()  # before encoding: a full queue should cost the caller little
            return
        try:
            item = queued(event)
        except Exception as exc:
            # The SDK builds events the schema accepts; this is a bug, not the app's.
            self._note_error(exc)
            self.dropped += 1
            return
        if not self._admit(item, cost(item)):
            self._drop()
            return
        self.queued += 1

    def emit_metrics(self, event: schemas.Event) -> bool:
        """Queue one ``metrics`` event (its flow_id starts with METRICS_KEY_PREFIX)
        under the same bounds as flow events; False when it was dropped."""
        try:
            item = queued(event)
        except Exception as exc:
            self._note_error(exc)
            self.dropped += 1
            return False
        if not self._admit(item, cost(item)):
            self._drop()
            return False
        self.queued += 1
        return True

    def _admit(self, item: Queued, size: int) -> bool:
        """Append ``item`` if the queue has room for it, waiting up to ``queue_block_ms``."""
        deadline = None
        with self._space:
            while len(self._queue) + self._inflight >= self._capacity or (
                self._bytes + size > self._max_bytes
            ):
                if size > self._max_bytes:
                    return False
                if deadline is None:
                    deadline = time.monotonic() + self.settings.queue_block_ms / 1000
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._space.wait(remaining):
                    return False
            self._bytes += size
            self._queue.append(item)
        return True

    def _drop(self) -> None:
        self.dropped += 1
        self._report_drops()

    def _report_drops(self) -> None:
        """Log the drops since the last report with their running total, at
        most every _LOG_EVERY_S; the sender calls it every round too, so drops
        that stop arriving are still reported with the true total."""
        if self.dropped == self._reported_dropped:
            return
        now = time.monotonic()
        if now - self._last_report >= _LOG_EVERY_S:
            self._last_report = now
            log.warning(
                "dashfrog: event queue full (%d events, %d bytes; DASHFROG_QUEUE_SIZE %d, "
                "DASHFROG_QUEUE_MAX_BYTES %d); dropped %d events since the last report "
                "(%d in all). Is the broker at %s reachable? Last error: %s",
                len(self._queue) + self._inflight,
                self._bytes,
                self._capacity,
                self._max_bytes,
                self.dropped - self._reported_dropped,
                self.dropped,
                self.settings.bootstrap,
                self.last_error or "none",
            )
            self._reported_dropped = self.dropped

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; True if it was acknowledged within ``timeout``."""
        if not self._started.wait(timeout) or self._loop is None:
            return not self._queue
        try:
            future: Future[bool] = asyncio.run_coroutine_threadsafe(self._flush(), self._loop)
        except RuntimeError:  # the sender's loop is gone (closed after a stop)
            return not self._queue
        try:
            return future.result(timeout)
        except Exception:
            future.cancel()
            return False

    def close(self, timeout: float | None = None) -> None:
        """Flush within ``timeout``, then stop the thread."""
        if self._pid != os.getpid() or self._stopping:
            return
        self.flush(timeout)
        self._stopping = True
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)
        self._thread.join(timeout=max(1.0, timeout or 0))
        self._report_exit()

    def _report_exit(self) -> None:
        """Say what this sender leaves behind: queued events are lost once it stops."""
        unsent = len(self._queue) + self._inflight
        if unsent:
            log.warning(
                "dashfrog: stopping with %d events not sent: Kafka at %s did not take them in time "
                "(DASHFROG_EXIT_FLUSH_TIMEOUT_S; last error: %s). They are lost, as are the %d events "
                "dropped earlier (queue full); %d were sent.",
                unsent,
                self.settings.bootstrap,
                self.last_error or "none",
                self.dropped,
                self.sent,
            )
        elif self.dropped:
            log.warning(
                "dashfrog: stopping; every queued event was sent (%d), but %d events were dropped "
                "while running (queue full) and are lost.",
                self.sent,
                self.dropped,
            )

    def stats(self) -> dict[str, Any]:
        return {
            "queued": len(self._queue) + self._inflight,
            "queued_bytes": self._bytes,
            "accepted": self.queued,
            "sent": self.sent,
            "dropped": self.dropped,
            "errors": self.errors,
            "messages": self.messages,
            "last_error": self.last_error,
        }

    # -- sender thread ---------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self._started.set()
        producer = None
        attempt = 0
        partitions: list[int] = []
        refreshed = 0.0
        # Beside the rounds: a round can wait on aiokafka for its request timeout.
        reporter = asyncio.get_running_loop().create_task(self._report_drops_every_second())
        while not self._stopping:
            try:
                producer, partitions, refreshed, attempt = await self._round(
                    producer, partitions, refreshed, attempt
                )
            except Exception as exc:
                # A bug or an unexpected library error must not end the thread:
                # flush() and shutdown() rely on it, and the app must never see it.
                self._note_error(exc)
                log.warning("dashfrog: sender round failed; retrying", exc_info=True)
                await self._sleep(1.0)
        reporter.cancel()
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

    async def _report_drops_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                self._report_drops()

    async def _round(
        self, producer: Any, partitions: list[int], refreshed: float, attempt: int
    ) -> tuple[Any, list[int], float, int]:
        """Connect if needed, refresh partitions now and then, send what is queued."""
        if producer is None:
            producer = await self._connect()
            if producer is None:
                self._note_unreachable()
                await self._sleep(_RETRY_BACKOFF_S[min(attempt, len(_RETRY_BACKOFF_S) - 1)])
                return None, partitions, refreshed, attempt + 1
            attempt = 0
        if not partitions or time.monotonic() - refreshed > 30:
            try:
                found = await asyncio.wait_for(producer.partitions_for(self.settings.topic), 10)
                partitions = sorted(found or ())
                refreshed = time.monotonic()
            except Exception as exc:
                self._note_error(exc)
                await self._sleep(1.0)
                return producer, partitions, refreshed, attempt
        if self._queue:
            await self._send_queued(producer, partitions)
        # Linger between rounds unless a full message is waiting: under load
        # this packs rate * linger events into each message.
        if len(self._queue) < self.settings.batch_max_events:
            await self._sleep(self.settings.linger_ms / 1000)
        return producer, partitions, refreshed, attempt

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _connect(self) -> Any:
        from aiokafka import AIOKafkaProducer

        s = self.settings
        producer = None
        try:
            producer = AIOKafkaProducer(
                client_id=s.client_id,
                acks="all",
                linger_ms=0,  # we batch ourselves; aiokafka should not wait again
                compression_type=None if s.compression == "none" else s.compression,
                max_request_size=1_048_576,
                request_timeout_ms=15_000,
                **s.kafka_options(),
            )
            await asyncio.wait_for(producer.start(), 15)
            return producer
        except Exception as exc:
            self._note_error(exc)
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()
            return None

    def _note_unreachable(self, why: str | None = None) -> None:
        """A connection or send failed (sender thread): report the outage at
        once, then at most once every _UNREACHABLE_EVERY_S while it lasts."""
        now = time.monotonic()
        if why:
            self.last_error = why[:300]
        if self._unreachable_since is None:
            self._unreachable_since = now
            self._dropped_before_outage = self._dropped_at_last_ack
        last = self._last_unreachable_report
        if last is not None and now - last < _UNREACHABLE_EVERY_S:
            return
        self._last_unreachable_report = now
        log.warning(
            "dashfrog: cannot reach Kafka at %s for %.0f s (%s); %d events queued in memory, sent "
            "if it is back while this process runs; %d dropped in all (queue full). "
            "Set the 'dashfrog' logger to DEBUG for aiokafka's own logs.",
            self.settings.bootstrap,
            now - self._unreachable_since,
            self.last_error or "no error given",
            len(self._queue) + self._inflight,
            self.dropped,
        )

    def _note_reachable(self) -> None:
        """A send was acknowledged: end the outage under way, if any, in one line."""
        since = self._unreachable_since
        if since is None:
            self._dropped_at_last_ack = self.dropped
            return
        self._unreachable_since = None
        self._last_unreachable_report = None
        self._dropped_at_last_ack = self.dropped
        log.warning(
            "dashfrog: Kafka at %s answers again after %.0f s; %d events dropped since it last "
            "acknowledged a send (%d in all), the queued ones are being sent.",
            self.settings.bootstrap,
            time.monotonic() - since,
            self.dropped - self._dropped_before_outage,
            self.dropped,
        )

    def _note_error(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]

    async def _send_queued(self, producer: Any, partitions: list[int]) -> None:
        from aiokafka.partitioner import murmur2

        queue = self._queue
        # Counted in flight before they leave the queue: a caller checking
        # for room may count them twice for a moment, never zero times.
        count = min(len(queue), 20 * self.settings.batch_max_events)
        self._inflight += count
        taken = [queue.popleft() for _ in range(count)]
        groups: dict[int, list[Queued]] = {}
        n = len(partitions)
        hashes = self._key_hashes
        sends = []
        for item in taken:
            flow_id = item[0]
            if flow_id.startswith(METRICS_KEY_PREFIX):
                h = murmur2(flow_id.encode()) & 0x7FFFFFFF
                sends.append(([item], await self._send(producer, partitions[h % n], [item], schemas.METRICS_HEADER)))
                continue
            h = hashes.get(flow_id)
            if h is None:
                if len(hashes) >= _KEY_HASH_CACHE:
                    hashes.clear()
                # Same mapping as Kafka's default partitioner for the key flow_id.
                h = hashes[flow_id] = murmur2(flow_id.encode()) & 0x7FFFFFFF
            groups.setdefault(partitions[h % n], []).append(item)
        for partition, items in groups.items():
            for chunk in _messages(items, self.settings.batch_max_events):
                sends.append((chunk, await self._send(producer, partition, chunk)))
        acknowledged = 0
        # aiokafka waits up to its request timeout (15 s) before a send fails.
        watchdog = asyncio.get_running_loop().create_task(self._watch_unacknowledged())
        try:
            for chunk, future in sends:
                try:
                    if future is None:
                        raise RuntimeError("send was refused")
                    await future
                    self.sent += len(chunk)
                    self.messages += 1
                    acknowledged += sum(map(cost, chunk))
                    self._note_reachable()
                except Exception as exc:
                    self._note_error(exc)
                    if _outage_like(exc):
                        self._note_unreachable()
                    # Put them back in front, in order, for the next round.
                    queue.extendleft(reversed(chunk))
                finally:
                    self._inflight -= len(chunk)
        finally:
            watchdog.cancel()
        with self._space:
            self._bytes -= acknowledged
            self._space.notify_all()

    async def _watch_unacknowledged(self) -> None:
        """While sends wait for acknowledgement: every 2 s, an outage unless some
        bootstrap address takes a TCP connection (whatever aiokafka logs)."""
        while True:
            await asyncio.sleep(2.0)
            if not await _any_reachable(self.settings.bootstrap):
                self._note_unreachable(f"no broker at {self.settings.bootstrap} accepts a connection")

    async def _send(
        self, producer: Any, partition: int, chunk: list[Queued], *extra: tuple[str, bytes]
    ) -> Any:
        try:
            return await producer.send(
                self.settings.topic,
                value=schemas.frame([value for _, value in chunk]),
                key=chunk[0][0].encode(),
                partition=partition,
                headers=[*schemas.headers(), *extra],
            )
        except Exception as exc:
            self._note_error(exc)
            return None

    async def _flush(self) -> bool:
        assert self._wake is not None
        while self._queue or self._inflight:
            self._wake.set()
            await asyncio.sleep(0.005)
        return True


async def _any_reachable(bootstrap: str) -> bool:
    for entry in filter(None, (e.strip() for e in bootstrap.split(","))):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            host, port = entry, "9092"
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), 2.0)
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        return True
    return False


def _outage_like(exc: BaseException) -> bool:
    """A failed send that says the broker is away (a timeout, a lost
    connection), not that this message is wrong (too large, refused)."""
    from aiokafka.errors import KafkaTimeoutError

    return isinstance(exc, TimeoutError | KafkaTimeoutError) or bool(getattr(exc, "retriable", True))


def _messages(items: list[Queued], max_events: int) -> list[list[Queued]]:
    """Split one partition's events into messages of at most ``max_events``
    events and Kafka's size limit (an event alone always makes a message)."""
    messages: list[list[Queued]] = []
    current: list[Queued] = []
    size = 0
    for item in items:
        if current and (len(current) >= max_events or size + len(item[1]) > _MAX_MESSAGE_BYTES):
            messages.append(current)
            current, size = [], 0
        current.append(item)
        size += len(item[1])
    if current:
        messages.append(current)
    return messages


class _FromSenderThread(logging.Filter):
    """Holds back aiokafka's records from the sender thread unless the
    ``dashfrog`` logger is at DEBUG: aiokafka logs every failed connection
    attempt at ERROR, which would flood the application's logs (and its error
    tracker) during an outage the SDK already reports, rate-limited."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName != _THREAD_NAME:
            return True
        sender = _sender
        if record.levelno >= logging.ERROR and sender is not None:
            # aiokafka's first "Unable connect to node" comes well before a
            # send times out: report the outage from it.
            sender._note_unreachable(record.getMessage())
        return log.isEnabledFor(logging.DEBUG)


_library_filter = _FromSenderThread()


def _quiet_library_logs() -> None:
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _library_filter not in logger.filters:
            logger.addFilter(_library_filter)


_sender: Sender | None = None
_sender_lock = threading.Lock()


def get_sender(settings: Settings) -> Sender:
    global _sender
    sender = _sender
    if sender is not None and sender.settings is settings:
        return sender
    with _sender_lock:
        if _sender is None or _sender.settings is not settings:
            old, _sender = _sender, Sender(settings)
            if old is not None:
                old.close(settings.exit_flush_timeout_s)
        return _sender


def current_sender() -> Sender | None:
    return _sender


def reset_sender(timeout: float | None = None) -> None:
    """Close the sender (flushing within ``timeout``); the next event starts a new one."""
    global _sender
    with _sender_lock:
        old, _sender = _sender, None
    if old is not None:
        old.close(timeout)


def _after_fork_in_child() -> None:
    # The parent's thread does not exist here and its queue is the parent's to send.
    global _sender, _sender_lock
    _sender = None
    _sender_lock = threading.Lock()


def _at_exit() -> None:
    sender = _sender
    if sender is not None:
        sender.close(sender.settings.exit_flush_timeout_s)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
