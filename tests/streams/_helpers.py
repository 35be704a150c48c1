"""Build events and put them on the topic the way the SDK does (events grouped by partition)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from dashfrog import schemas
from dashfrog._settings import Settings
from dashfrog.streams import Processor, ensure_event_topics

# Partitions of a test's fresh topics, unless the test says otherwise.
PARTITIONS = 3


def pipeline_settings(bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    """What a test worker runs with: short rebalance and batch waits, fresh topics."""
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": prefix,
        "topic_partitions": PARTITIONS,
        "processor_group": f"{prefix}processor",
        "rebalance_timeout_s": 2.0,
        "processor_batch_wait_s": 0.05,
    }
    return Settings(**(values | overrides))


def flow_events(
    n_flows: int,
    *,
    tenants: int = 10,
    steps: int = 1,
    fail_every: int = 0,
    name: str = "import",
    run: str | None = None,
) -> list[schemas.Event]:
    """Complete flows: started, ``steps`` steps started/ended, ended; every ``fail_every``-th fails."""
    run = run or uuid.uuid4().hex[:8]
    now = int(time.time() * 1e6)
    out: list[schemas.Event] = []
    for i in range(n_flows):
        failed = bool(fail_every) and i % fail_every == 0
        flow: dict[str, Any] = {
            "flow_id": f"{now:016x}-{run}-{i:07d}",
            "tenant": f"tenant-{i % tenants}",
            "flow_name": name,
            "labels": {"batch": str(i % 7), "run": run},
            "service": "svc",
            "host": "h",
            "sdk_version": "test",
        }
        ts = now + i
        error = {"type": "ValueError", "message": "bad row", "stack": ""}
        out.append(schemas.make_event("flow_started", timestamp=ts, **flow))
        for s in range(steps):
            step = {"step_id": f"s{s}", "step_name": f"step{s}"}
            step_failed = failed and s == steps - 1
            out.append(schemas.make_event("step_started", timestamp=ts + 10, **flow, **step))
            out.append(schemas.make_event("step_ended", timestamp=ts + 20, **flow, **step,
                                          status="failed" if step_failed else "success",
                                          error=error if step_failed else None))
        out.append(schemas.make_event("flow_ended", timestamp=ts + 30, **flow,
                                      status="failed" if failed else "success", error=error if failed else None))
    return out


def partition_of(flow_id: str, partitions: int) -> int:
    """Kafka's default partitioner, as the SDK uses it."""
    return (murmur2(flow_id.encode()) & 0x7FFFFFFF) % partitions


async def produce(
    bootstrap: str,
    topic: str,
    events: list[schemas.Event],
    partitions: int,
    *,
    per_message: int = 1000,
) -> Counter[int]:
    """Send ``events`` packed per partition, ``per_message`` to a message.

    Returns the messages sent per partition (tansu's ListOffsets is not a
    reliable end offset, so tests count what they sent).
    """
    groups: dict[int, list[schemas.Event]] = {}
    for event in events:
        groups.setdefault(partition_of(event["flow_id"], partitions), []).append(event)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", max_request_size=4_000_000)
    await producer.start()
    try:
        futures = []
        sent: Counter[int] = Counter()
        for partition, group in groups.items():
            for i in range(0, len(group), per_message):
                chunk = group[i : i + per_message]
                futures.append(
                    await producer.send(
                        topic,
                        schemas.encode(chunk),
                        key=chunk[0]["flow_id"].encode(),
                        partition=partition,
                        headers=schemas.headers(),
                    )
                )
                sent[partition] += 1
        await asyncio.gather(*futures)
        return sent
    finally:
        await producer.stop()


async def send_raw(
    bootstrap: str,
    topic: str,
    value: bytes,
    *,
    key: bytes = b"k",
    partition: int = 0,
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Send one message as given; returns its offset."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=key, partition=partition, headers=headers)
        return int(meta.offset)
    finally:
        await producer.stop()


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], timeout: float, what: str | Callable[[], str]
) -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` seconds
    (a callable ``what`` is asked at the timeout, to show the state then)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.05)


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    """The group's committed offset per partition (None: nothing committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        out: dict[int, int | None] = {}
        for p in range(partitions):
            out[p] = await consumer.committed(TopicPartition(topic, p))
        return out
    finally:
        await consumer.stop()


def expected_offsets(sent: Counter[int], partitions: int) -> dict[int, int | None]:
    """Committed offsets once everything ``sent`` to a fresh topic is processed."""
    return {p: sent[p] or None for p in range(partitions)}


async def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Raw messages of ``topic`` from the beginning, until ``expected`` arrived."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found) < expected and loop.time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(messages)
        return found
    finally:
        await consumer.stop()


class FlakyStore:
    """Wraps the real store; its writes fail while ``failing`` is set."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.url = store.url
        self.failing = threading.Event()
        self.failures = 0
        self.tokens: list[str] = []

    def migrate(self) -> None:
        self.store.migrate()

    def insert_events(self, events: Any, token: str) -> None:
        if self.failing.is_set():
            self.failures += 1
            raise ConnectionError("store unavailable (test)")
        self.store.insert_events(events, token)
        self.tokens.append(token)

    def insert_encoded(self, groups: Any, token: str) -> Any:
        if self.failing.is_set():
            self.failures += 1
            raise ConnectionError("store unavailable (test)")
        results = self.store.insert_encoded(groups, token)
        self.tokens.append(token)
        return results

    def select(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return self.store.select(sql, params)

    def rebuild(self) -> None:
        self.store.rebuild()

    def record_dead_letters(self, letters: Any) -> None:
        if self.failing.is_set():
            self.failures += 1
            raise ConnectionError("store unavailable (test)")
        self.store.record_dead_letters(letters)

    def dead_letters(self, *args: Any, **kwargs: Any) -> Any:
        return self.store.dead_letters(*args, **kwargs)

    def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def running(settings: Settings, store: Any, tmp_path: Path) -> AsyncIterator[Processor]:
    await ensure_event_topics(settings)
    processor = Processor(settings, store, datadir=tmp_path / "faust")
    await processor.start()
    try:
        yield processor
    finally:
        await processor.stop()


def worker_process(
    settings: Settings, store_url: str, log: Path, partitions: int, **more_env: str
) -> subprocess.Popen[bytes]:
    """``dashfrog worker`` in a child process, status line every 0.1 s into ``log``."""
    env = {
        **os.environ,
        "DASHFROG_KAFKA_BOOTSTRAP": settings.bootstrap,
        "DASHFROG_TOPIC_PREFIX": settings.topic_prefix,
        "DASHFROG_TOPIC_PARTITIONS": str(partitions),
        "DASHFROG_PROCESSOR_GROUP": settings.processor_group,
        "DASHFROG_REBALANCE_TIMEOUT_S": "2",
        "DASHFROG_PROCESSOR_BATCH_WAIT_S": "0.05",
        "DASHFROG_CLICKHOUSE_URL": store_url,
        **more_env,
    }
    return subprocess.Popen(
        [sys.executable, "-c", "from dashfrog.runtime._cli import main; main()", "worker", "--status-every", "0.1"],
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def events_written(log: Path) -> int:
    """The last ``events N`` figure of the worker's status lines."""
    written = 0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("dashfrog:") and " events " in line:
            written = int(line.split(" events ")[1].split()[0].replace(",", ""))
    return written
