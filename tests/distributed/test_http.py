"""Flows across HTTP: the test process ("service-a") calls FastAPI and Flask services in
their own processes with requests and httpx (sync and async); their steps join the flow
with their own service names."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import requests

from dashfrog import flow, step
from tests.distributed._helpers import build_flow, read_back
from tests.distributed.conftest import Cluster

pytestmark = pytest.mark.slow

order: dict[str, int] = {"id": 1}


def test_seed_service_a_to_service_b(dist: Cluster) -> None:
    # The seed's "Service A" sample, with the address of the running service B.
    with flow.start(name="order_processing", tenant="customer-123") as flow_id:
        # This HTTP call automatically propagates flow context
        response = requests.post(f"{dist.service_b.url}/process", json=order)

    assert response.json()["flow_id"] == flow_id
    got = build_flow(flow_id, dist.events.of_flow(flow_id, ["process_payment"]))
    payment = got.one("process_payment")
    assert (payment.service, payment.status, payment.tenant) == ("service-b", "success", "customer-123")
    assert payment.parent_step_id is None
    assert (got.status, got.ended_by) == ("success", "service-a")
    assert got.tenants == {"customer-123"}
    assert read_back(got).step("process_payment").services == ["service-b"]


async def _httpx_async(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        return (await client.post(url, json=order, timeout=10)).json()  # type: ignore[no-any-return]


def _call(client: str, url: str) -> dict[str, Any]:
    import asyncio

    if client == "requests":
        return requests.post(url, json=order, timeout=10).json()  # type: ignore[no-any-return]
    if client == "httpx":
        with httpx.Client() as c:
            return c.post(url, json=order, timeout=10).json()  # type: ignore[no-any-return]
    return asyncio.run(_httpx_async(url))


@pytest.mark.parametrize("client", ["requests", "httpx", "httpx-async"])
@pytest.mark.parametrize("endpoint", ["process", "process-sync"])
def test_clients_and_endpoints_join_the_flow(dist: Cluster, client: str, endpoint: str) -> None:
    with flow.start(name="checkout", tenant="tenant-http", client=client) as flow_id:
        with step.start("call_b") as call_step:
            body = _call(client, f"{dist.service_b.url}/{endpoint}")
    assert (body["flow_id"], body["tenant"]) == (flow_id, "tenant-http")

    name = "process_payment" if endpoint == "process" else "process_payment_sync"
    got = build_flow(flow_id, dist.events.of_flow(flow_id, [name]))
    remote = got.one(name)
    assert (remote.service, remote.status, remote.tenant) == ("service-b", "success", "tenant-http")
    assert remote.parent_step_id == call_step  # nested under the caller's step, across the wire
    assert got.one("call_b").service == "service-a"
    assert (got.status, got.tenants) == ("success", {"tenant-http"})
    read_back(got)


@pytest.mark.parametrize("hop", ["forward", "forward-sync"])
def test_fastapi_to_flask_two_hops(dist: Cluster, hop: str) -> None:
    """A → B (FastAPI, async endpoint + httpx.AsyncClient, or sync endpoint + requests) → C (Flask)."""
    with flow.start(name="import", tenant="tenant-hops") as flow_id:
        with step.start("start_import"):
            body = requests.post(f"{dist.service_b.url}/{hop}", json=order, timeout=10).json()
    assert body["flow_id"] == flow_id
    assert (body["downstream"]["flow_id"], body["downstream"]["tenant"]) == (flow_id, "tenant-hops")

    b_step = "forward_async" if hop == "forward" else "forward_sync"
    got = build_flow(flow_id, dist.events.of_flow(flow_id, [b_step, "flask_work"]))
    a, b, c = got.one("start_import"), got.one(b_step), got.one("flask_work")
    assert [(s.service, s.status) for s in (a, b, c)] == [
        ("service-a", "success"), ("service-b", "success"), ("service-c", "success")
    ]
    assert (b.parent_step_id, c.parent_step_id) == (a.step_id, b.step_id)
    assert c.attributes == {"items": "1"}
    assert (got.status, got.tenants) == ("success", {"tenant-hops"})
    assert sorted(read_back(got).services) == ["service-a", "service-b", "service-c"]


def test_flask_called_directly_with_httpx(dist: Cluster) -> None:
    with flow.start(name="direct", tenant="tenant-flask") as flow_id:
        body = httpx.post(f"{dist.flask_c.url}/work", json={}, timeout=10).json()
    assert (body["flow_id"], body["tenant"]) == (flow_id, "tenant-flask")
    got = build_flow(flow_id, dist.events.of_flow(flow_id, ["flask_work"]))
    assert (got.one("flask_work").service, got.one("flask_work").status) == ("service-c", "success")
    read_back(got)


def test_calls_outside_a_flow_carry_nothing(dist: Cluster) -> None:
    body = requests.post(f"{dist.service_b.url}/process", json=order, timeout=10).json()
    assert body["flow_id"] is None
