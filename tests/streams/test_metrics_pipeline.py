"""Metrics end to end on the real parts: the SDK's sender, a tansu broker, the
processor, chDB, and dashfrog.query.metric."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import dashfrog
from dashfrog import _metrics, metrics, query, schemas
from dashfrog._exceptions import QueryError
from dashfrog._settings import Settings, set_settings
from tests.streams._helpers import pipeline_settings, read_all, running, send_raw, wait_for


@pytest.fixture
def settings(broker: str, topic_prefix: str) -> Iterator[Settings]:
    """Processor settings; the SDK in this process sends to the same topics
    and exports metrics every second."""
    dashfrog.setup(
        kafka_bootstrap=broker,
        topic_prefix=topic_prefix,
        service_name="metrics-test",
        linger_ms=5,
        metrics_interval_s=1.0,
    )
    try:
        yield pipeline_settings(broker, topic_prefix)
    finally:
        # The test's gauge schedule ends with it; what it sampled is not sent.
        with _metrics._registry.lock:
            _metrics._registry.periodic.clear()
        dashfrog.shutdown(5)
        _metrics._registry.collect()
        set_settings(None)


@pytest.fixture(scope="module")
def chdb_store(module_chdb_store: Any) -> Iterator[Any]:
    """The module's chDB store, which ``dashfrog.query`` reads too."""
    query.use_store(module_chdb_store)
    try:
        yield module_chdb_store
    finally:
        query.use_store(None)


def total(name: str, **labels: str) -> float:
    try:
        found = query.metric(name, since=timedelta(minutes=10), labels=labels or None, step="10m")
    except QueryError:  # no points yet
        return 0.0
    return sum(r.total or 0 for r in found)


async def test_recorded_values_reach_query_metric_through_the_pipeline(
    settings: Settings, chdb_store: Any, tmp_path: Path
) -> None:
    api_calls = metrics.Counter(
        "pipeline_api_calls", labels=["method", "status"], pretty_name="API Calls", unit="count"
    )
    duration = metrics.Histogram("pipeline_duration", labels=["endpoint"], unit="seconds")
    samples: list[float] = []

    def quota(timeout_seconds: int) -> Iterator[metrics.GaugeValue]:
        yield metrics.GaugeValue(value=420, tenant="acme-corp", labels={"env": "prod"})

    metrics.Gauge("pipeline_quota", labels=["env"], unit="requests").set_periodically(1, quota)
    async with running(settings, chdb_store, tmp_path) as processor:
        for i in range(200):
            api_calls.add(
                1, tenant="acme-corp", method="POST", status="500" if i % 4 == 0 else "200"
            )
            value = 0.01 * (i + 1)
            samples.append(value)
            duration.record(value, tenant="acme-corp", endpoint="/api/users")
        api_calls.add(5, tenant="globex", method="GET", status="200")
        # No flush: the SDK's interval export carries them.
        await wait_for(
            lambda: total("pipeline_api_calls") == 205, 30, "the counter's points written"
        )
        found = query.metric(
            "pipeline_duration", tenant="acme-corp", since=timedelta(minutes=10), step="10m"
        )
        (row,) = found.rows
        assert row.count == 200 and row.sum == pytest.approx(sum(samples))
        exact = sorted(samples)[99]
        assert (
            found.error_bound is not None
            and abs((row.p50 or 0) - exact) <= found.error_bound * exact + 1e-12
        )
        share = query.metric_ratio(
            "pipeline_api_calls",
            where={"status": "500"},
            tenant="acme-corp",
            since=timedelta(minutes=10),
            step="10m",
        )
        assert [r.ratio for r in share] == [0.25]
        await wait_for(
            lambda: any(
                r.last == 420 for r in query.metric("pipeline_quota", since=timedelta(minutes=10))
            ),
            30,
            "the gauge's sample written",
        )
        listed = {m.name: m for m in query.metrics(tenant="acme-corp")}
        assert listed["pipeline_api_calls"].pretty_name == "API Calls"
        assert listed["pipeline_api_calls"].labels == ["method", "status"]
        assert listed["pipeline_quota"].kind == "gauge"
        assert processor.stats.dead_lettered == 0
    stats = dashfrog.stats()
    assert stats["metrics_points_queued"] > 0 and stats["metrics_points_dropped"] == 0


async def test_metrics_travel_alone_and_redelivery_counts_nothing_twice(
    settings: Settings, chdb_store: Any, tmp_path: Path
) -> None:
    counter = metrics.Counter("pipeline_orders", labels=["plan"])
    for i in range(30):
        counter.add(2, tenant="acme-corp", plan="pro" if i % 3 else "free")
    with dashfrog.flow.start(name="checkout", tenant="acme-corp"):
        pass
    assert dashfrog.flush(10)
    messages = await read_all(settings.bootstrap, settings.topic, 2)
    (marked,) = [m for m in messages if schemas.METRICS_HEADER in list(m.headers)]
    (batch,) = schemas.decode(marked.value, dict(marked.headers))
    assert batch["kind"] == "metrics" and batch["tenant"] == ""
    assert {p["labels"]["plan"]: p["value"] for m in batch["metrics"] for p in m["points"]} == {
        "pro": 40,
        "free": 20,
    }
    assert all(schemas.METRICS_HEADER not in list(m.headers) for m in messages if m is not marked)

    async with running(settings, chdb_store, tmp_path / "first"):
        await wait_for(lambda: total("pipeline_orders") == 60, 30, "the points written once")
    # A second consumer group reads the topic again from the start (every
    # message redelivered, cut into other batches), and the SDK's message is
    # sent again as a producer retry would (another offset, same points).
    await send_raw(settings.bootstrap, settings.topic, marked.value, key=marked.key, partition=marked.partition,
                   headers=list(marked.headers))  # fmt: skip
    replay = settings.model_copy(update={"processor_group": settings.processor_group + "-replay"})
    async with running(replay, chdb_store, tmp_path / "replay") as processor:
        await wait_for(
            lambda: processor.stats.messages >= len(messages) + 1, 30, "the replay written"
        )
    assert total("pipeline_orders") == 60
    assert total("pipeline_orders", plan="free") == 20


def test_a_malformed_metrics_message_is_refused_by_the_contract() -> None:
    good = {
        "event_id": "e1", "kind": "metrics", "flow_id": "dashfrog-metrics/x", "tenant": "", "flow_name": "",
        "timestamp": int(datetime.now(UTC).timestamp() * 1e6),
        "metrics": [{"name": "m", "kind": "counter", "points": [{"point_id": "p", "tenant": "t", "start": 0, "time": 1}]}],
    }  # fmt: skip
    schemas.validate(good)  # type: ignore[arg-type]
    for broken, message in (
        ({**good, "metrics": []}, "no metrics"),
        ({**good, "metrics": [{**good["metrics"][0], "kind": "summary"}]}, "kind 'summary'"),
        (
            {
                **good,
                "metrics": [{**good["metrics"][0], "points": [{"point_id": "p", "tenant": ""}]}],
            },
            "empty point_id or tenant",
        ),
        ({**good, "flow_id": ""}, "empty flow_id"),
    ):
        with pytest.raises(dashfrog.SchemaError, match=message):
            schemas.validate(broken)  # type: ignore[arg-type]


def test_points_aggregated_before_exit_are_sent_at_exit(broker: str, topic_prefix: str) -> None:
    import os
    import subprocess
    import sys

    from dashfrog.runtime._broker import ensure_topics_sync
    from tests.conftest import consume_events

    topic = topic_prefix + "dashfrog.events"
    ensure_topics_sync(broker, {topic: 1})
    program = (
        "from dashfrog import metrics\n"
        "c = metrics.Counter('exit_calls', labels=['k'])\n"
        "for i in range(10): c.add(1, tenant='acme-corp', k='v')\n"
        # No flush: the interval (an hour) never comes; interpreter exit sends them.
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHFROG_")}
    env |= {
        "DASHFROG_KAFKA_BOOTSTRAP": broker,
        "DASHFROG_TOPIC_PREFIX": topic_prefix,
        "DASHFROG_METRICS_INTERVAL_S": "3600",
    }
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (batch,) = consume_events(broker, topic, 1, timeout=20)
    assert batch["kind"] == "metrics"
    ((point,),) = [m["points"] for m in batch["metrics"] if m["name"] == "exit_calls"]
    assert (point["tenant"], point["value"]) == ("acme-corp", 10)


async def test_a_bad_metrics_message_is_dead_lettered_and_the_good_one_written(
    settings: Settings, chdb_store: Any, tmp_path: Path
) -> None:
    from dashfrog.streams import DLQ_REASON

    good = metrics.Counter("pipeline_dlq_ok")
    good.add(7, tenant="acme-corp")
    (batch,) = [m for m in _metrics._registry.collect() if m["name"] == "pipeline_dlq_ok"]
    event = {
        "event_id": "ok", "kind": "metrics", "flow_id": "dashfrog-metrics/t", "tenant": "", "flow_name": "",
        "timestamp": int(datetime.now(UTC).timestamp() * 1e6), "metrics": [batch],
    }  # fmt: skip
    bad = {**event, "event_id": "bad", "metrics": [{**batch, "kind": "summary"}]}
    headers = [*schemas.headers(), schemas.METRICS_HEADER]
    await send_raw(settings.bootstrap, settings.topic, schemas.encode([bad]), headers=headers)
    await send_raw(settings.bootstrap, settings.topic, schemas.encode([event]), headers=headers)
    async with running(settings, chdb_store, tmp_path) as processor:
        await wait_for(lambda: total("pipeline_dlq_ok") == 7, 30, "the good points written")
        await wait_for(
            lambda: processor.stats.dead_lettered == 1, 30, "the bad message dead-lettered"
        )
    (dead,) = await read_all(settings.bootstrap, settings.dlq, 1)
    assert b"kind 'summary'" in dict(dead.headers)[DLQ_REASON]
