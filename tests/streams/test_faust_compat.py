"""What the processor relies on beyond Faust's public API (streams/_faust_compat.py).

If a Faust or aiokafka upgrade moves one of these, these tests fail by name
and the processor's freshness or status line would silently degrade otherwise.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import aiokafka
import faust.transport.consumer
import pytest

from dashfrog._settings import Settings
from dashfrog.streams import Processor
from dashfrog.streams._faust_compat import committed_offset


class _NoStore:
    url = "none://"


@pytest.fixture
async def processor(tmp_path: Path) -> Processor:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", processor_fetch_wait_ms=7)
    return Processor(settings, _NoStore(), datadir=tmp_path)  # type: ignore[arg-type]


async def test_fetch_wait_reaches_the_aiokafka_consumer(processor: Processor) -> None:
    consumer = processor.app.consumer
    # Faust creates its aiokafka consumer in this hook, with fetch_max_wait_ms=1500.
    kafka = consumer._thread._create_worker_consumer(processor.app.transport)
    try:
        assert isinstance(kafka, aiokafka.AIOKafkaConsumer)
        assert kafka._fetch_max_wait_ms == 7
        # aiokafka hands that attribute to its fetcher when the consumer starts.
        assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(
            aiokafka.AIOKafkaConsumer.start
        )
    finally:
        await kafka.stop()


async def test_committed_offsets_are_where_faust_keeps_them(processor: Processor) -> None:
    consumer = processor.app.consumer
    tp = faust.types.TP(processor.settings.topic, 0)
    assert committed_offset(consumer, tp) is None
    # Faust records the group's committed offsets there on assignment...
    source = inspect.getsource(faust.transport.consumer.Consumer)
    assert "self._committed_offset.update(committed_offsets)" in source
    consumer._committed_offset.update({tp: 42})
    # ...and the lag counts from them for partitions not yet written here.
    assert committed_offset(consumer, tp) == 42


async def test_crash_reason_is_public(processor: Processor) -> None:
    assert not processor.crashed and processor.crash_reason is None
    await processor.app.crash(RuntimeError("boom"))
    assert processor.crashed
    assert repr(processor.crash_reason) == "RuntimeError('boom')"
