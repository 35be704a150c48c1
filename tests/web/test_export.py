"""Export and charts over a real uvicorn server and a real chDB store.

What a user relies on: an export holds every matching flow (not one page),
in the tenant scope of the credential; a flow downloads with its steps and
events; chart and stat numbers follow every filter of the list; the CLI
streams every flow too and prints a flow's timeline.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashfrog._export import CSV_COLUMNS
from dashfrog._settings import Settings
from dashfrog.schemas import Event, Kind, make_event
from dashfrog.web import create_app
from tests.web._helpers import Server

N_FLOWS = 2300  # more than two export pages of 1000
TENANTS = ("acme-corp", "globex", "initech")
NOW_US = int(time.time() * 1_000_000)
DURATIONS_MS = (3, 30, 300, 3000)  # every 4th flow takes the same time


def _event(flow: dict[str, Any], kind: Kind, ts: int, **fields: Any) -> Event:
    fields = {"service": "svc", "host": "h", "trace_id": "ab" * 16, "span_id": "cd" * 8, "sdk_version": "test",
              **fields}  # fmt: skip
    return make_event(kind, flow_id=flow["flow_id"], tenant=flow["tenant"], flow_name=flow["name"], timestamp=ts,
                      **fields)  # fmt: skip


def seed() -> tuple[list[dict[str, Any]], list[Event]]:
    """N_FLOWS flows started one second apart over the last ~40 minutes."""
    flows: list[dict[str, Any]] = []
    events: list[Event] = []
    for i in range(N_FLOWS):
        start = NOW_US - (N_FLOWS - i) * 1_000_000 - 120_000_000
        status = "running" if i % 10 == 9 else "failed" if i % 7 == 0 else "success"
        flow = {
            "flow_id": f"{start // 1000:012x}{i:020d}",
            "tenant": TENANTS[i % 3],
            "name": "=HYPERLINK(\"x\")" if i == 5 else ("checkout" if i % 2 else "data_import"),
            "status": status,
            "labels": {"env": "prod" if i % 4 else "staging", "batch": str(i % 5)},
            "duration_ms": None if status == "running" else DURATIONS_MS[i % 4],
            "start_us": start,
        }
        events.append(_event(flow, "flow_started", start, labels=flow["labels"]))
        step = {"step_id": f"s{i}", "step_name": "work"}
        events.append(_event(flow, "step_started", start + 100, **step))
        if status != "running":
            end = start + DURATIONS_MS[i % 4] * 1000
            error = {"type": "ValueError", "message": "bad row", "stack": ""} if status == "failed" else None
            events.append(_event(flow, "step_ended", end - 100, status=status, error=error, **step))
            events.append(_event(flow, "flow_ended", end, status=status, error=error))
        flows.append(flow)
    # One flow with a known timeline: call_payments 351 ms, its children 18 ms.
    start = NOW_US - 30_000_000
    timed = {"flow_id": f"{start // 1000:012x}{'t' * 20}", "tenant": "acme-corp", "name": "checkout",
             "status": "success", "labels": {"env": "prod"}, "duration_ms": 400.0, "start_us": start}  # fmt: skip
    pay = {"step_id": "pay", "step_name": "call_payments", "service": "payments"}
    events += [
        _event(timed, "flow_started", start, labels=timed["labels"]),
        _event(timed, "step_started", start + 10_000, **pay),
        _event(timed, "step_started", start + 20_000, step_id="fraud", step_name="fraud_check",
               parent_step_id="pay", service="payments"),
        _event(timed, "step_ended", start + 28_000, step_id="fraud", step_name="fraud_check",
               parent_step_id="pay", service="payments", status="success"),
        _event(timed, "step_started", start + 30_000, step_id="charge", step_name="charge_card",
               parent_step_id="pay", service="payments"),
        _event(timed, "step_ended", start + 40_000, step_id="charge", step_name="charge_card",
               parent_step_id="pay", service="payments", status="success"),
        _event(timed, "step_ended", start + 361_000, status="success", **pay),
        _event(timed, "flow_ended", start + 400_000, status="success"),
    ]
    flows.append(timed)
    return flows, events


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path_factory.mktemp('export') / 'db'}", stalled_after_s=3600)
    store.migrate()
    flows, events = seed()
    store.insert_events(events, "export-seed")
    store.seeded = flows
    store.seeded_events = events
    try:
        yield store
    finally:
        store.close()


SECRETS = {"admin_token": "root-secret", "tenant_tokens": "acme-corp:acme-secret,globex:globex-secret"}


@pytest.fixture(scope="module")
def server(store: Any) -> Iterator[Server]:
    with Server(create_app(store, Settings(**SECRETS))) as server:
        yield server


def get(server: Server, path: str, token: str = "root-secret", **params: Any) -> httpx.Response:
    return httpx.get(server.url + path, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def matching(store: Any, **want: Any) -> list[dict[str, Any]]:
    def ok(f: dict[str, Any]) -> bool:
        if "tenant" in want and f["tenant"] != want["tenant"]:
            return False
        if "status" in want and f["status"] != want["status"]:
            return False
        return all(f["labels"].get(k) == v for k, v in want.get("labels", {}).items())

    return [f for f in store.seeded if ok(f)]


def test_csv_export_streams_every_matching_flow(store: Any, server: Server) -> None:
    resp = get(server, "/api/flows", format="csv", tenant="acme-corp")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    assert resp.headers["content-disposition"].startswith('attachment; filename="flows-')
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    want = matching(store, tenant="acme-corp")
    assert len(want) > 700  # more than one page of the list's default
    assert [r["flow_id"] for r in rows] == sorted((f["flow_id"] for f in want), reverse=True)
    by_id = {f["flow_id"]: f for f in want}
    for row in rows:
        flow = by_id[row["flow_id"]]
        assert row["tenant"] == "acme-corp" and row["status"] == flow["status"]
        assert json.loads(row["labels"]) == flow["labels"]
        if flow["duration_ms"] is not None:
            assert float(row["duration_ms"]) == pytest.approx(flow["duration_ms"])
    # Text that a spreadsheet would run as a formula is exported inert.
    formula = next(r for r in get(server, "/api/flows", format="csv").text.splitlines() if "HYPERLINK" in r)
    assert "'=HYPERLINK" in formula


def test_ndjson_export_follows_every_filter(store: Any, server: Server) -> None:
    resp = get(server, "/api/flows", format="ndjson", status="failed", labels=json.dumps({"env": "prod"}))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    got = [json.loads(line) for line in resp.text.splitlines()]
    want = matching(store, status="failed", labels={"env": "prod"})
    assert {f["flow_id"] for f in got} == {f["flow_id"] for f in want} and len(got) == len(want)
    assert all(f["status"] == "failed" and f["labels"]["env"] == "prod" for f in got)
    # Every flow, whatever the page size of the list API.
    everything = get(server, "/api/flows", format="ndjson").text.splitlines()
    assert len(everything) == len(store.seeded) > 2000


def test_export_is_tenant_scoped(store: Any, server: Server) -> None:
    mine = get(server, "/api/flows", token="globex-secret", format="ndjson")
    assert mine.status_code == 200
    tenants = {json.loads(line)["tenant"] for line in mine.text.splitlines()}
    assert tenants == {"globex"}
    assert len(mine.text.splitlines()) == len(matching(store, tenant="globex"))
    assert get(server, "/api/flows", token="globex-secret", format="csv", tenant="acme-corp").status_code == 403
    assert httpx.get(server.url + "/api/flows", params={"format": "csv"}).status_code == 401
    bad = get(server, "/api/flows", format="xlsx")
    assert bad.status_code == 400 and "csv" in bad.json()["detail"]


def test_flow_downloads_as_json_with_steps_and_events(store: Any, server: Server) -> None:
    timed = store.seeded[-1]
    resp = get(server, f"/api/flows/{timed['flow_id']}", format="json")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-disposition"].startswith(f'attachment; filename="flow-{timed["flow_id"]}-')
    body = resp.json()
    assert body["flow_id"] == timed["flow_id"] and body["status"] == "success"
    assert [s["name"] for s in body["steps"]] == ["call_payments"]
    assert [c["name"] for c in body["steps"][0]["children"]] == ["fraud_check", "charge_card"]
    sent = [e for e in store.seeded_events if e["flow_id"] == timed["flow_id"]]
    assert sorted(e["event_id"] for e in body["raw_events"]) == sorted(e["event_id"] for e in sent)
    assert [e["kind"] for e in body["raw_events"]][:2] == ["flow_started", "step_started"]
    # Other tenants' flows stay invisible to a tenant token, download or not.
    assert get(server, f"/api/flows/{timed['flow_id']}", token="globex-secret", format="json").status_code == 404
    assert get(server, f"/api/flows/{timed['flow_id']}", format="csv").status_code == 400


def test_overview_follows_status_and_label_filters(store: Any, server: Server) -> None:
    everything = get(server, "/api/stats/overview").json()
    assert everything["runs"] == len(store.seeded)
    failed = get(server, "/api/stats/overview", status="failed").json()
    want = matching(store, status="failed")
    assert failed["runs"] == failed["failed"] == len(want) and failed["succeeded"] == 0
    assert failed["success_rate"] == 0.0
    staging = get(server, "/api/stats/overview", labels=json.dumps({"env": "staging"}), tenant="globex").json()
    want = matching(store, tenant="globex", labels={"env": "staging"})
    assert staging["runs"] == len(want)
    assert staging["running"] == sum(f["status"] == "running" for f in want)
    assert get(server, "/api/stats/overview", label="env=staging", tenant="globex").json() == staging  # CLI form
    # The histogram counts every finished flow once, in the bucket of its duration.
    hist = everything["histogram"]
    timed = [f["duration_ms"] for f in store.seeded if f["duration_ms"] is not None]
    assert sum(b["count"] for b in hist) == len(timed)
    for b in hist:
        in_bucket = [d for d in timed if b["lo_ms"] <= d and (b["hi_ms"] is None or d < b["hi_ms"])]
        assert b["count"] == len(in_bucket), b
    assert {b["lo_ms"] for b in hist if b["count"]} == {2.0, 20.0, 200.0, 2000.0}
    # Read from the stats projection (no label filter) or from flows (labels): the same numbers.
    parts = [get(server, "/api/stats/overview", labels=json.dumps({"env": env})).json() for env in ("prod", "staging")]
    for key in ("runs", "running", "succeeded", "failed"):
        assert parts[0][key] + parts[1][key] == everything[key], key
    merged: dict[float, int] = {}
    for part in parts:
        for b in part["histogram"]:
            merged[b["lo_ms"]] = merged.get(b["lo_ms"], 0) + b["count"]
    assert {k: v for k, v in merged.items() if v} == {b["lo_ms"]: b["count"] for b in hist if b["count"]}
    # A tenant token's numbers are its tenant's.
    scoped = get(server, "/api/stats/overview", token="acme-secret").json()
    assert scoped["runs"] == len(matching(store, tenant="acme-corp"))


def test_timeseries_counts_runs_per_bucket_by_status(store: Any, server: Server) -> None:
    since = datetime.fromtimestamp((NOW_US - 3 * 3600 * 1_000_000) / 1e6, UTC).isoformat()
    ts = get(server, "/api/stats/timeseries", since=since, bucket=600).json()
    assert ts["bucket_s"] == 600 and len(ts["points"]) >= 18
    starts = [datetime.fromisoformat(p["t"]) for p in ts["points"]]
    assert all((b - a).total_seconds() == 600 for a, b in itertools.pairwise(starts))
    for status in ("success", "failed"):
        assert sum(p[status] for p in ts["points"]) == len(matching(store, status=status))
    assert sum(p["running"] + p["stalled"] for p in ts["points"]) == len(matching(store, status="running"))
    # Each bucket's count is the flows that started in it.
    for p in ts["points"]:
        lo = int(datetime.fromisoformat(p["t"]).timestamp() * 1_000_000)
        inside = [f for f in store.seeded if lo <= f["start_us"] < lo + 600_000_000]
        assert p["success"] + p["failed"] + p["running"] + p["stalled"] == len(inside)
        if any(f["duration_ms"] for f in inside):
            assert p["p50_ms"] is not None and p["p95_ms"] >= p["p50_ms"]
    # The filters apply; a bucket too narrow for the range is refused with the reason.
    failed = get(server, "/api/stats/timeseries", since=since, status="failed", tenant="initech").json()
    assert sum(p["failed"] for p in failed["points"]) == len(matching(store, status="failed", tenant="initech"))
    assert sum(p["success"] for p in failed["points"]) == 0
    narrow = get(server, "/api/stats/timeseries", since=since, bucket=1)
    assert narrow.status_code == 400 and "bucket" in narrow.json()["detail"]


def cli(server: Server, *args: str, encoding: str = "utf-8") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DASHFROG_API_URL": server.url,
        "DASHFROG_ADMIN_TOKEN": "root-secret",
        "DASHFROG_CLICKHOUSE_URL": "chdb:///nonexistent-so-the-cli-asks-the-api",
        "PYTHONIOENCODING": encoding,
    }
    exe = str(Path(sys.executable).parent / "dashfrog")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, env=env)


def test_cli_flows_streams_every_flow_in_each_format(store: Any, server: Server) -> None:
    as_csv = cli(server, "flows", "--format", "csv", "--page-size", "700")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == len(store.seeded) and tuple(rows[0]) == CSV_COLUMNS
    assert len({r["flow_id"] for r in rows}) == len(rows)

    as_json = cli(server, "flows", "--format", "json", "--tenant", "globex", "--status", "failed")
    assert as_json.returncode == 0, as_json.stderr
    got = json.loads(as_json.stdout)
    assert {f["flow_id"] for f in got} == {f["flow_id"] for f in matching(store, tenant="globex", status="failed")}

    ndjson = cli(server, "flows", "--format", "ndjson", "--label", "env=staging", "--page-size", "100")
    assert ndjson.returncode == 0, ndjson.stderr
    assert len(ndjson.stdout.splitlines()) == len(matching(store, labels={"env": "staging"}))

    table = cli(server, "flows", "--tenant", "initech", "--page-size", "300")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["FLOW_ID", "TENANT", "NAME", "STATUS"]
    assert len(lines) == 1 + len(matching(store, tenant="initech"))  # one header, every flow
    assert all(line.split()[1] == "initech" for line in lines[1:])

    capped = cli(server, "flows", "--limit", "5", "--page-size", "2")
    assert capped.returncode == 0, capped.stderr
    assert len(capped.stdout.split("\n\n")[0].splitlines()) == 6 and "more: --cursor" in capped.stdout


def test_cli_flow_prints_a_text_timeline(store: Any, server: Server) -> None:
    timed = store.seeded[-1]
    out = cli(server, "flow", timed["flow_id"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("checkout [success]  tenant=acme-corp")
    started = datetime.fromtimestamp(timed["start_us"] / 1e6, UTC)
    assert f"started {started:%Y-%m-%d %H:%M:%S}.{started.microsecond // 1000:03d} UTC" in lines[1]
    rows = {line.split("|")[2].split()[0]: line for line in lines if line.count("|") == 2 and "STEP" not in line}
    pay, fraud, charge = rows["call_payments"], rows["fraud_check"], rows["charge_card"]
    assert pay.split()[:2] == ["+10.0", "ms"] and "351.0 ms" in pay and "payments" in pay and "[success]" in pay
    assert "333.0 ms not in child steps" in pay  # 351 ms, of which its children ran 8 + 10 ms
    assert fraud.split()[:4] == ["+20.0", "ms", "8.0", "ms"] and charge.split()[:4] == ["+30.0", "ms", "10.0", "ms"]
    # Nesting: children are indented under their parent; bars sit on one scale.
    indent = {name: len(line.split("|")[2]) - len(line.split("|")[2].lstrip()) for name, line in rows.items()}
    assert indent["fraud_check"] == indent["charge_card"] == indent["call_payments"] + 2
    bar = {name: line.split("|")[1] for name, line in rows.items()}
    assert len({len(b) for b in bar.values()}) == 1
    first = {name: len(b) - len(b.lstrip()) for name, b in bar.items()}
    assert first["call_payments"] <= first["fraud_check"] < first["charge_card"]
    assert "░" in bar["call_payments"] and "░" not in bar["fraud_check"]

    # A terminal that cannot print block characters gets an ASCII timeline.
    plain = cli(server, "flow", timed["flow_id"], encoding="ascii")
    assert plain.returncode == 0, plain.stderr
    assert "333.0 ms not in child steps" in plain.stdout and "." in plain.stdout.split("call_payments")[0]
    assert all(ord(c) < 128 for c in plain.stdout), {c for c in plain.stdout if ord(c) >= 128}
