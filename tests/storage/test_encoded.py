"""Encoded inserts (``insert_encoded``): undecoded message bodies in, the same rows
out as decoding them in Python and inserting the events. Run against every
adapter, and against the portable Python implementation on chDB."""

from __future__ import annotations

import copy
import json
import uuid
from importlib import resources
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashfrog import SchemaError, schemas
from dashfrog._models import StatsFilter
from dashfrog.storage import GroupResult, MalformedEventsError, SqlStore, UnsupportedSchema
from dashfrog.storage._avro import container_parts, mapping
from tests.storage.test_store_contract import NOW_US, Flow, simple, snapshot

SCHEMA = schemas.schema_json()


def body(events: list[dict[str, Any]], schema: Any = None) -> bytes:
    """A message body as the SDK writes it, without the single-object prefix."""
    return schemas.encode(events, schema=schema)[10:]


def raw_rows(store: Any) -> list[dict[str, Any]]:
    return store.select("SELECT * EXCEPT inserted_at FROM events FINAL ORDER BY event_id")


def clear(store: Any) -> None:
    for table in ("events", "flows", "steps", "flow_runs"):
        store._execute(f"TRUNCATE TABLE {table}")


def population() -> list[Flow]:
    flows = [simple(tenant=f"t{i % 3}", fail="validate" if i % 4 == 0 else None) for i in range(12)]
    flows.append(simple(tenant="t0", end=False, labels={"env": "prod", "q'uote": "a\\b\tc"}))
    nested = Flow("t1").start()
    outer = nested.step("outer")
    nested.run_step("inner", parent=outer, attributes={"rows": "3"})
    nested.event("checkpoint", step_id=outer, at="x")
    nested.step_end(outer, "outer", error="boom")
    flows.append(nested.end())
    return flows


def older_schema() -> tuple[dict[str, Any], list[str]]:
    """A writer from before ``host``, ``span_id`` and ``sdk_version`` existed."""
    gone = ["host", "span_id", "sdk_version"]
    older = json.loads(SCHEMA)
    fields = older["fields"][0]["type"]["items"]["fields"]
    fields[:] = [f for f in fields if f["name"] not in gone]
    return older, gone


def newer_schema() -> dict[str, Any]:
    """A writer that added a field this reader does not know."""
    newer = json.loads(SCHEMA)
    newer["fields"][0]["type"]["items"]["fields"].append(
        {"name": "region", "type": "string", "default": ""}
    )
    return newer


class EncodedContract:
    @pytest.fixture
    def store(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_same_rows_and_state_as_decoding_in_python(self, store: Any) -> None:
        flows = population()
        messages = [body(f.events) for f in flows]
        results = store.insert_encoded([(SCHEMA, messages)], "enc")
        assert results == [GroupResult(sum(len(f.events) for f in flows))]
        encoded = raw_rows(store), snapshot(store, "t0"), snapshot(store, "t1"), store.find_stats(StatsFilter.parse())
        clear(store)
        store.insert_events([e for f in flows for e in f.events], "dec")
        assert (raw_rows(store), snapshot(store, "t0"), snapshot(store, "t1"), store.find_stats(StatsFilter.parse())) == encoded

    def test_same_token_again_changes_nothing(self, store: Any) -> None:
        f = simple(fail="process")
        store.insert_encoded([(SCHEMA, [body(f.events[:4]), body(f.events[4:])])], "events/0/3-4")
        before = snapshot(store, "acme-corp")
        store.insert_encoded([(SCHEMA, [body(f.events[:4]), body(f.events[4:])])], "events/0/3-4")
        assert store.select("SELECT count() AS n FROM events")[0]["n"] == len(f.events)
        assert snapshot(store, "acme-corp") == before

    def test_invalid_events_are_reported_by_message_and_not_written(self, store: Any) -> None:
        f = simple()
        bad = [
            dict(f.events[1], event_id="bad-kind", kind="step_paused"),
            dict(f.events[1], event_id="bad-tenant", tenant=""),
            dict(f.events[1], event_id="bad-step", step_id=None),
            dict(f.events[-1], event_id="bad-status", status="maybe"),
        ]
        messages = [body(f.events[:3]), body([f.events[3], bad[0]]), body(f.events[4:]), body(bad[1:])]
        (result,) = store.insert_encoded([(SCHEMA, messages)], "mixed")
        assert result == GroupResult(len(f.events), (1, 3))
        written = {r["event_id"] for r in store.select("SELECT event_id FROM events")}
        assert written == {e["event_id"] for e in f.events}

    def test_older_and_newer_writers_resolve_like_the_python_reader(self, store: Any) -> None:
        older, gone = older_schema()
        newer = newer_schema()
        old_flow, new_flow = simple(tenant="old"), simple(tenant="new")
        old_events = [{k: v for k, v in e.items() if k not in gone} for e in old_flow.events]
        new_events = [dict(e, region="eu") for e in new_flow.events]
        old_body = body(old_events, fastavro.parse_schema(copy.deepcopy(older)))
        new_body = body(new_events, fastavro.parse_schema(copy.deepcopy(newer)))
        results = store.insert_encoded(
            [(json.dumps(older), [old_body]), (json.dumps(newer), [new_body])], "evolved"
        )
        assert results == [GroupResult(len(old_events)), GroupResult(len(new_events))]
        encoded = raw_rows(store)
        assert {r["sdk_version"] for r in encoded if r["tenant"] == "old"} == {""}
        assert {r["host"] for r in encoded if r["tenant"] == "old"} == {""}
        assert {r["sdk_version"] for r in encoded if r["tenant"] == "new"} == {"test"}
        clear(store)
        # What the Python codec makes of the same messages.
        decoded = [
            *schemas.decode(b"\xc3\x01" + _fp(older) + old_body, {schemas.SCHEMA_HEADER: json.dumps(older).encode()}),
            *schemas.decode(b"\xc3\x01" + _fp(newer) + new_body, {schemas.SCHEMA_HEADER: json.dumps(newer).encode()}),
        ]
        store.insert_events(decoded, "python")
        assert raw_rows(store) == encoded

    def test_custom_events_from_a_v1_writer_keep_their_name(self, store: Any) -> None:
        """v1 (schemas/history/) had no event_name and put a custom event's name
        in step_name: the SQL mapping fills event_name's default, the detail
        reads the name from step_name, and a current writer's event_name wins."""
        v1_text = resources.files("dashfrog.schemas").joinpath("history/event_batch.v1.avsc").read_text()
        v1 = fastavro.parse_schema(json.loads(v1_text))
        f = Flow("v1").start()
        sid = f.step("process")
        f.event("checkpoint", step_id=sid, at="x")
        f.end()
        v1_events = [
            {k: v for k, v in e.items() if k != "event_name"}
            | ({"step_name": e["event_name"]} if e["kind"] == "flow_event" else {})
            for e in f.events
        ]
        g = Flow("v2").start()
        g.event("checkpoint")
        g.end()
        results = store.insert_encoded([(v1_text, [body(v1_events, v1)]), (SCHEMA, [body(g.events)])], "v1")
        assert results == [GroupResult(len(f.events)), GroupResult(len(g.events))]
        rows = store.select("SELECT tenant, event_name, step_name FROM events WHERE kind = 'flow_event' ORDER BY tenant")
        assert rows == [
            {"tenant": "v1", "event_name": "", "step_name": "checkpoint"},
            {"tenant": "v2", "event_name": "checkpoint", "step_name": ""},
        ]
        for flow in (f, g):
            assert [e.name for e in store.flow(flow.flow_id).events] == ["checkpoint"]

    def test_unreadable_group_is_named_and_earlier_groups_are_written(self, store: Any) -> None:
        good, other = simple(tenant="good"), simple(tenant="other")
        newer = json.dumps(newer_schema())
        groups = [
            (SCHEMA, [body(good.events)]),
            (newer, [body(other.events, fastavro.parse_schema(json.loads(newer))), b"\x07garbage"]),
            (SCHEMA, [body(other.events)]),
        ]
        with pytest.raises(MalformedEventsError) as caught:
            store.insert_encoded(groups, "broken")
        assert caught.value.group == 1
        assert caught.value.done == [GroupResult(len(good.events))]
        tenants = {r["tenant"] for r in store.select("SELECT DISTINCT tenant FROM events")}
        assert tenants == {"good"}

    def test_trailing_bytes_after_a_body_do_not_leak_into_the_next_message(self, store: Any) -> None:
        a, b = simple(tenant="a"), simple(tenant="b")
        # The Python codec ignores what follows the record; so must the store.
        padded = body(a.events) + body(b.events[:1])
        (result,) = store.insert_encoded([(SCHEMA, [padded, body(b.events)])], "padded")
        assert result == GroupResult(len(a.events) + len(b.events))
        rows = store.select("SELECT tenant, count() AS n FROM events GROUP BY tenant ORDER BY tenant")
        assert rows == [{"tenant": "a", "n": len(a.events)}, {"tenant": "b", "n": len(b.events)}]

    def test_text_that_is_not_utf8_makes_its_message_undecodable(self, store: Any) -> None:
        """The Python codec refuses such a message whole: none of its events are
        written, and the caller learns of it (reported as invalid, or the group
        refused as unreadable), so the message gets dead-lettered."""
        f, other = simple(tenant="a"), simple(tenant="b")
        for field in ("service", "labels", "error"):
            marked = [dict(e) for e in f.events]
            if field == "service":
                marked[1]["service"] = "AAAA"
            elif field == "labels":
                marked[0]["labels"] = {"AAAA": "v"}
            else:
                marked[-1]["error"] = {"type": "T", "message": "AAAA", "stack": ""}
            broken = body(marked).replace(b"AAAA", b"\xff\xfe\xfd\xfc")
            with pytest.raises(SchemaError):
                schemas.decode(b"\xc3\x01" + _fp(json.loads(SCHEMA)) + broken)
            try:
                (result,) = store.insert_encoded([(SCHEMA, [body(other.events), broken])], f"utf8-{field}")
            except MalformedEventsError as exc:
                assert exc.group == 0
            else:
                assert result == GroupResult(len(other.events), (1,))
            tenants = {r["tenant"] for r in store.select("SELECT DISTINCT tenant FROM events")}
            assert tenants <= {"b"}

    def test_empty_groups_write_nothing(self, store: Any) -> None:
        assert store.insert_encoded([(SCHEMA, [])], "none") == [GroupResult(0)]
        assert store.insert_encoded([], "none") == []
        empty = body([])
        assert store.insert_encoded([(SCHEMA, [empty])], "empty") == [GroupResult(0)]
        assert store.select("SELECT count() AS n FROM events")[0]["n"] == 0


def _fp(schema: dict[str, Any]) -> bytes:
    return schemas.encode([], schema=fastavro.parse_schema(copy.deepcopy(schema)))[2:10]


# -- the validity predicate is schemas.validate --------------------------------------

_TEXT = st.sampled_from(["", "x", " ", "é", "0"])
_KIND = st.sampled_from([*schemas.EVENT_KINDS, "", "step_", "flow_ended ", "STEP_STARTED", "step_paused", "flow"])
_STATUS = st.sampled_from([None, "", "success", "failed", "Success", "failed\n", "ok"])
_OPTIONAL = st.sampled_from([None, "", "s1"])


@st.composite
def _event(draw: st.DrawFn, run: str, index: int) -> dict[str, Any]:
    return {
        # Unique when not empty, so the written rows name the events.
        "event_id": draw(st.sampled_from(["", f"{run}-{index}"])),
        "kind": draw(_KIND),
        "flow_id": draw(_TEXT),
        "tenant": draw(_TEXT),
        "flow_name": draw(_TEXT),
        "step_id": draw(_OPTIONAL),
        "parent_step_id": draw(_OPTIONAL),
        "step_name": draw(_OPTIONAL),
        "status": draw(_STATUS),
        "error": draw(st.sampled_from([None, {"type": "E", "message": "", "stack": ""}])),
        "labels": draw(st.sampled_from([{}, {"k": "v"}])),
        "attributes": {},
        "timestamp": NOW_US + index,  # inside the retention TTL
        "service": draw(_TEXT),
        "host": "",
        "trace_id": None,
        "span_id": None,
        "sdk_version": "",
    }


def _valid(event: dict[str, Any]) -> bool:
    try:
        schemas.validate(event)
    except SchemaError:
        return False
    return True


@st.composite
def _messages(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    run = uuid.uuid4().hex[:12]
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=12))
    messages, index = [], 0
    for size in sizes:
        messages.append([draw(_event(run, index + i)) for i in range(size)])
        index += size
    return messages


class TestChdbSqlPredicate:
    """The SQL predicate and ``schemas.validate`` agree on every generated event."""

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(messages=_messages())
    def test_sql_validity_is_python_validate(self, chdb_store: Any, messages: list[list[dict[str, Any]]]) -> None:
        (result,) = chdb_store.insert_encoded([(SCHEMA, [body(m) for m in messages])], uuid.uuid4().hex)
        expected_invalid = tuple(i for i, m in enumerate(messages) if not all(_valid(e) for e in m))
        valid_ids = {e["event_id"] for m in messages for e in m if _valid(e)}
        assert result.invalid == expected_invalid
        assert result.events == len(valid_ids)
        run = messages[0][0]["event_id"] or next((e["event_id"] for m in messages for e in m if e["event_id"]), "")
        if run:
            prefix = run.rsplit("-", 1)[0] + "-"
            rows = chdb_store.select(
                "SELECT event_id FROM events WHERE startsWith(event_id, {p:String})", {"p": prefix}
            )
            assert {r["event_id"] for r in rows} == valid_ids

    def test_every_rule_of_validate_is_in_the_predicate(self) -> None:
        valid = mapping(SCHEMA).valid
        for kind in schemas.EVENT_KINDS:
            assert f"'{kind}'" in valid
        for field in ("event_id", "flow_id", "tenant", "flow_name", "step_id", "status"):
            assert f"e.{field}" in valid

    def test_schemas_the_sql_mapping_cannot_express_are_refused(self, chdb_store: Any) -> None:
        retyped = json.loads(SCHEMA)
        for field in retyped["fields"][0]["type"]["items"]["fields"]:
            if field["name"] == "service":
                field["type"] = ["null", "string"]
                field["default"] = None
        renamed = json.loads(SCHEMA)
        renamed["fields"][0]["type"]["items"]["name"] = "Other"
        required = json.loads(SCHEMA)
        fields = required["fields"][0]["type"]["items"]["fields"]
        fields[:] = [f for f in fields if f["name"] != "tenant"]
        for schema in (retyped, renamed, required):
            with pytest.raises(UnsupportedSchema) as caught:
                chdb_store.insert_encoded([(SCHEMA, []), (json.dumps(schema), [b"\x00"])], "x")
            assert caught.value.group == 1


def test_spool_files_of_dead_processes_are_swept() -> None:
    import os
    import subprocess
    import sys

    from dashfrog.storage._avro import spool_dir, sweep_spool, write_container

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = os.path.join(spool_dir(), f"dashfrog-spool-{int(dead.stdout)}-x.avro")
    open(stale, "wb").close()
    mine = write_container(SCHEMA, [b""])
    try:
        assert sweep_spool() >= 1
        assert not os.path.exists(stale) and os.path.exists(mine)
    finally:
        os.unlink(mine)


class TestChdbArbitraryBodies:
    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(junk=st.lists(st.binary(max_size=64), min_size=1, max_size=4), where=st.integers(0, 3))
    def test_any_bytes_are_read_or_refused_never_misread(
        self, chdb_store: Any, junk: list[bytes], where: int
    ) -> None:
        """Whatever a body holds, the store either reads exactly what the Python
        codec reads or refuses the group; the engine never takes the process down."""
        f = simple()
        bodies = [body(f.events), *junk]
        bodies.insert(min(where, len(bodies)), body(f.events[:2]))
        decoded: list[list[dict[str, Any]]] | None = []
        for b in bodies:
            try:
                decoded.append(schemas.decode(b"\xc3\x01" + _fp(json.loads(SCHEMA)) + b))  # type: ignore[union-attr]
            except SchemaError:
                decoded = None
                break
        try:
            (result,) = chdb_store.insert_encoded([(SCHEMA, bodies)], uuid.uuid4().hex)
        except MalformedEventsError as exc:
            assert exc.group == 0 and exc.done == []
            return
        assert decoded is not None, "the engine read bodies the Python codec refuses"
        invalid = tuple(i for i, events in enumerate(decoded) if not all(_valid(e) for e in events))
        assert result == GroupResult(sum(_valid(e) for events in decoded for e in events), invalid)

    def test_text_that_is_not_utf8_is_reported_not_refused(self, chdb_store: Any) -> None:
        a, b = simple(tenant="a"), simple(tenant="b")
        broken = body([dict(e, host="AAAA") for e in a.events]).replace(b"AAAA", b"\xff\xfe\xfd\xfc")
        (result,) = chdb_store.insert_encoded([(SCHEMA, [broken, body(b.events)])], "utf8")
        assert result == GroupResult(len(b.events), (0,))

    def test_many_messages_keep_their_positions(self, chdb_store: Any) -> None:
        flows = [simple(tenant=f"t{i % 5}") for i in range(700)]
        bad_at = {0, 137, 512, 699}
        bodies = [
            body([*f.events, dict(f.events[0], kind="nope")] if i in bad_at else f.events)
            for i, f in enumerate(flows)
        ]
        (result,) = chdb_store.insert_encoded([(SCHEMA, bodies)], "many")
        assert result == GroupResult(sum(len(f.events) for f in flows), tuple(sorted(bad_at)))


def test_container_has_one_block_per_message() -> None:
    parts = container_parts(SCHEMA, [b"ab", b"cde"])
    header, sync = parts[0], parts[0][-16:]
    assert header.startswith(b"Obj\x01") and b"avro.schema" in header and b"avro.codec" in header
    # count 1 (zig-zag 2), size, body, sync marker
    assert parts[1:] == [b"\x02\x04", b"ab", sync, b"\x02\x06", b"cde", sync]


# -- adapters --------------------------------------------------------------------------


class TestChdbEncoded(EncodedContract):
    @pytest.fixture
    def store(self, chdb_store: Any) -> Any:
        return chdb_store


class _PythonPath:
    """The chDB store with the portable (decode in Python) implementation."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def insert_encoded(self, groups: Any, token: str) -> Any:
        return SqlStore.insert_encoded(self._store, groups, token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class TestPythonPathEncoded(EncodedContract):
    @pytest.fixture
    def store(self, chdb_store: Any) -> Any:
        return _PythonPath(chdb_store)


class TestClickhouseEncoded(EncodedContract):
    @pytest.fixture
    def store(self, clickhouse_store: Any) -> Any:
        return clickhouse_store

    @staticmethod
    def flow_ids(store: Any) -> set[str]:
        return {r["flow_id"] for r in store._query("SELECT DISTINCT flow_id FROM flows")}

    def test_the_server_decodes_the_avro_itself(self, store: Any, monkeypatch: Any) -> None:
        """The worker hands the server the container; no event is decoded in
        Python (the portable path would call fastavro per message)."""
        assert store._reads_nullable_tuples(), "this server cannot read the container's error record"

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("decoded in Python")

        monkeypatch.setattr(fastavro, "schemaless_reader", refuse)
        flows = population()
        (result,) = store.insert_encoded([(SCHEMA, [body(f.events) for f in flows])], "server")
        assert result == GroupResult(sum(len(f.events) for f in flows))
        assert self.flow_ids(store) == {f.flow_id for f in flows}

    def test_text_that_is_not_utf8_is_reported_not_refused(self, store: Any) -> None:
        a, b = simple(tenant="a"), simple(tenant="b")
        broken = body([dict(e, host="AAAA") for e in a.events]).replace(b"AAAA", b"\xff\xfe\xfd\xfc")
        (result,) = store.insert_encoded([(SCHEMA, [broken, body(b.events)])], "utf8")
        assert result == GroupResult(len(b.events), (0,))
        assert self.flow_ids(store) == {b.flow_id}

    def test_many_messages_keep_their_positions(self, store: Any) -> None:
        flows = [simple(tenant=f"t{i % 5}") for i in range(700)]
        bad_at = {0, 137, 512, 699}
        bodies = [
            body([*f.events, dict(f.events[0], kind="nope")] if i in bad_at else f.events)
            for i, f in enumerate(flows)
        ]
        (result,) = store.insert_encoded([(SCHEMA, bodies)], "many")
        assert result == GroupResult(sum(len(f.events) for f in flows), tuple(sorted(bad_at)))
        again = store.insert_encoded([(SCHEMA, bodies)], "many")
        assert again == [result]
        assert int(store._query("SELECT count() AS n FROM events FINAL")[0]["n"]) == result.events

    def test_an_unreadable_body_names_its_group(self, store: Any) -> None:
        good = body(simple().events)
        with pytest.raises(MalformedEventsError) as caught:
            store.insert_encoded([(SCHEMA, [good]), (SCHEMA, [b"\x02garbage"])], "bad")
        assert caught.value.group == 1 and caught.value.done == [GroupResult(len(simple().events))]

    def test_a_server_that_cannot_be_reached_is_not_malformed_data(self, store: Any, monkeypatch: Any) -> None:
        """Connection trouble is retried by the processor; only the server
        refusing the container's bytes dead-letters messages."""
        from clickhouse_connect.driver.exceptions import OperationalError

        from dashfrog import StorageError

        def down(*args: Any, **kwargs: Any) -> Any:
            raise OperationalError("HTTPConnectionPool(host='127.0.0.1'): Connection refused")

        monkeypatch.setattr(store._client, "command", down)
        if hasattr(store._client, "_backend"):
            monkeypatch.setattr(store._client._backend, "request", down)
        with pytest.raises(StorageError) as caught:
            store.insert_encoded([(SCHEMA, [body(simple().events)])], "down")
        assert not isinstance(caught.value, MalformedEventsError)
