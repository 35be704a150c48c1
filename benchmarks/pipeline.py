"""2. Pipeline throughput: topic → rows visible in ``dashfrog.query`` vs a raw consumer.

Both read the same pre-produced topic in the same run. The data is N events
(flows of ten) sent through the SDK's own sender, so messages are packed the
way applications pack them (events grouped by the partition of their flow id,
up to ``DASHFROG_BATCH_MAX_EVENTS`` per compressed message, zstd by default).

Baseline: an aiokafka consumer assigned every partition from the beginning
that only decodes the Avro messages (``schemas.decode``), nothing else. It
runs once before and once after the product; the faster run counts, which
makes the ratio conservative.

Product: one Faust worker (``dashfrog.streams.Processor``, the code
``dashfrog worker`` runs) with a fresh chDB store, in this process. The clock
starts when the consumer group has assigned the worker its partitions (the
group join is a one-off startup cost, reported in the notes) and stops when
the processor has written all N events *and* ``dashfrog.query.stats`` returns
every flow as finished.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from benchmarks._common import Row, broker, fmt_rate, quiet_logs, sdk, unique_prefix
from benchmarks._events import EVENTS_PER_FLOW, many_flows

NAME = "pipeline throughput"
TARGET = "≥ 50 % of raw"
PARTITIONS = 6


def produce(n_flows: int) -> dict[str, Any]:
    """Send ``n_flows`` flows through the SDK's sender (configured by the caller); wait for acks."""
    import dashfrog
    from dashfrog._producer import get_sender
    from dashfrog._settings import get_settings

    sender = get_sender(get_settings())
    emit = sender.emit
    for event in many_flows(n_flows):
        emit(event)
    if not dashfrog.flush(300):
        raise RuntimeError(f"pre-produced events were not acknowledged: {dashfrog.stats()}")
    stats = dashfrog.stats()
    if stats["dropped"]:
        raise RuntimeError(f"the SDK dropped events while pre-producing: {stats}")
    return stats


async def raw_consume(
    bootstrap: str, topic: str, expected: int, timeout: float
) -> tuple[float, int]:
    """Seconds to fetch and decode ``expected`` events from the start of ``topic``; messages read."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from dashfrog import schemas

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = sorted(consumer.partitions_for_topic(topic) or range(PARTITIONS))
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        decode = schemas.decode
        events = messages = 0
        started = time.perf_counter()
        deadline = started + timeout
        while events < expected:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"raw consumer decoded {events:,} of {expected:,} events")
            fetched = await consumer.getmany(timeout_ms=200)
            for batch in fetched.values():
                for message in batch:
                    events += len(decode(message.value, dict(message.headers)))
                    messages += 1
        return time.perf_counter() - started, messages
    finally:
        await consumer.stop()


class _Timings:
    """Where the worker's time goes: wraps the store's write methods and the agent's read function.

    Only observes: each wrapped call runs unchanged. Whichever of the write
    paths the processor uses (decoded events, or undecoded Avro messages for
    a store that reads Avro itself) is timed.
    """

    STORE = ("insert_events", "insert_encoded")
    AGENT = ("decode_message", "inspect_message")

    def __init__(self, store: Any) -> None:
        from dashfrog.streams import _processor

        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        for name in self.STORE:
            if callable(getattr(store, name, None)):
                setattr(store, name, self._wrap(name, getattr(store, name)))
        for name in self.AGENT:
            if callable(getattr(_processor, name, None)):
                setattr(_processor, name, self._wrap(name, getattr(_processor, name)))

    def _wrap(self, name: str, fn: Any) -> Any:
        self.seconds[name] = 0.0
        self.calls[name] = 0

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed

    def summary(self) -> str:
        used = [n for n in self.seconds if self.calls[n]]
        store = [
            f"{n} {self.seconds[n]:.2f}s ({self.calls[n]:,} calls)" for n in used if n in self.STORE
        ]
        agent = [f"{n} {self.seconds[n]:.2f}s" for n in used if n in self.AGENT]
        return (
            f"inside the worker: store thread {', '.join(store) or 'no writes'}; "
            f"agent on the event loop {', '.join(agent) or 'nothing'}"
        )


async def run_processor(
    settings: Any, store: Any, datadir: str, n_events: int, n_flows: int, timeout: float
) -> dict[str, Any]:
    """Run one worker until every event is written and visible; timings in seconds."""
    from dashfrog import query
    from dashfrog.streams import Processor

    query.use_store(store)
    timings = _Timings(store)
    processor = Processor(settings, store, datadir=datadir)
    launched = time.perf_counter()
    await processor.start()
    try:
        deadline = launched + timeout

        async def until(condition: Any, what: str) -> float:
            while not condition():
                if processor.crashed:
                    raise RuntimeError(f"processor crashed: {processor.crash_reason!r}")
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"timed out waiting for {what} ({processor.stats})")
                await asyncio.sleep(0.002)
            return time.perf_counter()

        assigned = await until(lambda: processor.lag() is not None, "partition assignment")
        await until(lambda: processor.stats.events >= n_events, f"{n_events:,} events written")
        # Visible to readers: the same query path the API and notebooks use.
        found = await asyncio.get_running_loop().run_in_executor(None, _finished_flows, query)
        visible = time.perf_counter()
        if found != n_flows:
            raise RuntimeError(
                f"dashfrog.query sees {found:,} finished flows, expected {n_flows:,}"
            )
        return {
            "join": assigned - launched,
            "elapsed": visible - assigned,
            "writes": float(processor.stats.writes),
            "messages": float(processor.stats.messages),
            "timings": timings.summary(),  # type: ignore[dict-item]
        }
    finally:
        await processor.stop()
        query.use_store(None)


def _finished_flows(query: Any) -> int:
    s = query.stats()
    return int(s.succeeded + s.failed)


def run(quick: bool) -> list[Row]:
    from dashfrog._settings import Settings
    from dashfrog.storage import open_store

    quiet_logs()
    n_flows = 2_000 if quick else 50_000
    n_events = n_flows * EVENTS_PER_FLOW
    tmp = os.environ.get("DASHFROG_BENCH_TMP") or os.getcwd()
    prefix = unique_prefix("pipeline")
    with broker() as running:
        bootstrap = running.bootstrap
        with sdk(bootstrap, prefix, PARTITIONS, queue_block_ms=600_000) as sdk_settings:
            t0 = time.perf_counter()
            sent = produce(n_flows)
            produce_s = time.perf_counter() - t0
            topic = sdk_settings.topic
        timeout = 120 if quick else 600
        raw1, messages = asyncio.run(raw_consume(bootstrap, topic, n_events, timeout))
        settings = Settings(
            kafka_bootstrap=bootstrap,
            topic_prefix=prefix,
            topic_partitions=PARTITIONS,
            processor_group=f"{prefix}processor",
            # A short rebalance timeout only shortens the group join, which is not timed.
            rebalance_timeout_s=2.0,
        )
        store = open_store(f"chdb://{os.path.join(tmp, 'chdb')}")
        try:
            store.migrate()
            timing = asyncio.run(
                run_processor(
                    settings, store, os.path.join(tmp, "faust"), n_events, n_flows, timeout
                )
            )
        finally:
            store.close()
        raw2, _ = asyncio.run(raw_consume(bootstrap, topic, n_events, timeout))

    raw_s = min(raw1, raw2)
    raw_rate = n_events / raw_s
    product_rate = n_events / timing["elapsed"]
    ratio = product_rate / raw_rate
    notes = [
        f"{n_events:,} events ({n_flows:,} flows) in {messages:,} messages on {PARTITIONS} partitions, "
        f"pre-produced through the SDK's sender in {produce_s:.1f}s "
        f"({n_events / produce_s:,.0f} events/s, {sent['messages']:,} messages)",
        f"raw aiokafka + fastavro decode: {raw1:.2f}s and {raw2:.2f}s (best counts)",
        f"processor: {timing['elapsed']:.2f}s from partition assignment to every flow visible in "
        f"dashfrog.query, {int(timing['writes']):,} chDB writes; group join took {timing['join']:.1f}s (not timed)",
        str(timing["timings"]),
        f"processor settings: batch {settings.processor_batch_size} messages / "
        f"{settings.processor_batch_wait_s}s wait (the defaults)",
    ]
    return [
        Row(
            NAME,
            fmt_rate(product_rate),
            fmt_rate(raw_rate),
            ratio,
            TARGET,
            ratio >= 0.5,
            notes,
        )
    ]
