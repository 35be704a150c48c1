"""The Avro event contract shared by the SDK and the processor."""

from dashfrog.schemas._codec import (
    EVENT_KINDS,
    FLOW_STATUSES,
    MAGIC,
    SCHEMA_HEADER,
    STATUSES,
    Event,
    current_schema,
    decode,
    encode,
    frame,
    header_map,
    headers,
    schema_json,
    validate,
    writer_schema,
)
from dashfrog.schemas._writer import encode_event

__all__ = [
    "EVENT_KINDS",
    "Event",
    "FLOW_STATUSES",
    "MAGIC",
    "SCHEMA_HEADER",
    "STATUSES",
    "current_schema",
    "decode",
    "encode",
    "encode_event",
    "frame",
    "header_map",
    "headers",
    "schema_json",
    "validate",
    "writer_schema",
]
