"""``dashfrog dlq-replay``: send dead-lettered messages back to the events topic.

Once the cause is fixed (processors upgraded to read a newer SDK's messages,
say), what the processor parked in the DLQ topic can be processed again.
Progress is kept as the committed offsets of one consumer group per topic
prefix, so each DLQ message is replayed once; ``--from-start`` reads the
whole DLQ topic again. A replay narrowed with ``--reason`` leaves that
progress where it was, so the messages it left out are still there for the
next replay (which sends the matching ones again, harmlessly). Replaying is safe to repeat: events are deduplicated
by ``event_id`` and projections are idempotent. A message that still fails
is dead-lettered again, as a new DLQ message. References (messages too big
for the DLQ topic) hold no body and are listed, never replayed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import click

from dashfrog._settings import Settings, get_settings
from dashfrog.streams._batch import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_REFERENCE, DLQ_TOPIC

# The DLQ's own headers: dropped, so a replayed message is what the SDK sent.
_DLQ_PREFIX = "dashfrog-dlq-"


@dataclass
class Replay:
    """What one replay did (or, dry, would do)."""

    replayed: int = 0
    not_matching: int = 0
    references: list[str] = field(default_factory=list)  # "topic/partition@offset" of each original
    per_topic: dict[str, int] = field(default_factory=dict)


def replay_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}dashfrog-dlq-replay"


async def replay_dead_letters(
    settings: Settings,
    reason: str | None = None,
    from_start: bool = False,
    dry_run: bool = False,
    timeout: float = 120.0,
) -> Replay:
    """Send the DLQ messages not yet replayed (all with ``from_start``) whose
    reason contains ``reason`` (any case) back to the topic they came from.

    Offsets are committed only after every send is acknowledged, and only
    by a replay without ``reason``, so a replay cut short is done again,
    never skipped. Reads up to the end offsets seen
    when it starts; gives up after ``timeout`` seconds.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    options = settings.kafka_options()
    consumer = AIOKafkaConsumer(
        group_id=replay_group(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )
    producer = None if dry_run else AIOKafkaProducer(acks="all", max_request_size=1_048_576, **options)
    report = Replay()
    await consumer.start()
    try:
        if producer is not None:
            await producer.start()
        partitions = await _partitions(consumer, settings)
        tps = [TopicPartition(settings.dlq, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            committed = None if from_start else await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        wanted = reason.lower() if reason else None
        deadline = time.monotonic() + timeout
        sends = []
        while await _behind(consumer, ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the DLQ topic {settings.dlq} was not read to its end in {timeout:.0f} s")
            batches = await consumer.getmany(*tps, timeout_ms=500)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        continue  # dead-lettered after this replay began: the next one takes it
                    headers = {k: v for k, v in message.headers}
                    origin = headers.get(DLQ_TOPIC, b"").decode() or settings.topic
                    if DLQ_REFERENCE in headers:
                        where = (
                            f"{origin}/{headers.get(DLQ_PARTITION, b'?').decode()}"
                            f"@{headers.get(DLQ_OFFSET, b'?').decode()}"
                        )
                        report.references.append(where)
                        continue
                    why = headers.get(DLQ_REASON, b"").decode(errors="replace").lower()
                    if wanted is not None and wanted not in why:
                        report.not_matching += 1
                        continue
                    report.replayed += 1
                    report.per_topic[origin] = report.per_topic.get(origin, 0) + 1
                    if producer is not None:
                        original = [(k, v) for k, v in message.headers if not k.startswith(_DLQ_PREFIX)]
                        sends.append(await producer.send(origin, message.value, key=message.key, headers=original))
        if sends:
            await asyncio.gather(*sends)
        if producer is not None and wanted is None:
            # Only now, every send acknowledged: the next replay starts after these.
            # A --reason replay moves nothing, so what it left out is not lost to later ones.
            await consumer.commit({tp: ends[tp] for tp in tps})
    finally:
        if producer is not None:
            await producer.stop()
        await consumer.stop()
    return report


async def _behind(consumer: Any, ends: dict[Any, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


class NoDeadLetterTopic(LookupError):
    pass


async def _partitions(consumer: Any, settings: Settings) -> list[int]:
    await consumer.topics()  # fetches metadata, which partitions_for_topic reads
    found = consumer.partitions_for_topic(settings.dlq)
    if not found:
        raise NoDeadLetterTopic(
            f"no DLQ topic {settings.dlq} on {settings.bootstrap}: no worker has run there "
            "(check DASHFROG_TOPIC_PREFIX and DASHFROG_KAFKA_BOOTSTRAP)"
        )
    return sorted(found)


@click.command("dlq-replay")
@click.option(
    "--reason",
    help="Only dead letters whose reason contains this text (any case); the replay position does not move.",
)
@click.option("--from-start", is_flag=True, help="Read the whole DLQ topic, not only what no replay has sent yet.")
@click.option("--dry-run", is_flag=True, help="Count what would be sent; send nothing, remember nothing.")
@click.option("--timeout", type=click.FloatRange(1), default=120.0, show_default=True, help="Seconds to give up after.")
def replay_command(reason: str | None, from_start: bool, dry_run: bool, timeout: float) -> None:
    """Send dead-lettered messages back to the events topic, once the cause is fixed.

    Each DLQ message is replayed once (progress is a consumer group's
    offsets); replaying an event twice changes nothing, and a message that
    still fails is dead-lettered again. References to messages too big for
    the DLQ are listed, not replayed.
    """
    from aiokafka.errors import KafkaError

    settings = get_settings()
    try:
        report = asyncio.run(replay_dead_letters(settings, reason, from_start, dry_run, timeout))
    except NoDeadLetterTopic as exc:
        raise click.ClickException(str(exc)) from None
    except (KafkaError, TimeoutError, OSError) as exc:
        raise click.ClickException(
            f"replay stopped, nothing remembered (the next replay sends these again): {type(exc).__name__}: {exc}"
        ) from None
    verb = "would send" if dry_run else "sent"
    line = f"dashfrog dlq-replay: {verb} {report.replayed} dead letters from {settings.dlq}"
    if report.per_topic:
        line += " (" + ", ".join(f"{n} to {t}" for t, n in sorted(report.per_topic.items())) + ")"
    if report.not_matching:
        line += f"; {report.not_matching} left out by --reason"
    click.echo(line)
    if report.references:
        click.echo(
            f"{len(report.references)} too big to have been dead-lettered whole, not replayed; "
            f"the originals are at: {', '.join(report.references)}"
        )
