"""Records Faust fetched and dropped are read again, on partitions the group
has never committed too.

Faust drops records it has fetched when a rebalance starts mid-fetch or its
flow is stopped, and rewinds to the committed offsets when it resumes.
aiokafka's rewind leaves a partition without a committed offset where it is;
a new group's survivor then held its partitions with messages waiting and
read none of them (seen as stalled takeovers in tests/streams/test_leave_group.py
and the production benchmark). Here the drop is made directly: with the flow
stopped, the consumer is moved past messages it never delivered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.streams._helpers import (
    PARTITIONS,
    committed_offsets,
    flow_events,
    pipeline_settings,
    produce,
    running,
    wait_for,
)


async def test_records_dropped_before_the_first_commit_are_read_again(
    broker: str, topic_prefix: str, module_chdb_store: Any, tmp_path: Path
) -> None:
    settings = pipeline_settings(broker, topic_prefix)
    async with running(settings, module_chdb_store, tmp_path) as processor:
        await wait_for(lambda: processor.lag() is not None, 60, "partitions assigned")
        consumer = processor.app.consumer
        consumer.stop_flow()
        events = flow_events(8)
        await produce(broker, settings.topic, events, PARTITIONS)

        # What a dropped fetch leaves behind: the consumer's position past
        # records nobody processed, and no committed offset to return to.
        thread = consumer._thread
        kafka = thread._ensure_consumer()
        await thread.call_thread(kafka.seek_to_end)
        committed = await committed_offsets(broker, settings.processor_group, settings.topic, PARTITIONS)
        assert set(committed.values()) == {None}
        await consumer.perform_seek()
        consumer.resume_flow()

        await wait_for(lambda: processor.stats.events >= len(events), 30, "the dropped events written")
        assert processor.lag() == 0
