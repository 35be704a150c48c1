"""`dashfrog dlq-replay` against a real broker, a running processor and chDB.

The DLQ topic is filled as an older processor would have left it: a good
message it could not read, a message that is junk to any processor, and a
reference to a message too big for the DLQ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from dashfrog import schemas
from dashfrog._models import FlowFilter
from dashfrog._settings import Settings
from dashfrog.streams import (
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_REFERENCE,
    DLQ_SIZE,
    DLQ_TOPIC,
    ensure_event_topics,
    replay_dead_letters,
)
from tests.streams._helpers import flow_events, pipeline_settings, running, send_raw, wait_for

OLD_REASON = "unknown writer schema (an older processor)"


@pytest.fixture
def settings(broker: str, topic_prefix: str) -> Settings:
    return pipeline_settings(broker, topic_prefix)


def _dlq_headers(settings: Settings, reason: str, offset: int, *more: tuple[str, bytes]) -> list[tuple[str, bytes]]:
    return [
        *more,
        (DLQ_REASON, reason.encode()),
        (DLQ_TOPIC, settings.topic.encode()),
        (DLQ_PARTITION, b"0"),
        (DLQ_OFFSET, str(offset).encode()),
    ]


async def _end_offset(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def _seen(store: Any, run: str) -> tuple[int, list[tuple[str, str]]]:
    """What a user sees of a run: its events (as user SQL counts them, FINAL) and its flows."""
    (row,) = store.select(
        "SELECT count() AS n FROM events FINAL WHERE labels['run'] = {run:String}", {"run": run}
    )
    flows = store.find_flows(FlowFilter.parse(labels={"run": run}, limit=100))
    return int(row["n"]), sorted((f.flow_id, f.status) for f in flows)


async def test_replay_sends_each_dead_letter_once_and_skips_references(
    settings: Settings, module_chdb_store: Any, tmp_path: Path
) -> None:
    good = flow_events(3)
    run = good[0]["labels"]["run"]
    expected = (len(good), sorted({(e["flow_id"], "success") for e in good}))
    async with running(settings, module_chdb_store, tmp_path) as processor:
        # Left in the DLQ by an older processor: on partition 0, in this order.
        await send_raw(settings.bootstrap, settings.dlq, schemas.encode(good),
                       headers=_dlq_headers(settings, OLD_REASON, 7, *schemas.headers()))
        await send_raw(settings.bootstrap, settings.dlq, b"\x00garbage",
                       headers=_dlq_headers(settings, "undecodable: not an event batch", 8))
        reference = json.dumps({"reference": True, "offset": 9}).encode()
        await send_raw(settings.bootstrap, settings.dlq, reference,
                       headers=_dlq_headers(settings, "undecodable: too big", 9,
                                            (DLQ_REFERENCE, b"1"), (DLQ_SIZE, b"1500000")))
        events_before = await _end_offset(settings.bootstrap, settings.topic)

        dry = await replay_dead_letters(settings, reason="OLDER processor", dry_run=True)
        assert (dry.replayed, dry.not_matching, dry.references) == (1, 1, [f"{settings.topic}/0@9"])
        assert await _end_offset(settings.bootstrap, settings.topic) == events_before  # nothing sent

        narrowed = await replay_dead_letters(settings, reason="older processor")
        assert (narrowed.replayed, narrowed.not_matching) == (1, 1)
        assert narrowed.per_topic == {settings.topic: 1}
        await wait_for(lambda: _seen(module_chdb_store, run) == expected, 30, "the replayed flows")
        assert processor.stats.dead_lettered == 0

        # --reason moved nothing: a full replay sends both again; the good events
        # change nothing, the junk is dead-lettered again as a new DLQ message.
        full = await replay_dead_letters(settings)
        assert (full.replayed, full.not_matching, len(full.references)) == (2, 0, 1)
        # Same key, same partition: once the junk is dead-lettered, the good message before it is written.
        await wait_for(lambda: processor.stats.dead_lettered >= 1, 30, "the junk dead-lettered again")
        assert _seen(module_chdb_store, run) == expected

        # Each DLQ message once: only the junk's new copy is left to send.
        again = await replay_dead_letters(settings, dry_run=True)
        assert (again.replayed, again.references) == (1, [])
        assert processor.stats.dead_lettered == 1


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from dashfrog.runtime._cli import main; main()", "dlq-replay", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )


async def test_the_command_says_what_it_sends_and_what_is_missing(settings: Settings) -> None:
    env = {**os.environ, "DASHFROG_KAFKA_BOOTSTRAP": settings.bootstrap, "DASHFROG_TOPIC_PREFIX": settings.topic_prefix}
    await ensure_event_topics(settings)
    await send_raw(settings.bootstrap, settings.dlq, schemas.encode(flow_events(1)),
                   headers=_dlq_headers(settings, OLD_REASON, 3, *schemas.headers()))
    dry = _cli(env, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"dashfrog dlq-replay: would send 1 dead letters from {settings.dlq} (1 to {settings.topic})"
    ]
    assert await _end_offset(settings.bootstrap, settings.topic) == 0

    missing = _cli({**env, "DASHFROG_TOPIC_PREFIX": settings.topic_prefix + "none."}, "--dry-run")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"Error: no DLQ topic {settings.topic_prefix}none.dashfrog.events.dlq on {settings.bootstrap}: "
        "no worker has run there (check DASHFROG_TOPIC_PREFIX and DASHFROG_KAFKA_BOOTSTRAP)"
    ]
