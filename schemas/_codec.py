"""Encode and decode DashFrog event batches.

Wire format of one Kafka message value: Avro single-object encoding
(``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema + the Avro binary body) of an ``EventBatch``. The fingerprint says which
schema wrote the message, so a reader resolves it against its own schema with
Avro's rules. A writer also puts its schema's JSON in the ``dashfrog-schema``
header, so a processor older than the client can still read what a newer
client wrote.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from dashfrog._exceptions import SchemaError
from dashfrog.schemas._event import EVENT_KINDS, METRICS_KIND, SCHEMA_JSON, Event
from dashfrog.schemas._writer import batch_body, encode_event

MAGIC = b"\xc3\x01"
SCHEMA_HEADER = "dashfrog-schema"
# Marks a message holding one ``metrics`` event: a processor decodes those
# itself (they are few) and writes their points to the metric tables.
METRICS_HEADER: tuple[str, bytes] = ("dashfrog-content", b"metrics")
# ``retried``: a step attempt that raised a retry (it runs again); never a flow's end.
STATUSES = ("success", "failed", "retried")
FLOW_STATUSES = ("success", "failed")

_MAX_FOREIGN_SCHEMAS = 64
_MAX_SCHEMA_BYTES = 64 * 1024


def _fingerprint(schema: Any) -> bytes:
    canonical = to_parsing_canonical_form(schema)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))[::-1]


def schema_json() -> str:
    """The current writer schema, as shipped in ``event_batch.avsc``."""
    return SCHEMA_JSON


@cache
def current_schema() -> Any:
    return fastavro.parse_schema(json.loads(schema_json()))


@cache
def _current_fingerprint() -> bytes:
    return _fingerprint(current_schema())


@cache
def _shipped_schemas() -> dict[bytes, Any]:
    """Every schema version this package ships: the current one and ``history/``."""
    known = {_current_fingerprint(): current_schema()}
    history = resources.files("dashfrog.schemas").joinpath("history")
    if history.is_dir():
        for entry in history.iterdir():
            if entry.name.endswith(".avsc"):
                parsed = fastavro.parse_schema(json.loads(entry.read_text()))
                known[_fingerprint(parsed)] = parsed
    return known


_foreign: OrderedDict[bytes, Any] = OrderedDict()


def writer_schema(fp: bytes, headers: Mapping[str, bytes] | None) -> Any:
    """The parsed schema with fingerprint ``fp``: shipped here, or from the
    message's ``dashfrog-schema`` header. Raises SchemaError otherwise."""
    known = _shipped_schemas().get(fp)
    if known is not None:
        return known
    if fp in _foreign:
        _foreign.move_to_end(fp)
        return _foreign[fp]
    text = (headers or {}).get(SCHEMA_HEADER)
    if not text:
        raise SchemaError(
            f"unknown writer schema {fp[::-1].hex()} and no {SCHEMA_HEADER!r} header: "
            "upgrade the processor to the SDK's version or let the SDK send its schema"
        )
    if len(text) > _MAX_SCHEMA_BYTES:
        raise SchemaError(f"writer schema header is {len(text)} bytes, over {_MAX_SCHEMA_BYTES}")
    try:
        parsed = fastavro.parse_schema(json.loads(text))
    except Exception as exc:
        raise SchemaError(f"writer schema header is not a valid Avro schema: {exc}") from exc
    if _fingerprint(parsed) != fp:
        raise SchemaError("writer schema header does not match the message's fingerprint")
    _foreign[fp] = parsed
    if len(_foreign) > _MAX_FOREIGN_SCHEMAS:
        _foreign.popitem(last=False)
    return parsed


def encode(events: Sequence[Event], schema: Any = None) -> bytes:
    """Encode ``events`` as one message value (optionally with another writer schema)."""
    if schema is None:
        return frame([encode_event(e) for e in events])
    out = io.BytesIO()
    out.write(MAGIC)
    out.write(_fingerprint(schema))
    fastavro.schemaless_writer(out, schema, {"events": list(events)})
    return out.getvalue()


def frame(encoded: Sequence[bytes]) -> bytes:
    """One message value from events encoded one by one with :func:`encode_event`."""
    return MAGIC + _current_fingerprint() + batch_body(encoded)


def headers() -> list[tuple[str, bytes]]:
    """Kafka headers a writer sends with every message."""
    return [(SCHEMA_HEADER, schema_json().encode())]


def decode(value: bytes, headers: Mapping[str, bytes] | None = None) -> list[Event]:
    """Decode one message value into events, resolved to the current schema.

    Raises :class:`SchemaError` with the reason when the value cannot be read.
    """
    if not value or len(value) < 10 or value[:2] != MAGIC:
        raise SchemaError("not a DashFrog event message (missing Avro single-object header)")
    fp = bytes(value[2:10])
    writer = writer_schema(fp, headers)
    reader = None if fp == _current_fingerprint() else current_schema()
    try:
        batch = fastavro.schemaless_reader(io.BytesIO(value[10:]), writer, reader)
    except Exception as exc:
        raise SchemaError(f"Avro body does not decode with its writer schema: {exc!r}") from exc
    return batch["events"]  # type: ignore[no-any-return,index,call-overload,return-value]


def validate(event: Event) -> None:
    """Check what Avro cannot: kinds, statuses and required ids. Raises SchemaError."""
    kind = event.get("kind")
    if kind == METRICS_KIND:
        _validate_metrics(event)
        return
    if kind not in EVENT_KINDS:
        raise SchemaError(f"unknown event kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
    for field in ("event_id", "flow_id", "tenant", "flow_name"):
        if not event.get(field):
            raise SchemaError(f"{kind} event has an empty {field}")
    if kind.startswith("step_") and not event.get("step_id"):
        raise SchemaError(f"{kind} event has no step_id")
    allowed = FLOW_STATUSES if kind == "flow_ended" else STATUSES
    if kind.endswith("_ended") and event.get("status") not in allowed:
        also = "" if kind == "flow_ended" else " (or retried: an attempt that runs again)"
        raise SchemaError(f"{kind} event has status {event.get('status')!r}; expected success or failed{also}")


METRIC_KINDS = ("counter", "histogram", "gauge")
# The SDK keeps at most 160 buckets a side between scales -10 and 20.
_MAX_BUCKETS = 4096
_SCALES = range(-10, 21)
# Microseconds before 2286, and bucket indexes that fit the store's Int32.
_MAX_MICROS = 10**16
_MAX_INDEX = 2**31 - 1 - _MAX_BUCKETS


def _validate_metrics(event: Event) -> None:
    """A ``metrics`` event: an id and a key, and points a store can project."""
    for field in ("event_id", "flow_id"):
        if not event.get(field):
            raise SchemaError(f"metrics event has an empty {field}")
    metrics = event.get("metrics") or []
    if not metrics:
        raise SchemaError("metrics event has no metrics")
    for metric in metrics:
        name = metric.get("name")
        if not name:
            raise SchemaError("metrics event has a metric with an empty name")
        if metric.get("kind") not in METRIC_KINDS:
            raise SchemaError(
                f"metric {name!r} has kind {metric.get('kind')!r}; expected one of {', '.join(METRIC_KINDS)}"
            )
        for point in metric.get("points") or []:
            if not point.get("point_id") or not point.get("tenant"):
                raise SchemaError(f"metric {name!r} has a point with an empty point_id or tenant")
            if point.get("scale", 0) not in _SCALES:
                raise SchemaError(f"metric {name!r} has a point at scale {point.get('scale')}, outside -10..20")
            if len(point.get("positive") or ()) > _MAX_BUCKETS or len(point.get("negative") or ()) > _MAX_BUCKETS:
                raise SchemaError(f"metric {name!r} has a point with more than {_MAX_BUCKETS} buckets")
            _check_point_numbers(name, point)


def _check_point_numbers(name: str, point: Any) -> None:
    """What a store column could not hold (a write that failed on it would be retried forever)."""
    for field in ("start", "time"):
        if not 0 <= point.get(field, 0) < _MAX_MICROS:
            raise SchemaError(f"metric {name!r} has a point whose {field} is not microseconds since 1970")
    counts = [point.get("count", 0), point.get("zero_count", 0), *(point.get("positive") or ()), *(point.get("negative") or ())]
    if any(c < 0 for c in counts):
        raise SchemaError(f"metric {name!r} has a point with a negative count")
    for field in ("positive_offset", "negative_offset"):
        if abs(point.get(field, 0)) > _MAX_INDEX:
            raise SchemaError(f"metric {name!r} has a point whose {field} is out of range")
