"""A flow's steps as a text waterfall: what ``dashfrog flow ID`` prints.

The same facts as the web UI's timeline: each step's offset from the flow's
start and its duration to the millisecond, a bar placed on a common scale,
nesting, service and status, and for a step with child steps the time none of
them covers ("312.0 ms not in child steps").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from dashfrog._models import FlowDetail, StepRecord

# Bar cells: time a step (or one of its child steps) ran, time in a parent
# that no child step covers, and a retried attempt.
UNICODE_CELLS = ("█", "░", "▒")
ASCII_CELLS = ("#", ".", "~")


def when(value: datetime | None) -> str:
    """ISO 8601 order, 24-hour clock, milliseconds, zone: ``2026-12-02 12:54:11.351 UTC``."""
    if value is None:
        return "-"
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d} UTC"


def span(ms: float | None) -> str:
    """A duration to the millisecond: ``0.8 ms``, ``351.2 ms``, ``1.234 s``, ``2 m 3.456 s``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.1f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.3f} s"
    minutes = int(ms // 60_000)
    return f"{minutes} m {(ms - minutes * 60_000) / 1000:.3f} s"


def _us(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def uncovered(
    start: int, end: int, intervals: Iterable[tuple[int, int]]
) -> tuple[int, list[tuple[int, int]]]:
    """Microseconds of [start, end] that no interval covers, and the covered parts (merged)."""
    parts = sorted(
        (max(a, start), min(b, end)) for a, b in intervals if min(b, end) > max(a, start)
    )
    merged: list[tuple[int, int]] = []
    for a, b in parts:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    covered = sum(b - a for a, b in merged)
    return max(0, end - start - covered), merged


def text_timeline(
    detail: FlowDetail, *, width: int = 40, now: datetime | None = None, ascii_only: bool = False
) -> list[str]:
    """The waterfall's lines: a header, the flow, then each step depth-first."""
    full, gap_cell, retry_cell = ASCII_CELLS if ascii_only else UNICODE_CELLS
    now_us = _us(now or datetime.now(UTC))
    last_us = _us(detail.last_activity)

    def start_of(x: FlowDetail | StepRecord, fallback: int) -> int:
        return _us(x.started_at) if x.started_at else fallback

    def end_of(x: FlowDetail | StepRecord) -> int:
        if x.ended_at:
            return _us(x.ended_at)
        return max(now_us, last_us) if x.status == "running" else last_us

    nodes: list[tuple[StepRecord, int]] = []

    def walk(steps: Sequence[StepRecord], depth: int) -> None:
        for step in steps:
            nodes.append((step, depth))
            walk(step.children, depth + 1)

    walk(detail.steps, 1)
    starts = [_us(s.started_at) for s, _ in nodes if s.started_at]
    t0 = start_of(detail, min(starts, default=last_us))
    t1 = max([end_of(detail), *(end_of(s) for s, _ in nodes), t0 + 1])
    scale = width / (t1 - t0)

    def cell(us: int) -> int:
        return min(width - 1, max(0, int((us - t0) * scale)))

    name_width = max([len(detail.name), *(len(s.name) + 2 * d for s, d in nodes)]) + 2
    service_width = (
        max([7, len(",".join(detail.services)), *(len(",".join(s.services)) for s, _ in nodes)]) + 1
    )
    lines = [
        f"  {'OFFSET':>11}  {'DURATION':>11}  "
        + f"|{'0':<{width // 2}}{span((t1 - t0) / 1000):>{width - width // 2}}|  "
        + f"{'STEP':<{name_width}}{'SERVICE':<{service_width}}  STATUS"
    ]

    def line(
        x: FlowDetail | StepRecord,
        depth: int,
        name: str,
        service: str,
        status: str,
        children: Sequence[StepRecord],
        kind: str,
    ) -> str:
        start = start_of(x, t0)
        end = max(start, end_of(x))
        gap, covered = uncovered(start, end, ((start_of(c, start), end_of(c)) for c in children))
        bar = [" "] * width
        first, last = cell(start), max(cell(start), cell(end) if end > start else cell(start))
        own = retry_cell if status == "retried" else (gap_cell if children else full)
        for i in range(first, last + 1):
            bar[i] = own
        for a, b in covered:
            for i in range(cell(a), max(cell(a), cell(b) if b > a else cell(a)) + 1):
                bar[i] = full
        duration = span((end - start) / 1000) + ("" if x.ended_at else "..." if ascii_only else "…")
        text = (
            f"  {'+' + span((start - t0) / 1000):>11}  {duration:>11}  |{''.join(bar)}|  "
            f"{'  ' * depth + name:<{name_width}}"
            f"{service:<{service_width}}  [{status}]"
        )
        if children and gap >= 1000:
            text += f"  {span(gap / 1000)} not in {'steps' if kind == 'flow' else 'child steps'}"
        return text.rstrip()

    status = "stalled" if detail.stalled else detail.status
    lines.append(
        line(detail, 0, detail.name, ",".join(detail.services), status, detail.steps, "flow")
    )
    for step, depth in nodes:
        lines.append(
            line(
                step, depth, step.name, ",".join(step.services), step.status, step.children, "step"
            )
        )
        if step.error:
            lead = "retried after" if step.status == "retried" else "error"
            lines.append(
                f"{' ' * (32 + width)}{'  ' * depth}{lead} {step.error.type}: {step.error.message}"
            )
    lines.append(
        f"  {full} ran   {gap_cell} in a parent, not in any child step   {retry_cell} retried attempt"
    )
    return lines
