"""The processor against a real tansu broker and the real chDB store."""

from __future__ import annotations

import asyncio
import copy
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest

from dashfrog import schemas
from dashfrog._models import FlowFilter
from dashfrog._settings import Settings
from dashfrog.streams import (
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    decode_message,
    dedup_token,
    ensure_event_topics,
)
from dashfrog.streams._batch import offset_ranges
from tests.streams._helpers import (
    PARTITIONS,
    FlakyStore,
    committed_offsets,
    events_written,
    expected_offsets,
    flow_events,
    pipeline_settings,
    produce,
    read_all,
    running,
    send_raw,
    wait_for,
    worker_process,
)


@pytest.fixture
def settings(broker: str, topic_prefix: str) -> Settings:
    return pipeline_settings(broker, topic_prefix)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="module")
def chdb_store(store_dir: Path) -> Iterator[Any]:
    """One chDB store for the module: chDB allows one open session per process."""
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{store_dir / 'db'}")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def flows_by_id(store: Any, events: list[schemas.Event]) -> dict[str, Any]:
    """What queries return for the flows of ``events`` (one run label), by flow id."""
    run = events[0]["labels"]["run"]
    found = store.find_flows(FlowFilter.parse(labels={"run": run}, limit=10_000))
    return {flow.flow_id: flow for flow in found}


# -- pure parts ---------------------------------------------------------------


def test_decode_message_splits_invalid_events_from_valid_ones() -> None:
    good = flow_events(1)
    bad = {**good[0], "event_id": "x", "kind": "flow_exploded"}
    item = decode_message("t", 2, 7, b"k", schemas.encode([*good, bad]), schemas.headers())
    assert [e["event_id"] for e in item.events] == [e["event_id"] for e in good]
    assert item.reason is not None and "flow_exploded" in item.reason and "1 of 5" in item.reason
    assert [e["event_id"] for e in schemas.decode(item.dlq_value or b"")] == ["x"]

    junk = decode_message("t", 0, 1, None, b"not avro at all", None)
    assert junk.events == [] and junk.reason and junk.reason.startswith("undecodable")
    assert junk.dlq_value == b"not avro at all"


def test_dedup_token_is_a_function_of_the_offset_ranges() -> None:
    a = [decode_message("t", p, o, None, b"", None) for p, o in [(0, 5), (1, 9), (0, 6)]]
    b = [decode_message("t", p, o, None, b"", None) for p, o in [(1, 9), (0, 6), (0, 5)]]
    assert dedup_token(offset_ranges(a)) == dedup_token(offset_ranges(b))
    c = [decode_message("t", p, o, None, b"", None) for p, o in [(0, 5), (0, 6), (0, 7)]]
    assert dedup_token(offset_ranges(a)) != dedup_token(offset_ranges(c))


# -- against the broker and chDB ------------------------------------------------


async def test_events_become_rows(settings: Settings, chdb_store: Any, tmp_path: Path) -> None:
    events = flow_events(300, fail_every=10)
    flow_ids = {e["flow_id"] for e in events}
    sent = await produce(settings.bootstrap, settings.topic, events, PARTITIONS, per_message=50)
    async with running(settings, chdb_store, tmp_path) as processor:
        await wait_for(lambda: processor.stats.events >= len(events), 30, "all events written")
        rows = flows_by_id(chdb_store, events)
        assert set(rows) == flow_ids
        assert sum(1 for r in rows.values() if r.status == "failed") == 30
        assert all(r.steps_ended == 1 for r in rows.values())
        # Offsets are committed once the writes are durable.
        ends = expected_offsets(sent, PARTITIONS)

        async def all_committed() -> bool:
            done = await committed_offsets(settings.bootstrap, settings.processor_group, settings.topic, PARTITIONS)
            return done == ends

        await wait_for(all_committed, 10, "offsets committed up to the end")


async def test_bad_messages_go_to_the_dlq_and_the_worker_keeps_going(
    settings: Settings, chdb_store: Any, tmp_path: Path
) -> None:
    good = flow_events(20)
    bad_event = {**flow_events(1)[0], "tenant": ""}
    async with running(settings, chdb_store, tmp_path) as processor:
        junk_offset = await send_raw(settings.bootstrap, settings.topic, b"\x00garbage", partition=1)
        mixed_offset = await send_raw(
            settings.bootstrap, settings.topic, schemas.encode([good[0], bad_event]), partition=2
        )
        await produce(settings.bootstrap, settings.topic, good[1:], PARTITIONS, per_message=5)
        await wait_for(lambda: processor.stats.events >= len(good), 30, "good events written")
        assert processor.stats.dead_lettered == 2
        assert len(flows_by_id(chdb_store, good)) == 20

    dead = await read_all(settings.bootstrap, settings.dlq, 2)
    assert len(dead) == 2
    by_partition = {int(dict(m.headers)[DLQ_PARTITION]): m for m in dead}
    junk, mixed = by_partition[1], by_partition[2]
    junk_headers, mixed_headers = dict(junk.headers), dict(mixed.headers)
    assert junk.value == b"\x00garbage"
    assert junk_headers[DLQ_REASON].startswith(b"undecodable")
    assert junk_headers[DLQ_TOPIC] == settings.topic.encode()
    assert junk_headers[DLQ_OFFSET] == str(junk_offset).encode()
    assert mixed_headers[DLQ_OFFSET] == str(mixed_offset).encode()
    assert b"empty tenant" in mixed_headers[DLQ_REASON]
    assert [e["event_id"] for e in schemas.decode(mixed.value)] == [bad_event["event_id"]]


async def test_unreadable_bodies_and_other_writer_schemas(
    settings: Settings, chdb_store: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store reads bodies undecoded: a body that is not Avro behind a valid
    prefix is decoded here, dead-lettered, and its batch's other messages are
    still written; an older SDK's messages are written with the defaults."""
    good = flow_events(6)
    older = json.loads(schemas.schema_json())
    fields = older["fields"][0]["type"]["items"]["fields"]
    fields[:] = [f for f in fields if f["name"] not in ("host", "sdk_version")]
    old_events = [{k: v for k, v in e.items() if k not in ("host", "sdk_version")} for e in flow_events(3)]
    old_value = schemas.encode(old_events, schema=fastavro.parse_schema(copy.deepcopy(older)))
    broken = schemas.encode(good[:1])[:10] + b"\xff\xff\xff\xff\x0fnot avro"
    async with running(settings, chdb_store, tmp_path) as processor:
        for value, headers in (
            (schemas.encode(good[:12]), schemas.headers()),
            (broken, schemas.headers()),
            (schemas.encode(good[12:]), schemas.headers()),
            (old_value, [(schemas.SCHEMA_HEADER, json.dumps(older).encode())]),
        ):
            offset = await send_raw(settings.bootstrap, settings.topic, value, partition=0, headers=headers)
            if value is broken:
                broken_offset = offset
        await wait_for(
            lambda: processor.stats.events >= len(good) + len(old_events), 30, "readable events written"
        )
        assert processor.stats.dead_lettered == 1
    assert "decoding them here" in caplog.text  # the store refused the body, not the agent
    assert len(flows_by_id(chdb_store, good)) == 6
    old_rows = chdb_store.select(
        "SELECT DISTINCT host, sdk_version FROM events WHERE flow_id IN {ids:Array(String)}",
        {"ids": sorted({e["flow_id"] for e in old_events})},
    )
    assert old_rows == [{"host": "", "sdk_version": ""}]
    (dead,) = await read_all(settings.bootstrap, settings.dlq, 1)
    headers = dict(dead.headers)
    assert dead.value == broken
    assert headers[DLQ_REASON].startswith(b"undecodable")
    assert headers[DLQ_OFFSET] == str(broken_offset).encode()


async def test_offsets_are_never_committed_past_an_unwritten_message(
    settings: Settings, chdb_store: Any, tmp_path: Path
) -> None:
    store = FlakyStore(chdb_store)
    first, second = flow_events(40), flow_events(40)
    group, topic = settings.processor_group, settings.topic
    async with running(settings, store, tmp_path) as processor:
        sent = await produce(settings.bootstrap, topic, first, PARTITIONS, per_message=10)
        await wait_for(lambda: processor.stats.events >= len(first), 30, "first events written")
        ends = expected_offsets(sent, PARTITIONS)

        async def committed_to(expected: dict[int, int | None]) -> bool:
            return await committed_offsets(settings.bootstrap, group, topic, PARTITIONS) == expected

        await wait_for(lambda: committed_to(ends), 10, "first offsets committed")

        store.failing.set()
        sent += await produce(settings.bootstrap, topic, second, PARTITIONS, per_message=10)
        await wait_for(lambda: store.failures >= 4, 30, "several failed writes")
        # The worker keeps retrying: nothing new is acked, and several commit
        # intervals later nothing past the written messages is committed.
        await asyncio.sleep(3 * processor.app.conf.broker_commit_interval)
        assert await committed_offsets(settings.bootstrap, group, topic, PARTITIONS) == ends
        assert processor.stats.events == len(first)
    # Stopped while the write still failed: still nothing committed past it.
    assert await committed_offsets(settings.bootstrap, group, topic, PARTITIONS) == ends

    # A new worker picks the unwritten messages up again and writes them once.
    store.failing.clear()
    async with running(settings, store, tmp_path) as processor:
        await wait_for(lambda: processor.stats.events >= len(second), 30, "second events written")
        final = expected_offsets(sent, PARTITIONS)
        await wait_for(lambda: committed_to(final), 10, "second offsets committed")
    assert len(flows_by_id(chdb_store, first)) == 40
    assert len(flows_by_id(chdb_store, second)) == 40


async def test_two_thousand_flows_across_ten_tenants_arrive_complete(
    settings: Settings, chdb_store: Any, tmp_path: Path
) -> None:
    events = flow_events(2000, tenants=10, steps=3, fail_every=7)
    await produce(settings.bootstrap, settings.topic, events, PARTITIONS, per_message=500)
    async with running(settings, chdb_store, tmp_path) as processor:
        await wait_for(lambda: processor.stats.events >= len(events), 60, "all events written")
    rows = flows_by_id(chdb_store, events)
    assert set(rows) == {e["flow_id"] for e in events}
    per_tenant: dict[str, int] = {}
    for row in rows.values():
        per_tenant[row.tenant] = per_tenant.get(row.tenant, 0) + 1
    assert per_tenant == {f"tenant-{i}": 200 for i in range(10)}
    expected_failed = sum(1 for i in range(2000) if i % 7 == 0)
    assert sum(1 for r in rows.values() if r.status == "failed") == expected_failed
    assert all(r.steps_started == r.steps_ended == 3 and r.ended_at for r in rows.values())
    failed_steps = {r.error.step_name for r in rows.values() if r.status == "failed" and r.error}
    assert failed_steps == {"step2"}


# -- crash and restart ------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(
    settings: Settings, tmp_path: Path
) -> None:
    store_url = f"chdb://{tmp_path / 'crash-db'}"
    events = flow_events(6000, tenants=10, steps=2, fail_every=5)
    log = tmp_path / "worker.log"
    await ensure_event_topics(settings)
    # Small messages so the first worker is surely killed between writes of one run.
    sent = await produce(settings.bootstrap, settings.topic, events[: len(events) // 2], PARTITIONS, per_message=20)
    worker = worker_process(settings, store_url, log, PARTITIONS)
    try:
        await wait_for(lambda: events_written(log) > 0 or worker.poll() is not None, 60, "first writes")
        assert worker.poll() is None, log.read_text()
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    written_before_kill = events_written(log)
    assert 0 < written_before_kill < len(events)

    sent += await produce(settings.bootstrap, settings.topic, events[len(events) // 2 :], PARTITIONS, per_message=20)
    log.write_text("")
    worker = worker_process(settings, store_url, log, PARTITIONS)
    try:
        final = expected_offsets(sent, PARTITIONS)

        async def caught_up() -> bool:
            assert worker.poll() is None, log.read_text()
            done = await committed_offsets(settings.bootstrap, settings.processor_group, settings.topic, PARTITIONS)
            return done == final

        await wait_for(caught_up, 90, "the restarted worker to commit everything")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()

    # Read what queries return, in a child process: this one already has a chDB session open.
    check = subprocess.run(
        [sys.executable, "-c", _CHECK, store_url, events[0]["labels"]["run"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    flows, failed, steps, raw_events, distinct_events = (int(x) for x in check.stdout.split())
    assert flows == 6000
    assert failed == sum(1 for i in range(6000) if i % 5 == 0)
    assert steps == 6000 * 2
    assert raw_events == distinct_events == len(events)


_CHECK = """
import sys
from dashfrog.query import FlowFilter
from dashfrog.storage import open_store
store = open_store(sys.argv[1])
flows = store.find_flows(FlowFilter.parse(labels={"run": sys.argv[2]}, limit=10_000)).flows
raw = store.select("SELECT count() AS n, uniqExact(event_id) AS u FROM events FINAL")[0]
print(
    len(flows),
    sum(1 for f in flows if f.status == "failed"),
    sum(f.steps_ended for f in flows if f.steps_started == f.steps_ended),
    raw["n"],
    raw["u"],
)
store.close()
"""


def test_store_urls_are_printed_without_their_password() -> None:
    from dashfrog.runtime import redact

    assert redact("clickhouse://app:s3cret@db:8123/dashfrog") == "clickhouse://app:***@db:8123/dashfrog"
    assert redact("chdb://.dashfrog/chdb") == "chdb://.dashfrog/chdb"
