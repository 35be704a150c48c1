"""DashFrog's performance harness: ``python -m benchmarks [names...] [--quick]``.

Every benchmark measures the product and a baseline in the same run, in a
process of its own (so one benchmark's threads, imports and memory never
colour another's), and returns rows for one Markdown table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    title: str
    target: str


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("client", "benchmarks.client_overhead", "client overhead", "≤ 1.5x"),
        Benchmark("pipeline", "benchmarks.pipeline", "pipeline throughput", "≥ 50 % of raw"),
        Benchmark("freshness", "benchmarks.freshness", "freshness", "p99 ≤ 1 s"),
        Benchmark(
            "freshness-query",
            "benchmarks.freshness:run_during_query",
            "freshness during a 20 s query",
            "p99 ≤ 1.5x without",
        ),
        Benchmark("query", "benchmarks.query_latency", "query latency", "p50 ≤ 100 ms"),
        Benchmark("degraded", "benchmarks.degraded", "degraded mode", "≤ 2x / within bound"),
        Benchmark("production", "benchmarks.production", "production shape", "≤ 0.5x CPU / takeover bounds"),
        Benchmark("cli", "benchmarks.cli_help", "dashfrog --help", "≤ 500 ms"),
        Benchmark("charts", "benchmarks.charts", "chart queries", "≤ 4x stats"),
        Benchmark("metrics", "benchmarks.metrics", "metrics", "≤ 1x OTel / bounded / ≤ interval + 1 s"),
    )
}
