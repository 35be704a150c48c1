"""The production shape, end to end: ``dashfrog migrate``, two ``dashfrog worker``
processes in one consumer group and two ``dashfrog api`` processes on one
ClickHouse server database; a worker SIGKILLed midway; exact counts read
through both APIs, and the live stream answering on each.

Runs when ``DASHFROG_TEST_CLICKHOUSE_URL`` points at a ClickHouse server
(CI starts ../shared/tools/clickhouse-http for it); skips otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from dashfrog.runtime._broker import ensure_topics_sync, free_port
from tests.streams._helpers import flow_events, produce

SERVER = os.environ.get("DASHFROG_TEST_CLICKHOUSE_URL")
pytestmark = pytest.mark.skipif(
    not SERVER,
    reason="no ClickHouse server: set DASHFROG_TEST_CLICKHOUSE_URL=clickhouse://user:pass@host:8123/db "
    "(.ci/run starts ../shared/tools/clickhouse-http for it)",
)

PARTITIONS = 6
FLOWS = 1200  # 4 events each: flow, one step, end
CLI = [sys.executable, "-c", "from dashfrog.runtime._cli import main; main()"]


def _until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


class _Stream:
    """Reads one API's live stream (SSE) in a thread; keeps the flow ids it announced."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.hello = threading.Event()
        self.flow_ids: set[str] = set()
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        event = ""
        with httpx.Client(timeout=httpx.Timeout(5.0, read=None)) as client:
            with client.stream("GET", f"{self.base}/api/stream") as response:
                for line in response.iter_lines():
                    if self._stop:
                        return
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line.split(":", 1)[1])
                        if event == "hello":
                            self.hello.set()
                        elif event == "flows":
                            self.flow_ids.update(f["flow_id"] for f in data.get("flows", []))

    def close(self) -> None:
        self._stop = True


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the server, dropped afterwards."""
    from dashfrog.storage import open_store

    assert SERVER
    parts = urlsplit(SERVER)
    url = urlunsplit(parts._replace(path=f"/dashfrog_e2e_{uuid.uuid4().hex[:12]}"))
    yield url
    with open_store(url) as store:
        store._execute(f"DROP DATABASE IF EXISTS `{urlsplit(url).path[1:]}`")  # type: ignore[attr-defined]


def test_two_workers_two_apis_one_killed_worker_exact_counts(
    broker: str, topic_prefix: str, database: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    topic = topic_prefix + "dashfrog.events"
    ensure_topics_sync(broker, {topic: PARTITIONS, topic_prefix + "dashfrog.events.dlq": PARTITIONS})
    env = {
        **os.environ,
        "DASHFROG_KAFKA_BOOTSTRAP": broker,
        "DASHFROG_TOPIC_PREFIX": topic_prefix,
        "DASHFROG_TOPIC_PARTITIONS": str(PARTITIONS),
        "DASHFROG_PROCESSOR_GROUP": f"{topic_prefix}workers",
        "DASHFROG_CLICKHOUSE_URL": database,
        # tansu holds a group join for half the session timeout: keep it short here.
        "DASHFROG_SESSION_TIMEOUT_S": "2",
        "DASHFROG_REBALANCE_TIMEOUT_S": "2",
    }
    migrated = subprocess.run([*CLI, "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert "at schema version" in migrated.stdout

    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def spawn(name: str, *args: str, **extra: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}.log"
        logs.append(log)
        proc = subprocess.Popen([*CLI, *args], stdout=open(log, "wb"), stderr=subprocess.STDOUT, env={**env, **extra})
        procs.append(proc)
        return proc

    def written(log: Path) -> int:
        count = 0
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("dashfrog:") and " events " in line:
                count = int(line.split(" events ")[1].split()[0].replace(",", ""))
        return count

    def alive() -> None:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None and proc.returncode not in (-signal.SIGKILL,):
                raise AssertionError(f"{log.name} exited {proc.returncode}: {log.read_text()[-3000:]}")

    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    streams: list[_Stream] = []
    try:
        workers = [spawn(f"worker-{i}", "worker", "--status-every", "0.2") for i in range(2)]
        for i, port in enumerate(ports):
            spawn(f"api-{i}", "api", DASHFROG_API_PORT=str(port))

        def apis_up() -> bool:
            alive()
            try:
                return all(httpx.get(f"{b}/healthz", timeout=2).status_code == 200 for b in bases)
            except httpx.HTTPError:
                return False

        _until(apis_up, 60, "both APIs to answer /healthz")
        streams = [_Stream(b) for b in bases]
        for s in streams:
            assert s.hello.wait(10), f"no hello on {s.base}/api/stream"

        events = flow_events(FLOWS, tenants=6, steps=1, fail_every=7, run=topic_prefix[-12:])
        half = len(events) // 2
        asyncio.run(produce(broker, topic, events[:half], PARTITIONS, per_message=20))

        def both_writing() -> bool:
            alive()
            return all(written(log) > 0 for log in logs[:2])

        _until(both_writing, 60, "both workers to write")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        killed_after = written(logs[0])
        asyncio.run(produce(broker, topic, events[half:], PARTITIONS, per_message=20))

        expected_failed = sum(1 for i in range(FLOWS) if i % 7 == 0)

        def stats(base: str) -> dict[str, Any]:
            response = httpx.get(f"{base}/api/stats", timeout=10)
            response.raise_for_status()
            return dict(response.json())

        def all_finished() -> bool:
            alive()
            got = stats(bases[0])
            return int(got["succeeded"]) + int(got["failed"]) >= FLOWS

        _until(all_finished, 90, f"{FLOWS} finished flows through the API", poll=0.25)
        answers = [stats(b) for b in bases]
        for got in answers:
            assert got["runs"] == FLOWS, got
            assert got["failed"] == expected_failed, got
            assert got["succeeded"] == FLOWS - expected_failed, got
            assert got["running"] == 0, got
        assert answers[0] == answers[1]

        per_tenant = [
            {t: httpx.get(f"{b}/api/stats", params={"tenant": t}, timeout=10).json()["runs"] for t in
             (f"tenant-{i}" for i in range(6))}
            for b in bases
        ]
        assert per_tenant[0] == per_tenant[1] == {f"tenant-{i}": FLOWS // 6 for i in range(6)}

        # Exact: every event once in what queries read, none lost.
        from dashfrog.storage import open_store

        with open_store(database) as store:
            (row,) = store._query(  # type: ignore[attr-defined]
                "SELECT count() AS n, uniqExact(event_id) AS ids FROM events FINAL"
            )
        assert (int(row["n"]), int(row["ids"])) == (len(events), len(events))

        # Each API's live stream announced flows the workers wrote.
        ids = {e["flow_id"] for e in events}
        for s in streams:
            _until(lambda s=s: len(s.flow_ids & ids) > 0, 30, f"flows on {s.base}/api/stream")
        assert 0 < killed_after < len(events)
    finally:
        for s in streams:
            s.close()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert time.monotonic() - started < 150
