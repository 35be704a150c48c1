"""The Avro event contract shared by the SDK and the processor."""

from dashfrog.schemas._codec import (
    FLOW_STATUSES,
    MAGIC,
    SCHEMA_HEADER,
    STATUSES,
    current_schema,
    decode,
    encode,
    frame,
    headers,
    schema_json,
    validate,
    writer_schema,
)
from dashfrog.schemas._event import (
    EVENT_DEFAULTS,
    EVENT_FIELDS,
    EVENT_KINDS,
    OPTIONAL_TEXT_FIELDS,
    REQUIRED_FIELDS,
    Event,
    Kind,
    make_event,
)
from dashfrog.schemas._writer import decode_long, encode_event, encode_long

__all__ = [
    "EVENT_DEFAULTS",
    "EVENT_FIELDS",
    "EVENT_KINDS",
    "Event",
    "FLOW_STATUSES",
    "Kind",
    "MAGIC",
    "OPTIONAL_TEXT_FIELDS",
    "REQUIRED_FIELDS",
    "SCHEMA_HEADER",
    "STATUSES",
    "current_schema",
    "decode",
    "decode_long",
    "encode",
    "encode_event",
    "encode_long",
    "frame",
    "headers",
    "make_event",
    "schema_json",
    "validate",
    "writer_schema",
]
