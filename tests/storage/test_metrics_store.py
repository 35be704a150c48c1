"""Metric points in the store: raw points, the per-minute projection, and the reads.

Every test runs on chDB and, when a server is reachable (see conftest), on a
ClickHouse server: the adapters share the DDL and the queries.
"""

from __future__ import annotations

import math
import os
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashfrog import _metrics, schemas
from dashfrog._exceptions import QueryError, SchemaError
from dashfrog._metric_models import MetricFilter
from dashfrog.storage import list_metrics, metric_info, metric_ratio, metric_series
from dashfrog.storage._metrics import error_bound, percentiles

# Points in the past, inside the retention TTL: 10:00 UTC today.
BASE = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=1)


def us(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def counter_point(tenant: str, value: float, at: datetime, **labels: str) -> dict[str, Any]:
    cell = [value, tenant, labels]
    return _metrics._point("counter", cell, us(at) - 10_000_000, us(at))


def gauge_point(
    tenant: str, last: float, lo: float, hi: float, at: datetime, **labels: str
) -> dict[str, Any]:
    return _metrics._point("gauge", [last, lo, hi, 3, tenant, labels], us(at) - 10_000_000, us(at))


def histogram_point(
    tenant: str, values: list[float], at: datetime, **labels: str
) -> dict[str, Any]:
    cell = _metrics._Histogram(tenant, labels)
    for v in values:
        cell.record(v)
    return _metrics._point("histogram", cell, us(at) - 10_000_000, us(at))


def event(
    name: str, kind: str, points: list[dict[str, Any]], labels: list[str] = (), **decl: str
) -> Any:  # type: ignore[assignment]
    """A ``metrics`` event as the SDK sends it (through the Avro round trip)."""
    made = schemas.make_event(
        "flow_started",  # replaced below: make_event takes lifecycle kinds
        flow_id="dashfrog-metrics/test",
        tenant="",
        flow_name="",
        timestamp=us(BASE),
        metrics=[
            {
                "name": name,
                "kind": kind,
                "pretty_name": decl.get("pretty_name", name),
                "unit": decl.get("unit", ""),
                "label_names": list(labels),
                "points": points,
            }
        ],
    )
    made["kind"] = "metrics"
    (decoded,) = schemas.decode(schemas.encode([made]))
    schemas.validate(decoded)
    return decoded


def series(store: Any, **query: Any) -> Any:
    query.setdefault("since", BASE - timedelta(minutes=5))
    query.setdefault("until", BASE + timedelta(minutes=30))
    found = metric_series(store, MetricFilter.parse(**query))
    assert found is not None
    return found


def dumps(rows: Any) -> list[dict[str, Any]]:
    """Rows compared up to float rounding: sums over the same values in
    another order may differ in the last bit."""
    return [
        {
            k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v
            for k, v in row.model_dump().items()
        }
        for row in rows
    ]


class MetricsContract:
    @pytest.fixture
    def store(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_counter_totals_and_rates_per_minute(self, store: Any) -> None:
        points = [
            counter_point("acme", 6, BASE + timedelta(seconds=10), method="GET", status="200"),
            counter_point("acme", 4, BASE + timedelta(seconds=20), method="GET", status="500"),
            counter_point(
                "acme", 30, BASE + timedelta(minutes=1, seconds=5), method="POST", status="200"
            ),
            counter_point("globex", 100, BASE + timedelta(seconds=30), method="GET", status="200"),
        ]
        store.insert_events(
            [event("api_calls", "counter", points, ["method", "status"], unit="count")], "t1"
        )
        acme = series(store, name="api_calls", tenant="acme")
        assert acme.kind == "counter" and acme.unit == "count"
        assert [(r.time, r.total, r.rate) for r in acme] == [
            (BASE, 10, 10 / 60),
            (BASE + timedelta(minutes=1), 30, 30 / 60),
        ]
        everyone = series(store, name="api_calls", step="5m")
        assert [(r.time, r.total) for r in everyone] == [(BASE, 140)]
        assert everyone[0].rate == pytest.approx(140 / 300)
        by_status = series(store, name="api_calls", group_by=["status"], labels={"method": "GET"})
        assert {(r.group["status"], r.total) for r in by_status} == {("200", 106), ("500", 4)}
        frame = by_status.to_pandas()
        assert list(frame.columns) == ["time", "status", "total", "rate"]

    def test_histogram_percentiles_are_within_the_stated_bound(self, store: Any) -> None:
        rng = random.Random(7)
        values = [[rng.lognormvariate(-2, 1.2) for _ in range(700)] for _ in range(3)]
        # Three processes, three points in one minute, at different scales.
        points = [
            histogram_point("acme", values[0], BASE + timedelta(seconds=5), endpoint="/a"),
            histogram_point("acme", values[1][:5], BASE + timedelta(seconds=15), endpoint="/a"),
            histogram_point(
                "acme", values[2] + [1e-5, 300.0], BASE + timedelta(seconds=25), endpoint="/a"
            ),
        ]
        assert len({p["scale"] for p in points}) > 1
        store.insert_events(
            [event("duration", "histogram", points, ["endpoint"], unit="seconds")], "t1"
        )
        (row,) = series(store, name="duration", tenant="acme")
        everything = sorted(values[0] + values[1][:5] + values[2] + [1e-5, 300.0])
        assert row.count == len(everything)
        assert row.sum == pytest.approx(sum(everything))
        assert row.avg == pytest.approx(sum(everything) / len(everything))
        assert (row.min, row.max) == (min(everything), max(everything))
        bound = series(store, name="duration", tenant="acme").error_bound
        assert bound == error_bound(min(p["scale"] for p in points))
        for q, got in ((0.5, row.p50), (0.95, row.p95), (0.99, row.p99)):
            exact = everything[math.ceil(q * len(everything)) - 1]
            assert got is not None and abs(got - exact) <= bound * exact * (1 + 1e-9), (
                q,
                got,
                exact,
            )

    def test_gauge_last_min_and_max(self, store: Any) -> None:
        points = [
            gauge_point("acme", 420, 400, 450, BASE + timedelta(seconds=10), env="prod"),
            gauge_point("acme", 380, 380, 420, BASE + timedelta(seconds=40), env="prod"),
        ]
        store.insert_events([event("monthly_quota", "gauge", points, ["env"])], "t1")
        (row,) = series(store, name="monthly_quota", tenant="acme")
        assert (row.last, row.min, row.max) == (380, 380, 450)

    def test_redelivery_and_any_order_change_nothing(self, store: Any) -> None:
        rng = random.Random(3)
        batch = [
            event(
                "orders",
                "counter",
                [
                    counter_point(
                        f"t{i % 3}", rng.randint(1, 9), BASE + timedelta(seconds=7 * i), plan="pro"
                    )
                ],
                ["plan"],
            )
            for i in range(20)
        ] + [
            event(
                "latency",
                "histogram",
                [
                    histogram_point(
                        "t0", [rng.random() for _ in range(50)], BASE + timedelta(seconds=9 * i)
                    )
                ],
            )
            for i in range(10)
        ]
        store.insert_events(batch, "first")
        exact = series(store, name="orders", group_by=["tenant"]).rows  # integer totals
        expected = [
            dumps(series(store, name=n, group_by=["tenant"])) for n in ("orders", "latency")
        ]
        # The same messages again: under the same token, under another token
        # (a batch cut differently after a crash), one by one in reverse order,
        # and mixed into a batch with new points.
        store.insert_events(batch, "first")
        store.insert_events(batch, "second")
        for i, e in enumerate(reversed(batch)):
            store.insert_events([e], f"single-{i}")
        assert [
            series(store, name=n, group_by=["tenant"]).model_dump()["rows"]
            for n in ("orders", "latency")
        ] == expected
        late = event(
            "orders",
            "counter",
            [counter_point("t0", 1000, BASE + timedelta(seconds=1), plan="pro")],
            ["plan"],
        )
        store.insert_events([*batch[:5], late], "third")
        after = {
            (r.time, r.group["tenant"]): r.total
            for r in series(store, name="orders", group_by=["tenant"])
        }
        before = {(r.time, r.group["tenant"]): r.total for r in exact}
        assert after == {k: v + (1000 if k == (BASE, "t0") else 0) for k, v in before.items()}

    def test_rebuild_reprojects_the_same_rows(self, store: Any) -> None:
        points = [
            counter_point("acme", i, BASE + timedelta(seconds=13 * i), k=str(i % 2))
            for i in range(1, 12)
        ]
        store.insert_events([event("jobs", "counter", points, ["k"])], "t1")
        store.insert_events([event("jobs", "counter", points[:4], ["k"])], "t2")
        rows = series(store, name="jobs", group_by=["k"])
        before = dumps(rows)
        store._execute("TRUNCATE TABLE metric_minutes")
        assert series(store, name="jobs").rows == []
        store.rebuild()
        assert series(store, name="jobs", group_by=["k"]).model_dump()["rows"] == before
        assert sum(r.total or 0 for r in rows) == sum(range(1, 12))

    def test_ratio_is_the_share_of_a_label_value(self, store: Any) -> None:
        points = [
            counter_point("acme", 90, BASE + timedelta(seconds=10), status="200"),
            counter_point("acme", 10, BASE + timedelta(seconds=20), status="500"),
            counter_point("acme", 5, BASE + timedelta(minutes=2), status="500"),
        ]
        store.insert_events([event("calls", "counter", points, ["status"])], "t1")
        found = metric_ratio(store, MetricFilter.parse(
            name="calls", where={"status": "500"}, since=BASE, until=BASE + timedelta(minutes=5)
        ))  # fmt: skip
        assert found is not None
        assert [(r.time, r.matching, r.total, r.ratio) for r in found] == [
            (BASE, 10, 100, 0.1),
            (BASE + timedelta(minutes=2), 5, 5, 1.0),
        ]
        store.insert_events([event("q", "gauge", [gauge_point("acme", 1, 1, 1, BASE)])], "t2")
        with pytest.raises(QueryError, match="gauge"):
            metric_ratio(store, MetricFilter.parse(name="q", where={"x": "y"}))

    def test_catalog_lists_declarations_scoped_by_tenant(self, store: Any) -> None:
        store.insert_events(
            [
                event("api_calls", "counter", [counter_point("acme", 1, BASE, method="GET")], ["method"],
                      pretty_name="API Calls", unit="count"),
                event("secret_metric", "gauge", [gauge_point("globex", 1, 1, 1, BASE)]),
            ],
            "t1",
        )  # fmt: skip
        everything = list_metrics(store)
        assert [m.name for m in everything] == ["api_calls", "secret_metric"]
        calls = everything[0]
        assert (calls.kind, calls.pretty_name, calls.unit, calls.labels) == (
            "counter",
            "API Calls",
            "count",
            ["method"],
        )
        assert [m.name for m in list_metrics(store, "acme")] == ["api_calls"]
        # Another tenant's metric is unknown, not empty, to a tenant's query.
        assert metric_info(store, "secret_metric", "acme") is None
        assert metric_series(store, MetricFilter.parse(name="secret_metric", tenant="acme")) is None
        assert list_metrics(store).to_pandas().shape[0] == 2

    def test_retention_applies_to_the_metric_tables(self, store: Any) -> None:
        rows = store._query(
            "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()"
            " AND name IN ('metric_points', 'metric_minutes', 'metric_catalog')"
        )
        assert len(rows) == 3
        assert all(f"toIntervalDay({store.retention_days})" in r["engine_full"] for r in rows)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("30s", "whole number of minutes"),
        ("90s", "whole number of minutes"),
        ("1w", "give e.g."),
        (True, "give e.g."),
    ],
)
def test_steps_are_whole_minutes(step: Any, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        MetricFilter.parse(name="x", step=step)


def test_filters_are_checked() -> None:
    assert MetricFilter.parse(name="x", step="5m").step_s == 300
    assert MetricFilter.parse(name="x", step=3600).step_s == 3600
    with pytest.raises(QueryError, match="buckets"):
        MetricFilter.parse(name="x", since=timedelta(days=30), step="1m")
    with pytest.raises(QueryError, match="not before"):
        MetricFilter.parse(name="x", since=BASE, until=BASE)
    with pytest.raises(QueryError, match="labels"):
        MetricFilter.parse(name="x", labels={"a": 1})
    with pytest.raises(QueryError, match="group_by"):
        MetricFilter.parse(name="x", group_by=["a", "a"])


def test_percentiles_from_buckets_walk_negative_zero_and_positive() -> None:
    cell = _metrics._Histogram("t", {})
    values = [-8.0, -1.0, 0.0, 0.0, 1.0, 2.0, 4.0, 1000.0]
    for v in values:
        cell.record(v)
    pos = dict(cell.pos)
    neg = dict(cell.neg)
    p10, p50, p99 = percentiles((0.1, 0.5, 0.99), cell.scale, pos, neg, cell.zero, -8.0, 1000.0)
    bound = error_bound(cell.scale)
    assert p10 == pytest.approx(-8.0, rel=bound)
    assert p50 == 0.0
    assert p99 == pytest.approx(1000.0, rel=bound)


class TestChdbMetrics(MetricsContract):
    @pytest.fixture
    def store(self, chdb_store: Any) -> Any:
        return chdb_store


class TestClickhouseMetrics(MetricsContract):
    @pytest.fixture
    def store(self, clickhouse_store: Any) -> Any:
        return clickhouse_store


if os.environ.get("DASHFROG_TEST_CLICKHOUSE_URL") is None:  # say why, once
    TestClickhouseMetrics.__doc__ = (
        "Skipped without DASHFROG_TEST_CLICKHOUSE_URL or Docker (see conftest)."
    )


def test_a_large_batch_is_written_in_chunks_and_counted_once(chdb_store: Any) -> None:
    rng = random.Random(9)
    points = [
        histogram_point(f"t{i % 7}", [rng.lognormvariate(0, 4) for _ in range(60)], BASE + timedelta(seconds=i % 59),
                        request=f"r{i}")
        for i in range(1500)
    ]  # fmt: skip
    batch = [event("wide", "histogram", points, ["request"])]
    executed: list[str] = []
    original = chdb_store._execute

    def spy(sql: str, params: Any = None) -> None:
        executed.append(sql)
        original(sql, params)

    chdb_store._execute = spy
    try:
        chdb_store.insert_events(batch, "big")
        chdb_store.insert_events(batch, "big-again")
    finally:
        chdb_store._execute = original
    inserts = [s for s in executed if s.startswith("INSERT INTO metric_points")]
    assert len(inserts) > 2  # several inserts per batch
    (row,) = series(chdb_store, name="wide")
    assert row.count == 1500 * 60


def test_the_contract_refuses_points_a_column_cannot_hold() -> None:
    good = event("c", "counter", [counter_point("t", 1, BASE)])
    for field, value in (
        ("count", -1),
        ("time", -5),
        ("start", 10**17),
        ("positive_offset", 2**31),
    ):
        broken = {
            **good,
            "metrics": [
                {
                    **good["metrics"][0],
                    "points": [{**good["metrics"][0]["points"][0], field: value}],
                }
            ],
        }
        with pytest.raises(SchemaError):
            schemas.validate(broken)
