"""One time grammar, one label syntax and pasteable id prefixes: over the HTTP API and the CLI,
against a real chDB store."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from dashfrog import query
from dashfrog._settings import Settings
from dashfrog.runtime._cli import main
from dashfrog.web import create_app
from tests.storage.test_store_contract import Flow

MIN_US = 60 * 1_000_000


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path_factory.mktemp('chdb') / 'db'}")
    store.migrate()
    now_us = time.time_ns() // 1000
    ms = now_us // 1000 - 5 * 3_600_000  # five hours ago
    made = {
        "old": Flow(tenant="t-a", start_us=now_us - 180 * MIN_US, labels={"env": "prod"}),
        "recent": Flow(tenant="t-a", start_us=now_us - 10 * MIN_US, labels={"env": "prod", "url": "http://x:1"}),
        "staging": Flow(tenant="t-a", start_us=now_us - 20 * MIN_US, labels={"env": "staging"}),
        # Two flows started in the same millisecond share their first 12 characters.
        "twin_a": Flow(tenant="t-a", start_us=ms * 1000, flow_id=f"{ms:012x}{os.urandom(10).hex()}"),
        "twin_b": Flow(tenant="t-b", start_us=ms * 1000, flow_id=f"{ms:012x}{os.urandom(10).hex()}"),
    }
    for i, f in enumerate(made.values()):
        f.start()
        f.run_step("work")
        f.end()
        store.insert_events(f.events, f"grammar-{i}")
    ids = {k: f.flow_id for k, f in made.items()}
    query.use_store(store)
    try:
        yield {"store": store, "ids": ids, "api": TestClient(create_app(store, Settings()))}
    finally:
        query.use_store(None)
        store.close()


def _ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {f["flow_id"] for f in response.json()["flows"]}


def test_api_since_until_take_relative_times_and_words(flows: dict[str, Any]) -> None:
    api, ids = flows["api"], flows["ids"]
    assert _ids(api.get("/api/flows", params={"since": "15m"})) == {ids["recent"]}
    assert _ids(api.get("/api/flows", params={"since": "4h", "until": "1h"})) == {ids["old"]}
    assert _ids(api.get("/api/flows", params={"since": "1w", "tenant": "t-b"})) == {ids["twin_b"]}
    assert _ids(api.get("/api/flows", params={"since": "now"})) == set()
    assert _ids(api.get("/api/flows", params={"until": "yesterday"})) == set()
    stats = api.get("/api/stats", params={"since": "30m", "tenant": "t-a"}).json()
    assert stats["runs"] == 2  # recent and staging
    for params in ({"since": "last tuesday"}, {"until": "10 minutes"}):
        response = api.get("/api/flows", params=params)
        assert response.status_code == 400
        assert "is not a time; use ISO 8601" in response.json()["detail"]
        assert "15m" in response.json()["detail"] and "today" in response.json()["detail"]


def test_api_labels_one_syntax_and_the_old_one(flows: dict[str, Any]) -> None:
    api, ids = flows["api"], flows["ids"]
    prod = {ids["old"], ids["recent"]}
    assert _ids(api.get("/api/flows", params={"label": "env=prod"})) == prod
    assert _ids(api.get("/api/flows", params={"label": "env:prod"})) == prod  # the older form
    assert _ids(api.get("/api/flows", params={"labels": json.dumps({"env": "prod"})})) == prod
    assert _ids(api.get("/api/flows", params={"label": "url=http://x:1"})) == {ids["recent"]}
    response = api.get("/api/flows", params={"label": "envprod"})
    assert response.status_code == 400 and "expected key=value" in response.json()["detail"]


def test_api_flow_by_unique_prefix(flows: dict[str, Any]) -> None:
    api, ids = flows["api"], flows["ids"]
    full = ids["recent"]
    for pasted in (full[:12], full[:12] + "…", full[:20], full):
        response = api.get(f"/api/flows/{pasted}")
        assert response.status_code == 200, (pasted, response.text)
        assert response.json()["flow_id"] == full
    twin = ids["twin_a"][:12]
    response = api.get(f"/api/flows/{twin}")
    assert response.status_code == 400
    assert f"flow id prefix {twin!r} matches 2 flows" in response.json()["detail"]
    # Scoped to a tenant, the same prefix names one flow.
    assert api.get(f"/api/flows/{twin}", params={"tenant": "t-b"}).json()["flow_id"] == ids["twin_b"]
    assert api.get("/api/flows/0000000000ff").status_code == 404
    # Under 6 characters is not taken as a prefix: no such flow.
    assert api.get(f"/api/flows/{full[:5]}").status_code == 404


def test_tenant_token_resolves_prefixes_in_its_tenant_only(flows: dict[str, Any]) -> None:
    settings = Settings(admin_token="root", tenant_tokens="t-b:tok-b")  # type: ignore[call-arg]
    api = TestClient(create_app(flows["store"], settings))
    ids = flows["ids"]
    headers = {"Authorization": "Bearer tok-b"}
    # The twin prefix is ambiguous only across tenants: a t-b token sees one flow, no count of t-a's.
    assert api.get(f"/api/flows/{ids['twin_a'][:12]}", headers=headers).json()["flow_id"] == ids["twin_b"]
    assert api.get(f"/api/flows/{ids['recent'][:12]}", headers=headers).status_code == 404


def test_cli_takes_the_same_grammar_and_prefixes(flows: dict[str, Any]) -> None:
    ids, runner = flows["ids"], CliRunner()
    result = runner.invoke(main, ["flow", ids["recent"][:12] + "…", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["flow_id"] == ids["recent"]
    result = runner.invoke(main, ["flow", ids["twin_a"][:12]])
    assert result.exit_code == 1 and "matches 2 flows" in result.output
    result = runner.invoke(main, ["flows", "--since", "15m", "--json"])
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["flow_id"] for line in result.output.splitlines()} == {ids["recent"]}
    result = runner.invoke(main, ["flows", "--label", "env:staging", "--label", "env=staging", "--json"])
    assert {json.loads(line)["flow_id"] for line in result.output.splitlines()} == {ids["staging"]}
    result = runner.invoke(main, ["stats", "--since", "soonish"])
    assert result.exit_code == 2
    assert "'soonish' is not a time" in result.output and "yesterday" in result.output
