"""A worker stopped with SIGTERM leaves its consumer group on the way out, so
another worker takes its partitions without waiting for its session to expire.

What is checked is the broker's view: the stopped worker is no longer a member
of the group as soon as it has exited, long before its session could expire,
and the survivor then writes every partition. How fast the survivor takes
over is the broker's rebalance (tansu holds each join for half the longest
session timeout in the group); `make bench` times it (production shape).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from dashfrog.runtime._broker import ensure_topics_sync
from tests.streams._helpers import flow_events, partition_of, produce

PARTITIONS = 4
# Long enough that a stopped worker that did not leave would still be listed
# as a member for the whole wait below.
LEAVER_SESSION_S = 20


def _worker(broker: str, prefix: str, store: Path, session_s: float, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DASHFROG_KAFKA_BOOTSTRAP": broker,
        "DASHFROG_TOPIC_PREFIX": prefix,
        "DASHFROG_TOPIC_PARTITIONS": str(PARTITIONS),
        "DASHFROG_PROCESSOR_GROUP": f"{prefix}group",
        "DASHFROG_REBALANCE_TIMEOUT_S": "2",
        "DASHFROG_SESSION_TIMEOUT_S": str(session_s),
        "DASHFROG_CLICKHOUSE_URL": f"chdb://{store}",
    }
    return subprocess.Popen(
        [sys.executable, "-c", "from dashfrog.runtime._cli import main; main()", "worker", "--status-every", "0.2"],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def _status(log: Path) -> tuple[bool, int]:
    """(holds partitions, events written) from the last status line."""
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.startswith("dashfrog:") and " lag " in x]
    if not lines:
        return False, 0
    last = lines[-1]
    return " lag ? " not in last, int(last.split(" events ")[1].split()[0].replace(",", ""))


def _members(broker: str, group: str) -> int:
    """How many members the broker lists in ``group`` (DescribeGroups)."""

    async def describe() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([group])
            (found,) = response.groups
            return len(found[5])  # (error_code, group, state, protocol_type, protocol, members)
        finally:
            await admin.close()

    return asyncio.run(describe())


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def test_sigterm_hands_the_partitions_over_before_the_session_would_expire(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = topic_prefix + "dashfrog.events"
    ensure_topics_sync(broker, {topic: PARTITIONS, topic_prefix + "dashfrog.events.dlq": PARTITIONS})
    logs = [tmp_path / "leaver.log", tmp_path / "survivor.log"]
    leaver = _worker(broker, topic_prefix, tmp_path / "a", LEAVER_SESSION_S, logs[0])
    survivor = _worker(broker, topic_prefix, tmp_path / "b", 2, logs[1])
    try:
        def both_hold() -> bool:
            for proc, log in ((leaver, logs[0]), (survivor, logs[1])):
                assert proc.poll() is None, log.read_text()[-3000:]
            return all(_status(log)[0] for log in logs)

        _until(both_hold, 90, "both workers to hold partitions")
        group = f"{topic_prefix}group"
        assert _members(broker, group) == 2
        leaver.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert leaver.wait(30) == 0, logs[0].read_text()[-3000:]

        # Without its LeaveGroup the broker would list the leaver until its
        # session expired, LEAVER_SESSION_S after its last heartbeat.
        _until(lambda: _members(broker, group) == 1, LEAVER_SESSION_S / 2, "the broker to drop the leaver")
        assert time.monotonic() - signalled < LEAVER_SESSION_S

        # One flow on every partition: the survivor writes all of them only
        # once it holds the leaver's partitions too.
        candidates = flow_events(200, run="leave")
        flows: dict[int, str] = {}
        for event in candidates:
            flows.setdefault(partition_of(event["flow_id"], PARTITIONS), event["flow_id"])
        events = [e for e in candidates if e["flow_id"] in flows.values()]
        asyncio.run(produce(broker, topic, events, PARTITIONS, per_message=100))
        assert len(flows) == PARTITIONS

        def all_written() -> bool:
            assert survivor.poll() is None, logs[1].read_text()[-3000:]
            return _status(logs[1])[1] >= len(events)

        _until(all_written, 120, "the survivor to write every partition's events")
    finally:
        for proc in (leaver, survivor):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (leaver, survivor):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
