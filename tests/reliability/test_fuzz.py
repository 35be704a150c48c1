"""Bounded Hypothesis fuzz of the decoder and the projection.

- The processor's message inspection and Python decoding never raise,
  whatever the bytes and headers: a message either yields valid events or a
  reason to dead-letter it.
- The store's own Avro reader (chDB) answers a damaged body with results or
  MalformedEventsError, never another error: any other StorageError would be
  retried forever and stall the partition.
- A flow's projected state does not depend on the order its events arrive
  in, how they are batched, or how often they repeat.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashfrog import schemas
from dashfrog.storage import MalformedEventsError
from dashfrog.streams import decode_message
from dashfrog.streams._batch import body, inspect_message
from tests.streams._helpers import flow_events

GOOD = schemas.encode(flow_events(3, steps=2, fail_every=2))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid message with bytes flipped, cut, inserted or its counts lied about."""
    data = bytearray(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "count"]))
        pos = draw(st.integers(10, max(10, len(data) - 1)))
        if how == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif how == "cut":
            del data[pos:]
        elif how == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:  # a varint that claims far more than there is
            data[pos:pos] = schemas.encode_long(draw(st.integers(-(2**62), 2**62)))
        if len(data) <= 10:
            break
    return bytes(data)


messages = st.one_of(st.binary(max_size=300), damaged(), st.just(GOOD))
header_lists = st.one_of(
    st.none(),
    st.just(schemas.headers()),
    st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=50)), max_size=3),
)


@FUZZ
@given(value=messages, headers=header_lists)
def test_inspection_and_decoding_never_raise(value: bytes, headers: Any) -> None:
    inspected = inspect_message("t", 0, 7, b"k", value, headers)
    assert (inspected.reason is None) == (inspected.value is not None)
    if inspected.reason is not None:
        assert inspected.reason.startswith("undecodable") and inspected.dlq_value == value
    decoded = decode_message("t", 0, 7, b"k", value, headers)
    assert decoded.size == len(value)
    for event in decoded.events:
        schemas.validate(event)  # what is kept is valid
    if decoded.reason is None and not decoded.events:
        assert value[10:11] == b"\x00"  # only a batch whose events array is empty has none


@FUZZ
@given(value=damaged())
def test_the_stores_avro_reader_answers_damage_with_results_or_malformed(store: Any, value: bytes) -> None:
    item = inspect_message("t", 0, 0, b"k", value, schemas.headers())
    if item.reason is not None:
        return  # the agent dead-letters it before the store sees it
    assert item.schema is not None
    try:
        (result,) = store.insert_encoded([(item.schema, [body(item)])], f"fuzz-{uuid.uuid4().hex}")
    except MalformedEventsError:
        return  # the processor decodes it in Python and dead-letters what does not decode
    # Any other exception would have failed the test: the processor retries it forever.
    # (Not asserted: that the engine reads exactly what Python reads. It does not
    # always: a union branch index damaged to -1 is read by chDB, refused by fastavro.)
    assert result.events >= 0 and all(index == 0 for index in result.invalid)


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[int]]:
    """Batches of event indexes 0..5: every event at least once, some repeated, any order."""
    order = draw(st.permutations(range(6)))
    extra = draw(st.lists(st.integers(0, 5), max_size=6))
    stream = list(order) + extra
    stream = draw(st.permutations(stream))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=4)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True) if stream[a:b]]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=deliveries(), failed=st.booleans())
def test_projection_ignores_order_batching_and_repeats(store: Any, batches: list[list[int]], failed: bool) -> None:
    reference = flow_events(1, steps=2, fail_every=1 if failed else 0)
    # The same flow under another id: same timestamps, labels and errors.
    other = uuid.uuid4().hex
    fuzzed = [{**e, "flow_id": other, "event_id": uuid.uuid4().hex} for e in reference]
    store.insert_events(reference, f"ref-{uuid.uuid4().hex}")
    for batch in batches:
        store.insert_events([fuzzed[i] for i in batch], f"fuzz-{uuid.uuid4().hex}")

    def state(events: list[schemas.Event]) -> dict[str, Any]:
        detail = store.flow(events[0]["flow_id"])
        assert detail is not None
        summary = detail.model_dump(exclude={"flow_id", "labels", "trace_id"})
        steps = [s.model_dump(exclude={"flow_id"}) for s in detail.all_steps()]
        return {"flow": summary, "steps": steps}

    assert state(fuzzed) == state(reference)
