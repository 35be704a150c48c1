"""Encoded inserts: Kafka message bodies handed to ClickHouse as Avro, undecoded.

A message value is ``C3 01`` + an 8-byte schema fingerprint + the Avro binary
body of one ``EventBatch`` record. The bodies of messages written with one
writer schema are wrapped, without decoding them, in an Avro Object Container
File: a header carrying that writer schema, then one data block per message
(count 1, the body's size, the body, the sync marker). ClickHouse reads the
file with its own Avro reader (``file(path, 'Avro')``: one row per message, an
``events`` array of tuples) and ``INSERT ... SELECT`` maps the events to the
``events`` table in C++, so the processor never builds a Python object per
event. One block per message keeps messages apart: the reader skips whatever a
body leaves unread in its block and checks the sync marker after each, so a
damaged message cannot shift the next one's events.

Schema evolution: ClickHouse reads the data with the writer schema. The
mapping to the table is generated per writer schema from the reader's (the
current schema's) fields: a field the writer lacks takes the reader's default,
a field only the writer has is ignored, as Avro resolution does. A writer
schema the mapping cannot express exactly (a type that differs from the
reader's, a required field without a default, other record names) is refused
with :class:`UnsupportedSchema`, and the caller decodes those messages with
the Python codec instead.

Validity: ``VALID`` is ``dashfrog.schemas.validate`` as a SQL predicate over
one event ``e``; tests compare the two on generated events.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from fastavro.schema import to_parsing_canonical_form

from dashfrog import schemas
from dashfrog._exceptions import StorageError
from dashfrog.storage._schema import EVENT_COLUMNS

# One group of an encoded insert: (writer schema JSON, message bodies without
# their 10-byte single-object prefix).
EncodedGroup = tuple[str, Sequence[bytes]]

_MAGIC = b"Obj\x01"


@dataclass(frozen=True, slots=True)
class GroupResult:
    """What an encoded insert did with one group."""

    # Valid events written.
    events: int
    # Indexes (within the group) of messages holding at least one invalid
    # event; their valid events were written, the invalid ones were not.
    invalid: tuple[int, ...] = ()


class MalformedEventsError(StorageError):
    """A group's bodies do not read as Avro with their writer schema (or the
    engine could not read them): nothing of this group or later ones was
    written; groups before ``group`` were, with the results in ``done``."""

    def __init__(self, message: str, group: int, done: Sequence[GroupResult] = ()) -> None:
        super().__init__(message)
        self.group = group
        self.done: list[GroupResult] = list(done)


class UnsupportedSchema(MalformedEventsError):
    """The writer schema cannot be mapped to the events table in SQL."""


# -- the container file ---------------------------------------------------------


_long = schemas.encode_long


def container_parts(schema_json: str, bodies: Iterable[bytes]) -> list[bytes]:
    """The Object Container File for ``bodies`` as a list of chunks (write them
    in order), one data block per body."""
    sync = os.urandom(16)
    schema = schema_json.encode()
    header = b"".join(
        (
            _MAGIC,
            _long(2),
            _long(11), b"avro.schema", _long(len(schema)), schema,
            _long(10), b"avro.codec", _long(4), b"null",
            _long(0),
            sync,
        )
    )
    parts = [header]
    append = parts.append
    one = _long(1)
    for body in bodies:
        append(one + _long(len(body)))
        append(body)
        append(sync)
    return parts


def spool_dir() -> str:
    """Where container files go: memory-backed /dev/shm when it exists."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return tempfile.gettempdir()


_SPOOL_PREFIX = "dashfrog-spool-"


def write_container(schema_json: str, bodies: Iterable[bytes]) -> str:
    """Write the container file for ``bodies``; returns its path (caller removes it)."""
    fd, path = tempfile.mkstemp(
        prefix=f"{_SPOOL_PREFIX}{os.getpid()}-", suffix=".avro", dir=spool_dir()
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.writelines(container_parts(schema_json, bodies))
    except BaseException:
        os.unlink(path)
        raise
    return path


def sweep_spool() -> int:
    """Remove container files left by processes that died mid-insert (files in
    /dev/shm hold memory until removed); returns how many were removed."""
    removed = 0
    try:
        names = os.listdir(spool_dir())
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(_SPOOL_PREFIX) and name.endswith(".avro")):
            continue
        pid_text = name[len(_SPOOL_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(spool_dir(), name))
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def group_suffix(schema_json: str) -> str:
    """Deterministic per-group part of an insert deduplication token."""
    return hashlib.sha256(schema_json.encode()).hexdigest()[:16]


# -- mapping a writer schema to the events table ----------------------------------

_KINDS = ", ".join(f"'{k}'" for k in schemas.EVENT_KINDS)
_STATUSES = ", ".join(f"'{s}'" for s in schemas.STATUSES)
_FLOW_STATUSES = ", ".join(f"'{s}'" for s in schemas.FLOW_STATUSES)

_NULLABLE_STRINGS = schemas.OPTIONAL_TEXT_FIELDS
_ERROR_PARTS = ("type", "message", "stack")


@cache
def _reader() -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The current schema: canonical field types, defaults, record full names."""
    canonical = json.loads(to_parsing_canonical_form(schemas.current_schema()))
    raw = json.loads(schemas.schema_json())
    types = {f["name"]: f["type"] for f in _event_record(canonical)["fields"]}
    defaults = {f["name"]: f["default"] for f in _event_record(raw)["fields"] if "default" in f}
    return types, defaults, _record_names(canonical)


def _event_record(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise UnsupportedSchema("writer schema is not a record", 0)
    fields = schema.get("fields") or []
    if len(fields) != 1 or fields[0].get("name") != "events":
        raise UnsupportedSchema("writer schema is not an EventBatch {events: array}", 0)
    array = fields[0]["type"]
    if not isinstance(array, dict) or array.get("type") != "array":
        raise UnsupportedSchema("writer schema's events is not an array", 0)
    item = array["items"]
    if not isinstance(item, dict) or item.get("type") != "record":
        raise UnsupportedSchema("writer schema's events are not records", 0)
    return item


def _record_names(canonical: Any) -> dict[str, str]:
    """Record full names by role, which Avro resolution requires to match."""
    names: dict[str, str] = {"batch": canonical.get("name", "")}
    event = _event_record(canonical)
    names["event"] = event.get("name", "")
    for f in event["fields"]:
        if f["name"] == "error":
            branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
            for b in branches:
                if isinstance(b, dict) and b.get("type") == "record":
                    names["error"] = b.get("name", "")
    return names


@dataclass(frozen=True)
class Mapping:
    """SQL for one writer schema: the column expressions and the validity test,
    over one event tuple ``e`` of the container file's ``events`` array."""

    columns: str  # "expr AS event_id, ..." in EVENT_COLUMNS order
    valid: str
    # Every string of the event is UTF-8, as the Python codec requires to
    # decode it (a message with one that is not is undecodable as a whole).
    utf8: str


def _field_exprs(present: set[str], defaults: dict[str, Any]) -> dict[str, str]:
    """Per reader field, a SQL expression of its value (the writer's or the default)."""
    out: dict[str, str] = {}
    types, _, _ = _reader()
    for name in types:
        if name in present:
            out[name] = f"e.{name}"
            continue
        if name not in defaults:
            raise UnsupportedSchema(f"writer schema has no {name!r} and the reader no default", 0)
        default = defaults[name]
        if name in _NULLABLE_STRINGS or name == "error":
            if default is not None:
                raise UnsupportedSchema(f"unexpected default for {name!r}", 0)
            out[name] = "NULL"
        elif name in ("labels", "attributes"):
            if default != {}:
                raise UnsupportedSchema(f"unexpected default for {name!r}", 0)
            out[name] = "map()"
        elif isinstance(default, str):
            out[name] = "'" + default.replace("\\", "\\\\").replace("'", "\\'") + "'"
        elif name == schemas.METRICS_FIELD and default == []:
            out[name] = "[]"  # never read: metrics events are not written to events
        else:
            raise UnsupportedSchema(f"no SQL for the default of {name!r}", 0)
    return out


def _columns(f: dict[str, str]) -> dict[str, str]:
    def text(name: str) -> str:
        return "''" if f[name] == "NULL" else f"ifNull({f[name]}, '')"

    def error(part: str) -> str:
        return "''" if f["error"] == "NULL" else f"ifNull({f['error']}.{part}, '')"

    cols: dict[str, str] = {}
    for name in EVENT_COLUMNS:
        if name in _NULLABLE_STRINGS:
            cols[name] = text(name)
        elif name == "has_error":
            cols[name] = "toUInt8(0)" if f["error"] == "NULL" else f"toUInt8(isNotNull({f['error']}))"
        elif name.startswith("error_"):
            cols[name] = error(name[6:])
        elif name in ("labels", "attributes"):
            cols[name] = f"CAST({f[name]}, 'Map(String, String)')" if f[name] == "map()" else f[name]
        elif name == "timestamp":
            cols[name] = f"fromUnixTimestamp64Micro({f[name]}, 'UTC')"
        else:
            cols[name] = f[name]
    return cols


def _valid(f: dict[str, str]) -> str:
    """``schemas.validate`` as SQL: see that function for the rules."""

    def text(name: str) -> str:
        return "''" if f[name] == "NULL" else f"ifNull({f[name]}, '')"

    required = " AND ".join(f"{f[name]} != ''" for name in ("event_id", "flow_id", "tenant", "flow_name"))
    return (
        f"({f['kind']} IN ({_KINDS}) AND {required}"
        f" AND (NOT startsWith({f['kind']}, 'step_') OR {text('step_id')} != '')"
        f" AND (NOT endsWith({f['kind']}, '_ended') OR {text('status')} IN ({_STATUSES}))"
        f" AND ({f['kind']} != 'flow_ended' OR {text('status')} IN ({_FLOW_STATUSES})))"
    )


def _utf8(f: dict[str, str]) -> str:
    checks: list[str] = []
    for name, expr in f.items():
        if expr == "NULL" or not expr.startswith("e.") or name == schemas.METRICS_FIELD:
            continue  # defaults are valid text; metric points are not written here
        if name == "error":
            checks += [f"isValidUTF8(ifNull({expr}.{part}, ''))" for part in _ERROR_PARTS]
        elif name in ("labels", "attributes"):
            checks += [f"arrayAll(s -> isValidUTF8(s), mapKeys({expr}))",
                       f"arrayAll(s -> isValidUTF8(s), mapValues({expr}))"]
        elif name in _NULLABLE_STRINGS:
            checks.append(f"isValidUTF8(ifNull({expr}, ''))")
        elif name != "timestamp":
            checks.append(f"isValidUTF8({expr})")
    return "(" + " AND ".join(checks) + ")"


@lru_cache(maxsize=64)
def mapping(schema_json: str) -> Mapping:
    """The SQL mapping for ``schema_json``; raises UnsupportedSchema (group 0)."""
    try:
        writer = json.loads(to_parsing_canonical_form(json.loads(schema_json)))
    except Exception as exc:
        raise UnsupportedSchema(f"writer schema does not parse: {exc}", 0) from exc
    types, defaults, names = _reader()
    if _record_names(writer) != names:
        raise UnsupportedSchema("writer schema's record names differ from the reader's", 0)
    writer_types = {f["name"]: f["type"] for f in _event_record(writer)["fields"]}
    for name, kind in writer_types.items():
        if name in types and kind != types[name]:
            raise UnsupportedSchema(f"writer schema's {name!r} has another type than the reader's", 0)
    fields = _field_exprs(set(writer_types), defaults)
    columns = _columns(fields)
    return Mapping(
        columns=", ".join(f"{columns[c]} AS {c}" for c in EVENT_COLUMNS),
        valid=_valid(fields),
        utf8=_utf8(fields),
    )


# Spool paths are reused names for different writers' files: the schema is
# always read from the file's header, never from the inference cache.
NO_SCHEMA_CACHE = "schema_inference_use_cache_for_file = 0"


def file_source(path: str) -> str:
    """The container file at ``path`` as a table (an engine with local files)."""
    return f"file({sql_quote(path)}, 'Avro')"


# Where the container goes in a statement for a server (see ``inline_statement``).
_INLINE_DATA = "__dashfrog_avro_container__"
INLINE_SOURCE = f"format(Avro, base64Decode('{_INLINE_DATA}'))"


def inline_statement(sql: str, container: bytes) -> tuple[str, bytes]:
    """``sql`` (built with ``source=INLINE_SOURCE``) with the container in it,
    for a server that cannot read our files, as (first word, the rest as
    bytes): ClickHouse's HTTP interface runs the ``query`` parameter + a
    newline + the body as one statement, so the rest goes in the request
    body and the client library never scans the container's text. Base64
    keeps it text-safe through any HTTP layer (``base64Decode`` and
    ``format()`` exist in ClickHouse 24.8); the statement is bigger than
    ``max_query_size``'s default, so raise that per request to its length."""
    head, tail = sql.split(_INLINE_DATA)
    first, _, head = head.partition(" ")
    data = binascii.b2a_base64(container, newline=False)
    return first, b"".join((head.encode(), data, tail.encode()))


def check_sql(path: str, m: Mapping, *, source: str | None = None) -> str:
    """Per file: valid events to write, messages holding invalid events, and
    messages the Python codec could not decode at all (text that is not UTF-8),
    none of whose events are written. ``source`` replaces the file (see
    ``INLINE_SOURCE``)."""
    source = source or file_source(path)
    return (
        "SELECT toUInt64(sum(if(msg_broken, 0, msg_events - msg_bad))) AS written,"  # noqa: S608 - generated
        " groupArrayIf(msg, msg_bad > 0 OR msg_broken) AS invalid,"
        " groupArrayIf(msg, msg_broken) AS broken FROM ("
        "SELECT rowNumberInAllBlocks() AS msg, length(events) AS msg_events,"
        f" arrayCount(e -> NOT {m.valid}, events) AS msg_bad,"
        f" NOT arrayAll(e -> {m.utf8}, events) AS msg_broken FROM {source})"
        f" SETTINGS {NO_SCHEMA_CACHE}"
    )


def insert_sql(
    path: str, m: Mapping, *, filtered: bool, skip: Sequence[int] = (), source: str | None = None
) -> str:
    """Insert the file's events; ``filtered``: only valid ones; ``skip``: not
    those of these messages (numbered as ``check_sql`` numbers them)."""
    source = source or file_source(path)
    conditions = [m.valid] if filtered else []
    if skip:
        source = f"(SELECT rowNumberInAllBlocks() AS msg, events FROM {source})"  # noqa: S608 - generated
        conditions.append(f"msg NOT IN ({', '.join(str(int(i)) for i in skip)})")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return (
        f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "  # noqa: S608 - generated, no user text
        f"SELECT {m.columns} FROM {source} ARRAY JOIN events AS e{where}"
    )


def sql_quote(value: str) -> str:
    """``value`` as a ClickHouse string literal, for the few places (a file path,
    a SETTINGS value) where a query parameter cannot go."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
