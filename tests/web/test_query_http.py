"""``dashfrog.query`` over HTTP against the real app, served by uvicorn on loopback:
what the SDK parses is what the API answers (its /openapi.json contract)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dashfrog import query
from dashfrog._exceptions import DashfrogError, QueryError
from dashfrog._models import FlowDetail, FlowFilter, FlowList, FlowStats, StatsFilter
from dashfrog._settings import Settings, set_settings
from dashfrog.storage import SqlLimits
from dashfrog.web import create_app
from tests.streams._helpers import flow_events
from tests.web._helpers import Server

TOKEN = "http-admin"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path_factory.mktemp('http') / 'db'}")
    store.migrate()
    store.events = flow_events(12, tenants=3, steps=2, fail_every=4, run="http")  # type: ignore[attr-defined]
    store.insert_events(store.events, "http-1")  # type: ignore[attr-defined]
    app = create_app(store, Settings(admin_token=TOKEN, tenant_tokens="tenant-1:t1"))
    try:
        with Server(app) as server:
            yield store, server.url
    finally:
        store.close()


@pytest.fixture
def over_http(served: tuple[Any, str]) -> Iterator[Any]:
    store, url = served
    query.use_store(None)
    # A chdb:// store URL: dashfrog.query asks the API, as a CLI beside `dashfrog up` does.
    set_settings(Settings(api_url=url, admin_token=TOKEN, clickhouse_url="chdb://elsewhere"))
    try:
        yield store
    finally:
        set_settings(None)


def test_reads_match_the_store(over_http: Any) -> None:
    store = over_http
    page = query.flows(tenant="tenant-1", limit=100)
    assert isinstance(page, FlowList)
    assert page == store.find_flows(FlowFilter.parse(tenant="tenant-1", limit=100))
    failed = query.flows(status="failed", labels={"run": "http"}, limit=100)
    assert {f.status for f in failed} == {"failed"} and len(failed.flows) == 3
    one = failed.flows[0]
    detail = query.flow(one.flow_id)
    assert isinstance(detail, FlowDetail) and detail == store.flow(one.flow_id)
    assert query.flow(one.flow_id, tenant="nobody") is None
    stats = query.stats(tenant="tenant-0")
    assert isinstance(stats, FlowStats) and stats == store.find_stats(StatsFilter.parse(tenant="tenant-0"))
    rows = query.sql("SELECT tenant, count() AS n FROM flows FINAL WHERE tenant = {t:String} GROUP BY tenant", {"t": "tenant-2"})
    assert rows.rows == [{"tenant": "tenant-2", "n": 4}] and rows.columns == ["tenant", "n"]


def test_refusals_reach_the_caller_as_query_errors(over_http: Any) -> None:
    with pytest.raises(QueryError, match="function 'file' is not allowed"):
        query.sql("SELECT file('/proc/self/environ')")
    with pytest.raises(QueryError, match="settings cannot be changed"):
        query.sql("SELECT 1 SETTINGS readonly = 0")
    over_http.sql_limits = SqlLimits(max_result_rows=5)
    try:
        with pytest.raises(QueryError, match="DASHFROG_SQL_MAX_RESULT_ROWS"):
            query.sql("SELECT number FROM numbers(50)")
    finally:
        over_http.sql_limits = SqlLimits()


def test_a_wrong_token_is_refused(served: tuple[Any, str]) -> None:
    _, url = served
    set_settings(Settings(api_url=url, admin_token="not-the-token", clickhouse_url="chdb://elsewhere"))
    try:
        with pytest.raises(DashfrogError, match="401"):
            query.flows()
    finally:
        set_settings(None)
