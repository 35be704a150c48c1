"""A request made from inside this process keeps the flow of the code that made it.

This is how the seed's users test async flows: a flow started with
``end_on_exit=False``, an endpoint reached through FastAPI's ``TestClient``
or Flask's test client that calls ``flow.end()``. Such a request carries no
flow context of its own; OpenTelemetry's server instrumentation would start
it from an empty context. Remote context, when a request brings some and it
is admitted, still wins.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import dashfrog
from dashfrog import Settings, flow, step, with_fastapi, with_flask
from dashfrog._settings import set_settings
from tests.conftest import consume_events
from tests.distributed._helpers import baggage_header

SECRET = "in-process-secret"
OTHER_FLOW = "0123456789abcdef0123456789abcdef"


def _fastapi_client() -> Any:
    from fastapi import FastAPI

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note on httpx versions
        from fastapi.testclient import TestClient

    app = FastAPI()
    with_fastapi(app)

    @app.post("/end")
    def end() -> dict[str, Any]:
        seen = flow.current_id()
        flow.end()
        return {"flow_id": seen}

    @app.post("/end-async")
    async def end_async() -> dict[str, Any]:
        seen = flow.current_id()
        with step.start("finish"):
            pass
        flow.end()
        return {"flow_id": seen}

    @app.get("/whoami")
    async def whoami() -> dict[str, Any]:
        return {"flow_id": flow.current_id()}

    return TestClient(app)


def _flask_client() -> Any:
    from flask import Flask

    app = Flask("in_process")
    with_flask(app)

    @app.post("/end")
    def end() -> dict[str, Any]:
        seen = flow.current_id()
        flow.end()
        return {"flow_id": seen}

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"flow_id": flow.current_id()}

    return app.test_client()


class _Client:
    """The two test clients behind one face."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.client = _fastapi_client() if kind == "fastapi" else _flask_client()

    def call(self, method: str, path: str, baggage: str | None = None) -> dict[str, Any]:
        headers = {"baggage": baggage} if baggage else {}
        response = self.client.open(path, method=method, headers=headers) if self.kind == "flask" else (
            self.client.request(method, path, headers=headers)
        )
        assert response.status_code == 200
        body = response.get_json() if self.kind == "flask" else response.json()
        return body  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def store(module_chdb_store: Any) -> Any:
    return module_chdb_store


@pytest.mark.parametrize(("kind", "path"), [("fastapi", "/end"), ("fastapi", "/end-async"), ("flask", "/end")])
def test_endpoint_called_in_process_ends_the_callers_flow(
    sdk: dict[str, Any], store: Any, kind: str, path: str
) -> None:
    client = _Client(kind)
    with flow.start(name="async_data_processing", tenant="acme-corp", end_on_exit=False) as flow_id:
        with step.start("enqueue_task"):
            pass
        assert client.call("POST", path)["flow_id"] == flow_id
    assert dashfrog.flush(10)
    expected = 6 if path == "/end-async" else 4
    events = consume_events(sdk["bootstrap"], sdk["topic"], expected)
    assert [(e["flow_id"], e["status"]) for e in events if e["kind"] == "flow_ended"] == [(flow_id, "success")]
    assert {e["flow_id"] for e in events} == {flow_id}
    # What the projection makes of it: the flow is over, not running forever.
    store.insert_events(events, f"in-process-{kind}-{path}")
    detail = store.flow(flow_id)
    assert detail is not None and detail.status == "success" and detail.ended_at is not None


@pytest.fixture
def signing() -> Iterator[None]:
    """No events (these tests look at context), and a secret, so only signed context from outside counts."""
    set_settings(Settings(disabled=True, context_secret=SECRET))  # type: ignore[call-arg]
    try:
        yield
    finally:
        set_settings(None)


@pytest.mark.parametrize("kind", ["fastapi", "flask"])
def test_admitted_remote_context_replaces_the_callers(signing: None, kind: str) -> None:
    client = _Client(kind)
    signed = baggage_header(OTHER_FLOW, "globex", "import", secret=SECRET)
    forged = baggage_header(OTHER_FLOW, "globex", "import", secret="guessed")
    before = dashfrog.stats()["ignored_remote_contexts"]
    with flow.start(name="caller", tenant="acme-corp") as flow_id:
        assert client.call("GET", "/whoami")["flow_id"] == flow_id
        assert client.call("GET", "/whoami", signed)["flow_id"] == OTHER_FLOW
        # Refused context is counted and changes nothing: the caller's flow stays.
        assert client.call("GET", "/whoami", forged)["flow_id"] == flow_id
    assert dashfrog.stats()["ignored_remote_contexts"] == before + 1
    assert client.call("GET", "/whoami")["flow_id"] is None
    assert client.call("GET", "/whoami", signed)["flow_id"] == OTHER_FLOW
