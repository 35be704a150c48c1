"""``dashfrog events tail``: decode and print events as they reach the topic."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from typing import Any

import click

from dashfrog import schemas
from dashfrog._exceptions import SchemaError
from dashfrog._settings import get_settings


def format_event(event: schemas.Event) -> str:
    """One human-readable line per event."""
    when = dt.datetime.fromtimestamp(event["timestamp"] / 1e6, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    what: str = event["kind"]
    # A flow_event from an SDK before event_name existed carries its name in step_name.
    name = event.get("event_name") or event.get("step_name")
    if name:
        what += f" {name}"
    if event.get("status"):
        what += f" [{event['status']}]"
    extra = {**event.get("labels", {}), **event.get("attributes", {})}
    tail = " ".join(f"{k}={v}" for k, v in extra.items())
    error = event.get("error")
    if error:
        tail += f" error={error['type']}: {error['message']}"
    return (
        f"{when} {event['tenant']} {event['flow_name']} {event['flow_id'][:12]}… "
        f"{what} ({event.get('service') or '?'}) {tail}".rstrip()
    )


async def tail(
    *,
    from_beginning: bool,
    as_json: bool,
    tenant: str | None,
    flow_id: str | None,
    limit: int | None,
    idle_timeout: float | None,
    out: Any = None,
) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    out = out or sys.stdout
    s = get_settings()
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **s.kafka_options())
    await consumer.start()
    printed = 0
    try:
        partitions = await _partitions(consumer, s.topic)
        tps = [TopicPartition(s.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        while limit is None or printed < limit:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches:
                if idle_timeout is not None and loop.time() - idle_since > idle_timeout:
                    break
                continue
            idle_since = loop.time()
            for tp, messages in batches.items():
                for message in messages:
                    try:
                        events = schemas.decode(message.value, dict(message.headers))
                    except SchemaError as exc:
                        click.echo(f"# partition {tp.partition} offset {message.offset}: {exc}", err=True)
                        continue
                    for event in events:
                        if (tenant and event["tenant"] != tenant) or (
                            flow_id and not event["flow_id"].startswith(flow_id)
                        ):
                            continue
                        line = json.dumps(event, sort_keys=True) if as_json else format_event(event)
                        out.write(line + "\n")
                        printed += 1
                        if limit is not None and printed >= limit:
                            return printed
            out.flush()
    finally:
        await consumer.stop()
    return printed


async def _partitions(consumer: Any, topic: str, timeout: float = 10.0) -> set[int]:
    """Partitions of ``topic``, waiting for metadata (a fresh consumer has none)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        if loop.time() > deadline:
            raise click.ClickException(f"topic {topic!r} does not exist (yet): nothing was sent to it")
        await consumer.topics()  # refreshes metadata
        await asyncio.sleep(0.1)


@click.group("events")
def events() -> None:
    """Inspect the raw events on the Kafka topic."""


@events.command("tail")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest event kept, not the newest.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line with every field.")
@click.option("--tenant", help="Only this tenant's events.")
@click.option("--flow", "flow_id", help="Only this flow's events (its id or a prefix of it, as printed).")
@click.option("-n", "--limit", type=int, help="Stop after this many events.")
@click.option("--idle-timeout", type=float, help="Stop after this many seconds without events.")
def tail_command(
    from_beginning: bool,
    as_json: bool,
    tenant: str | None,
    flow_id: str | None,
    limit: int | None,
    idle_timeout: float | None,
) -> None:
    """Decode and print events from the events topic (Ctrl-C to stop)."""
    try:
        asyncio.run(
            tail(
                from_beginning=from_beginning,
                as_json=as_json,
                tenant=tenant,
                # Pasted from a tail line: the printed prefix ends with an ellipsis.
                flow_id=flow_id.removesuffix("…") if flow_id else None,
                limit=limit,
                idle_timeout=idle_timeout,
            )
        )
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        raise click.ClickException(
            f"cannot read {get_settings().topic} from {get_settings().bootstrap}: {exc}"
        ) from exc
