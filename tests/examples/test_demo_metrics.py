"""The demo app records a counter, histograms and a gauge per customer, as the seed's demo does."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import dashfrog
from dashfrog import _metrics
from tests.conftest import consume_events
from tests.examples.test_demo_app import load_demo


def test_demo_records_metrics_per_customer(sdk: dict) -> None:
    demo = load_demo()
    # The quota gauge samples in a thread of its own from the moment main()
    # schedules it; main() stops it on return, which on a busy machine can come
    # before that thread ran once. The test stops it itself after a sample.
    stop = demo.monthly_quota.stop_periodically
    demo.monthly_quota.stop_periodically = lambda: demo.monthly_quota
    try:
        outcomes = asyncio.run(demo.main(count=40, concurrency=8, fast=True, seed=11))
        deadline = time.monotonic() + 20
        while not demo.monthly_quota._metric.series:
            assert time.monotonic() < deadline, "the quota gauge never sampled"
            time.sleep(0.01)
    finally:
        demo.monthly_quota.stop_periodically = stop
        stop()
    assert dashfrog.flush(10)
    events = consume_events(sdk["bootstrap"], sdk["topic"], 40 * 4, timeout=30)
    batches = [e for e in events if e["kind"] == "metrics"]
    assert batches, "no metrics event reached the topic"
    points: dict[str, list[dict]] = {}
    kinds: dict[str, str] = {}
    for batch in batches:
        for metric in batch["metrics"]:
            points.setdefault(metric["name"], []).extend(metric["points"])
            kinds[metric["name"]] = metric["kind"]
    assert kinds == {
        "imports_total": "counter",
        "import_rows": "histogram",
        "import_duration_seconds": "histogram",
        "monthly_quota": "gauge",
    }
    by_outcome: Counter[str] = Counter()
    for p in points["imports_total"]:
        by_outcome[p["labels"]["outcome"]] += int(p["value"])
        assert p["tenant"] in demo.TENANTS and p["labels"]["source"] in demo.SOURCES
    assert dict(by_outcome) == outcomes
    assert sum(p["count"] for p in points["import_rows"]) == 40
    assert sum(p["count"] for p in points["import_duration_seconds"]) == 40
    assert {p["tenant"] for p in points["monthly_quota"]} == set(demo.TENANTS)
    # The demo's gauge schedule would go on sampling after the test.
    with _metrics._registry.lock:
        _metrics._registry.periodic.clear()
    _metrics._registry.collect()
