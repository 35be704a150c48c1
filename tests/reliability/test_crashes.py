"""SIGKILL of the worker, five times, while events stream in: at the end every
flow and every event is there exactly once, on the embedded store and (when
DASHFROG_TEST_CLICKHOUSE_URL is set) on a ClickHouse server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from dashfrog import schemas
from dashfrog._settings import Settings
from dashfrog.streams import ensure_event_topics
from tests.streams._helpers import (
    PARTITIONS,
    committed_offsets,
    events_written,
    expected_offsets,
    flow_events,
    partition_of,
    pipeline_settings,
    wait_for,
    worker_process,
)

KILLS = 5
# The killed worker's group membership must lapse before the next one gets
# its partitions: a short session keeps each life short.
WORKER_ENV = {"DASHFROG_SESSION_TIMEOUT_S": "3"}


async def stream(
    settings: Settings, run: str, stop: asyncio.Event, sent: Counter[int], produced: list[schemas.Event]
) -> None:
    """Until ``stop``: ten flows (40 events) every 50 ms, packed per partition as the SDK does."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
    await producer.start()
    try:
        while not stop.is_set():
            chunk = flow_events(10, tenants=10, fail_every=5, run=run)
            groups: dict[int, list[schemas.Event]] = {}
            for event in chunk:
                groups.setdefault(partition_of(event["flow_id"], PARTITIONS), []).append(event)
            for partition, group in groups.items():
                await producer.send_and_wait(
                    settings.topic, schemas.encode(group), key=group[0]["flow_id"].encode(),
                    partition=partition, headers=schemas.headers(),
                )
                sent[partition] += 1
            produced += chunk
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()


_CHECK = """
import json, sys
from dashfrog._models import FlowFilter
from dashfrog.storage import open_store
store = open_store(sys.argv[1])
flows = store.find_flows(FlowFilter.parse(labels={"run": sys.argv[2]}, limit=10_000)).flows
rows = store.select(
    "SELECT count() AS n, uniqExact(event_id) AS u FROM events WHERE labels['run'] = {r:String}", {"r": sys.argv[2]}
)
print(json.dumps({"flows": len(flows), "failed": sum(1 for f in flows if f.status == "failed"),
                  "complete": sum(1 for f in flows if f.steps_started == f.steps_ended == 1 and f.ended_at),
                  "events": int(rows[0]["n"]), "distinct": int(rows[0]["u"])}))
store.close()
"""


@pytest.mark.parametrize("adapter", ["chdb", "clickhouse"])
async def test_five_sigkills_during_a_stream_lose_nothing_and_count_nothing_twice(
    adapter: str, broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    if adapter == "chdb":
        store_url = f"chdb://{tmp_path / 'db'}"
    else:
        base = os.environ.get("DASHFROG_TEST_CLICKHOUSE_URL")
        if not base:
            pytest.skip("needs a ClickHouse server: set DASHFROG_TEST_CLICKHOUSE_URL (CI runs tools/clickhouse-http)")
        from urllib.parse import urlsplit, urlunsplit

        from dashfrog.storage import open_store

        store_url = urlunsplit(urlsplit(base)._replace(path=f"/dashfrog_crash_{uuid.uuid4().hex[:10]}"))
        with open_store(store_url) as store:
            store.migrate()  # `dashfrog migrate`: workers against a server only check the schema

    settings = pipeline_settings(broker, topic_prefix)
    await ensure_event_topics(settings)
    run = uuid.uuid4().hex[:8]
    events: list[schemas.Event] = []
    sent: Counter[int] = Counter()
    stop = asyncio.Event()
    producing = asyncio.create_task(stream(settings, run, stop, sent, events))
    started = time.monotonic()
    kills = 0
    try:
        while kills < KILLS:
            log = tmp_path / f"worker-{kills}.log"
            worker = worker_process(settings, store_url, log, PARTITIONS, **WORKER_ENV)
            try:
                # Killed once it has written in this life, mid-stream.
                await wait_for(
                    lambda log=log, worker=worker: events_written(log) > 0 or worker.poll() is not None,  # type: ignore[misc]
                    60,
                    "the worker's first write",
                )
                assert worker.poll() is None, log.read_text()
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                kills += 1
            finally:
                if worker.poll() is None:
                    worker.kill()
        assert not producing.done(), "the stream failed"
        stop.set()
        await producing
        stream_s = time.monotonic() - started

        log = tmp_path / "worker-last.log"
        worker = worker_process(settings, store_url, log, PARTITIONS, **WORKER_ENV)
        try:
            final = expected_offsets(sent, PARTITIONS)

            async def caught_up() -> bool:
                assert worker.poll() is None, log.read_text()
                done_offsets = await committed_offsets(
                    settings.bootstrap, settings.processor_group, settings.topic, PARTITIONS
                )
                return done_offsets == final

            await wait_for(caught_up, 120, "the last worker to commit everything")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0, log.read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
    finally:
        producing.cancel()

    check = subprocess.run(
        [sys.executable, "-c", _CHECK, store_url, run],
        capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout)
    flows = len(events) // 4
    assert found == {
        "flows": flows,
        "failed": flows // 5,
        "complete": flows,
        "events": len(events),
        "distinct": len(events),
    }
    print(f"{adapter}: {KILLS} SIGKILLs over a {stream_s:.0f} s stream of {len(events):,} events; "
          f"{sum(sent.values()):,} messages; all present exactly once")
