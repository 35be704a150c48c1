"""dashfrog.metrics in the process: the API, its errors, aggregation, the series cap, gauges.

The transport (batches on the real broker) and the store are tested in
tests/client/test_metrics_transport.py, tests/storage/test_metrics_store.py
and tests/streams/test_metrics_pipeline.py.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import dashfrog
from dashfrog import _metrics, metrics
from dashfrog._settings import set_settings

_names = itertools.count()


def unique(prefix: str) -> str:
    """Metric names are per process: each test declares its own."""
    return f"{prefix}_{next(_names)}_{time.monotonic_ns()}"


@pytest.fixture(autouse=True)
def quiet_exporter() -> Iterator[None]:
    # No background export during a test (it would take the points under test)
    # and no sender: tests read the aggregates with collect().
    dashfrog.setup(metrics_interval_s=3600, kafka_bootstrap="127.0.0.1:1", exit_flush_timeout_s=0.1)
    yield
    # Stop the tests' gauge schedules and drop what they aggregated, so no
    # later test's sender gets these points.
    with _metrics._registry.lock:
        _metrics._registry.periodic.clear()
    _metrics._registry.collect()
    _collected.clear()
    dashfrog.shutdown(0.1)
    set_settings(None)


_collected: dict[str, list[dict[str, Any]]] = {}


def points_of(name: str) -> list[dict[str, Any]]:
    """The points collected for metric ``name`` since the last call for it
    (a collection takes every metric's: the others are kept for later calls)."""
    for metric in _metrics._registry.collect():
        _collected.setdefault(metric["name"], []).extend(metric["points"])
    return _collected.pop(name, [])


def by_series(
    points: list[dict[str, Any]],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]]:
    return {(p["tenant"], tuple(sorted(p["labels"].items()))): p for p in points}


# -- the API of the issue, unchanged ------------------------------------------------


def test_issue_sample_runs_as_written() -> None:
    api_calls = metrics.Counter(
        unique("api_calls"), labels=["method", "status"], pretty_name="API Calls", unit="count"
    )
    api_calls.add(1, tenant="acme-corp", method="POST", status="200")
    duration = metrics.Histogram(
        unique("request_duration_seconds"),
        labels=["endpoint"],
        pretty_name="Request Duration",
        unit="seconds",
    )
    duration.record(0.234, tenant="acme-corp", endpoint="/api/users")
    calls: list[Any] = []

    def quota(timeout_seconds: int):  # type: ignore[no-untyped-def]
        calls.append(timeout_seconds)
        yield metrics.GaugeValue(value=420, tenant="acme-corp", labels={"env": "prod"})

    name = unique("monthly_quota")
    monthly_quota = metrics.Gauge(
        name, labels=["env"], pretty_name="Monthly Quota", unit="requests"
    ).set_periodically(300, quota)
    assert isinstance(monthly_quota, metrics.Gauge)
    wait_until(lambda: calls, "the gauge callback ran")
    # Called with timeout_seconds= as a keyword: an int, the period (capped at 30 s).
    assert calls == [30]
    # Wait for the callback's value to be aggregated before collecting everything.
    wait_until(lambda: monthly_quota._metric.series, "the gauge sample is aggregated")
    collected = {m["name"]: m for m in _metrics._registry.collect()}
    (counted,) = collected[api_calls.name]["points"]
    assert counted["value"] == 1 and counted["tenant"] == "acme-corp"
    assert counted["labels"] == {"method": "POST", "status": "200"}
    assert collected[api_calls.name]["pretty_name"] == "API Calls"
    assert collected[api_calls.name]["label_names"] == ["method", "status"]
    (recorded,) = collected[duration.name]["points"]
    assert recorded["count"] == 1 and recorded["sum"] == 0.234
    (sampled,) = collected[name]["points"]
    assert sampled["value"] == 420 and sampled["labels"] == {"env": "prod"}
    assert collected[name]["kind"] == "gauge" and collected[name]["unit"] == "requests"


def wait_until(condition: Any, what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


# -- errors at the call site ---------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            lambda c: c.add(1, tenant="acme", method="GET", status="200", region="eu"),
            dashfrog.UndeclaredLabelError,
        ),
        (lambda c: c.add(1, tenant="acme", method="GET"), dashfrog.MissingLabelError),
        (
            lambda c: c.add(1, tenant="acme", method="GET", region="eu"),
            dashfrog.UndeclaredLabelError,
        ),
        (
            lambda c: c.add(-1, tenant="acme", method="GET", status="200"),
            dashfrog.NegativeIncrementError,
        ),
        (lambda c: c.add(1, tenant="", method="GET", status="200"), dashfrog.EmptyTenantError),
        (lambda c: c.add(1, tenant="   ", method="GET", status="200"), dashfrog.EmptyTenantError),
        (lambda c: c.add(1, tenant=None, method="GET", status="200"), dashfrog.EmptyTenantError),
        (
            lambda c: c.add("1", tenant="acme", method="GET", status="200"),
            dashfrog.MetricValueError,
        ),
        (
            lambda c: c.add(None, tenant="acme", method="GET", status="200"),
            dashfrog.MetricValueError,
        ),
        (
            lambda c: c.add(True, tenant="acme", method="GET", status="200"),
            dashfrog.MetricValueError,
        ),
        (
            lambda c: c.add(math.nan, tenant="acme", method="GET", status="200"),
            dashfrog.MetricValueError,
        ),
        (
            lambda c: c.add(math.inf, tenant="acme", method="GET", status="200"),
            dashfrog.MetricValueError,
        ),
        (
            lambda c: c.add(1, tenant="acme", method=["GET"], status="200"),
            dashfrog.InvalidArgumentError,
        ),
    ],
)
def test_counter_misuse_raises_a_precise_error_and_records_nothing(
    call: Any, error: type[Exception]
) -> None:
    counter = metrics.Counter(unique("calls"), labels=["method", "status"])
    with pytest.raises(error) as raised:
        call(counter)
    assert isinstance(raised.value, dashfrog.DashfrogError)
    assert str(raised.value)  # says what was wrong
    assert points_of(counter.name) == []


def test_the_error_message_names_the_labels() -> None:
    counter = metrics.Counter(unique("calls"), labels=["method", "status"])
    with pytest.raises(dashfrog.MissingLabelError, match="'status'"):
        counter.add(1, tenant="acme", method="GET")
    with pytest.raises(dashfrog.UndeclaredLabelError, match="'region'"):
        counter.add(1, tenant="acme", method="GET", status="1", region="eu")
    with pytest.raises(dashfrog.NegativeIncrementError, match="Gauge"):
        counter.add(-2, tenant="acme", method="GET", status="1")


@pytest.mark.parametrize("value", ["0.2", None, math.nan, -math.inf, object()])
def test_histogram_and_gauge_refuse_non_numbers(value: Any) -> None:
    histogram = metrics.Histogram(unique("h"))
    gauge = metrics.Gauge(unique("g"))
    with pytest.raises(dashfrog.MetricValueError):
        histogram.record(value, tenant="acme")
    with pytest.raises(dashfrog.MetricValueError):
        gauge.set(value, tenant="acme")
    # Negative values are fine for both.
    histogram.record(-1.5, tenant="acme")
    gauge.set(-3, tenant="acme")


def test_names_are_unique_per_process_unless_redeclared_identically() -> None:
    name = unique("orders")
    first = metrics.Counter(name, labels=["plan"], pretty_name="Orders", unit="count")
    again = metrics.Counter(name, labels=["plan"], pretty_name="Orders", unit="count")
    first.add(1, tenant="acme", plan="pro")
    again.add(2, tenant="acme", plan="pro")
    (point,) = points_of(name)
    assert point["value"] == 3  # one metric, two handles
    for other in (
        lambda: metrics.Histogram(name, labels=["plan"], pretty_name="Orders", unit="count"),
        lambda: metrics.Counter(name, labels=["tier"], pretty_name="Orders", unit="count"),
        lambda: metrics.Counter(name, labels=["plan"], pretty_name="Orders", unit="items"),
    ):
        with pytest.raises(dashfrog.MetricConflictError, match=name):
            other()


@pytest.mark.parametrize("name", ["", "1abc", "has space", "x" * 200, None])
def test_bad_metric_names_are_refused(name: Any) -> None:
    with pytest.raises(dashfrog.InvalidArgumentError):
        metrics.Counter(name)


@pytest.mark.parametrize("labels", ["method", ["tenant"], ["a", "a"], ["ok", ""]])
def test_bad_label_declarations_are_refused(labels: Any) -> None:
    with pytest.raises(dashfrog.InvalidArgumentError):
        metrics.Counter(unique("c"), labels=labels)


# -- aggregation -------------------------------------------------------------------


def test_counter_sums_per_tenant_and_label_values_and_label_values_become_text() -> None:
    counter = metrics.Counter(unique("calls"), labels=["method", "status"])
    counter.add(1, tenant="acme", method="GET", status="200")
    counter.add(2, tenant="acme", method="GET", status=200)  # same series as "200"
    counter.add(0.5, tenant="acme", method="POST", status="500")
    counter.add(4, tenant="globex", method="GET", status="200")
    series = by_series(points_of(counter.name))
    assert {k: p["value"] for k, p in series.items()} == {
        ("acme", (("method", "GET"), ("status", "200"))): 3,
        ("acme", (("method", "POST"), ("status", "500"))): 0.5,
        ("globex", (("method", "GET"), ("status", "200"))): 4,
    }


def test_each_point_covers_one_interval() -> None:
    counter = metrics.Counter(unique("calls"))
    counter.add(1, tenant="acme")
    (first,) = points_of(counter.name)
    assert points_of(counter.name) == []  # delta: nothing new, nothing sent
    counter.add(5, tenant="acme")
    (second,) = points_of(counter.name)
    assert second["value"] == 5
    assert first["start"] < first["time"] <= second["start"] < second["time"]
    assert first["point_id"] != second["point_id"]


def test_concurrent_adds_lose_nothing() -> None:
    counter = metrics.Counter(unique("calls"), labels=["worker"])
    histogram = metrics.Histogram(unique("sizes"))

    def work(n: int) -> None:
        for i in range(5000):
            counter.add(1, tenant="acme", worker=str(i % 3))
            histogram.record(i, tenant="acme")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(p["value"] for p in points_of(counter.name)) == 20_000
    (h,) = points_of(histogram.name)
    assert h["count"] == 20_000 and h["sum"] == 4 * sum(range(5000))


def bucket_counts(point: dict[str, Any]) -> tuple[dict[int, int], dict[int, int]]:
    pos = {point["positive_offset"] + i: c for i, c in enumerate(point["positive"]) if c}
    neg = {point["negative_offset"] + i: c for i, c in enumerate(point["negative"]) if c}
    return pos, neg


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_histogram_buckets_hold_each_value_as_opentelemetry_maps_it(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(0, 3) * rng.choice((1, 1, 1, -1)) for _ in range(2000)] + [
        0.0,
        0.0,
        1.0,
        2.0,
        0.25,
    ]
    histogram = metrics.Histogram(unique("h"))
    for v in values:
        histogram.record(v, tenant="acme")
    (point,) = points_of(histogram.name)
    assert point["count"] == len(values)
    assert point["sum"] == pytest.approx(sum(values))
    assert point["min"] == min(values) and point["max"] == max(values)
    assert point["zero_count"] == 2
    pos, neg = bucket_counts(point)
    scale = point["scale"]
    assert (
        len(point["positive"]) <= _metrics.MAX_BUCKETS
        and len(point["negative"]) <= _metrics.MAX_BUCKETS
    )
    # Every value lies in its bucket (b**i, b**(i+1)]; the counts add up.
    expected_pos: dict[int, int] = {}
    expected_neg: dict[int, int] = {}
    for v in values:
        if v == 0:
            continue
        index = _metrics._index(abs(v), scale)
        lo, hi = _metrics.bucket_bounds(index, scale)
        assert lo * (1 - 1e-12) < abs(v) <= hi * (1 + 1e-12)
        target = expected_pos if v > 0 else expected_neg
        target[index] = target.get(index, 0) + 1
    assert pos == expected_pos and neg == expected_neg


def test_exact_powers_of_two_are_the_upper_bound_of_their_bucket() -> None:
    for scale in (0, 3, 20):
        for value in (0.25, 1.0, 2.0, 1024.0):
            lo, hi = _metrics.bucket_bounds(_metrics._index(value, scale), scale)
            assert hi == pytest.approx(value) and lo < value
    # Below scale 0 only powers of the base (16 at scale -2) are bounds.
    for value in (1 / 16, 1.0, 16.0, 4096.0):
        lo, hi = _metrics.bucket_bounds(_metrics._index(value, -2), -2)
        assert hi == pytest.approx(value) and lo < value
    assert _metrics.bucket_bounds(_metrics._index(2.0, -2), -2) == (1.0, 16.0)


def test_a_narrow_histogram_keeps_a_fine_scale() -> None:
    histogram = metrics.Histogram(unique("h"))
    for v in (0.100, 0.101, 0.102, 0.2):
        histogram.record(v, tenant="acme")
    (point,) = points_of(histogram.name)
    assert point["scale"] >= 7  # one doubling in 160 buckets


def test_gauge_set_keeps_last_min_and_max() -> None:
    gauge = metrics.Gauge(unique("queue_length"), labels=["queue"])
    for v in (5, 9, 2, 7):
        gauge.set(v, tenant="acme", queue="imports")
    (point,) = points_of(gauge.name)
    assert (point["value"], point["min"], point["max"], point["count"]) == (7, 2, 9, 4)


# -- the series cap ------------------------------------------------------------------


def test_series_past_the_cap_go_to_one_overflow_series_and_are_counted() -> None:
    dashfrog.setup(metrics_interval_s=3600, kafka_bootstrap="127.0.0.1:1", metrics_max_series=10)
    counter = metrics.Counter(unique("calls"), labels=["user"])
    before = dashfrog.stats()["metrics_overflowed"]
    for i in range(50):
        counter.add(1, tenant=f"tenant-{i}", user=f"u{i}")
    counter.add(1, tenant="tenant-0", user="u0")  # an existing series still counts as itself
    points = points_of(counter.name)
    assert len(points) == 11
    overflow = [p for p in points if p["tenant"] == _metrics.OVERFLOW_TENANT]
    assert len(overflow) == 1 and overflow[0]["value"] == 40
    assert overflow[0]["labels"] == {"user": _metrics.OVERFLOW_VALUE}
    assert sum(p["value"] for p in points) == 51  # nothing lost, only merged
    assert dashfrog.stats()["metrics_overflowed"] - before == 40


def test_memory_is_bounded_by_the_series_cap() -> None:
    dashfrog.setup(metrics_interval_s=3600, kafka_bootstrap="127.0.0.1:1", metrics_max_series=100)
    histogram = metrics.Histogram(unique("h"), labels=["request"])
    for i in range(20_000):  # a label with unbounded values (a request id)
        histogram.record(i % 97 + 0.5, tenant="acme", request=str(i))
    metric = histogram._metric
    assert len(metric.series) == 100
    points = points_of(histogram.name)
    assert len(points) == 101 and sum(p["count"] for p in points) == 20_000


# -- gauge callbacks ---------------------------------------------------------------------


def test_a_callback_taking_kwargs_is_called_too() -> None:
    seen: list[dict[str, Any]] = []

    def sample(**kwargs: Any) -> list[metrics.GaugeValue]:
        seen.append(kwargs)
        return [metrics.GaugeValue(value=3, tenant="acme")]

    gauge = metrics.Gauge(unique("g")).set_periodically(60, sample)
    wait_until(lambda: gauge._metric.series, "its value is aggregated")
    assert seen[0] == {"timeout_seconds": 30}
    (point,) = points_of(gauge.name)
    assert point["value"] == 3


def test_a_callback_without_timeout_seconds_is_refused_at_once() -> None:
    gauge = metrics.Gauge(unique("g"))
    with pytest.raises(dashfrog.InvalidArgumentError, match="timeout_seconds"):
        gauge.set_periodically(60, lambda: [])
    with pytest.raises(dashfrog.InvalidArgumentError):
        gauge.set_periodically(0, lambda timeout_seconds: [])
    with pytest.raises(dashfrog.InvalidArgumentError):
        gauge.set_periodically(60, "not callable")  # type: ignore[arg-type]


def test_a_failing_or_slow_callback_is_logged_and_skipped_and_sampling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = {"bad": 0, "slow": 0, "good": 0}
    release = threading.Event()

    def bad(timeout_seconds: float) -> Iterator[metrics.GaugeValue]:
        calls["bad"] += 1
        yield metrics.GaugeValue(value=1, tenant="acme")
        raise RuntimeError("quota service down")

    def slow(timeout_seconds: float) -> list[metrics.GaugeValue]:
        calls["slow"] += 1
        release.wait(10)
        return [metrics.GaugeValue(value=2, tenant="acme")]

    def good(timeout_seconds: float) -> list[Any]:
        calls["good"] += 1
        return [metrics.GaugeValue(value=calls["good"], tenant="acme"), "not a GaugeValue"]

    caplog.set_level(logging.WARNING, logger="dashfrog")
    g_bad = metrics.Gauge(unique("bad")).set_periodically(0.05, bad)
    g_slow = metrics.Gauge(unique("slow")).set_periodically(0.05, slow, timeout_seconds=0.1)
    g_good = metrics.Gauge(unique("good")).set_periodically(0.05, good)
    wait_until(lambda: calls["bad"] >= 3 and calls["good"] >= 3, "callbacks ran several periods")
    wait_until(lambda: "ran past its 0.1 s timeout" in caplog.text, "the overrun is logged")
    assert calls["slow"] == 1  # never called again while it was still running
    # Stop the schedules, then let the slow call return, late.
    with _metrics._registry.lock:
        (slow_call,) = [p.running for p in _metrics._registry.periodic if p.gauge is g_slow]
        _metrics._registry.periodic.clear()
    release.set()
    assert slow_call is not None
    slow_call.join(5)
    assert "quota service down" in caplog.text
    assert "must yield metrics.GaugeValue" in caplog.text
    # The raising generator's values are dropped whole; the slow one's too
    # (returned after its timeout); the good one's are there.
    assert points_of(g_bad.name) == []
    assert points_of(g_slow.name) == []
    assert [p["value"] for p in points_of(g_good.name)] and dashfrog.stats()[
        "metrics_callback_errors"
    ] >= 3
    assert _metrics._registry._thread is not None and _metrics._registry._thread.is_alive()


def test_stop_periodically_ends_the_sampling() -> None:
    calls: list[float] = []

    def sample(timeout_seconds: float) -> list[metrics.GaugeValue]:
        calls.append(time.monotonic())
        return [metrics.GaugeValue(value=len(calls), tenant="acme")]

    gauge = metrics.Gauge(unique("g")).set_periodically(0.05, sample)
    wait_until(lambda: len(calls) >= 3, "a few periods sampled")
    assert gauge.stop_periodically() is gauge
    # Its schedule is gone: the sampling thread starts no more calls of it.
    with _metrics._registry.lock:
        assert all(p.gauge is not gauge for p in _metrics._registry.periodic)


def test_a_disabled_sdk_samples_nothing_until_enabled() -> None:
    dashfrog.setup(disabled=True, metrics_interval_s=3600, kafka_bootstrap="127.0.0.1:1")
    _metrics._registry.stop()
    thread = _metrics._registry._thread
    if thread is not None:
        thread.join(5)
    calls: list[int] = []
    gauge = metrics.Gauge(unique("g")).set_periodically(60, lambda timeout_seconds: calls.append(1) or [])
    assert not calls and (_metrics._registry._thread is None or not _metrics._registry._thread.is_alive())
    dashfrog.setup(metrics_interval_s=3600, kafka_bootstrap="127.0.0.1:1")
    wait_until(lambda: calls, "sampling starts once the SDK is enabled")
    gauge.stop_periodically()


def test_stats_has_the_metrics_counters() -> None:
    stats = dashfrog.stats()
    for key in (
        "metrics_points_queued",
        "metrics_points_dropped",
        "metrics_overflowed",
        "metrics_callback_errors",
    ):
        assert isinstance(stats[key], int)
