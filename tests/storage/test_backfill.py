"""Rebuilds and backfilling upgrades run in chunks of whole flows and report
progress; chunked, they project exactly what one pass does."""

from __future__ import annotations

from typing import Any

import pytest

from dashfrog.storage import _base
from tests.streams._helpers import flow_events

TABLES = {
    "flows": "SELECT * FROM flows ORDER BY tenant, flow_id",
    "steps": "SELECT * FROM steps ORDER BY tenant, flow_id, step_id",
    "flow_runs": "SELECT * FROM flow_runs ORDER BY flow_name, tenant, flow_id",
}


def _snapshot(store: Any) -> dict[str, list[dict[str, Any]]]:
    # Aggregating tables: merge the parts so equal state compares equal.
    for table in TABLES:
        store._execute(f"OPTIMIZE TABLE {table} FINAL")
    return {table: store.select(sql) for table, sql in TABLES.items()}


def test_chunked_rebuild_projects_what_one_pass_does(chdb_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    events = flow_events(60, tenants=4, steps=3, fail_every=5, run="chunks")
    chdb_store.insert_events(events, "c1")
    one_pass = _snapshot(chdb_store)
    assert one_pass["flows"] and one_pass["steps"] and one_pass["flow_runs"]

    monkeypatch.setattr(_base, "BACKFILL_CHUNK_EVENTS", 50)  # several chunks
    seen: list[tuple[int, int]] = []
    chdb_store.rebuild(lambda done, total: seen.append((done, total)))
    assert _snapshot(chdb_store) == one_pass

    total = len(events)
    chunks = -(-total // 50)
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert len(seen) == chunks + 1
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_an_upgrade_that_backfills_reports_progress(chdb_store: Any) -> None:
    chdb_store.insert_events(flow_events(10, tenants=2, steps=2, run="upgrade"), "u1")
    expected = _snapshot(chdb_store)["flow_runs"]
    # Undo the flow_runs migration (4) as if the store predated it.
    chdb_store._execute("DROP VIEW IF EXISTS flow_runs_mv")
    chdb_store._execute("DROP TABLE IF EXISTS flow_runs")
    chdb_store._execute("ALTER TABLE schema_migrations DELETE WHERE version = 4 SETTINGS mutations_sync = 1")
    seen: list[tuple[int, int]] = []
    chdb_store.migrate(lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert _snapshot(chdb_store)["flow_runs"] == expected
