"""The Avro event contract shared by the SDK and the processor."""

from dashfrog.schemas._codec import (
    EVENT_KINDS,
    SCHEMA_HEADER,
    STATUSES,
    Event,
    current_schema,
    decode,
    encode,
    header_map,
    headers,
    schema_json,
    validate,
)

__all__ = [
    "EVENT_KINDS",
    "Event",
    "SCHEMA_HEADER",
    "STATUSES",
    "current_schema",
    "decode",
    "encode",
    "header_map",
    "headers",
    "schema_json",
    "validate",
]
