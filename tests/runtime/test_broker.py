"""The local broker and topic creation (dashfrog.runtime), on a real tansu broker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateTopicsResponse_v0, CreateTopicsResponse_v1

from dashfrog import ConfigurationError
from dashfrog.runtime import ensure_topics, start_broker
from dashfrog.runtime._broker import _check_created


async def _partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return len(described["partitions"])
    finally:
        await admin.close()


def test_topics_are_created_once_and_again_is_fine(broker: str) -> None:
    topic = f"ensure-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(broker, {topic: 3}))
    asyncio.run(ensure_topics(broker, {topic: 3}))  # exists: nothing to do, no error
    assert asyncio.run(_partitions(broker, topic)) == 3


def test_a_refused_topic_says_which_and_why() -> None:
    # tansu creates whatever it is asked to, so the broker's answer is built
    # here: a CreateTopics response as the wire carries it, decoded by aiokafka.
    denied = CreateTopicsResponse_v1(topic_errors=[("dashfrog.events", 29, "Authorization failed.")])
    response = CreateTopicsResponse_v1.decode(denied.encode())
    with pytest.raises(
        ConfigurationError,
        match=r"refused to create topic 'dashfrog.events' \(TopicAuthorizationFailedError: Authorization failed.\)",
    ):
        _check_created(response)


def test_losing_a_creation_race_is_fine() -> None:
    # What a broker answers the second of two workers creating the topic at once.
    lost = CreateTopicsResponse_v0(topic_errors=[("dashfrog.events", 36)])
    _check_created(CreateTopicsResponse_v0.decode(lost.encode()))


def test_the_broker_log_is_closed_when_it_stops(tmp_path: Path) -> None:
    broker = start_broker(log=str(tmp_path / "tansu.log"))
    assert broker.log is not None and not broker.log.closed
    broker.stop()
    assert broker.log.closed


def test_a_port_already_taken_is_refused(broker: str) -> None:
    # Without the check the readiness probe would take the broker there for ours.
    port = int(broker.rpartition(":")[2])
    with pytest.raises(ConfigurationError, match=rf"127.0.0.1:{port} is already in use"):
        start_broker(port)
