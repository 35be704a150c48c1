"""The Faust processor: consume the events topic, write batches durably, then ack.

Shape (one worker process):

    Faust consumer ──► agent (identify the writer schema, no decoding, no acks)
        ──► bounded queue ──► writer task: dead-letter what failed,
            ``store.insert_encoded`` in a store thread (the engine reads the
            Avro bodies itself), retry until durable, then ack the batch's
            messages.

Per event, nothing runs in Python on the hot path: the agent checks each
message's single-object prefix and finds its writer schema by fingerprint
(unknown without a usable header: dead-lettered), the writer groups bodies by
writer schema and the store's engine parses, validates and inserts them (see
``dashfrog.storage._avro``). Messages the store reports as holding invalid
events are decoded here only to dead-letter exactly those events; a group the
engine cannot read is decoded here message by message, so the readable ones
are written and the rest dead-lettered, as before. Every store implements
``insert_encoded`` (the portable one decodes in Python, in the store thread).

Why not ``stream.take_events``: it acks its batch in a ``finally`` after the
``yield``, so a body that raises (or is cancelled) still acks events that were
never written, and Faust then commits past them. Here the agent iterates a
``noack()`` stream and only the writer acks, strictly after the write that
covers a message returned; acks are therefore always a contiguous prefix of
each partition's delivered offsets, and Faust's commit (the highest
contiguous acked offset) never passes an unwritten message. Reading the next
messages on the event loop overlaps with the previous write in the store
thread, which releases the GIL while the engine works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dashfrog._settings import Settings
from dashfrog.storage import DeadLetter, GroupResult, MalformedEventsError, Store, group_suffix
from dashfrog.streams._batch import (
    HEAD_BYTES,
    Decoded,
    body,
    decode_message,
    dedup_token,
    dlq_headers,
    dlq_reference,
    inspect_message,
    offset_ranges,
)
from dashfrog.streams._faust_compat import committed_offset, kafka_transport, leave_group
from dashfrog.streams._outage import BrokerWatch, route_library_logs_to_debug

log = logging.getLogger("dashfrog.streams")

T = TypeVar("T")

# A write covers at most this many events, however many messages that takes:
# bigger inserts amortise chDB's per-insert cost, this bounds memory and latency.
MAX_EVENTS_PER_WRITE = 50_000
_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
# A DLQ send gets this many tries of at most this long each (Faust's producer
# would otherwise wait up to its 20-minute request timeout).
_DLQ_ATTEMPTS = 3
_DLQ_SEND_TIMEOUT_S = 5.0


@dataclass
class ProcessorStats:
    """Counters the status line and tests read."""

    messages: int = 0
    events: int = 0
    dead_lettered: int = 0
    writes: int = 0
    write_failures: int = 0
    last_write_at: float | None = None
    last_error: str | None = None


class Processor:
    """Owns the Faust app, the agent, the writer task and the store thread."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        app_id: str | None = None,
        datadir: str | Path | None = None,
        loglevel: int | None = None,
    ) -> None:
        import faust

        self.settings = settings
        self.store = store
        self.stats = ProcessorStats()
        # Faust wants a data directory even with memory storage and no tables.
        datadir = Path(datadir or Path(".dashfrog") / "faust")
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            app_id or settings.processor_group,
            broker=[f"kafka://{host.strip()}" for host in settings.bootstrap.split(",")],
            broker_credentials=_credentials(settings),
            store="memory://",
            web_enabled=False,
            autodiscover=False,
            datadir=str(datadir),
            topic_partitions=settings.topic_partitions,
            topic_disable_leader=True,  # no tables, so nothing needs a leader topic
            broker_rebalance_timeout=settings.rebalance_timeout_s,
            broker_session_timeout=settings.session_timeout_s,
            # Heartbeats also carry the news of a rebalance to the survivors.
            broker_heartbeat_interval=settings.session_timeout_s / 10,
            # Commit soon after a write so a restart replays little.
            broker_commit_interval=0.5,
            consumer_auto_offset_reset="earliest",
            key_serializer="raw",
            value_serializer="raw",
            stream_wait_empty=False,  # our writer holds acks; a rebalance must not wait on it
            loghandlers=[],
        )
        self.app.transport = kafka_transport(self.app, settings.processor_fetch_wait_ms)
        self.topic = self.app.topic(
            settings.topic, key_type=bytes, value_type=bytes, partitions=settings.topic_partitions
        )
        self.dlq_topic_name = settings.dlq
        # Bounded: when the writer falls behind, the agent blocks and Faust's own
        # buffers pause fetching.
        self._queue: asyncio.Queue[Decoded] = asyncio.Queue(maxsize=2 * settings.processor_batch_size)
        # One thread: chDB calls block, and a store is not assumed thread-safe.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="dashfrog-store")
        self._inflight: asyncio.Future[Any] | None = None
        self._stream: Any = None
        # (topic, partition) → next offset not yet durably written.
        self.done: dict[tuple[str, int], int] = {}
        # Rows for ``dead_letters``, written before the batch holding them is acked.
        self._letters: list[DeadLetter] = []
        # Says when the broker goes away and comes back (the status line reads it).
        self.broker = BrokerWatch(settings.bootstrap)
        self.app.agent(self.topic, name="dashfrog.streams.decode")(self._agent)
        self.app.task(self._writer)

    # -- agent: identify, never decode nor ack ---------------------------------------

    async def _agent(self, stream: Any) -> None:
        noack = stream.noack()
        self._stream = noack
        put = self._queue.put
        async for event in noack.events():
            message = event.message
            item = inspect_message(
                message.topic, message.partition, message.offset, message.key, message.value,
                message.headers,
            )
            item.handle = event
            await put(item)

    # -- writer: batch, write durably, ack ------------------------------------

    async def _writer(self) -> None:
        try:
            while True:
                batch = await self._next_batch()
                await self._write(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # A bug here must stop the worker (nothing unwritten gets acked), not
            # leave a consumer running that never writes.
            log.exception("processor writer failed")
            await self.app.crash(exc)
            raise

    async def _next_batch(self) -> list[Decoded]:
        queue = self._queue
        first = await queue.get()
        batch = [first]
        n_events = first.estimate
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.processor_batch_wait_s
        max_messages = self.settings.processor_batch_size
        while len(batch) < max_messages and n_events < MAX_EVENTS_PER_WRITE:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(item)
            n_events += item.estimate
        return batch

    async def _write(self, batch: list[Decoded]) -> None:
        for item in batch:
            if item.reason is not None:
                await self._dead_letter(item)
        token = dedup_token(offset_ranges(batch))
        written = 0
        # Messages decoded on arrival (metrics, see inspect_message) carry their events.
        decoded = [event for item in batch for event in item.events]
        if decoded:
            await self._durably("insert", self.store.insert_events, decoded, f"{token}-decoded")
            written += len(decoded)
        raw = [item for item in batch if item.value is not None]
        if raw:
            written = await self._write_encoded(raw, token)
        if self._letters:
            # Recorded before the acks: a crash before this point dead-letters
            # them again on redelivery, and the table keeps one row each.
            letters, self._letters = self._letters, []
            await self._durably("record dead letters", self.store.record_dead_letters, letters)
        # Only now is every message of the batch durable (written or dead-lettered).
        stream = self._stream
        for item in batch:
            await stream.ack(item.handle)
            tp = (item.topic, item.partition)
            if item.offset + 1 > self.done.get(tp, -1):
                self.done[tp] = item.offset + 1
        stats = self.stats
        stats.messages += len(batch)
        stats.events += written
        stats.writes += 1
        stats.last_write_at = time.time()

    async def _write_encoded(self, items: list[Decoded], token: str) -> int:
        """Write undecoded messages through ``store.insert_encoded``; events written.

        Messages the store reports as holding invalid events are decoded here
        and dead-lettered (just their invalid events; the valid ones are
        written). A group the engine cannot read (malformed Avro, a writer
        schema it cannot map) is decoded here instead, message by message:
        what decodes is written through ``insert_events``, the rest is
        dead-lettered as undecodable.
        """
        by_schema: dict[str, list[Decoded]] = {}
        for item in items:
            by_schema.setdefault(item.schema or "", []).append(item)
        pending = list(by_schema.items())
        written = 0
        while pending:
            groups = [(schema, [body(item) for item in group]) for schema, group in pending]
            outcome = await self._durably(
                "insert", self.store.insert_encoded, groups, token, passthrough=MalformedEventsError
            )
            if not isinstance(outcome, MalformedEventsError):
                written += await self._settle(pending, outcome, token)
                break
            # Groups before the failed one are written; decode that one here.
            failed = outcome.group
            written += await self._settle(pending[:failed], outcome.done, token)
            schema, group = pending[failed]
            log.warning("store cannot read %d message(s) as Avro, decoding them here: %s", len(group), outcome)
            written += await self._write_decoded(group, f"{token}-py-{group_suffix(schema)}")
            pending = pending[failed + 1 :]
        return written

    async def _settle(
        self, groups: list[tuple[str, list[Decoded]]], results: list[GroupResult], token: str
    ) -> int:
        written = 0
        for (_, group), result in zip(groups, results, strict=True):
            written += result.events
            for index in result.invalid:
                written += await self._dead_letter_invalid(group[index], token)
        return written

    async def _write_decoded(self, group: list[Decoded], token: str) -> int:
        decoded = [_decode(item) for item in group]
        for item in decoded:
            if item.reason is not None:
                await self._dead_letter(item)
        events = [event for item in decoded for event in item.events]
        if events:
            await self._durably("insert", self.store.insert_events, events, token)
        return len(events)

    async def _dead_letter_invalid(self, item: Decoded, token: str) -> int:
        """Dead-letter the invalid events of a message whose valid ones are written."""
        decoded = _decode(item)
        if decoded.reason is not None:
            await self._dead_letter(decoded)
            return 0
        # The store and the Python contract disagree: keep the events (a
        # repeat of one already written changes nothing that queries return).
        log.error("store reported invalid events in %s[%d]@%d that validate here; writing them",
                  item.topic, item.partition, item.offset)
        await self._durably(
            "insert", self.store.insert_events, decoded.events, f"{token}-{item.partition}-{item.offset}"
        )
        return len(decoded.events)

    async def _durably(
        self, what: str, fn: Any, *args: Any, passthrough: type[BaseException] | None = None
    ) -> Any:
        """Run a blocking store call in the store thread until it succeeds; its result.

        Never raises (except cancellation, when the worker stops): an error
        leaving here would skip the ack, but leaving the batch behind and
        moving on would let later acks commit past it. An exception of type
        ``passthrough`` is returned instead of retried.
        """
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            future = loop.run_in_executor(self.executor, fn, *args)
            self._inflight = future
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if passthrough is not None and isinstance(exc, passthrough):
                    return exc
                self.stats.write_failures += 1
                self.stats.last_error = f"{what}: {exc!r}"
                delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                log.warning("store %s failed (attempt %d), retrying in %.1fs: %r", what, attempt + 1, delay, exc)
                attempt += 1
                await asyncio.sleep(delay)
            finally:
                self._inflight = None

    async def _dead_letter(self, item: Decoded) -> None:
        """Send ``item`` to the DLQ topic and queue its ``dead_letters`` row.

        Never waits without bound on one message: the whole message gets
        ``_DLQ_ATTEMPTS`` tries (none more when the broker refuses it for
        good, e.g. too large); then a small reference (coordinates, size,
        reason, first bytes) gets as many; then only the table row remains,
        and the offset moves on either way.
        """
        value = item.dlq_value or b""
        refusal = await self._send_dlq(item.key, value, dlq_headers(item))
        in_dlq = "whole"
        reason = item.reason or ""
        if refusal is not None:
            ref_value, ref_headers = dlq_reference(item, refusal)
            second = await self._send_dlq(item.key, ref_value, ref_headers)
            in_dlq = "reference" if second is None else "none"
            reason += f" [the DLQ topic did not take the whole message: {refusal}]"
            log.error(
                "dashfrog: %s[%d]@%d (%d bytes) could not go to the DLQ whole (%s); %s",
                item.topic, item.partition, item.offset, item.size, refusal,
                "a reference went instead" if second is None
                else f"nor a reference ({second}): only the dead_letters table records it",
            )
        self.stats.dead_lettered += 1
        log.warning("dead-lettered %s[%d]@%d: %s", item.topic, item.partition, item.offset, item.reason)
        self._letters.append(
            DeadLetter(
                topic=item.topic,
                partition=item.partition,
                offset=item.offset,
                size=item.size,
                reason=reason,
                in_dlq=in_dlq,
                head=value[:HEAD_BYTES],
                key=item.key,
                headers=item.headers,
            )
        )

    async def _send_dlq(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> str | None:
        """Send one DLQ message; None once acknowledged, else why it was not."""
        attempt = 0
        while True:
            try:
                await asyncio.wait_for(
                    self.app.producer.send_and_wait(self.dlq_topic_name, key, value, None, None, headers),
                    _DLQ_SEND_TIMEOUT_S,
                )
                return None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                why = _describe(exc)
                attempt += 1
                if not _retriable(exc) or attempt >= _DLQ_ATTEMPTS:
                    return why
                delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                log.warning("DLQ send failed (attempt %d), retrying in %.1fs: %s", attempt, delay, why)
                await asyncio.sleep(delay)

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        route_library_logs_to_debug()
        await self.app.start()
        self.broker.start()

    async def stop(self) -> None:
        """Stop consuming; wait for a write still running in the store thread."""
        await self.broker.stop()
        # Hand the partitions over now, not after the session timeout.
        await leave_group(self.app)
        with contextlib.suppress(Exception):
            await self.app.stop()
        inflight = self._inflight
        if inflight is not None:
            with contextlib.suppress(BaseException):
                await inflight
        self.executor.shutdown(wait=True)

    @property
    def crashed(self) -> bool:
        return bool(self.app.crashed)

    @property
    def crash_reason(self) -> BaseException | None:
        """What stopped the processor, once ``crashed``."""
        reason: BaseException | None = self.app.crash_reason
        return reason

    @property
    def writing(self) -> bool:
        """A store call is under way (a long write is progress, not a stall)."""
        return self._inflight is not None

    def lag(self) -> int | None:
        """Messages on assigned partitions not yet written (None before assignment)."""
        consumer = self.app.consumer
        try:
            assigned = consumer.assignment()
        except Exception:
            return None
        if not assigned:
            return None
        total = 0
        for tp in assigned:
            try:
                high = consumer.highwater(tp)
            except Exception:
                high = None
            if high is None:
                continue
            done = self.done.get((tp.topic, tp.partition))
            if done is None:
                done = committed_offset(consumer, tp) or 0
            total += max(0, high - done)
        return total


def _retriable(exc: BaseException) -> bool:
    """Whether trying the same send again may work: a timeout or a retriable
    Kafka error may; a message too large or a refused topic will not."""
    from aiokafka.errors import KafkaTimeoutError  # not flagged retriable, but a timeout

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError | KafkaTimeoutError):
            return True
        retriable = getattr(seen, "retriable", None)
        if retriable is not None:
            return bool(retriable)
        seen = seen.__cause__
    return True


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


def _decode(item: Decoded) -> Decoded:
    """Decode an inspected message with the Python codec (same identity and handle)."""
    out = decode_message(item.topic, item.partition, item.offset, item.key, item.value, item.headers)
    out.handle = item.handle
    return out


def _credentials(settings: Settings) -> Any:
    if not settings.sasl_mechanism and settings.security_protocol == "PLAINTEXT":
        return None
    options = settings.kafka_options()
    ssl_context = options.get("ssl_context")
    if settings.sasl_mechanism:
        from faust.auth import SASLCredentials

        return SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            ssl_context=ssl_context,
            mechanism=settings.sasl_mechanism,
        )
    from faust.auth import SSLCredentials

    return SSLCredentials(ssl_context)

