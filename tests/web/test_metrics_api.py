"""GET /api/metrics and /api/metrics/{name}: tenant scoping, errors, and
dashfrog.query over a real HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dashfrog import QueryError, query
from dashfrog._settings import Settings, set_settings
from dashfrog.web import create_app
from tests.storage.test_metrics_store import BASE, counter_point, event, histogram_point
from tests.web._helpers import Server

TOKENS = {"admin_token": "adm1n", "tenant_tokens": "acme:acme-token,globex:globex-token"}
SINCE = (BASE - timedelta(minutes=5)).isoformat()
UNTIL = (BASE + timedelta(minutes=30)).isoformat()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path_factory.mktemp('chdb') / 'db'}")
    store.migrate()
    store.insert_events(
        [
            event(
                "api_calls",
                "counter",
                [
                    counter_point("acme", 90, BASE + timedelta(seconds=5), status="200"),
                    counter_point("acme", 10, BASE + timedelta(seconds=6), status="500"),
                    counter_point("globex", 7, BASE + timedelta(seconds=7), status="200"),
                ],
                ["status"],
                pretty_name="API Calls",
                unit="count",
            ),
            event(
                "globex_only",
                "histogram",
                [histogram_point("globex", [0.1, 0.2], BASE)],
                unit="seconds",
            ),
        ],
        "seed",
    )
    try:
        yield store
    finally:
        store.close()


def client(store: Any) -> TestClient:
    return TestClient(create_app(store, Settings(**TOKENS)))


def get(c: TestClient, path: str, token: str, **params: Any) -> Any:
    return c.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


def test_admin_lists_every_metric_and_reads_any_tenant(store: Any) -> None:
    c = client(store)
    listed = get(c, "/api/metrics", "adm1n")
    assert listed.status_code == 200
    assert [(m["name"], m["kind"], m["tenants"]) for m in listed.json()["metrics"]] == [
        ("api_calls", "counter", 2),
        ("globex_only", "histogram", 1),
    ]
    answer = get(
        c, "/api/metrics/api_calls", "adm1n", since=SINCE, until=UNTIL, group_by="tenant"
    ).json()
    assert answer["pretty_name"] == "API Calls" and answer["unit"] == "count"
    assert {(r["group"]["tenant"], r["total"]) for r in answer["rows"]} == {
        ("acme", 100),
        ("globex", 7),
    }


def test_a_tenant_token_sees_its_tenant_only(store: Any) -> None:
    c = client(store)
    listed = get(c, "/api/metrics", "acme-token").json()
    assert [m["name"] for m in listed["metrics"]] == ["api_calls"]
    (row,) = get(c, "/api/metrics/api_calls", "acme-token", since=SINCE, until=UNTIL).json()["rows"]
    assert row["total"] == 100  # globex's 7 are not in it
    # Another tenant's metric does not exist for this token; asking for another tenant is refused.
    assert (
        get(c, "/api/metrics/globex_only", "acme-token", since=SINCE, until=UNTIL).status_code
        == 404
    )
    assert get(c, "/api/metrics/api_calls", "acme-token", tenant="globex").status_code == 403
    assert get(c, "/api/metrics", "acme-token", tenant="globex").status_code == 403
    assert c.get("/api/metrics").status_code == 401
    assert get(c, "/api/metrics", "wrong").status_code == 401


def test_ratio_and_bad_parameters(store: Any) -> None:
    c = client(store)
    ratio = get(
        c,
        "/api/metrics/api_calls/ratio",
        "acme-token",
        where='{"status":"500"}',
        since=SINCE,
        until=UNTIL,
    )
    assert [(r["matching"], r["total"], r["ratio"]) for r in ratio.json()["rows"]] == [
        (10, 100, 0.1)
    ]
    for params, message in (
        ({"step": "30s"}, "whole number of minutes"),
        ({"labels": "not json"}, "labels"),
        ({"since": "not-a-date"}, "since"),
    ):
        answer = get(c, "/api/metrics/api_calls", "adm1n", **params)
        assert answer.status_code == 400 and message in answer.json()["detail"]
    assert get(c, "/api/metrics/api_calls/ratio", "adm1n", where="{}").status_code == 400
    assert get(c, "/api/metrics/nope", "adm1n").status_code == 404


@pytest.fixture
def server(store: Any) -> Iterator[str]:
    with Server(create_app(store, Settings(**TOKENS)), lifespan="auto") as running:
        yield running.url


def test_query_module_reads_metrics_over_http(server: str) -> None:
    query.use_store(None)
    set_settings(Settings(api_url=server, admin_token="acme-token"))
    try:
        assert [m.name for m in query.metrics()] == ["api_calls"]
        found = query.metric(
            "api_calls", since=BASE - timedelta(minutes=5), until=BASE + timedelta(minutes=30)
        )
        assert [(r.time, r.total) for r in found] == [(BASE, 100)]
        assert found.to_pandas()["total"].tolist() == [100]
        share = query.metric_ratio(
            "api_calls",
            where={"status": "500"},
            since=BASE,
            until=BASE + timedelta(minutes=10),
            step="5m",
        )
        assert [r.ratio for r in share] == [0.1]
        with pytest.raises(QueryError, match="no metric named 'globex_only'"):
            query.metric("globex_only", since=BASE, until=BASE + timedelta(minutes=5))
        with pytest.raises(QueryError, match="whole number of minutes"):
            query.metric("api_calls", step="10s")
    finally:
        set_settings(None)


def test_cli_lists_and_shows_metrics(server: str) -> None:
    from click.testing import CliRunner

    from dashfrog.runtime._cli import main

    query.use_store(None)
    set_settings(Settings(api_url=server, admin_token="adm1n"))
    try:
        runner = CliRunner()
        listed = runner.invoke(main, ["metrics"])
        assert listed.exit_code == 0, listed.output
        assert (
            "api_calls" in listed.output
            and "API Calls" in listed.output
            and "globex_only" in listed.output
        )
        since, until = SINCE, UNTIL
        shown = runner.invoke(
            main,
            [
                "metric",
                "api_calls",
                "--tenant",
                "acme",
                "--since",
                since,
                "--until",
                until,
                "--step",
                "5m",
            ],
        )
        assert shown.exit_code == 0, shown.output
        assert "API Calls (count): counter, step 5 min" in shown.output
        (row,) = [
            line
            for line in shown.output.splitlines()
            if line.startswith(BASE.strftime("%Y-%m-%d %H:%M"))
        ]
        assert row.split()[2:] == ["100", "0.3333"]  # total, rate per second over 5 minutes
        share = runner.invoke(
            main,
            [
                "metric",
                "api_calls",
                "--where",
                "status=500",
                "--since",
                since,
                "--until",
                until,
                "--group-by",
                "tenant",
            ],
        )
        assert share.exit_code == 0, share.output
        assert any(
            line.split()[2:] == ["acme", "10", "100", "10.00%"]
            for line in share.output.splitlines()
        )
        as_json = runner.invoke(
            main, ["metric", "globex_only", "--since", since, "--until", until, "--json"]
        )
        assert as_json.exit_code == 0 and '"count": 2' in as_json.output
        unknown = runner.invoke(main, ["metric", "nope"])
        assert unknown.exit_code == 1 and "no metric named 'nope'" in unknown.output
        bad_step = runner.invoke(main, ["metric", "api_calls", "--step", "10s"])
        assert bad_step.exit_code == 1 and "whole number of minutes" in bad_step.output
    finally:
        set_settings(None)
