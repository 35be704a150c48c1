"""Outages, told once and truly: the broker stopped under the SDK and under the
processor (and started again on its port), and the ClickHouse server cut off
under the processor. Nothing is lost that was accepted, nothing is committed
that was not written, and each outage is one line when it starts and one when
it ends."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

import dashfrog
from dashfrog import flow, schemas, step
from dashfrog._models import FlowFilter
from dashfrog._settings import set_settings
from dashfrog.runtime._broker import ensure_topics_sync
from dashfrog.streams import StatusLine, ensure_event_topics
from tests.conftest import consume_events
from tests.reliability.conftest import RestartableBroker, TcpCut
from tests.streams._helpers import (
    PARTITIONS,
    committed_offsets,
    expected_offsets,
    flow_events,
    pipeline_settings,
    produce,
    running,
    send_raw,
    wait_for,
)


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# -- the SDK --------------------------------------------------------------------


def test_sdk_reports_an_outage_once_with_true_drop_totals_and_tells_the_truth_at_exit(
    cut_broker: tuple[str, TcpCut], topic_prefix: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dashfrog import _producer

    bootstrap, broker_link = cut_broker
    # Drop reports every second instead of every ten, so the test sees several.
    monkeypatch.setattr(_producer, "_LOG_EVERY_S", 1.0)
    caplog.set_level(logging.INFO)
    topic = topic_prefix + "dashfrog.events"
    ensure_topics_sync(bootstrap, {topic: 3})
    dashfrog.setup(
        kafka_bootstrap=bootstrap, topic_prefix=topic_prefix, queue_size=400, linger_ms=5,
        exit_flush_timeout_s=1.0,
    )
    try:
        # Connected and sending before the outage (the case that used to log nothing).
        with flow.start(name="before", tenant="acme"):
            pass
        assert dashfrog.flush(10)
        assert dashfrog.stats()["sent"] == 2

        broker_link.cut()
        stopped = time.monotonic()
        emitted = 2
        for i in range(300):  # 4 events each: 1,200 events into a queue of 400
            with flow.start(name="during", tenant="acme", i=str(i)), step.start("s"):
                pass
            emitted += 4
        _wait(lambda: _messages(caplog, "cannot reach Kafka"), 15, "the outage warning")
        told_after = time.monotonic() - stopped
        dropped = dashfrog.stats()["dropped"]
        assert dropped == 1_200 - 400, dashfrog.stats()
        # The drop report that follows the last drop carries the true total.
        _wait(lambda: any(f"({dropped} in all)" in r.getMessage()
                          for r in _messages(caplog, "event queue full")), 10, "a drop report with the total")

        broker_link.restore()
        _wait(lambda: _messages(caplog, "answers again"), 30, "the SDK to reach Kafka again")
        outage_s = time.monotonic() - stopped
        assert dashfrog.flush(20)
        assert len(_messages(caplog, "cannot reach Kafka")) == 1  # once, not per attempt
        assert not [r for r in caplog.records if r.name.startswith("aiokafka")]
        back = _messages(caplog, "answers again")[0].getMessage()
        assert f"{dropped} events dropped since it last acknowledged a send ({dropped} in all)" in back

        # Everything accepted during the outage arrives; what was dropped is reported.
        found = consume_events(bootstrap, topic, emitted - dropped, timeout=30)
        assert len([e for e in found if e["flow_name"] == "during"]) == 1_200 - dropped
        assert len([e for e in found if e["flow_name"] == "before"]) == 2

        # Exit with the broker gone again and events queued: the message says they are lost.
        broker_link.cut()
        for _ in range(10):
            with flow.start(name="at-exit", tenant="acme"):
                pass
        dashfrog.shutdown(1.0)
        (last,) = _messages(caplog, "stopping with")
        queued = int(re.search(r"stopping with (\d+) events not sent", last.getMessage()).group(1))  # type: ignore[union-attr]
        assert queued == 20 and "They are lost" in last.getMessage()
        assert f"as are the {dropped} events dropped earlier" in last.getMessage()
        print(f"SDK outage: told after {told_after:.1f}s, outage {outage_s:.1f}s, {dropped} dropped of 1200")
    finally:
        dashfrog.shutdown(1.0)
        set_settings(None)


# -- the processor --------------------------------------------------------------


async def test_processor_reports_a_broker_outage_once_each_way_and_resumes(
    own_broker: RestartableBroker, topic_prefix: str, store: Any, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = pipeline_settings(own_broker.bootstrap, topic_prefix)
    first, second = flow_events(200), flow_events(200)
    sent = await produce(settings.bootstrap, settings.topic, first, PARTITIONS, per_message=50)
    async with running(settings, store, tmp_path) as processor:
        await wait_for(lambda: processor.stats.events >= len(first), 60, "first events written")
        status = StatusLine(processor)
        assert "lag" in await status.line()

        own_broker.stop()
        await wait_for(lambda: processor.broker.down_since is not None, 15, "the outage noticed")
        down_since = processor.broker.down_since
        assert down_since is not None
        line = await status.line()
        assert "broker unreachable" in line and "lag" not in line, line
        # A few seconds of outage: still one line, and none of aiokafka's.
        await wait_for(lambda: time.time() - down_since >= 5, 10, "five seconds of outage")
        gone = _messages(caplog, "cannot reach the Kafka broker")
        assert len(gone) == 1 and gone[0].levelname == "WARNING"
        noisy = [r for r in caplog.records if r.name.startswith("aiokafka") and r.levelno > logging.DEBUG]
        assert noisy == []

        own_broker.start()  # memory storage: topics and offsets are gone
        await ensure_event_topics(settings)
        await wait_for(lambda: processor.broker.down_since is None, 15, "the broker seen back")
        # The restarted broker numbers offsets from 0 again (a real Kafka never
        # reuses them): pad each partition past the offsets written before, or
        # the second events' writes would carry the first ones' dedup tokens.
        for partition, count in sent.items():
            for _ in range(count):
                await send_raw(settings.bootstrap, settings.topic, schemas.encode([]), partition=partition,
                               headers=schemas.headers())
        await produce(settings.bootstrap, settings.topic, second, PARTITIONS, per_message=50)
        await wait_for(lambda: processor.stats.events >= len(first) + len(second), 90, "events after the outage")
        assert len(_messages(caplog, "is back after")) == 1
        assert len(_messages(caplog, "cannot reach the Kafka broker")) == 1
        assert "lag" in await status.line()
    for events in (first, second):
        run = events[0]["labels"]["run"]
        rows = store.select("SELECT count() AS n FROM events WHERE labels['run'] = {r:String}", {"r": run})
        assert rows == [{"n": len(events)}]


# -- the store ------------------------------------------------------------------


async def test_storage_outage_commits_nothing_meanwhile_and_loses_nothing(
    broker: str, topic_prefix: str, server_store_url: tuple[str, TcpCut], tmp_path: Path
) -> None:
    from dashfrog.storage import open_store

    url, proxy = server_store_url
    store = open_store(url)
    store.migrate()
    settings = pipeline_settings(broker, topic_prefix)
    events = flow_events(600)
    chunks = [events[i : i + 100] for i in range(0, len(events), 100)]
    try:
        async with running(settings, store, tmp_path) as processor:
            sent = await produce(settings.bootstrap, settings.topic, chunks[0], PARTITIONS, per_message=20)
            await wait_for(lambda: processor.stats.events >= 100, 60, "first events written")
            group, topic = settings.processor_group, settings.topic
            await wait_for(
                lambda: _committed_is(broker, group, topic, expected_offsets(sent, PARTITIONS)), 10,
                "first offsets committed",
            )
            proxy.cut()
            cut_at = time.monotonic()
            for chunk in chunks[1:]:
                sent += await produce(settings.bootstrap, topic, chunk, PARTITIONS, per_message=20)
            await wait_for(lambda: processor.stats.write_failures >= 3, 30, "failed writes")
            before = await committed_offsets(broker, group, topic, PARTITIONS)
            # The endpoint stays away for 8 s in all; writes keep failing and
            # nothing past the last durable write is committed meanwhile.
            await wait_for(lambda: time.monotonic() - cut_at >= 8, 15, "eight seconds of outage")
            assert await committed_offsets(broker, group, topic, PARTITIONS) == before
            assert processor.stats.events == 100
            proxy.restore()
            await wait_for(lambda: processor.stats.events >= len(events), 60, "every event written")
            await wait_for(
                lambda: _committed_is(broker, group, topic, expected_offsets(sent, PARTITIONS)), 10,
                "all offsets committed",
            )
        run = events[0]["labels"]["run"]
        rows = store._query(
            "SELECT count() AS n, uniqExact(event_id) AS u FROM events FINAL WHERE labels['run'] = {r:String}",
            {"r": run},
        )
        assert [{k: int(v) for k, v in row.items()} for row in rows] == [{"n": len(events), "u": len(events)}]
        assert len(store.find_flows(FlowFilter.parse(labels={"run": run}, limit=1000)).flows) == 600
    finally:
        store.close()


async def _committed_is(broker: str, group: str, topic: str, expected: dict[int, int | None]) -> bool:
    return await committed_offsets(broker, group, topic, PARTITIONS) == expected



