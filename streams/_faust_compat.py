"""The two places the processor needs more than Faust's public surface.

Everything else goes through Faust's and mode's public API. These two have no
public form in faust-streaming 0.11-0.15; ``tests/streams/test_faust_compat.py``
fails by name if an upgrade moves what they rely on.

- Faust hard-codes ``fetch_max_wait_ms=1500`` when it creates its aiokafka
  consumer. A broker that answers a fetch only when that wait ends (tansu
  does, whatever ``fetch_min_bytes`` says) then adds up to 1.5 s between a
  step's exit and its row; a short wait keeps the pipeline fresh at the cost
  of more, emptier fetches when idle. The transport here subclasses Faust's
  consumer thread at its consumer-creation hook and sets aiokafka's fetch wait
  on the consumer before it starts.
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
