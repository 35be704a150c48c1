"""A worker whose consumer holds partitions but stops fetching exits, so that
its supervisor restarts it (faust-streaming issue #629).

The stall is made with Faust's own ``pause_partitions``: the partitions stay
assigned, messages wait on them, and nothing reads them, which is what the
stalled survivors seen here looked like from outside.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dashfrog.streams import Processor, run_processor
from tests.streams._helpers import PARTITIONS, flow_events, pipeline_settings, produce, wait_for


async def test_a_worker_that_stops_fetching_exits_with_code_3(
    broker: str, topic_prefix: str, module_chdb_store: Any, tmp_path: Path
) -> None:
    settings = pipeline_settings(broker, topic_prefix, processor_stall_s=2.0)
    said: list[str] = []
    started: list[Processor] = []
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_processor(
            settings, module_chdb_store, stop, echo=said.append, started=started.append,
            datadir=tmp_path / "faust",
        )
    )
    try:
        await wait_for(lambda: bool(started) and started[0].lag() is not None, 60, "partitions assigned")
        processor = started[0]
        first = flow_events(5)
        await produce(broker, settings.topic, first, PARTITIONS)
        await wait_for(lambda: processor.stats.events >= len(first), 30, "the first events written")

        # Quiet with nothing waiting: no exit, however long (here, twice the stall time).
        await asyncio.sleep(0)
        quiet_until = asyncio.get_running_loop().time() + 2 * settings.processor_stall_s
        while asyncio.get_running_loop().time() < quiet_until:
            assert not worker.done(), said
            await asyncio.sleep(0.1)  # polling interval of a condition check

        consumer = processor.app.consumer
        consumer.pause_partitions(consumer.assignment())
        await produce(broker, settings.topic, flow_events(5), PARTITIONS)
        code = await asyncio.wait_for(worker, 60)
    finally:
        stop.set()
        if not worker.done():
            await worker
    assert code == 3
    (line,) = [x for x in said if "exiting with code 3" in x]
    assert "messages wait on this worker's partitions" in line and "DASHFROG_PROCESSOR_STALL_S" in line
