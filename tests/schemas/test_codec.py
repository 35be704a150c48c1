"""The event contract: round trips, schema identification and evolution both ways."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any, get_type_hints

import fastavro
import pytest

from dashfrog import SchemaError, schemas


def event(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": "e1",
        "kind": "step_ended",
        "flow_id": "0190f0a1b2c3" + "ab" * 10,
        "tenant": "acme-corp",
        "flow_name": "data_import",
        "timestamp": 1_700_000_000_123_456,
        "step_id": "s1",
        "step_name": "validate",
        "status": "failed",
        "error": {"type": "ValueError", "message": "bad", "stack": "Traceback ..."},
        "labels": {"env": "prod"},
        "attributes": {"rows": "3"},
        "service": "api",
        "host": "h1",
        "sdk_version": "0.1.0",
    }
    fields.update(overrides)
    return dict(schemas.make_event(**fields))


def schema_dict() -> dict:
    return json.loads(schemas.schema_json())


def event_fields(schema: dict) -> list[dict]:
    return schema["fields"][0]["type"]["items"]["fields"]


def test_round_trip_keeps_every_field() -> None:
    events = [event(), event(event_id="e2", kind="flow_event", status=None, error=None, event_name="checkpoint")]
    value = schemas.encode(events)
    assert value[:2] == b"\xc3\x01"  # Avro single-object encoding
    assert schemas.decode(value, dict(schemas.headers())) == events


def test_unknown_bytes_are_refused_with_a_reason() -> None:
    with pytest.raises(SchemaError, match="single-object header"):
        schemas.decode(b"{not avro}")
    value = schemas.encode([event()])
    with pytest.raises(SchemaError, match="does not decode"):
        schemas.decode(value[:14])


def test_older_writer_is_read_with_defaults() -> None:
    """An SDK from before a field existed: the current reader fills the default."""
    older = schema_dict()
    fields = event_fields(older)
    fields[:] = [f for f in fields if f["name"] not in ("sdk_version", "span_id", "host")]
    parsed = fastavro.parse_schema(copy.deepcopy(older))
    old_event = {k: v for k, v in event().items() if k not in ("sdk_version", "span_id", "host")}
    value = schemas.encode([old_event], schema=parsed)
    # The older SDK names its schema in the header; the fingerprint alone is unknown here.
    headers = {schemas.SCHEMA_HEADER: json.dumps(older).encode()}
    (decoded,) = schemas.decode(value, headers)
    assert decoded["sdk_version"] == "" and decoded["span_id"] is None and decoded["host"] == ""
    assert decoded["tenant"] == "acme-corp"


def test_newer_writer_is_read_by_the_current_reader() -> None:
    """A newer SDK added a field: today's processor ignores it and reads the rest."""
    newer = schema_dict()
    event_fields(newer).append({"name": "region", "type": "string", "default": ""})
    parsed = fastavro.parse_schema(copy.deepcopy(newer))
    value = schemas.encode([event() | {"region": "eu-west-1"}], schema=parsed)
    (decoded,) = schemas.decode(value, {schemas.SCHEMA_HEADER: json.dumps(newer).encode()})
    assert "region" not in decoded and decoded == event()


def test_unknown_writer_without_its_schema_is_refused() -> None:
    newer = schema_dict()
    # A field no other test adds: the codec caches schemas it has seen in headers.
    event_fields(newer).append({"name": "zone", "type": "string", "default": ""})
    value = schemas.encode([event() | {"zone": "x"}], schema=fastavro.parse_schema(newer))
    with pytest.raises(SchemaError, match="unknown writer schema"):
        schemas.decode(value, {})
    with pytest.raises(SchemaError, match="does not match"):
        schemas.decode(value, {schemas.SCHEMA_HEADER: schemas.schema_json().encode()})


def test_every_field_added_after_the_first_has_a_default() -> None:
    """The evolution rule that keeps old processors and new SDKs compatible both ways."""
    required = {"event_id", "kind", "flow_id", "tenant", "flow_name", "timestamp"}
    for field in event_fields(schema_dict()):
        assert field["name"] in required or "default" in field, field["name"]
        assert field.get("doc"), f"field {field['name']} has no doc"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "step_paused"}, "unknown event kind"),
        ({"tenant": ""}, "empty tenant"),
        ({"step_id": None}, "no step_id"),
        ({"status": "maybe"}, "expected success or failed"),
    ],
)
def test_validate_explains_what_is_wrong(overrides: dict, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        schemas.validate(event(**overrides))


def test_event_type_and_field_lists_follow_the_schema() -> None:
    """``Event`` restates the .avsc for type checkers; the field lists are read from it."""
    names = [f["name"] for f in event_fields(schema_dict())]
    assert list(get_type_hints(schemas.Event)) == names == list(schemas.EVENT_FIELDS)
    kind_doc = next(f["doc"] for f in event_fields(schema_dict()) if f["name"] == "kind")
    assert all(kind in kind_doc for kind in schemas.EVENT_KINDS)


def test_make_event_fills_defaults_and_refuses_unknown_fields() -> None:
    made = schemas.make_event("flow_started", flow_id="f", tenant="t", flow_name="n", timestamp=1)
    assert list(made) == list(schemas.EVENT_FIELDS)
    assert made["labels"] == {} and made["step_id"] is None and made["service"] == ""
    assert made["event_id"] != schemas.make_event("flow_started", flow_id="f", tenant="t", flow_name="n",
                                                 timestamp=1)["event_id"]
    with pytest.raises(TypeError, match="step_nmae"):
        schemas.make_event("step_started", flow_id="f", tenant="t", flow_name="n", timestamp=1, step_nmae="x")


def test_custom_event_from_a_v1_sdk_is_read_with_its_name_in_step_name() -> None:
    """v1 (shipped in schemas/history/) had no event_name: the reader fills null,
    and the v1 message is read by fingerprint alone, without the schema header."""
    v1 = json.loads(resources.files("dashfrog.schemas").joinpath("history/event_batch.v1.avsc").read_text())
    assert "event_name" not in [f["name"] for f in event_fields(v1)]
    old = {k: v for k, v in event(kind="flow_event", status=None, error=None, step_name="checkpoint").items()
           if k != "event_name"}
    value = schemas.encode([old], schema=fastavro.parse_schema(v1))
    (decoded,) = schemas.decode(value, {})
    assert decoded["event_name"] is None and decoded["step_name"] == "checkpoint"
