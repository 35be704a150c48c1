"""1. Client overhead: ``with step.start()`` inside a flow vs a bare OpenTelemetry span.

Product: the SDK configured with its defaults (zstd, 20 ms linger, 50 000-event
queue) and sending to a real tansu broker; one flow, K steps per round.
Baseline: ``tracer.start_as_current_span`` under a parent span, on an
OpenTelemetry SDK ``TracerProvider`` with a ``BatchSpanProcessor`` and an
exporter that only counts spans, in the same process.

The figure is the *sustained* cost per step: a round is the K iterations plus
the flush that gets them all acknowledged (``dashfrog.flush`` /
``force_flush``), divided by K. Timing only the loop would flatter the SDK
whenever the sender thread falls behind: the queue absorbs the backlog and,
once full, drops events, which is cheaper than sending them. The background
thread shares the GIL with the caller, so its encoding is part of what the
application pays; the notes give the loop-only figure and the caller thread's
own CPU beside it. Rounds of product and baseline alternate; medians are
reported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from benchmarks._common import (
    Row,
    broker,
    fmt_us,
    median,
    quiet_logs,
    sdk,
    thread_cpu_seconds,
    unique_prefix,
)

NAME = "client overhead"
TARGET = "≤ 1.5x"


class _CountingExporter:
    """A span exporter that does nothing but count, so the baseline pays no I/O."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _otel_tracer(queue_size: int) -> tuple[Any, Any, _CountingExporter]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = _CountingExporter()
    provider = TracerProvider()
    # The same buffer bound as the SDK's queue: the default 2 048 would drop
    # spans in a tight loop, which would make the baseline cheaper than real.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue_size))  # type: ignore[arg-type]
    return provider, provider.get_tracer("benchmarks"), exporter


def _product_round(k: int) -> tuple[float, float, float]:
    """(sustained, loop-only, caller-thread CPU) seconds per step."""
    import dashfrog
    from dashfrog import flow, step

    t0 = time.perf_counter()
    c0 = time.thread_time()
    with flow.start(name="bench_client", tenant="bench-tenant"):
        for _ in range(k):
            with step.start("work"):
                pass
    loop = time.perf_counter() - t0
    cpu = time.thread_time() - c0
    if not dashfrog.flush(60):
        raise RuntimeError(f"the SDK did not get its events acknowledged: {dashfrog.stats()}")
    total = time.perf_counter() - t0
    return total / k, loop / k, cpu / k


def _baseline_round(provider: Any, tracer: Any, k: int) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    c0 = time.thread_time()
    with tracer.start_as_current_span("bench_client"):
        for _ in range(k):
            with tracer.start_as_current_span("work"):
                pass
    loop = time.perf_counter() - t0
    cpu = time.thread_time() - c0
    provider.force_flush(60_000)
    total = time.perf_counter() - t0
    return total / k, loop / k, cpu / k


def run(quick: bool) -> list[Row]:
    import dashfrog
    from dashfrog._producer import current_sender

    quiet_logs()
    k = 2_000 if quick else 10_000
    rounds = 3 if quick else 9
    with broker() as running, sdk(running.bootstrap, unique_prefix("client")) as settings:
        codec = settings.compression
        provider, tracer, exporter = _otel_tracer(settings.queue_size)
        # Warm-up: the producer connects, caches and code paths fill.
        _product_round(min(k, 1_000))
        _baseline_round(provider, tracer, min(k, 1_000))
        before = dashfrog.stats()
        exported_before = exporter.exported
        sender = current_sender()
        sender_tid = sender._thread.native_id if sender is not None else None
        sender_cpu0 = thread_cpu_seconds(sender_tid) if sender_tid else None
        product: list[tuple[float, float, float]] = []
        baseline: list[tuple[float, float, float]] = []
        for _ in range(rounds):
            product.append(_product_round(k))
            baseline.append(_baseline_round(provider, tracer, k))
        after = dashfrog.stats()
        sender_cpu1 = thread_cpu_seconds(sender_tid) if sender_tid else None
        provider.shutdown()

    sent = after["sent"] - before["sent"]
    dropped = after["dropped"] - before["dropped"]
    expected = rounds * (2 * k + 2)
    exported = exporter.exported - exported_before
    p_total, p_loop, p_cpu = (median([r[i] for r in product]) for i in range(3))
    b_total, b_loop, b_cpu = (median([r[i] for r in baseline]) for i in range(3))
    ratio = p_total / b_total
    sender_note = "sender thread CPU unknown"
    if sender_cpu0 is not None and sender_cpu1 is not None:
        sender_note = (
            f"sender thread CPU {fmt_us((sender_cpu1 - sender_cpu0) / (rounds * k))} per step"
        )
    notes = [
        f"sustained per step (loop + flush until acknowledged), median of {rounds} rounds of "
        f"{k:,} steps; OTel baseline: one child span per iteration under a parent span",
        f"loop only: dashfrog {fmt_us(p_loop)} vs OTel {fmt_us(b_loop)} "
        f"({p_loop / b_loop:.2f}x); caller-thread CPU: dashfrog {fmt_us(p_cpu)} (Avro encoding "
        f"of both events included) vs OTel {fmt_us(b_cpu)}",
        f"the rest of dashfrog's figure ({fmt_us(p_total - p_cpu)} per step) is the background "
        f"sender (framing, {codec} compression, aiokafka) holding the GIL, and waiting for acks: "
        f"{sender_note} (all rounds)",
        f"events sent {sent:,} of {expected:,} emitted, dropped {dropped:,}; "
        f"spans exported {exported:,} of {rounds * (k + 1):,}",
    ]
    if dropped or sent < expected:
        notes.append("WARNING: the SDK dropped or did not send events; the figure is not valid")
    return [
        Row(
            NAME,
            f"{fmt_us(p_total)} / step",
            f"{fmt_us(b_total)} / span",
            ratio,
            TARGET,
            ratio <= 1.5 and not dropped,
            notes,
        )
    ]
