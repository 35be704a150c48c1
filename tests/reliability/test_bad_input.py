"""Every class of bad input goes to the DLQ topic and the dead_letters table,
the good messages around it are all written, and no message stalls a partition:
not even one too big for the DLQ, which goes there as a reference."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from dashfrog import schemas
from dashfrog._settings import Settings
from dashfrog.streams import DLQ_OFFSET, DLQ_PARTITION, DLQ_REFERENCE, DLQ_SIZE
from tests.streams._helpers import (
    flow_events,
    pipeline_settings,
    read_all,
    running,
    send_raw,
    wait_for,
)


@pytest.fixture(scope="module", params=["chdb", "clickhouse"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The embedded store, and a ClickHouse server's when DASHFROG_TEST_CLICKHOUSE_URL is set."""
    from urllib.parse import urlsplit, urlunsplit

    from dashfrog.storage import open_store

    if request.param == "chdb":
        url = f"chdb://{tmp_path_factory.mktemp('chdb') / 'db'}"
    else:
        base = os.environ.get("DASHFROG_TEST_CLICKHOUSE_URL")
        if not base:
            pytest.skip("needs a ClickHouse server: set DASHFROG_TEST_CLICKHOUSE_URL (CI runs tools/clickhouse-http)")
        url = urlunsplit(urlsplit(base)._replace(path=f"/dashfrog_dlq_{uuid.uuid4().hex[:10]}"))
    store = open_store(url)
    store.migrate()
    try:
        yield store
    finally:
        if request.param != "chdb":
            store._execute(f"DROP DATABASE IF EXISTS `{store.database}`")
        store.close()


def _other_schema_message() -> tuple[bytes, list[tuple[str, bytes]]]:
    """A well-formed Avro single-object message of a schema that is not DashFrog's."""
    other = {
        "type": "record",
        "name": "EventBatch",
        "namespace": "someone.else",
        "fields": [{"name": "events", "type": {"type": "array", "items": {
            "type": "record", "name": "Row", "fields": [{"name": "price", "type": "double"}]}}}],
    }
    value = schemas.encode([{"price": 1.5}], schema=fastavro.parse_schema(other))  # type: ignore[list-item]
    return value, [(schemas.SCHEMA_HEADER, json.dumps(other).encode())]


def bad_inputs() -> dict[str, tuple[bytes, list[tuple[str, bytes]] | None]]:
    """Each class of bad message: name → (value, headers)."""
    good = schemas.encode(flow_events(3))
    prefix = good[:10]  # C3 01 + the current schema's fingerprint
    event = schemas.encode([{**flow_events(1)[0], "tenant": "QQQ"}])
    return {
        "random bytes": (b"\x00" + os.urandom(300), None),
        "empty": (b"", None),
        "truncated": (good[: len(good) // 2], schemas.headers()),
        "unknown fingerprint": (b"\xc3\x01" + os.urandom(8) + good[10:], None),
        "other schema": _other_schema_message(),
        # An array block claiming a billion events, then a string claiming 2^40 bytes.
        "lying count": (prefix + schemas.encode_long(1_000_000_000) + b"\x02ab", schemas.headers()),
        "lying length": (prefix + schemas.encode_long(1) + schemas.encode_long(1 << 40) + b"x" * 20, schemas.headers()),
        # UTF-8 of a lone surrogate (U+D800) where the tenant is: not valid UTF-8.
        "lone surrogate": (event.replace(b"QQQ", b"\xed\xa0\x80"), schemas.headers()),
        # 1.5 MB behind a valid prefix: too big for the DLQ's 1 MB message limit.
        "1.5 MB invalid": (prefix + b"\xff" * 1_500_000, schemas.headers()),
    }


async def test_each_bad_input_class_is_dead_lettered_and_good_messages_around_it_written(
    broker: str, topic_prefix: str, store: Any, tmp_path: Path
) -> None:
    settings = pipeline_settings(broker, topic_prefix)
    bad = bad_inputs()
    good = flow_events(40)
    per = len(good) // (len(bad) + 1)
    offsets: dict[str, int] = {}
    async with running(settings, store, tmp_path) as processor:
        # Bad and good interleaved on one partition: a bad message stalling it
        # would keep every good one after it out of the store.
        for i, (name, (value, headers)) in enumerate(bad.items()):
            chunk = good[i * per : (i + 1) * per]
            await send_raw(settings.bootstrap, settings.topic, schemas.encode(chunk), headers=schemas.headers())
            offsets[name] = await _send_big(settings, value, headers)
        await send_raw(settings.bootstrap, settings.topic, schemas.encode(good[len(bad) * per :]),
                       headers=schemas.headers())
        await wait_for(
            lambda: processor.stats.events >= len(good) and processor.stats.dead_lettered >= len(bad),
            60,
            "good events written and bad messages dead-lettered",
        )
        assert processor.stats.events == len(good)
        assert processor.stats.dead_lettered == len(bad)
        # Offsets move on: the processor has written past every message.
        # A dead letter is counted when it is sent; its batch is done once the
        # dead_letters row is written too, which the one-call-at-a-time server
        # stand-in can take a while to do on a loaded machine.
        end = 2 * len(bad) + 1
        await wait_for(lambda: processor.done.get((settings.topic, 0), 0) == end, 60,
                       lambda: f"partition 0 done to offset {end} (done: {processor.done})")

    run = good[0]["labels"]["run"]
    rows = store.select(
        "SELECT count() AS n FROM events WHERE has(mapKeys(labels), 'run') AND labels['run'] = {r:String}",
        {"r": run},
    )
    assert rows == [{"n": len(good)}]

    # The dead_letters table: one row per bad message, with where it came from.
    letters = {(d["partition"], d["offset"]): d for d in store.dead_letters(limit=100, topic=settings.topic)}
    assert {offset for (_, offset) in letters} == set(offsets.values())
    for name, offset in offsets.items():
        letter = letters[(0, offset)]
        value = bad[name][0]
        assert letter["size"] == len(value), name
        assert base64.b64decode(letter["head_base64"]) == value[:1024], name
        assert letter["reason"].startswith(("undecodable", "invalid")), (name, letter["reason"])
        assert letter["in_dlq"] == ("reference" if name == "1.5 MB invalid" else "whole"), name

    # The DLQ topic: the whole message, or a reference for the one too big.
    dead = await read_all(settings.bootstrap, settings.dlq, len(bad))
    by_offset = {int(dict(m.headers)[DLQ_OFFSET]): m for m in dead}
    assert set(by_offset) == set(offsets.values())
    for name, offset in offsets.items():
        message = by_offset[offset]
        headers = dict(message.headers)
        assert headers[DLQ_PARTITION] == b"0"
        if name == "1.5 MB invalid":
            assert headers[DLQ_REFERENCE] == b"1" and headers[DLQ_SIZE] == b"1500010"
            reference = json.loads(message.value)
            assert reference["offset"] == offset and reference["size"] == 1_500_010
            assert "MessageSizeTooLarge" in reference["dlq_refused"]
            assert base64.b64decode(reference["head_base64"]) == bad[name][0][:1024]
        elif name == "lone surrogate":
            # The message's valid events would be written; this one has none.
            assert message.value in (bad[name][0], b""), name
        else:
            assert message.value == bad[name][0], name

    # Redelivery (a new consumer group reads the topic again): nothing doubles.
    again = pipeline_settings(broker, topic_prefix, processor_group=f"{topic_prefix}again")
    async with running(again, store, tmp_path) as processor:
        await wait_for(lambda: processor.stats.dead_lettered >= len(bad) and processor.stats.events >= len(good),
                       60, "everything processed a second time")
    assert len(store.dead_letters(limit=100, topic=settings.topic)) == len(bad)
    assert store.select(
        "SELECT count() AS n FROM events WHERE labels['run'] = {r:String}", {"r": run}
    ) == [{"n": len(good)}]

    _check_cli_and_api(store, settings, offsets)


async def _send_big(settings: Settings, value: bytes, headers: list[tuple[str, bytes]] | None) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, max_request_size=4_000_000)
    await producer.start()
    try:
        meta = await producer.send_and_wait(settings.topic, value, key=b"k", partition=0, headers=headers)
        return int(meta.offset)
    finally:
        await producer.stop()


def _check_cli_and_api(store: Any, settings: Settings, offsets: dict[str, int]) -> None:
    """`dashfrog dlq` and GET /api/dead-letters show the same rows; admin only."""
    from pydantic import SecretStr

    from dashfrog import query
    from dashfrog.runtime._cli import main
    from dashfrog.web import create_app

    query.use_store(store)
    try:
        result = CliRunner().invoke(main, ["dlq", "--json", "--topic", settings.topic, "--limit", "100"])
        assert result.exit_code == 0, result.output
        shown = [json.loads(line) for line in result.output.splitlines()]
        assert sorted(r["offset"] for r in shown) == sorted(offsets.values())
        table = CliRunner().invoke(main, ["dlq", "--reason", "undecodable", "--limit", "3"])
        assert table.exit_code == 0 and table.output.startswith("AT"), table.output
        assert len(table.output.splitlines()) == 4
    finally:
        query.use_store(None)

    api_settings = settings.model_copy(
        update={"admin_token": SecretStr("admin-secret"), "tenant_tokens": "tenant-1:tenant-secret"}
    )
    with TestClient(create_app(store, api_settings)) as client:
        admin = {"Authorization": "Bearer admin-secret"}
        answer = client.get("/api/dead-letters", params={"topic": settings.topic, "limit": 100}, headers=admin)
        assert answer.status_code == 200, answer.text
        assert sorted(r["offset"] for r in answer.json()["dead_letters"]) == sorted(offsets.values())
        one = client.get("/api/dead-letters", params={"partition": 0, "limit": 1}, headers=admin)
        assert len(one.json()["dead_letters"]) == 1
        tenant = client.get("/api/dead-letters", headers={"Authorization": "Bearer tenant-secret"})
        assert tenant.status_code == 403 and "admin" in tenant.json()["detail"]
        assert client.get("/api/dead-letters").status_code == 401
        bad_since = client.get("/api/dead-letters", params={"since": "last tuesday"}, headers=admin)
        assert bad_since.status_code == 400

