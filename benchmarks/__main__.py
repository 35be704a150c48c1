"""``python -m benchmarks [names...] [--quick]``: run benchmarks, print one Markdown table.

Each benchmark runs in a child process; its rows come back as JSON. A
benchmark that fails or times out still gets a row saying so, so the table
always has every benchmark asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import BENCHMARKS
from benchmarks._common import Row, failed_row, machine

ROOT = Path(__file__).resolve().parent.parent


def run_one(name: str, quick: bool, timeout: float) -> tuple[list[Row], float]:
    bench = BENCHMARKS[name]
    with tempfile.TemporaryDirectory(prefix=f"dashfrog-bench-{name}-") as tmp:
        out = os.path.join(tmp, "rows.json")
        args = [sys.executable, "-m", "benchmarks._one", name, out] + (["--quick"] if quick else [])
        # Each run gets its own working directory so chDB and Faust data never collide.
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "DASHFROG_BENCH_TMP": tmp,
        }
        started = time.monotonic()
        try:
            proc = subprocess.run(
                args, cwd=tmp, env=env, timeout=timeout, capture_output=True, text=True
            )
        except subprocess.TimeoutExpired:
            return [
                failed_row(bench.title, bench.target, f"timed out after {timeout:.0f}s")
            ], timeout
        elapsed = time.monotonic() - started
        if os.path.exists(out):
            with open(out) as f:
                rows = [Row.from_json(r) for r in json.load(f)]
        else:
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            rows = [failed_row(bench.title, bench.target, tail[0])]
        if proc.returncode != 0 and proc.stderr:
            sys.stderr.write(f"--- {name} (exit {proc.returncode}) ---\n{proc.stderr[-4000:]}\n")
        return rows, elapsed


def _ratio(row: Row) -> str:
    return "n/a" if row.ratio is None else f"{row.ratio:,.2f}x"


def _met(row: Row) -> str:
    return "n/a" if row.met is None else ("yes" if row.met else "**no**")


def table(rows: list[Row]) -> str:
    lines = [
        "| benchmark | product | baseline | ratio | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.benchmark} | {r.product} | {r.baseline} | {_ratio(r)} | {r.target} | {_met(r)} |"
        )
    return "\n".join(lines)


def notes(rows: list[Row]) -> str:
    out: list[str] = []
    for r in rows:
        for note in r.notes:
            out.append(f"- {r.benchmark}: {note}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run, not a measurement"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per benchmark (default 900, quick 180)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="benchmarks run at once (default 1; more only for smoke runs: they disturb each other)",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    names = args.names or list(BENCHMARKS)
    timeout = args.timeout or (180.0 if args.quick else 900.0)
    load_at_start = os.getloadavg()[0]
    results: dict[str, list[Row]] = {}

    def one(name: str) -> None:
        print(f"running {name}{' (quick)' if args.quick else ''}...", file=sys.stderr, flush=True)
        results[name], elapsed = run_one(name, args.quick, timeout)
        print(f"  {name} took {elapsed:.1f}s", file=sys.stderr, flush=True)

    if args.jobs > 1:
        # Benchmarks running side by side disturb each other's figures: for smoke runs only.
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(one, names))
    else:
        for name in names:
            one(name)
    rows = [row for name in names for row in results[name]]
    print(
        f"Machine: {machine(load_at_start)}"
        + (" — quick mode: sizes too small to mean much" if args.quick else "")
        + (f" — {args.jobs} benchmarks at once" if args.jobs > 1 else "")
    )
    print()
    print(table(rows))
    print()
    print(notes(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
