"""Progress of a long store operation (a rebuild, a backfilling upgrade) on a terminal."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_line(label: str, done: int, total: int, elapsed_s: float) -> str:
    """``label: 1,200,000 / 10,000,000 events (12 %), 2,400,000 events/s, ETA 4 s``."""
    share = done / total * 100 if total else 100.0
    line = f"{label}: {done:,} / {total:,} events ({share:.0f} %)"
    if done and elapsed_s > 0:
        rate = done / elapsed_s
        line += f", {rate:,.0f} events/s, ETA {_duration((total - done) / rate)}"
    return line


@contextlib.contextmanager
def terminal_progress(
    label: str, stream: TextIO | None = None
) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback ``(done, total)`` drawing one updating line on
    ``stream`` (stderr) when it is a terminal; None when it is not (piped,
    redirected), so scripts and logs stay quiet."""
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        yield None
        return
    started = time.monotonic()
    drawn = False

    def report(done: int, total: int) -> None:
        nonlocal drawn
        out.write("\r\x1b[K" + progress_line(label, done, total, time.monotonic() - started))
        out.flush()
        drawn = True

    try:
        yield report
    finally:
        if drawn:
            out.write("\n")
            out.flush()
