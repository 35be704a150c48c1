"""The places the processor needs more than Faust's public surface.

Everything else goes through Faust's and mode's public API. None of these has a
public form in faust-streaming 0.11-0.15; ``tests/streams/test_faust_compat.py``
fails by name if an upgrade moves what they rely on.

- Faust hard-codes ``fetch_max_wait_ms=1500`` when it creates its aiokafka
  consumer. A broker that answers a fetch only when that wait ends (tansu
  does, whatever ``fetch_min_bytes`` says) then adds up to 1.5 s between a
  step's exit and its row; a short wait keeps the pipeline fresh at the cost
  of more, emptier fetches when idle. The transport here subclasses Faust's
  consumer thread at its consumer-creation hook and sets aiokafka's fetch wait
  on the consumer before it starts.
- Faust rewinds a partition to the group's committed offset whenever it drops
  records it had already fetched: when a rebalance starts mid-fetch, and
  when it resumes after one. aiokafka's ``seek_to_committed`` leaves a
  partition with no committed offset where it is, so records fetched and
  dropped there were never read again: a new group's worker held its
  partitions with messages waiting and read none until it restarted. The
  consumer thread here rewinds such partitions to their start (the
  ``earliest`` reset the processor is configured with); writes are
  idempotent, so reading a record again is safe.
  ``tests/streams/test_rewind.py`` fails if an upgrade undoes it.
- The offset the group had committed for a partition when it was assigned:
  Faust keeps it in ``Consumer._committed_offset`` and has no public reader.
"""

from __future__ import annotations

from typing import Any


def kafka_transport(app: Any, fetch_wait_ms: float) -> Any:
    """Faust's Kafka transport for ``app``, its consumer's fetch wait set to ``fetch_wait_ms``."""
    from faust.transport.drivers import aiokafka as driver

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # Read by aiokafka's fetcher when the consumer starts.
            consumer._fetch_max_wait_ms = int(fetch_wait_ms)
            return consumer

        async def seek_to_committed(self) -> Any:
            return await self.call_thread(self._seek_to_committed_or_start)

        async def _seek_to_committed_or_start(self) -> Any:
            consumer = self._ensure_consumer()
            committed = await consumer.seek_to_committed()
            uncommitted = [tp for tp, offset in committed.items() if not offset]
            if uncommitted:
                await consumer.seek_to_beginning(*uncommitted)
            return committed

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport(app.conf.broker_consumer, app)


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The group's committed offset for ``tp`` as Faust last read it, or None."""
    offset = consumer._committed_offset.get(tp)
    return None if offset is None else int(offset)


async def leave_group(app: Any, timeout: float = 2.0) -> None:
    """Leave the consumer group now, so the other workers take this one's
    partitions at once instead of after the session timeout.

    aiokafka leaves the group when its consumer closes, but Faust stops the
    consumer's thread before that, and aiokafka skips the request in
    generation 0 (tansu's first generation): a stopped worker stayed a
    member until its session expired. This closes aiokafka's group
    coordinator in the consumer's own thread (no more heartbeats or
    rejoins), then sends the LeaveGroup request if aiokafka did not. Best
    effort, bounded by ``timeout``.
    """
    import asyncio

    from aiokafka.protocol.group import LeaveGroupRequest

    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    coordinator = getattr(consumer, "_coordinator", None)
    loop = getattr(thread, "thread_loop", None)
    if coordinator is None or loop is None or loop.is_closed():
        return

    async def leave() -> None:
        generation, member = coordinator.generation, coordinator.member_id
        await coordinator.close()  # sends LeaveGroup itself when generation > 0
        if generation == 0 and member:
            await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, member))

    future = asyncio.run_coroutine_threadsafe(leave(), loop)
    try:
        await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except Exception:  # best effort: the session timeout still applies
        future.cancel()
