"""Fixtures that start real services for the whole suite and stop them after."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from dashfrog.runtime._broker import LocalBroker, ensure_topics_sync, start_broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker; yields its bootstrap address.

    Default: tansu (memory storage) on a free loopback port. The switch
    ``DASHFROG_TEST_KAFKA`` runs the suite on Apache Kafka instead:
    ``testcontainers`` starts one in Docker, ``HOST:PORT`` uses a running one.
    """
    choice = os.environ.get("DASHFROG_TEST_KAFKA", "")
    if choice == "testcontainers":
        yield from _kafka_container()
        return
    if choice:
        yield choice
        return
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    running: LocalBroker = start_broker(log=str(log))
    try:
        yield running.bootstrap
    finally:
        running.stop()


def _kafka_container() -> Iterator[str]:
    try:
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer().with_kraft()
        container.start()
    except Exception as exc:  # no Docker engine, image not pullable, ...
        pytest.fail(f"DASHFROG_TEST_KAFKA=testcontainers, but Apache Kafka did not start in Docker: {exc!r}")
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()


@pytest.fixture(scope="module")
def module_chdb_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A migrated chDB store shared by the tests of one module, closed after
    them: chDB allows one open session per process, so one module at a time."""
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path_factory.mktemp('chdb') / 'db'}")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix unique to the test, so tests sharing the broker never see each other's events."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"t{os.getpid()}-{id(request)}-{name}."


@pytest.fixture
def sdk(broker: str, topic_prefix: str) -> Iterator[dict[str, str]]:
    """The SDK configured against the test broker on fresh topics; shut down afterwards."""
    import dashfrog

    topic = topic_prefix + "dashfrog.events"
    ensure_topics_sync(broker, {topic: 3, topic_prefix + "dashfrog.events.dlq": 1})
    settings = dashfrog.setup(
        kafka_bootstrap=broker, topic_prefix=topic_prefix, service_name="test-service", linger_ms=5
    )
    try:
        yield {"bootstrap": broker, "topic": topic, "prefix": topic_prefix, "settings": settings}  # type: ignore[dict-item]
    finally:
        dashfrog.shutdown(5)
        from dashfrog._settings import set_settings

        set_settings(None)


def consume_events(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[dict]:
    """Read and decode events from ``topic`` until ``expected`` arrived or ``timeout`` passed."""
    from aiokafka import AIOKafkaConsumer

    from dashfrog import schemas

    async def run() -> list[dict]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        found: list[dict] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while len(found) < expected and loop.time() < deadline:
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    for message in messages:
                        found.extend(schemas.decode(message.value, dict(message.headers)))
        finally:
            await consumer.stop()
        return found

    return asyncio.run(run())
