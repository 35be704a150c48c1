"""dashfrog.query: the in-process store path, the HTTP contract, and its import
footprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dashfrog import query
from dashfrog._exceptions import DashfrogError, QueryError
from dashfrog._models import FlowDetail, FlowFilter, FlowList, FlowStats, SqlResult, StatsFilter
from dashfrog._settings import Settings, set_settings
from dashfrog.schemas import Event, make_event


def _events(tenant: str, flow_id: str, fail: bool = False) -> list[Event]:
    t = int(time.time() * 1_000_000) - 60_000_000
    flow = {"flow_id": flow_id, "tenant": tenant, "flow_name": "data_import"}
    error = {"type": "ValueError", "message": "Invalid data format", "stack": "tb"} if fail else None
    status = "failed" if fail else "success"
    return [
        make_event("flow_started", **flow, event_id=flow_id + "1", timestamp=t, labels={"env": "prod"}),
        make_event("step_started", **flow, event_id=flow_id + "2", timestamp=t + 10, step_id="s1",
                   step_name="validate"),
        make_event("step_ended", **flow, event_id=flow_id + "3", timestamp=t + 20, step_id="s1",
                   step_name="validate", status=status, error=error),
        # As the SDK does: a flow whose step failed ends failed.
        make_event("flow_ended", **flow, event_id=flow_id + "4", timestamp=t + 30, status=status, error=error),
    ]


@pytest.fixture
def registered(chdb_store: Any) -> Iterator[Any]:
    chdb_store.insert_events(_events("acme-corp", "f1", fail=True) + _events("globex", "f2"), "t")
    query.use_store(chdb_store)
    try:
        yield chdb_store
    finally:
        query.use_store(None)


def test_in_process_store(registered: Any) -> None:
    failed = query.flows(tenant="acme-corp", status="failed", labels={"env": "prod"})
    assert [f.flow_id for f in failed] == ["f1"]
    assert failed[0].error.step_name == "validate"
    detail = query.flow("f1")
    assert detail is not None and detail.step("validate").status == "failed"
    assert query.flow("f1", tenant="globex") is None
    stats = query.stats(tenant="globex")
    assert (stats.runs, stats.success_rate) == (1, 1.0)
    result = query.sql("SELECT tenant FROM flows WHERE flow_id = {id:String}", {"id": "f2"})
    assert result.rows == [{"tenant": "globex"}] and result.columns == ["tenant"]
    with pytest.raises(QueryError):
        query.sql("DROP TABLE flows")
    with pytest.raises(QueryError):
        query.flows(status="done")
    with pytest.raises(QueryError):
        query.flow("")


def test_to_pandas(registered: Any) -> None:
    df = query.flows().to_pandas()
    assert list(df["flow_id"]) == ["f2", "f1"]
    assert {"status", "labels", "error_type", "duration_ms"} <= set(df.columns)
    assert df.set_index("flow_id").loc["f1", "error_type"] == "ValueError"
    sql_df = query.sql(
        "SELECT tenant, count() AS n FROM flows GROUP BY tenant ORDER BY tenant"
    ).to_pandas()
    assert list(sql_df.columns) == ["tenant", "n"] and list(sql_df["tenant"]) == [
        "acme-corp",
        "globex",
    ]


class _Api(BaseHTTPRequestHandler):
    """Serves canned model JSON and records what the client sent."""

    store: Any = None
    seen: list[tuple[str, str, dict[str, Any], Any, str | None]] = []

    def _reply(self, code: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, body: Any) -> None:
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.seen.append((self.command, url.path, params, body, self.headers.get("Authorization")))
        store = type(self).store
        try:
            if url.path == "/api/flows":
                self._reply(
                    200, store.find_flows(FlowFilter.parse(**params)).model_dump(mode="json")
                )
            elif url.path.startswith("/api/flows/"):
                found = store.flow(url.path.rsplit("/", 1)[1], params.get("tenant"))
                if found is None:
                    self._reply(404, {"detail": "no such flow"})
                else:
                    self._reply(200, found.model_dump(mode="json"))
            elif url.path == "/api/stats":
                self._reply(200, store.find_stats(StatsFilter.parse(**params)).model_dump(mode="json"))
            elif url.path == "/api/sql":
                rows = store.select(body["sql"], body["params"])
                self._reply(
                    200,
                    SqlResult(columns=list(rows[0]) if rows else [], rows=rows).model_dump(
                        mode="json"
                    ),
                )
            else:
                self._reply(500, {"detail": "unexpected"})
        except QueryError as exc:
            self._reply(400, {"detail": str(exc)})

    def do_GET(self) -> None:
        self._handle(None)

    def do_POST(self) -> None:
        self._handle(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api(chdb_store: Any) -> Iterator[type[_Api]]:
    chdb_store.insert_events(_events("acme-corp", "f1", fail=True) + _events("globex", "f2"), "t")
    _Api.store, _Api.seen = chdb_store, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    set_settings(Settings(api_url=f"http://127.0.0.1:{server.server_port}", admin_token="s3cret"))
    try:
        yield _Api
    finally:
        set_settings(None)
        server.shutdown()
        server.server_close()


def test_http_contract(api: type[_Api]) -> None:
    since = datetime.now(UTC) - timedelta(hours=1)
    page = query.flows(tenant="acme-corp", labels={"env": "prod", "a&b=c": "x y"}, since=since)
    assert isinstance(page, FlowList) and page.flows == []
    method, path, params, _, auth = api.seen[-1]
    assert (method, path, auth) == ("GET", "/api/flows", "Bearer s3cret")
    assert json.loads(params["labels"]) == {"env": "prod", "a&b=c": "x y"}
    assert datetime.fromisoformat(params["since"]) == since and params["tenant"] == "acme-corp"

    (f1,) = query.flows(status="failed")
    assert f1.flow_id == "f1" and f1.error.message == "Invalid data format"
    detail = query.flow("f1")
    assert isinstance(detail, FlowDetail) and detail.steps[0].status == "failed"
    assert query.flow("f1", tenant="globex") is None
    assert isinstance(query.stats(tenant="acme-corp"), FlowStats)
    assert query.sql("SELECT count() AS n FROM flows FINAL").rows == [{"n": 2}]
    assert api.seen[-1][:2] == ("POST", "/api/sql")
    with pytest.raises(QueryError, match="only read queries"):
        query.sql("DELETE FROM flows WHERE 1")


def test_http_unreachable_says_what_to_do() -> None:
    set_settings(Settings(api_url="http://127.0.0.1:9"))
    try:
        with pytest.raises(DashfrogError, match="dashfrog up"):
            query.flows()
    finally:
        set_settings(None)


def test_imports_with_sdk_dependencies_only() -> None:
    # Block the store and notebook dependencies: dashfrog.query must still import.
    code = (
        "import sys\n"
        "for m in ('chdb', 'pandas', 'pyarrow', 'clickhouse_connect', 'httpx'):\n"
        "    sys.modules[m] = None\n"
        "from dashfrog import query\n"
        "assert callable(query.flows)\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
