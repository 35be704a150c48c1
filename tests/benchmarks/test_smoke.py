"""``python -m benchmarks --quick`` runs every benchmark and prints the table.

Timings are never asserted here: quick sizes are too small to mean anything
and this machine may be busy. What must hold is that every benchmark ran to
the end and produced its row(s) with figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(170)
def test_quick_run_prints_a_row_for_every_benchmark() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import BENCHMARKS
    finally:
        sys.path.remove(str(ROOT))

    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--jobs", "3", "--timeout", "120"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=160,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.startswith("Machine: ") and " cores, Python " in out, out
    assert "| benchmark | product | baseline | ratio | target | met? |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    for bench in BENCHMARKS.values():
        mine = [r for r in rows if r.startswith(f"| {bench.title}")]
        assert mine, f"no row for {bench.name}:\n{out}\n{proc.stderr[-3000:]}"
        for row in mine:
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert len(cells) == 6, row
            # A figure, not "n/a": the benchmark ran to the end (the notes say why if not).
            assert cells[1] != "n/a" and cells[3] != "n/a", f"{bench.name} did not measure:\n{out}"
