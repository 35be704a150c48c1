"""What the processor does with one Kafka message and one batch of them, without Faust.

Kept free of Faust so decoding, dead-lettering and the dedup token can be
tested (and benchmarked) on their own.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastavro.schema import to_parsing_canonical_form

from dashfrog import schemas
from dashfrog._exceptions import SchemaError

schemas_magic = schemas.MAGIC

# Headers a dead-lettered message carries besides the original ones.
DLQ_REASON = "dashfrog-dlq-reason"
DLQ_TOPIC = "dashfrog-dlq-topic"
DLQ_PARTITION = "dashfrog-dlq-partition"
DLQ_OFFSET = "dashfrog-dlq-offset"
# On a DLQ message that stands for one too big for the DLQ (or refused by it):
# "1", and the value is a JSON reference instead of the message.
DLQ_REFERENCE = "dashfrog-dlq-reference"
DLQ_SIZE = "dashfrog-dlq-size"
# First bytes of a message a reference (and the dead_letters table) keeps.
HEAD_BYTES = 1024

_MAX_REASON_CHARS = 2000


@dataclass(slots=True)
class Decoded:
    """One Kafka message after decoding: the events to write and what to dead-letter."""

    topic: str
    partition: int
    offset: int
    events: list[schemas.Event]
    # Set when the message (or some of its events) could not be processed.
    reason: str | None = None
    dlq_value: bytes | None = None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    # The Faust event to ack once this message's effects are durable.
    handle: Any = None
    # Left undecoded (see inspect_message): the message value and the
    # canonical JSON of its writer schema; ``estimate`` is its event count as
    # the Avro array's first block announces it (for sizing writes only).
    value: bytes | None = None
    schema: str | None = None
    estimate: int = 0
    # Bytes of the message value as it arrived.
    size: int = 0


def decode_message(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None,
) -> Decoded:
    """Decode and validate a message. Never raises: failures become a DLQ reason.

    A message whose body does not decode goes to the DLQ as it was. When only
    some events fail validation, the valid ones are written and the DLQ gets a
    message holding exactly the invalid ones, so replaying the DLQ after a fix
    neither loses nor repeats events.
    """
    header_list = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    out = Decoded(topic, partition, offset, [], key=key, headers=header_list, size=len(value or b""))
    try:
        events = schemas.decode(value or b"", dict(header_list))
    except SchemaError as exc:
        out.reason = f"undecodable: {exc}"
        out.dlq_value = value or b""
        return out
    except Exception as exc:  # a codec bug must not stop the worker either
        out.reason = f"undecodable: {exc!r}"
        out.dlq_value = value or b""
        return out
    validate = schemas.validate
    bad: list[schemas.Event] = []
    reasons: list[str] = []
    for index, event in enumerate(events):
        try:
            validate(event)
        except SchemaError as exc:
            bad.append(event)
            reasons.append(f"event {index} ({event.get('event_id') or 'no id'}): {exc}")
    if bad:
        bad_ids = {id(e) for e in bad}
        out.events = [e for e in events if id(e) not in bad_ids]
        out.reason = f"invalid: {len(bad)} of {len(events)} events; " + "; ".join(reasons)
        try:
            out.dlq_value = schemas.encode(bad)
        except Exception:
            # Events that cannot be re-encoded are dead-lettered as the original message.
            out.dlq_value = value or b""
    else:
        out.events = events
    return out


_AVRO_PREFIX = 10  # C3 01 + 8-byte fingerprint
_schema_json: dict[bytes, str] = {}


def writer_schema_json(fingerprint: bytes, headers: Mapping[str, bytes] | None) -> str:
    """Canonical JSON of the schema that wrote a message; raises SchemaError when
    it is neither shipped with this package nor in a matching header."""
    known = _schema_json.get(fingerprint)
    if known is not None:
        return known
    parsed = schemas.writer_schema(fingerprint, headers)
    text = to_parsing_canonical_form(parsed)
    if len(_schema_json) >= 256:
        _schema_json.clear()
    _schema_json[fingerprint] = text
    return text


def inspect_message(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None,
) -> Decoded:
    """Identify a message's writer schema without decoding its body. Never raises.

    The body is decoded later by the store's engine (``insert_encoded``). A
    message that is not Avro single-object encoded, or whose writer schema is
    unknown and not in its headers, gets a DLQ reason here, as in
    :func:`decode_message`. A message marked as metrics (``schemas.METRICS_HEADER``)
    is decoded here instead: one per SDK process and interval, its points go to
    the metric tables through ``insert_events``.
    """
    header_list = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    if schemas.METRICS_HEADER in header_list:
        return decode_message(topic, partition, offset, key, value, header_list)
    out = Decoded(topic, partition, offset, [], key=key, headers=header_list, size=len(value or b""))
    data = value or b""
    if len(data) < _AVRO_PREFIX or data[:2] != schemas_magic:
        out.reason = "undecodable: not a DashFrog event message (missing Avro single-object header)"
        out.dlq_value = data
        return out
    try:
        out.schema = writer_schema_json(bytes(data[2:_AVRO_PREFIX]), dict(header_list))
    except SchemaError as exc:
        out.reason = f"undecodable: {exc}"
        out.dlq_value = data
        return out
    except Exception as exc:
        out.reason = f"undecodable: {exc!r}"
        out.dlq_value = data
        return out
    out.value = data
    # Each event takes several bytes: a damaged count cannot inflate a batch.
    out.estimate = min(_first_block_count(data), len(data))
    return out


def _first_block_count(value: bytes) -> int:
    """The count of the events array's first block (an Avro long after the prefix;
    negative when a block size follows it)."""
    try:
        count, _ = schemas.decode_long(value, _AVRO_PREFIX)
    except ValueError:
        return 0
    return abs(count)


def body(item: Decoded) -> bytes:
    """The Avro body of an inspected message (after the single-object prefix)."""
    return (item.value or b"")[_AVRO_PREFIX:]


def dlq_headers(item: Decoded) -> list[tuple[str, bytes]]:
    """The original headers plus the reason and where the message came from."""
    reason = (item.reason or "")[:_MAX_REASON_CHARS]
    ours = {DLQ_REASON, DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET}
    kept = [(k, v) for k, v in item.headers if k not in ours]
    return [
        *kept,
        (DLQ_REASON, reason.encode()),
        (DLQ_TOPIC, item.topic.encode()),
        (DLQ_PARTITION, str(item.partition).encode()),
        (DLQ_OFFSET, str(item.offset).encode()),
    ]


def dlq_reference(item: Decoded, refusal: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Value and headers of a DLQ message standing for ``item`` when the DLQ
    did not take it whole: where it is, its size, why, and its first bytes.
    The original headers are left out (they may be what made it too big)."""
    head = (item.dlq_value or b"")[:HEAD_BYTES]
    reference = {
        "reference": True,
        "topic": item.topic,
        "partition": item.partition,
        "offset": item.offset,
        "size": item.size,
        "reason": (item.reason or "")[:_MAX_REASON_CHARS],
        "dlq_refused": refusal[:_MAX_REASON_CHARS],
        "head_base64": base64.b64encode(head).decode(),
    }
    ours = {DLQ_REASON, DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET}
    headers = [(k, v) for k, v in dlq_headers(item) if k in ours]
    headers += [(DLQ_REFERENCE, b"1"), (DLQ_SIZE, str(item.size).encode())]
    return json.dumps(reference).encode(), headers


def offset_ranges(items: Iterable[Decoded]) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) → (first, last) offset covered by ``items``."""
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for item in items:
        tp = (item.topic, item.partition)
        seen = ranges.get(tp)
        if seen is None:
            ranges[tp] = (item.offset, item.offset)
        else:
            ranges[tp] = (min(seen[0], item.offset), max(seen[1], item.offset))
    return ranges


def dedup_token(ranges: Mapping[tuple[str, int], tuple[int, int]]) -> str:
    """A deterministic name for a write: the same offset ranges give the same token.

    A retried write (after a timeout that may have succeeded, or a crash
    before the offsets were committed) that covers the same ranges is then
    dropped by the store's insert deduplication.
    """
    spec = ",".join(f"{t}/{p}:{a}-{b}" for (t, p), (a, b) in sorted(ranges.items()))
    digest = hashlib.sha256(spec.encode()).hexdigest()[:32]
    return f"dashfrog-{digest}"
