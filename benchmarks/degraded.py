"""5. Degraded mode: step overhead and memory while the broker is down.

The process starts with the SDK pointed at a port where nothing listens (the
broker is down from the start, so no memory freed by an earlier healthy phase
can hide the queue's growth). The queue's memory budget,
``DASHFROG_QUEUE_MAX_BYTES``, is the limit that binds (the event count limit
is set out of reach). Steps run in rounds of K until twice as many events
have been dropped as the queue accepted: the queue fills, then every further
event is dropped and counted. Then a broker starts on that port, the SDK
recovers and sends what it kept, and the same rounds run again while it is
healthy.

- Step overhead: median time per step, broker down vs healthy. Healthy is
  the sustained figure of the client overhead benchmark (a round's loop plus
  the flush until the broker acknowledged it, so the sender thread's share of
  the GIL counts, and nothing may be dropped); down is the loop alone, since
  nothing can be acknowledged and the application never waits for it.
- Memory: peak growth of resident memory during the down phase vs the
  configured bound, ``DASHFROG_QUEUE_MAX_BYTES``. The notes give what one
  queued event holds as tracemalloc sees it (flow id and Avro bytes, built
  and converted by the SDK's own code) beside what the SDK counts for it.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

from benchmarks._common import (
    Row,
    fmt_mib,
    fmt_us,
    median,
    quiet_logs,
    rss_bytes,
    unique_prefix,
    wait_until,
)

NAME = "degraded mode"


def _round(k: int, flush: bool = False) -> float:
    """Seconds per step of a round of ``k`` steps (with ``flush``: until acknowledged)."""
    import dashfrog
    from dashfrog import flow, step

    t0 = time.perf_counter()
    with flow.start(name="bench_degraded", tenant="bench-tenant", env="production"):
        for i in range(k):
            with step.start("work", item=i):
                pass
    if flush and not dashfrog.flush(60):
        raise RuntimeError(f"healthy round not acknowledged: {dashfrog.stats()}")
    return (time.perf_counter() - t0) / k


class _Collector:
    """Stands in for the sender while measuring event size: keeps what its queue would."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: dict[str, Any]) -> None:
        from dashfrog._producer import queued

        self.events.append(queued(event))


def event_size(n_steps: int = 5_000) -> tuple[float, float]:
    """Bytes one queued event holds on average (tracemalloc) for the steps this
    benchmark emits, and what the SDK counts for it against the budget."""
    from dashfrog import _flow
    from dashfrog._producer import cost

    collector = _Collector()
    original = _flow.get_sender
    _flow.get_sender = lambda settings: collector  # type: ignore[assignment,return-value]
    try:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        _round(n_steps)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        _flow.get_sender = original
    n = len(collector.events)
    return (after - before) / n, sum(map(cost, collector.events)) / n


def run(quick: bool) -> list[Row]:
    import dashfrog
    from dashfrog._settings import set_settings
    from dashfrog.runtime._broker import ensure_topics_sync, free_port, start_broker

    quiet_logs()
    budget = (2 if quick else 16) * 1024 * 1024
    k = 1_000 if quick else 5_000
    max_down_rounds = 200
    healthy_rounds = 3 if quick else 10
    port = free_port()
    prefix = unique_prefix("degraded")
    settings = dashfrog.setup(
        kafka_bootstrap=f"127.0.0.1:{port}",
        topic_prefix=prefix,
        service_name="bench",
        queue_size=100_000_000,
        queue_max_bytes=budget,
    )
    broker = None
    try:
        # Start the sender and let it fail to connect once, so its thread and aiokafka are loaded.
        _round(10)
        wait_until(
            lambda: dashfrog.stats()["errors"] > 0, 30, "the sender's first failed connection"
        )
        gc.collect()
        rss0 = rss_bytes()
        peak = rss0
        down: list[float] = []
        rss_full: int | None = None  # RSS when the queue was first seen full
        while len(down) < max_down_rounds:
            down.append(_round(k))
            rss = rss_bytes()
            peak = max(peak, rss)
            stats = dashfrog.stats()
            if rss_full is None and stats["dropped"]:
                rss_full = rss
            if stats["dropped"] >= 2 * stats["accepted"]:
                break
        down_stats = dashfrog.stats()

        broker = start_broker(port)
        ensure_topics_sync(broker.bootstrap, {settings.topic: 6, settings.dlq: 1})
        recover_t0 = time.perf_counter()
        if not dashfrog.flush(60):
            raise RuntimeError(
                f"the SDK did not recover after the broker came up: {dashfrog.stats()}"
            )
        recovery_s = time.perf_counter() - recover_t0
        recovered = dashfrog.stats()

        healthy: list[float] = []
        for _ in range(healthy_rounds):
            healthy.append(_round(k, flush=True))
        healthy_stats = dashfrog.stats()
        per_event, counted = event_size()
    finally:
        dashfrog.shutdown(10)
        set_settings(None)
        if broker is not None:
            broker.stop()

    d, h = median(down), median(healthy)
    after_full = "queue never filled" if rss_full is None else f"+{fmt_mib(peak - rss_full)}"
    growth = peak - rss0
    bound = budget
    kept = recovered["sent"]
    emitted = down_stats["accepted"] + down_stats["dropped"]
    healthy_dropped = healthy_stats["dropped"] - recovered["dropped"]
    return [
        Row(
            f"{NAME}: step overhead (broker down)",
            f"{fmt_us(d)} / step",
            f"healthy {fmt_us(h)} / step",
            d / h,
            "≤ 2x",
            d / h <= 2 and healthy_dropped == 0,
            [
                f"broker down: {len(down)} rounds of {k:,} steps (median; slowest round "
                f"{fmt_us(max(down))}); {emitted:,} events emitted, {down_stats['dropped']:,} dropped "
                f"once the queue's {fmt_mib(budget)} budget was full",
                f"healthy: {healthy_rounds} rounds of {k:,} steps against a live broker, loop + flush "
                f"until acknowledged (median), dropped {healthy_dropped:,}",
                f"after the broker came up the SDK sent the {kept:,} events it kept in {recovery_s:.1f}s",
            ],
        ),
        Row(
            f"{NAME}: memory (broker down)",
            f"RSS +{fmt_mib(growth)}",
            f"bound {fmt_mib(bound)}",
            growth / bound,
            "≤ 1x (within bound)",
            growth <= bound,
            [
                f"bound = DASHFROG_QUEUE_MAX_BYTES {fmt_mib(budget)}, which held "
                f"{down_stats['accepted']:,} events; peak RSS growth sampled after each round, "
                f"from {fmt_mib(rss0)}",
                f"per queued event: {per_event:,.0f} bytes as tracemalloc sees it (flow id and "
                f"Avro bytes, without the allocator's rounding), {counted:,.0f} bytes counted "
                f"against the budget, {growth / max(1, down_stats['accepted']):,.0f} bytes of RSS "
                f"growth",
                f"growth after the queue was full, while {down_stats['dropped']:,} more events were "
                f"dropped: {after_full}",
            ],
        ),
    ]
