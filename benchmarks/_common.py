"""What every benchmark shares: result rows, the machine, timing and broker helpers."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the results table.

    ``product`` and ``baseline`` are the absolute figures, already formatted
    with their unit; ``ratio`` is product / baseline (None when a figure is
    missing) and ``met`` says whether ``target`` holds (None: not measured).
    """

    benchmark: str
    product: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        return cls(**data)


def failed_row(benchmark: str, target: str, reason: str) -> Row:
    """A row saying the benchmark could not produce a figure, and why."""
    return Row(benchmark, "n/a", "n/a", None, target, None, [f"not measured: {reason}"])


# -- the machine -------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(load_at_start: float | None = None) -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.system()} {platform.release()}, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        # Other work on the machine moves every figure: say how busy it was.
        + "load average "
        + (f"{load_at_start:.1f} at the start, " if load_at_start is not None else "")
        + f"{os.getloadavg()[0]:.1f} at the end"
    )


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    return 0


def thread_cpu_seconds(native_id: int) -> float | None:
    """CPU time a thread of this process has used (Linux schedstat), None where unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    return None


# -- numbers ------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; values need not be sorted."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def fmt_rate(per_s: float, unit: str = "events/s") -> str:
    return f"{per_s:,.0f} {unit}"


def fmt_mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.005
) -> None:
    """Poll ``condition`` until it holds; raise TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


# -- infrastructure ---------------------------------------------------------------


@contextlib.contextmanager
def broker() -> Iterator[Any]:
    """A fresh tansu broker (memory storage) on a free port, stopped afterwards."""
    from dashfrog.runtime._broker import start_broker

    running = start_broker()
    try:
        yield running
    finally:
        running.stop()


def unique_prefix(name: str) -> str:
    """A topic prefix no earlier run used, so every run reads only its own data."""
    return f"bench-{name}-{os.getpid()}-{time.time_ns() // 1_000_000}."


@contextlib.contextmanager
def sdk(bootstrap: str, prefix: str, partitions: int = 6, **overrides: Any) -> Iterator[Any]:
    """The SDK configured against ``bootstrap`` on fresh topics; shut down afterwards."""
    import dashfrog
    from dashfrog._settings import set_settings
    from dashfrog.runtime._broker import ensure_topics_sync

    ensure_topics_sync(
        bootstrap,
        {prefix + "dashfrog.events": partitions, prefix + "dashfrog.events.dlq": 1},
    )
    settings = dashfrog.setup(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        service_name="bench",
        topic_partitions=partitions,
        **overrides,
    )
    try:
        yield settings
    finally:
        dashfrog.shutdown(10)
        set_settings(None)


def quiet_logs() -> None:
    """Keep library chatter (reconnects while a broker stops, Faust banners) out of the table."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    for name in ("aiokafka", "faust", "mode", "kafka", "dashfrog", "dashfrog.streams"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
