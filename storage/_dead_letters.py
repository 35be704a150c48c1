"""The ``dead_letters`` table: a queryable record of every message the
processor could not write, beside the DLQ topic that holds the messages.

A row keeps where the message came from (topic, partition, offset), its size,
the reason, whether the DLQ topic holds it whole or only a reference, its
first bytes, key and headers. Rows are keyed by (topic, partition, offset) in
a ReplacingMergeTree and read with FINAL, so a message dead-lettered again
after a redelivery shows once.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dashfrog._exceptions import QueryError

# Bytes of a message kept in the table; of its key and of each header value;
# and the most header text a row keeps (later headers are left out).
HEAD_BYTES = 1024
FIELD_BYTES = 256
HEADERS_BYTES = 4096
# Most rows one read returns.
MAX_LIMIT = 10_000
# One insert statement carries its rows as one JSON parameter; a server takes
# parameters in the URL, percent-encoded (up to 3 characters a byte), so
# statements stay well under a 64 KiB request line.
_STATEMENT_BYTES = 12 * 1024

# Where the whole message went: the DLQ topic, a reference in the DLQ topic
# (the message did not fit or the topic refused it), or nowhere but this table.
IN_DLQ = ("whole", "reference", "none")

# The rows arrive as one JSON array of arrays, one per letter, in column order.
_INSERT = (
    "INSERT INTO dead_letters (topic, partition, offset, size, reason, in_dlq, head, key, headers, dead_lettered_at) "
    "SELECT r.1, r.2, r.3, r.4, r.5, r.6, base64Decode(r.7), base64Decode(r.8), r.9, "
    "fromUnixTimestamp64Milli(r.10, 'UTC') "
    "FROM (SELECT arrayJoin(JSONExtract({rows:String}, 'Array(Tuple(String, UInt32, UInt64, UInt64, "
    "String, String, String, String, Map(String, String), Int64))')) AS r)"
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, as the processor records it."""

    topic: str
    partition: int
    offset: int
    size: int
    reason: str
    in_dlq: str
    head: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()
    at: float = field(default_factory=time.time)


def insert_statements(letters: Sequence[DeadLetter]) -> list[tuple[str, dict[str, Any]]]:
    """(statement, parameters) pairs writing ``letters``; each parameter stays
    under 12 KiB, or holds one row when a row is larger (at most about 7 KiB)."""
    statements: list[tuple[str, dict[str, Any]]] = []
    rows: list[str] = []
    size = 0
    for letter in letters:
        row = json.dumps(_row(letter), separators=(",", ":"))
        if rows and size + len(row) > _STATEMENT_BYTES:
            statements.append((_INSERT, {"rows": "[" + ",".join(rows) + "]"}))
            rows, size = [], 0
        rows.append(row)
        size += len(row) + 1
    if rows:
        statements.append((_INSERT, {"rows": "[" + ",".join(rows) + "]"}))
    return statements


def _row(letter: DeadLetter) -> list[Any]:
    if letter.in_dlq not in IN_DLQ:
        raise ValueError(f"in_dlq must be one of {IN_DLQ}, not {letter.in_dlq!r}")
    headers: dict[str, str] = {}
    room = HEADERS_BYTES
    for name, value in letter.headers:
        key = str(name)[:64]
        text = bytes(value or b"")[:FIELD_BYTES].decode("utf-8", "replace")
        room -= len(json.dumps([key, text]))
        if room < 0:
            break
        headers[key] = text
    return [
        letter.topic,
        int(letter.partition),
        int(letter.offset),
        int(letter.size),
        letter.reason,
        letter.in_dlq,
        base64.b64encode(bytes(letter.head[:HEAD_BYTES])).decode(),
        base64.b64encode(bytes(letter.key or b"")[:FIELD_BYTES]).decode(),
        headers,
        int(letter.at * 1000),
    ]


def read(
    query: Callable[[str, Mapping[str, Any] | None], list[dict[str, Any]]],
    *,
    limit: int = 50,
    topic: str | None = None,
    partition: int | None = None,
    reason: str | None = None,
    since: datetime | float | None = None,
) -> list[dict[str, Any]]:
    """The most recent dead letters, newest first, as JSON-ready dicts.

    ``reason`` matches a part of the reason (case-insensitive); ``since`` is a
    datetime (naive: UTC) or epoch seconds.
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    where = ["1"]
    params: dict[str, Any] = {"limit": limit}
    if topic:
        where.append("topic = {topic:String}")
        params["topic"] = topic
    if partition is not None:
        if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
            raise QueryError("partition must be a non-negative integer")
        where.append("partition = {partition:UInt32}")
        params["partition"] = partition
    if reason:
        where.append("positionCaseInsensitive(reason, {reason:String}) > 0")
        params["reason"] = reason
    if since is not None:
        where.append("dead_lettered_at >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')")
        params["since_ms"] = int(_epoch(since) * 1000)
    # Fixed clauses only; every value is a bound parameter.
    sql = (
        "SELECT topic, partition, offset, size, reason, in_dlq, base64Encode(head) AS head_base64, "  # noqa: S608
        "base64Encode(key) AS key_base64, headers, toUnixTimestamp64Milli(dead_lettered_at) AS at_ms "
        f"FROM dead_letters FINAL WHERE {' AND '.join(where)} "
        "ORDER BY dead_lettered_at DESC, topic, partition, offset DESC LIMIT {limit:UInt32}"
    )
    rows = query(sql, params)
    return [_letter(row) for row in rows]


def _letter(row: Mapping[str, Any]) -> dict[str, Any]:
    head = base64.b64decode(row["head_base64"] or "")
    at = datetime.fromtimestamp(int(row["at_ms"]) / 1000, UTC)
    return {
        "topic": row["topic"],
        "partition": int(row["partition"]),
        "offset": int(row["offset"]),
        "size": int(row["size"]),
        "reason": row["reason"],
        "in_dlq": row["in_dlq"],
        "head_base64": row["head_base64"],
        # What a person can read of the first bytes; undecodable bytes as \\xNN.
        "head_text": head[:200].decode("utf-8", "backslashreplace"),
        "key": base64.b64decode(row["key_base64"] or "").decode("utf-8", "backslashreplace"),
        "headers": dict(row["headers"] or {}),
        "dead_lettered_at": at.isoformat().replace("+00:00", "Z"),
    }


def _epoch(value: datetime | float) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError("since must be a datetime or epoch seconds")
    return float(value)
