"""User SQL cannot leave its sandbox, and runs under limits.

Every attack vector goes through the three doors users have: the store's
``select`` (what ``dashfrog.query.sql`` calls in-process), ``dashfrog sql``
and ``POST /api/sql``. Real chDB; a ClickHouse server too when
DASHFROG_TEST_CLICKHOUSE_URL is set.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from dashfrog._exceptions import DashfrogError, QueryError
from dashfrog._settings import Settings
from dashfrog.storage import QueryLimitError, SqlLimits, open_store
from dashfrog.web import create_app
from tests.streams._helpers import flow_events

ROOT = Path(__file__).resolve().parents[2]
CANARY = f"canary-{uuid.uuid4().hex}"
N_FLOWS = 12


def _fill(store: Any) -> list[dict[str, Any]]:
    store.migrate()
    events = flow_events(N_FLOWS, tenants=3, steps=2, fail_every=4, run="sandbox")
    store.insert_events(events, f"sandbox-{uuid.uuid4().hex}")
    return events


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    store = open_store(f"chdb://{tmp_path_factory.mktemp('sandbox') / 'db'}")
    store.events = _fill(store)  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    url = os.environ.get("DASHFROG_TEST_CLICKHOUSE_URL")
    if not url:
        pytest.skip("no ClickHouse server: set DASHFROG_TEST_CLICKHOUSE_URL (see tests/storage/conftest.py)")
    from urllib.parse import urlsplit, urlunsplit

    database = f"dashfrog_sandbox_{uuid.uuid4().hex[:10]}"
    store = open_store(urlunsplit(urlsplit(url)._replace(path="/" + database)))
    store.events = _fill(store)  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        store._execute(f"DROP DATABASE IF EXISTS `{database}`")
        store.close()


@pytest.fixture(params=["chdb", "server"])
def store(request: pytest.FixtureRequest) -> Any:
    store = request.getfixturevalue(request.param)
    store.sql_limits = SqlLimits()
    return store


@pytest.fixture(scope="module")
def canary_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("canary") / "secret.txt"
    path.write_text(CANARY + "\n")
    return str(path)


# (statement, params, what the refusal names)
VECTORS: list[tuple[str, dict[str, Any] | None, str]] = [
    # host files, as a scalar and as a table function, plain and hidden
    ("SELECT file('/proc/self/environ')", None, "function 'file'"),
    ("SELECT * FROM file('/proc/self/environ', 'LineAsString')", None, "function 'file'"),
    ("SELECT file('/etc/shadow')", None, "function 'file'"),
    ("SELECT * FROM file('/etc/shadow', 'LineAsString')", None, "function 'file'"),
    ("SELECT * FROM file({path:String}, 'LineAsString')", {"path": "CANARY"}, "function 'file'"),
    ("SELECT FILE('/etc/passwd')", None, "function 'FILE'"),
    ("SELECT `file`('/etc/passwd')", None, "function 'file'"),
    ("SELECT * FROM (SELECT * FROM file('/etc/passwd', 'LineAsString'))", None, "function 'file'"),
    ("WITH t AS (SELECT * FROM file('/etc/passwd', 'LineAsString')) SELECT * FROM t", None, "function 'file'"),
    ("WITH (SELECT file('/etc/passwd')) AS x SELECT x", None, "function 'file'"),
    ("SELECT count() FROM events WHERE tenant IN (SELECT * FROM file('/etc/passwd', 'LineAsString'))", None, "function 'file'"),
    ("SELECT 1 UNION ALL SELECT length(file('/etc/passwd'))", None, "function 'file'"),
    ("DESCRIBE file('/etc/passwd', 'LineAsString')", None, "function 'file'"),
    ("SELECT * FROM fileCluster('default', '/etc/passwd', 'LineAsString')", None, "function 'fileCluster'"),
    # network, processes, other servers, the embedding process
    ("SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')", None, "function 'url'"),
    ("SELECT * FROM executable('cat /etc/passwd', 'LineAsString', 'x String')", None, "function 'executable'"),
    ("SELECT * FROM remote('127.0.0.1:9000', system.one)", None, "function 'remote'"),
    ("SELECT * FROM remoteSecure('127.0.0.1:9440', system.one)", None, "function 'remoteSecure'"),
    ("SELECT * FROM s3('http://127.0.0.1:9/bucket/key', 'CSV')", None, "function 's3'"),
    ("SELECT * FROM Python(os)", None, "function 'Python'"),
    ("SELECT * FROM input('x String')", None, "function 'input'"),
    ("SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')", None, "function 'mysql'"),
    ("SELECT * FROM postgresql('127.0.0.1:5432', 'db', 't', 'u', 'p')", None, "function 'postgresql'"),
    ("SELECT * FROM merge(currentDatabase(), '.*')", None, "function 'merge'"),
    ("SELECT * FROM view(SELECT 1)", None, "function 'view'"),
    ("SELECT * FROM cluster('default', system.one)", None, "function 'cluster'"),
    ("SELECT dictGet('any_dict', 'x', toUInt64(1))", None, "function 'dictGet'"),
    ("SELECT joinGet('t', 'x', 1)", None, "function 'joinGet'"),
    ("SELECT getSetting('readonly')", None, "function 'getSetting'"),
    # introspection
    ("SELECT addressToLine(toUInt64(1))", None, "function 'addressToLine'"),
    ("SELECT addressToSymbol(toUInt64(1))", None, "function 'addressToSymbol'"),
    ("SELECT demangle('x')", None, "function 'demangle'"),
    ("SELECT arrayMap(x -> addressToLine(x), [toUInt64(1)])", None, "function 'addressToLine'"),
    # settings changes inside the query, SET, statements that write
    ("SELECT 1 SETTINGS readonly = 0", None, "settings"),
    ("SELECT count() FROM events SETTINGS max_execution_time = 100000", None, "settings"),
    ("SELECT 1 UNION ALL SELECT 2 SETTINGS allow_introspection_functions = 1", None, "settings"),
    ("SET readonly = 0", None, "SET"),
    ("SET allow_introspection_functions = 1", None, "SET"),
    ("SELECT 1 INTO OUTFILE '/tmp/dashfrog-outfile.csv'", None, "OUTFILE"),
    ("SELECT 1 FORMAT JSON", None, "FORMAT"),
    ("INSERT INTO events SELECT * FROM events", None, "INSERT"),
    ("DROP TABLE flows", None, "DROP"),
    ("ALTER TABLE flows DELETE WHERE 1", None, "ALTER"),
    ("CREATE TABLE leak (a String) ENGINE = File(LineAsString, '/etc/passwd')", None, "CREATE"),
    ("EXPLAIN SYNTAX SELECT file('/etc/passwd')", None, "EXPLAIN"),
    # several statements
    ("SELECT 1; SELECT file('/etc/passwd')", None, "Multi-statements"),
    ("SELECT 1; DROP TABLE flows", None, "Multi-statements"),
    # tables that show other people's SQL or the server's configuration
    ("SELECT * FROM system.processes", None, "system.processes"),
    ("SELECT query FROM system.query_log", None, "system.query_log"),
    ("SELECT * FROM system.settings", None, "system.settings"),
    ("SELECT * FROM system.users", None, "system.users"),
    ("SELECT 1 IN system.settings", None, "system.settings"),
    ("SELECT * FROM {t:Identifier}", {"t": "system.processes"}, "system.processes"),
    ("DESCRIBE TABLE system.processes", None, "system.processes"),
    ("SHOW PROCESSLIST", None, "SHOW"),
    ("SHOW SETTINGS LIKE '%'", None, "SHOW"),
    ("SHOW TABLES FROM system", None, "SHOW TABLES"),
    ("SELECT * FROM information_schema.tables", None, "information_schema"),
    ("", None, "empty"),
    ("SELECT 'unterminated", None, "parse"),
]


def _vector(sql: str, params: dict[str, Any] | None, canary_file: str) -> tuple[str, dict[str, Any] | None]:
    if params and params.get("path") == "CANARY":
        return sql, {"path": canary_file}
    return sql, params


@pytest.mark.parametrize(("sql", "params", "names"), VECTORS, ids=[v[0][:60] or "empty" for v in VECTORS])
def test_store_refuses_every_vector(store: Any, canary_file: str, sql: str, params: Any, names: str) -> None:
    sql, params = _vector(sql, params, canary_file)
    with pytest.raises(QueryError) as refused:
        store.select(sql, params)
    message = str(refused.value)
    assert names.lower() in message.lower(), message
    assert CANARY not in message and "root:" not in message


def test_api_refuses_every_vector(chdb: Any, canary_file: str) -> None:
    api = TestClient(create_app(chdb, Settings(admin_token="adm")))
    admin = {"Authorization": "Bearer adm"}
    for sql, params, names in VECTORS:
        sql, params = _vector(sql, params, canary_file)
        response = api.post("/api/sql", headers=admin, json={"sql": sql, "params": params or {}})
        assert response.status_code == 400, (sql, response.text)
        assert names.lower() in response.json()["detail"].lower(), (sql, response.text)
        assert CANARY not in response.text and "root:" not in response.text
    # The engine still writes afterwards: nothing leaked into its session.
    assert api.get("/api/flows", headers=admin, params={"limit": 1000}).json()["flows"]


def test_cli_refuses_every_vector(chdb: Any, canary_file: str) -> None:
    from dashfrog import query
    from dashfrog.runtime._cli import main

    query.use_store(chdb)
    try:
        runner = CliRunner()
        for sql, params, names in VECTORS:
            sql, params = _vector(sql, params, canary_file)
            args = ["sql", sql] + [a for k, v in (params or {}).items() for a in ("-p", f"{k}={v}")]
            result = runner.invoke(main, args)
            assert result.exit_code == 1, (sql, result.output)
            assert names.lower() in result.output.lower(), (sql, result.output)
            assert CANARY not in result.output
    finally:
        query.use_store(None)


def _readme_queries() -> list[tuple[str, dict[str, str]]]:
    readme = (ROOT / "README.md").read_text()
    found: list[tuple[str, dict[str, str]]] = []
    for sql, param in re.findall(r'query\.sql\("([^"]+)", \{"(\w+)": "[^"]+"\}\)', readme):
        found.append((sql, {param: "tenant-1"}))
    for sql, param in re.findall(r'dashfrog sql "([^"]+)" -p (\w+)=\S+', readme):
        found.append((sql, {param: "tenant-1"}))
    return found


def test_readme_queries_still_answer(store: Any) -> None:
    queries = _readme_queries()
    assert len(queries) >= 2, "the README's SQL examples moved: update this test's patterns"
    mine = [e for e in store.events if e["tenant"] == "tenant-1"]
    for sql, params in queries:
        rows = store.select(sql, params)
        assert rows, sql
    (by_name,) = store.select(queries[0][0], queries[0][1])
    assert by_name["n"] == len({e["flow_id"] for e in mine})
    (raw,) = store.select(queries[1][0], queries[1][1])
    assert list(raw.values()) == [len(mine)]


def test_legit_queries_answer(store: Any) -> None:
    events = store.events
    tenants = sorted({e["tenant"] for e in events})
    assert store.select("SELECT 'file(/etc/passwd) SETTINGS readonly=0; DROP' AS s") == [
        {"s": "file(/etc/passwd) SETTINGS readonly=0; DROP"}
    ]
    assert store.select("SELECT {p:String} AS s", {"p": "file('/etc/passwd')"}) == [{"s": "file('/etc/passwd')"}]
    rows = store.select("SELECT tenant, uniqExact(flow_id) AS n FROM flows GROUP BY tenant ORDER BY tenant")
    assert [r["tenant"] for r in rows] == tenants and sum(r["n"] for r in rows) == N_FLOWS
    (row,) = store.select(
        "WITH f AS (SELECT flow_id, tenant FROM flows FINAL) "
        "SELECT count() AS n, countIf(tenant = {t:String}) AS mine, uniqExactIf(flow_id, tenant != {t:String}) AS others FROM f",
        {"t": "tenant-0"},
    )
    assert row["n"] == N_FLOWS and row["mine"] + row["others"] == N_FLOWS
    ranked = store.select(
        "SELECT tenant, row_number() OVER (PARTITION BY tenant ORDER BY flow_id) AS r "
        "FROM flows FINAL ORDER BY tenant, r LIMIT 1 BY tenant"
    )
    assert [r["r"] for r in ranked] == [1] * len(tenants)
    labels = store.select("SELECT DISTINCT arrayJoin(mapKeys(labels)) AS k FROM flows ORDER BY k")
    assert {"run"} <= {r["k"] for r in labels}
    per_hour = store.select("SELECT toStartOfHour(started_at) AS h, count() AS n FROM flows FINAL GROUP BY h")
    assert sum(r["n"] for r in per_hour) == N_FLOWS
    assert store.select("SELECT count() AS n FROM numbers(10)") == [{"n": 10}]
    assert {"events", "flows", "steps"} <= {r["name"] for r in store.select("SHOW TABLES")}
    assert "event_id" in {r["name"] for r in store.select("DESCRIBE TABLE events")}
    assert store.select("EXISTS TABLE flows") == [{"result": 1}]
    own = store.select("SELECT name FROM system.tables WHERE database = currentDatabase() AND name = 'flows'")
    assert own == [{"name": "flows"}]


# -- limits ------------------------------------------------------------------------


def test_limits_say_which_setting(store: Any) -> None:
    store.sql_limits = SqlLimits(max_result_rows=50)
    with pytest.raises(QueryLimitError, match="DASHFROG_SQL_MAX_RESULT_ROWS") as rows:
        store.select("SELECT number FROM numbers(1000)")
    assert rows.value.setting == "DASHFROG_SQL_MAX_RESULT_ROWS"
    assert len(store.select("SELECT number FROM numbers(50)")) == 50

    store.sql_limits = SqlLimits(max_result_bytes=1000)
    with pytest.raises(QueryLimitError, match="DASHFROG_SQL_MAX_RESULT_BYTES"):
        store.select("SELECT toString(number) AS s FROM numbers(100000)")

    store.sql_limits = SqlLimits(max_execution_s=0.3)
    with pytest.raises(QueryLimitError, match="DASHFROG_SQL_MAX_EXECUTION_S"):
        store.select("SELECT count() FROM numbers(1000000000000) WHERE sipHash64(number) = 0")

    store.sql_limits = SqlLimits(max_memory_bytes=20_000_000)
    with pytest.raises(QueryLimitError, match="DASHFROG_SQL_MAX_MEMORY_BYTES"):
        store.select("SELECT length(groupArray(number)) AS n FROM numbers(50000000)")
    store.sql_limits = SqlLimits()


def test_failed_query_leaves_nothing_for_the_next(chdb: Any) -> None:
    # chDB keeps a block sent before a failure in the connection's buffer and
    # returns it with the next result on that connection: the store replaces it.
    chdb.sql_limits = SqlLimits(max_result_rows=70_000)
    for _ in range(4):  # every reader connection in turn
        with pytest.raises(QueryLimitError):
            chdb.select("SELECT number FROM numbers(200000)")
        assert chdb.select("SELECT 7 AS x") == [{"x": 7}]
        (flows,) = chdb._query("SELECT count() AS n FROM flows FINAL")
        assert flows == {"n": N_FLOWS}
    chdb.sql_limits = SqlLimits()


def test_api_and_cli_report_limits(chdb: Any) -> None:
    from dashfrog import query
    from dashfrog.runtime._cli import main

    chdb.sql_limits = SqlLimits(max_result_rows=10)
    try:
        api = TestClient(create_app(chdb, Settings()))
        response = api.post("/api/sql", json={"sql": "SELECT number FROM numbers(100)"})
        assert response.status_code == 400
        assert response.json()["limit"] == "DASHFROG_SQL_MAX_RESULT_ROWS"
        assert "more than 10 rows" in response.json()["detail"]
        query.use_store(chdb)
        result = CliRunner().invoke(main, ["sql", "SELECT number FROM numbers(100)"])
        assert result.exit_code == 1 and "DASHFROG_SQL_MAX_RESULT_ROWS" in result.output
        with pytest.raises(QueryLimitError):
            query.sql("SELECT number FROM numbers(100)")
    finally:
        query.use_store(None)
        chdb.sql_limits = SqlLimits()


# -- reads and writes never wait on each other -------------------------------------------


def test_long_user_query_blocks_neither_writes_nor_reads(chdb: Any) -> None:
    store = chdb
    marker = f"long-{uuid.uuid4().hex[:8]}"
    store.sql_limits = SqlLimits(max_execution_s=120)
    outcome: dict[str, Any] = {}

    def long_query() -> None:
        try:
            store.select(
                f"SELECT '{marker}' AS m, count() FROM numbers(100000000000) WHERE sipHash64(number) = 0"
            )
        except DashfrogError as exc:  # stopped by the KILL below
            outcome["error"] = exc
        outcome["done"] = time.monotonic()

    def running() -> bool:
        rows = store._query(
            "SELECT count() AS n FROM system.processes WHERE query LIKE {m:String} AND query NOT LIKE '%system.processes%'",
            {"m": f"%{marker}%"},
        )
        return int(rows[0]["n"]) > 0

    worker = threading.Thread(target=long_query, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not running():
            assert time.monotonic() < deadline, "the long query never started"
            time.sleep(0.05)
        events = flow_events(3, tenants=1, steps=1, run=marker)
        store.insert_events(events, f"during-{marker}")
        detail = store.flow(events[0]["flow_id"])
        api = TestClient(create_app(store, Settings()))
        listed = api.get("/api/flows", params={"label": f"run={marker}"}).json()["flows"]
        sql = api.post(
            "/api/sql",
            json={"sql": "SELECT count() AS n FROM flows FINAL WHERE labels['run'] = {r:String}", "params": {"r": marker}},
        ).json()
        # All of that finished while the long query was still running.
        assert running() and "done" not in outcome
        assert detail is not None and detail.flow_id == events[0]["flow_id"]
        assert {f["flow_id"] for f in listed} == {e["flow_id"] for e in events}
        assert sql["rows"] == [{"n": 3}]
    finally:
        store._execute(f"KILL QUERY WHERE query LIKE '%{marker}%' SYNC")
        worker.join(60)
        store.sql_limits = SqlLimits()
    assert not worker.is_alive()


def test_api_answers_while_a_long_sql_request_runs(chdb: Any) -> None:
    """Over a real server: /api/flows answers, and an insert lands, while a
    POST /api/sql is still running on the same app."""
    import json
    import socket
    import urllib.error
    import urllib.request

    import uvicorn

    marker = f"slow-{uuid.uuid4().hex[:8]}"
    chdb.sql_limits = SqlLimits(max_execution_s=120)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(chdb, Settings()), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    base = f"http://127.0.0.1:{port}"
    slow: dict[str, Any] = {}

    def slow_sql() -> None:
        body = json.dumps({"sql": f"SELECT '{marker}' AS m, count() FROM numbers(100000000000) WHERE sipHash64(number) = 0"})
        request = urllib.request.Request(f"{base}/api/sql", data=body.encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                slow["status"] = response.status
        except urllib.error.HTTPError as exc:
            slow["status"] = exc.code
        slow["done"] = time.monotonic()

    def running() -> bool:
        rows = chdb._query(
            "SELECT count() AS n FROM system.processes WHERE query LIKE {m:String} AND query NOT LIKE '%system.processes%'",
            {"m": f"%{marker}%"},
        )
        return int(rows[0]["n"]) > 0

    caller = threading.Thread(target=slow_sql, daemon=True)
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        caller.start()
        while not running():
            assert time.monotonic() < deadline, "the slow query never started"
            time.sleep(0.05)
        events = flow_events(2, tenants=1, steps=1, run=marker)
        chdb.insert_events(events, f"api-{marker}")
        with urllib.request.urlopen(f"{base}/api/flows?label=run={marker}", timeout=30) as response:
            listed = json.loads(response.read())["flows"]
        with urllib.request.urlopen(f"{base}/api/whoami", timeout=30) as response:
            assert json.loads(response.read())["admin"] is True
        # Answered while the SQL request was still in flight.
        assert running() and "done" not in slow
        assert {f["flow_id"] for f in listed} == {e["flow_id"] for e in events}
    finally:
        chdb._execute(f"KILL QUERY WHERE query LIKE '%{marker}%' SYNC")
        if caller.ident is not None:
            caller.join(60)
        server.should_exit = True
        serving.join(15)
        chdb.sql_limits = SqlLimits()
    assert slow.get("status") == 400  # the killed query is reported, not hung


def test_allowlists_name_real_harmless_functions(chdb: Any) -> None:
    from dashfrog.storage._sqlcheck import AGGREGATES, FUNCTIONS, TABLE_FUNCTIONS, allowed_function

    known = {r["name"].lower() for r in chdb._query("SELECT name FROM system.functions")}
    tables = {r["name"].lower() for r in chdb._query("SELECT name FROM system.table_functions")}
    # Names the parser turns into other nodes, or aggregates spelled with a combinator.
    parser_forms = {"countdistinct", "date_add", "date_sub", "dateadd", "datesub", "exists", "grouping",
                    "lambda", "untuple", "summap", "minmap", "maxmap"}  # fmt: skip
    assert (FUNCTIONS | AGGREGATES) - known - parser_forms == set(), "typo in the allowlist?"
    assert TABLE_FUNCTIONS <= tables
    categories = {
        r["name"].lower(): r["categories"]
        for r in chdb._query("SELECT name, categories FROM system.functions")
    }
    risky = {"Introspection", "Dictionary", "Embedded Dictionary", "AI", "Encryption", "Machine Learning"}
    assert not [n for n in FUNCTIONS | AGGREGATES if categories.get(n, "") in risky]
    for name in ("file", "url", "s3", "remote", "executable", "python", "input", "addressToLine",
                 "dictGet", "getSetting", "currentUser", "hostName", "sleep", "throwIf"):  # fmt: skip
        assert not allowed_function(name), name
    assert allowed_function("uniqExactIf") and allowed_function("sumStateMerge") and allowed_function("COUNT")
