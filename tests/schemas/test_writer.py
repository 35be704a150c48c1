"""The SDK's hand-written Avro writer produces exactly fastavro's bytes."""

from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashfrog import schemas
from dashfrog.schemas._writer import batch_body, decode_long, encode_long

text = st.text(max_size=40)
optional_text = st.none() | text
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
maps = st.dictionaries(text, text, max_size=4)
errors = st.none() | st.fixed_dictionaries(
    {"type": text, "message": text, "stack": st.text(max_size=20_000)}
)
REQUIRED = {
    "event_id": text,
    "kind": text,
    "flow_id": text,
    "tenant": text,
    "flow_name": text,
    "timestamp": longs,
}
# Fields with a schema default may be left out, as fastavro allows.
OPTIONAL = {
    "step_id": optional_text,
    "parent_step_id": optional_text,
    "step_name": optional_text,
    "status": optional_text,
    "error": errors,
    "labels": maps,
    "attributes": maps,
    "service": text,
    "host": text,
    "trace_id": optional_text,
    "span_id": optional_text,
    "sdk_version": text,
    "event_name": optional_text,
    # Nested records with every field: the round trip compares whole values.
    "metrics": st.lists(
        st.fixed_dictionaries(
            {
                "name": text,
                "kind": text,
                "pretty_name": text,
                "unit": text,
                "label_names": st.lists(text, max_size=3),
                "points": st.lists(
                    st.fixed_dictionaries(
                        {
                            "point_id": text,
                            "tenant": text,
                            "labels": maps,
                            "start": longs,
                            "time": longs,
                            "value": st.floats(allow_nan=False),
                            "count": longs,
                            "sum": st.floats(allow_nan=False),
                            "min": st.floats(allow_nan=False),
                            "max": st.floats(allow_nan=False),
                            "scale": st.integers(-(2**31), 2**31 - 1),
                            "zero_count": longs,
                            "positive_offset": st.integers(-(2**31), 2**31 - 1),
                            "positive": st.lists(longs, max_size=5),
                            "negative_offset": st.integers(-(2**31), 2**31 - 1),
                            "negative": st.lists(longs, max_size=5),
                        }
                    ),
                    max_size=3,
                ),
            }
        ),
        max_size=2,
    ),
}
events = st.fixed_dictionaries(REQUIRED, optional=OPTIONAL)


def fastavro_body(batch: list[dict]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schemas.current_schema(), {"events": batch})
    return out.getvalue()


def test_generated_events_use_every_schema_field() -> None:
    """What makes the byte-identity test cover a field added to the .avsc: the
    generator must produce it, so the writer must write it."""
    assert set(REQUIRED) | set(OPTIONAL) == set(schemas.EVENT_FIELDS)
    assert set(REQUIRED) == set(schemas.REQUIRED_FIELDS)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=5))
def test_batches_are_byte_identical_to_fastavro(batch: list[dict]) -> None:
    assert batch_body([schemas.encode_event(e) for e in batch]) == fastavro_body(batch)
    decoded = schemas.decode(schemas.encode(batch))
    assert [{k: e[k] for k in event} for e, event in zip(decoded, batch, strict=True)] == batch


@settings(max_examples=500, deadline=None)
@given(longs)
def test_longs_are_zigzag_varints_like_fastavro(n: int) -> None:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", n)
    assert encode_long(n) == out.getvalue()


def test_edge_longs() -> None:
    for n in (0, -1, 1, 8191, 8192, -8193, 2**14, 2**21, 1_764_000_000_000_000, 2**63 - 1, -(2**63)):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, "long", n)
        assert encode_long(n) == out.getvalue(), n


@settings(max_examples=500, deadline=None)
@given(longs, st.binary(max_size=4))
def test_longs_read_back_where_they_end(n: int, before: bytes) -> None:
    data = before + encode_long(n) + b"\x81"
    assert decode_long(data, len(before)) == (n, len(data) - 1)


def test_a_long_cut_short_does_not_read() -> None:
    for data in (b"", b"\x80", encode_long(2**40)[:-1], b"\xff" * 11):
        with pytest.raises(ValueError):
            decode_long(data)


def test_values_avro_cannot_carry_raise() -> None:
    good = {f: None for f in schemas.EVENT_FIELDS} | {
        "event_id": "e", "kind": "flow_started", "flow_id": "f", "tenant": "t", "flow_name": "n",
        "labels": {}, "attributes": {}, "timestamp": 1, "service": "", "host": "", "sdk_version": "",
    }
    schemas.encode_event(good)
    for field, bad in (("tenant", 3), ("timestamp", "soon"), ("labels", {"k": 1}), ("flow_name", "\udcff")):
        with pytest.raises((TypeError, AttributeError, ValueError)):
            schemas.encode_event(good | {field: bad})
    for field in ("event_id", "kind", "flow_id", "tenant", "flow_name", "timestamp"):
        with pytest.raises(KeyError):
            schemas.encode_event({k: v for k, v in good.items() if k != field})
