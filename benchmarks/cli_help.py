"""``dashfrog --help`` answers in under 0.5 s.

Product: wall time of ``dashfrog --help`` (the installed console script), a
fresh process each time. Baseline, same run: a bare interpreter that imports
click and prints, which no command line of ours can beat. The listing reads
the commands' short help from their source files instead of importing them
(fastapi, faust, chDB), which used to take 2-4 s.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import Row

TARGET_S = 0.5


def _wall(args: list[str], n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def run(quick: bool) -> list[Row]:
    n = 5 if quick else 15
    script = shutil.which("dashfrog") or str(Path(sys.executable).parent / "dashfrog")
    _wall([script, "--help"], 1)  # warm the page cache and .pyc files
    product = statistics.median(_wall([script, "--help"], n))
    baseline = statistics.median(_wall([sys.executable, "-c", "import click; print('x')"], n))
    return [
        Row(
            "dashfrog --help",
            f"{product * 1000:,.0f} ms",
            f"{baseline * 1000:,.0f} ms (python -c 'import click')",
            product / baseline,
            f"≤ {TARGET_S * 1000:.0f} ms",
            product <= TARGET_S,
            [f"median of {n} runs, a fresh process each"],
        )
    ]
