"""Engine-free parts of storage: SQL admission, Arrow conversion, URLs."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from dashfrog._exceptions import ConfigurationError, QueryError, StorageError
from dashfrog.storage import open_store, read_only_statement
from dashfrog.storage._arrow import ARROW_SCHEMA, events_to_arrow
from dashfrog.storage._clickhouse import client_options


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select 1;",
        "  WITH x AS (SELECT 1) SELECT * FROM x ;; ",
        "SELECT ';' AS s",
        "SELECT 1 -- trailing; comment",
        "SELECT /* ; */ 1",
        "SELECT `a;b` FROM t",
        "SELECT 'it''s; fine'",
        "SELECT 'a\\';b'",
        "SELECT format('{}', 1) AS f",
        "SELECT 1 AS format",
        "SHOW TABLES",
        "DESCRIBE TABLE flows",
        "desc default.events",
        "EXISTS TABLE flows",
    ],
)
def test_read_statements_are_admitted(sql: str) -> None:
    assert "readonly = 1" in read_only_statement(sql)


@pytest.mark.parametrize(
    "sql, reason",
    [
        ("INSERT INTO t VALUES (1)", "only read queries"),
        ("SELECT 1; DROP TABLE t", "one statement"),
        ("SELECT 1 /* x */; SELECT 2", "one statement"),
        ("SELECT 1 INTO OUTFILE 'x'", "OUTFILE"),
        ("SELECT 1 FORMAT CSV", "FORMAT"),
        ("SELECT 1 SETTINGS readonly=0", "readonly"),
        ("DESCRIBE (SELECT * FROM file('x'))", "table name"),
        ("SHOW TABLES SETTINGS max_threads=1", "SETTINGS"),
        ("SELECT 'open", "unterminated"),
        ("SELECT /* open", "unterminated"),
        ("   ", "empty"),
        ("-- only a comment", "got 'nothing'"),
    ],
)
def test_other_statements_are_refused(sql: str, reason: str) -> None:
    with pytest.raises(QueryError, match=reason):
        read_only_statement(sql)


def test_trailing_string_literal_is_kept() -> None:
    sql = "SELECT name FROM system.settings WHERE name = 'readonly'"
    assert read_only_statement(sql) == f"SELECT * FROM (\n{sql}\n) SETTINGS readonly = 1"


def test_keywords_inside_strings_do_not_count() -> None:
    wrapped = read_only_statement("SELECT 'INTO OUTFILE ; FORMAT readonly' AS s")
    assert wrapped.startswith("SELECT * FROM (")


def _event(**over: Any) -> dict[str, Any]:
    event = {
        "event_id": "e",
        "kind": "flow_started",
        "flow_id": "f",
        "tenant": "t",
        "flow_name": "n",
        "timestamp": 1_790_000_000_000_000,
    }
    event.update(over)
    return event


def test_arrow_conversion_fills_optional_fields() -> None:
    table = events_to_arrow(
        [
            _event(),
            _event(
                step_id="s",
                labels={"k": "v"},
                attributes=None,
                error={"type": "E", "message": "m", "stack": "s"},
                status="failed",
            ),
        ]
    )
    assert table.schema == ARROW_SCHEMA
    rows = table.to_pylist()
    assert rows[0]["step_id"] == "" and rows[0]["labels"] == [] and rows[0]["has_error"] == 0
    assert rows[1]["labels"] == [("k", "v")] and rows[1]["attributes"] == []
    assert (rows[1]["error_type"], rows[1]["has_error"]) == ("E", 1)
    assert table.column("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.column("timestamp").cast(pa.int64()).to_pylist() == [1_790_000_000_000_000] * 2
    assert table.column("labels").null_count == 0 and table.column("attributes").null_count == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"flow_id": None},
        {"timestamp": "now"},
        {"labels": {"k": 1}},
        {"tenant": 3},
    ],
)
def test_arrow_conversion_rejects_contract_violations(bad: dict[str, Any]) -> None:
    with pytest.raises(StorageError):
        events_to_arrow([_event(**bad)])


def test_clickhouse_urls() -> None:
    opts = client_options("clickhouse://u:p%40ss@ch.example:9000/analytics?max_threads=2")
    assert opts == {
        "host": "ch.example",
        "port": 9000,
        "username": "u",
        "password": "p@ss",
        "database": "analytics",
        "secure": False,
        "settings": {"max_threads": "2"},
    }
    secure = client_options("clickhouses://ch.example")
    assert (secure["port"], secure["secure"], secure["database"], secure["username"]) == (
        8443,
        True,
        "default",
        "default",
    )
    with pytest.raises(ConfigurationError):
        client_options("clickhouse://h/bad-name;drop")
    with pytest.raises(ConfigurationError):
        open_store("postgres://x")
