"""The API fails closed: with any token configured every /api route wants a
valid one, a tenant token sees only its tenant, and an open API never binds
beyond loopback unless explicitly allowed.

The routes are read from the real app, so a route added later is probed too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dashfrog._settings import Settings
from dashfrog.web import create_app
from dashfrog.web._auth import auth_mode, check_bind, is_loopback
from tests.streams._helpers import flow_events

ADMIN = "admin-secret"
T1 = "t1-secret"
T2 = "t2-secret"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path_factory.mktemp('auth') / 'db'}")
    store.migrate()
    events = flow_events(9, tenants=3, steps=1, run="auth")
    store.insert_events(events, "auth-1")
    store.events = events  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        store.close()


def _api_routes(app: Any) -> list[tuple[str, str]]:
    # The OpenAPI document lists every route, those of included routers too
    # (tests/web/test_openapi.py checks that it describes each one).
    return [
        (method.upper(), path)
        for path, operations in sorted(app.openapi()["paths"].items())
        if path.startswith("/api")
        for method in sorted(operations)
    ]


def _takes_tenant(app: Any, method: str, path: str) -> bool:
    operation = app.openapi()["paths"][path][method.lower()]
    return any(p["name"] == "tenant" and p["in"] == "query" for p in operation.get("parameters", []))


def _call(api: TestClient, method: str, path: str, store: Any, token: str | None, **params: str) -> Any:
    """One well-formed request (required parameters filled in) with ``token``."""
    flow_id = next(e["flow_id"] for e in store.events if e["tenant"] == "tenant-0")
    operation = api.app.openapi()["paths"][path][method.lower()]  # type: ignore[attr-defined]
    query = {
        p["name"]: "x" for p in operation.get("parameters", []) if p["in"] == "query" and p.get("required")
    }
    query.update(params)
    url = re.sub(r"\{[^}]+\}", "x", path.replace("{flow_id}", flow_id))
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if method == "POST":
        return api.post(url, headers=headers, params=query, json={"sql": "SELECT 1"})
    return api.request(method, url, headers=headers, params=query)


@pytest.mark.parametrize(
    "tokens",
    [
        {"admin_token": ADMIN, "tenant_tokens": f"tenant-1:{T1},tenant-2:{T2}"},
        {"tenant_tokens": f"tenant-1:{T1},tenant-2:{T2}"},  # tenant tokens alone close it too
        {"admin_token": ADMIN},
    ],
    ids=["admin+tenants", "tenants-only", "admin-only"],
)
def test_every_api_route_refuses_anonymous_and_wrong_tokens(store: Any, tokens: dict[str, str]) -> None:
    app = create_app(store, Settings(**tokens))
    api = TestClient(app)
    routes = _api_routes(app)
    assert ("GET", "/api/flows") in routes and ("POST", "/api/sql") in routes
    for method, path in routes:
        for token in (None, "", "wrong", ADMIN + "x", "Basic " + ADMIN):
            response = _call(api, method, path, store, token)
            assert response.status_code == 401, (method, path, token, response.text)
            assert response.headers.get("www-authenticate") == "Bearer"
            assert "tenant-0" not in response.text
    assert api.get("/healthz").status_code == 200  # liveness only, no data


def test_tenant_token_sees_only_its_tenant_on_every_route(store: Any) -> None:
    app = create_app(store, Settings(admin_token=ADMIN, tenant_tokens=f"tenant-1:{T1},tenant-2:{T2}"))
    api = TestClient(app)
    for method, path in _api_routes(app):
        if method == "POST":  # SQL reads every tenant: admin only
            assert _call(api, method, path, store, T1).status_code == 403, path
            continue
        if path == "/api/stream":
            # A stream with the right scope never ends; asking for another tenant is refused up front.
            assert _call(api, method, path, store, T1, tenant="tenant-0").status_code == 403
            continue
        other = _call(api, method, path, store, T1, tenant="tenant-0")
        if "{flow_id}" in path:
            # Another tenant's flow is not found, with or without the tenant parameter: ids never leak.
            assert other.status_code in (403, 404), (path, other.text)
            assert _call(api, method, path, store, T1).status_code == 404, path
            assert _call(api, method, path, store, ADMIN).status_code == 200, path
        else:
            if _takes_tenant(app, method, path):
                assert other.status_code == 403, (path, other.text)
            mine = _call(api, method, path, store, T1)
            # 200; 403 on admin-only routes; 400/404 for placeholder values; never a 401.
            assert mine.status_code in (200, 400, 403, 404), (path, mine.text)
            if path in ("/api/flows", "/api/stats", "/api/whoami"):
                assert mine.status_code == 200, (path, mine.text)
            assert "tenant-0" not in mine.text and "tenant-2" not in mine.text, path
    listed = api.get("/api/flows", headers={"Authorization": f"Bearer {T1}"}).json()["flows"]
    assert listed and {f["tenant"] for f in listed} == {"tenant-1"}
    assert api.get("/api/whoami", headers={"Authorization": f"Bearer {T2}"}).json()["tenant"] == "tenant-2"


def test_no_token_configured_is_open_on_loopback(store: Any) -> None:
    api = TestClient(create_app(store, Settings()))
    assert len(api.get("/api/flows", params={"limit": 100}).json()["flows"]) == 9
    assert api.get("/api/whoami").json()["open"] is True


def test_bind_rules_and_mode_line() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.com", ""))
    check_bind(Settings(api_host="127.0.0.1"))
    check_bind(Settings(api_host="0.0.0.0", tenant_tokens="a:b"))
    check_bind(Settings(api_host="0.0.0.0", api_allow_open=True))
    from dashfrog._exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="DASHFROG_API_ALLOW_OPEN"):
        check_bind(Settings(api_host="0.0.0.0"))
    assert auth_mode(Settings()).startswith("open-loopback")
    assert auth_mode(Settings(admin_token="x", tenant_tokens="a:1,b:2")).startswith("tokens: admin + 2 tenants")
    assert auth_mode(Settings(tenant_tokens="a:1")).startswith("tokens: no admin (SQL disabled) + 1 tenant")
    assert auth_mode(Settings(api_host="0.0.0.0", api_allow_open=True)).startswith("open by explicit opt-in")
    assert "x" not in auth_mode(Settings(admin_token="x")).replace("explicit", "")


# -- the real CLI ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHFROG_")}
    env.update(
        {
            "DASHFROG_CLICKHOUSE_URL": f"chdb://{tmp_path / 'db'}",
            "DASHFROG_API_PORT": str(_free_port()),
            # Never reached: the refusal comes before any broker or store.
            "DASHFROG_KAFKA_BOOTSTRAP": "127.0.0.1:9",
        }
    )
    env.update(extra)
    return env


CLI = [sys.executable, "-c", "from dashfrog.runtime._cli import main; main()"]


@pytest.mark.parametrize("command", ["api", "up"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_open_api_beyond_loopback_refuses_to_start(tmp_path: Path, command: str, host: str) -> None:
    env = _env(tmp_path, DASHFROG_API_HOST=host)
    done = subprocess.run([*CLI, command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "refusing to serve the API" in lines[0], done.stderr
    assert "DASHFROG_API_ALLOW_OPEN" in lines[0] and "DASHFROG_ADMIN_TOKEN" in lines[0]
    assert not (tmp_path / "db").exists()  # nothing was started


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*CLI, "api"], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait_serving(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            _get(port, "/healthz")
            return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


@pytest.mark.parametrize(
    ("extra", "mode", "anonymous"),
    [
        ({"DASHFROG_API_HOST": "0.0.0.0", "DASHFROG_API_ALLOW_OPEN": "true"}, "open by explicit opt-in", 200),
        ({"DASHFROG_API_HOST": "0.0.0.0", "DASHFROG_TENANT_TOKENS": f"tenant-1:{T1}"}, "tokens: no admin", 401),
        ({}, "open-loopback", 200),
    ],
    ids=["opt-in", "tenant-tokens", "loopback"],
)
def test_dashfrog_api_says_which_mode_is_in_force(
    tmp_path: Path, extra: dict[str, str], mode: str, anonymous: int
) -> None:
    env = _env(tmp_path, **extra)
    port = int(env["DASHFROG_API_PORT"])
    log = tmp_path / "api.log"
    proc = _serve(env, log)
    try:
        _wait_serving(proc, port, log)
        assert mode in log.read_text()
        assert _get(port, "/api/flows")[0] == anonymous
        if "DASHFROG_TENANT_TOKENS" in extra:
            status, body = _get(port, "/api/flows", T1)
            assert status == 200 and body["flows"] == []
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
