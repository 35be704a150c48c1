"""Tail the events topic and time probe steps' arrival: the freshness baseline.

``python -m benchmarks._watch BOOTSTRAP TOPIC PARTITIONS PROBE_TENANT PROBE_STEP [FETCH_MAX_WAIT_MS]``

Runs in a process of its own so its decoding never competes with the
processor for a GIL. Prints ``ready`` once positioned at the end of every
partition, then, when its stdin closes, one JSON object: step id → seconds
from the step's exit to its event being fetched and decoded here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time


async def main(argv: list[str]) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from dashfrog import schemas

    bootstrap, topic, partitions, tenant, step = argv[0], argv[1], int(argv[2]), argv[3], argv[4]
    fetch_max_wait_ms = int(argv[5]) if len(argv) > 5 else 500  # aiokafka's default
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    await consumer.start()
    seen: dict[str, float] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before the load starts
            await consumer.position(tp)
        print("ready", flush=True)
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=50)
            for batch in fetched.values():
                for message in batch:
                    now = time.time()
                    for event in schemas.decode(message.value, dict(message.headers)):
                        if (
                            event["tenant"] == tenant
                            and event["kind"] == "step_ended"
                            and event["step_name"] == step
                        ):
                            seen[event["step_id"]] = now - event["timestamp"] / 1e6
    finally:
        await consumer.stop()
    print(json.dumps(seen), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
