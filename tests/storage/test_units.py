"""Engine-free parts of storage: SQL admission, Arrow conversion, URLs."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from dashfrog._exceptions import ConfigurationError, QueryError, StorageError
from dashfrog.storage import SqlLimits, open_store
from dashfrog.storage._arrow import ARROW_SCHEMA, events_to_arrow
from dashfrog.storage._clickhouse import client_options


def test_sql_limits_map_engine_errors_to_their_setting() -> None:
    limits = SqlLimits(max_execution_s=2, max_result_rows=5, max_result_bytes=10, max_memory_bytes=20)
    clause = limits.settings_clause()
    assert clause.endswith("readonly = 1") and "max_result_rows = 5" in clause
    assert "max_threads = 3" in SqlLimits(max_threads=3).settings_clause()
    cases = {
        "Code: 159. DB::Exception: Timeout exceeded (TIMEOUT_EXCEEDED)": "DASHFROG_SQL_MAX_EXECUTION_S",
        "Code: 396. Limit for result exceeded, max rows: 5 (TOO_MANY_ROWS_OR_BYTES)": "DASHFROG_SQL_MAX_RESULT_ROWS",
        "Code: 396. Limit for result exceeded, max bytes: 10 (TOO_MANY_ROWS_OR_BYTES)": "DASHFROG_SQL_MAX_RESULT_BYTES",
        "Code: 241. Query memory limit exceeded (MEMORY_LIMIT_EXCEEDED)": "DASHFROG_SQL_MAX_MEMORY_BYTES",
    }
    for text, setting in cases.items():
        error = limits.error(text)
        assert isinstance(error, QueryError) and error is not None and error.setting == setting
        assert setting in str(error)
    assert limits.error("Code: 62. Syntax error (SYNTAX_ERROR)") is None


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
