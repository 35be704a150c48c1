"""The ``Event`` record as a Python type, and the field list read from the ``.avsc``.

``event_batch.avsc`` is the one place the fields are written down. It is read
once, at import; the field names, their defaults and which of them are
optional text come from it, and ``dashfrog.storage`` derives its ``events``
columns from them. ``Event`` restates the record for type checkers; a test
holds it to the schema.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any, Literal, TypedDict, get_args

Kind = Literal["flow_started", "flow_ended", "step_started", "step_ended", "flow_event"]
EVENT_KINDS: tuple[Kind, ...] = get_args(Kind)
# The kind of an event carrying metric points (``metrics``) instead of a
# lifecycle change; it never reaches the events table.
MetricsKind = Literal["metrics"]
METRICS_KIND: MetricsKind = "metrics"
# The Event field that carries them.
METRICS_FIELD = "metrics"


class MetricPoint(TypedDict):
    """One series' aggregate over one interval (the Avro ``MetricPoint`` record)."""

    point_id: str
    tenant: str
    labels: dict[str, str]
    start: int
    time: int
    value: float
    count: int
    sum: float
    min: float
    max: float
    scale: int
    zero_count: int
    positive_offset: int
    positive: list[int]
    negative_offset: int
    negative: list[int]


class Metric(TypedDict):
    """The points of one metric (the Avro ``Metric`` record)."""

    name: str
    kind: str  # counter, histogram or gauge
    pretty_name: str
    unit: str
    label_names: list[str]
    points: list[MetricPoint]


class Event(TypedDict):
    """One lifecycle change of a flow or step (the Avro ``Event`` record).

    Decoded events have every field; see ``event_batch.avsc`` for what each means.
    """

    event_id: str
    kind: Kind | MetricsKind
    flow_id: str
    tenant: str
    flow_name: str
    step_id: str | None
    parent_step_id: str | None
    step_name: str | None
    status: str | None
    error: dict[str, str] | None  # type, message, stack
    labels: dict[str, str]
    attributes: dict[str, str]
    timestamp: int
    service: str
    host: str
    trace_id: str | None
    span_id: str | None
    sdk_version: str
    event_name: str | None
    metrics: list[Metric]


SCHEMA_JSON: str = resources.files("dashfrog.schemas").joinpath("event_batch.avsc").read_text()

_RECORD: dict[str, Any] = json.loads(SCHEMA_JSON)["fields"][0]["type"]["items"]

# The fields of Event, in schema (and so in encoding) order.
EVENT_FIELDS: tuple[str, ...] = tuple(f["name"] for f in _RECORD["fields"])
# Fields a writer may leave out, with the value a reader fills in.
EVENT_DEFAULTS: dict[str, Any] = {f["name"]: f["default"] for f in _RECORD["fields"] if "default" in f}
# Fields of type ["null", "string"].
OPTIONAL_TEXT_FIELDS: tuple[str, ...] = tuple(f["name"] for f in _RECORD["fields"] if f["type"] == ["null", "string"])
REQUIRED_FIELDS: tuple[str, ...] = tuple(name for name in EVENT_FIELDS if name not in EVENT_DEFAULTS)


def make_event(
    kind: Kind,
    *,
    flow_id: str,
    tenant: str,
    flow_name: str,
    timestamp: int,
    event_id: str | None = None,
    **fields: Any,
) -> Event:
    """A complete event: every field the caller does not give takes its schema
    default; ``event_id`` is random unless given. Raises TypeError on a name
    that is not a field, so a typo in a test or a benchmark fails loudly."""
    unknown = set(fields) - set(EVENT_FIELDS)
    if unknown:
        raise TypeError(f"not Event fields: {', '.join(sorted(unknown))}")
    given: dict[str, Any] = {
        "event_id": event_id or os.urandom(16).hex(),
        "kind": kind,
        "flow_id": flow_id,
        "tenant": tenant,
        "flow_name": flow_name,
        "timestamp": timestamp,
        **fields,
    }
    event = {name: given[name] if name in given else _fresh(EVENT_DEFAULTS[name]) for name in EVENT_FIELDS}
    return event  # type: ignore[return-value]


def _fresh(value: Any) -> Any:
    # Defaults of map and array type are {} and []: each event gets its own.
    if isinstance(value, dict):
        return dict(value)
    return list(value) if isinstance(value, list) else value
