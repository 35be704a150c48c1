"""The HTTP read API over a real chDB store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dashfrog._settings import Settings
from dashfrog.web import create_app
from tests.streams._helpers import flow_events

TENANTS = 3
N_FLOWS = 30


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path_factory.mktemp('chdb') / 'db'}")
    store.migrate()
    events = flow_events(N_FLOWS, tenants=TENANTS, steps=2, fail_every=5, run="web")
    store.insert_events(events, "web-test-1")
    store.events = events  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        store.close()


def client(store: Any, **settings: Any) -> TestClient:
    return TestClient(create_app(store, Settings(**settings)))


def test_flows_filters_and_pages(store: Any) -> None:
    api = client(store)
    everything = api.get("/api/flows", params={"limit": 1000}).json()
    assert len(everything["flows"]) == N_FLOWS and everything["next_cursor"] is None

    acme = api.get("/api/flows", params={"tenant": "tenant-1", "limit": 1000}).json()["flows"]
    assert len(acme) == N_FLOWS // TENANTS and {f["tenant"] for f in acme} == {"tenant-1"}

    failed = api.get("/api/flows", params={"status": "failed", "limit": 1000}).json()["flows"]
    assert len(failed) == N_FLOWS // 5 and all(f["error"]["step_name"] == "step1" for f in failed)

    by_pair = api.get("/api/flows", params=[("label", "batch:3"), ("label", "run:web")]).json()["flows"]
    by_json = api.get("/api/flows", params={"labels": json.dumps({"batch": "3"})}).json()["flows"]
    assert {f["flow_id"] for f in by_pair} == {f["flow_id"] for f in by_json}
    assert len(by_pair) == sum(1 for i in range(N_FLOWS) if i % 7 == 3)

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert api.get("/api/flows", params={"since": future}).json()["flows"] == []
    assert len(api.get("/api/flows", params={"until": future, "limit": 1000}).json()["flows"]) == N_FLOWS

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/flows", params=params).json()
        seen += [f["flow_id"] for f in page["flows"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == N_FLOWS


def test_flow_detail_stats_and_sql(store: Any) -> None:
    api = client(store)
    flow_id = store.events[0]["flow_id"]
    detail = api.get(f"/api/flows/{flow_id}").json()
    assert detail["flow_id"] == flow_id and detail["status"] == "failed"
    assert [s["name"] for s in detail["steps"]] == ["step0", "step1"]
    missing = api.get("/api/flows/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]

    stats = api.get("/api/stats", params={"tenant": "tenant-0"}).json()
    assert stats["runs"] == N_FLOWS // TENANTS
    assert stats["failed"] == sum(1 for i in range(0, N_FLOWS, TENANTS) if i % 5 == 0)

    rows = api.post("/api/sql", json={"sql": "SELECT tenant, count() AS n FROM events GROUP BY tenant ORDER BY tenant"})
    assert rows.status_code == 200
    assert [r["tenant"] for r in rows.json()["rows"]] == [f"tenant-{i}" for i in range(TENANTS)]
    bound = api.post("/api/sql", json={"sql": "SELECT {x:UInt8} + 1 AS y", "params": {"x": 41}}).json()
    assert bound["rows"] == [{"y": 42}]

    assert api.get("/healthz").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("path", "params", "needle"),
    [
        ("/api/flows", {"status": "exploded"}, "status"),
        ("/api/flows", {"limit": "0"}, "limit"),
        ("/api/flows", {"limit": "many"}, "limit"),
        ("/api/flows", {"label": "no-separator"}, "key=value"),
        ("/api/flows", {"labels": "{not json"}, "labels"),
        ("/api/flows", {"since": "yesterday-ish"}, "since"),
        ("/api/flows", {"since": "2030-01-02", "until": "2030-01-01"}, "after"),
        ("/api/stats", {"tenant": ""}, "tenant"),
    ],
)
def test_bad_parameters_are_400_with_a_reason(store: Any, path: str, params: dict[str, str], needle: str) -> None:
    response = client(store).get(path, params=params)
    assert response.status_code == 400, response.text
    assert needle in response.json()["detail"]


def test_sql_is_read_only(store: Any) -> None:
    api = client(store)
    for statement in ("DROP TABLE events", "INSERT INTO events (event_id) VALUES ('x')", "SELECT 1; DROP TABLE flows"):
        response = api.post("/api/sql", json={"sql": statement})
        assert response.status_code == 400, statement
        assert response.json()["detail"]
    assert api.post("/api/sql", json={"query": "SELECT 1"}).status_code == 400
    assert api.post("/api/sql", json={"sql": "SELECT no_such_column FROM flows"}).status_code == 400
    assert len(api.get("/api/flows", params={"limit": 1000}).json()["flows"]) == N_FLOWS


def test_tokens_scope_what_a_caller_sees(store: Any) -> None:
    api = client(store, admin_token="root-secret", tenant_tokens="tenant-1:t1-secret, tenant-2:t2-secret")
    admin = {"Authorization": "Bearer root-secret"}
    t1 = {"Authorization": "Bearer t1-secret"}

    assert api.get("/api/flows").status_code == 401
    assert api.get("/api/flows", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/healthz").status_code == 200
    everything = api.get("/api/flows", headers=admin, params={"limit": 1000})
    assert len(everything.json()["flows"]) == N_FLOWS, everything.text

    mine = api.get("/api/flows", headers=t1, params={"limit": 1000}).json()["flows"]
    assert mine and {f["tenant"] for f in mine} == {"tenant-1"}
    other = api.get("/api/flows", headers=t1, params={"tenant": "tenant-2"})
    assert other.status_code == 403 and "tenant-1" in other.json()["detail"]
    assert api.get("/api/stats", headers=t1).json()["runs"] == len(mine)
    assert api.get("/api/stats", headers=t1, params={"tenant": "tenant-0"}).status_code == 403

    foreign = next(e["flow_id"] for e in store.events if e["tenant"] == "tenant-0")
    assert api.get(f"/api/flows/{foreign}", headers=t1).status_code == 404
    assert api.get(f"/api/flows/{foreign}", headers=admin).status_code == 200
    assert api.get(f"/api/flows/{mine[0]['flow_id']}", headers=t1).status_code == 200

    assert api.post("/api/sql", headers=t1, json={"sql": "SELECT 1"}).status_code == 403
    assert api.post("/api/sql", headers=admin, json={"sql": "SELECT 1 AS one"}).json()["rows"] == [{"one": 1}]


def test_tenant_tokens_alone_close_the_api(store: Any) -> None:
    api = client(store, tenant_tokens="tenant-2:t2")
    assert api.get("/api/flows", params={"limit": 1000}).status_code == 401
    assert api.get("/api/flows", headers={"Authorization": "Bearer wrong"}).status_code == 401
    scoped = api.get("/api/flows", headers={"Authorization": "Bearer t2"}, params={"limit": 1000}).json()
    assert {f["tenant"] for f in scoped["flows"]} == {"tenant-2"}
    # No admin token: nobody may run SQL over every tenant.
    assert api.post("/api/sql", headers={"Authorization": "Bearer t2"}, json={"sql": "SELECT 1"}).status_code == 403


# -- dashfrog up, end to end ----------------------------------------------------------------


def _get(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_dashfrog_up_serves_what_it_processes_and_stops_cleanly(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    import asyncio

    from dashfrog.runtime._broker import free_port
    from tests.streams._helpers import produce

    port = free_port()
    env = {
        **os.environ,
        "DASHFROG_KAFKA_BOOTSTRAP": broker,
        "DASHFROG_TOPIC_PREFIX": topic_prefix,
        "DASHFROG_TOPIC_PARTITIONS": "2",
        "DASHFROG_PROCESSOR_GROUP": f"{topic_prefix}up",
        "DASHFROG_REBALANCE_TIMEOUT_S": "2",
        "DASHFROG_CLICKHOUSE_URL": f"chdb://{tmp_path / 'db'}",
        "DASHFROG_API_PORT": str(port),
        "DASHFROG_ADMIN_TOKEN": "adm",
    }
    log = tmp_path / "up.log"
    up = subprocess.Popen(
        [sys.executable, "-c", "from dashfrog.runtime._cli import main; main()", "up", "--status-every", "0.5"],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        events = flow_events(50, tenants=5, run="up")
        asyncio.run(produce(broker, topic_prefix + "dashfrog.events", events, 2, per_message=25))
        deadline = time.monotonic() + 60
        found: list[Any] = []
        while time.monotonic() < deadline and len(found) < 50:
            assert up.poll() is None, log.read_text()
            try:
                found = _get(f"http://127.0.0.1:{port}/api/flows?limit=1000", "adm")["flows"]
            except OSError:
                pass
            time.sleep(0.2)
        assert len(found) == 50, log.read_text()
        deadline = time.monotonic() + 10
        while "flows 50" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "flows 50" in log.read_text()
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0, log.read_text()
        assert "dashfrog up: stopped" in log.read_text()
    finally:
        if up.poll() is None:
            up.kill()
