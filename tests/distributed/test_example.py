"""examples/distributed as its README runs it: service A (FastAPI) → service B (FastAPI)
→ Celery worker, each its own process started from the example's directory."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from dashfrog._broker import free_port
from tests.distributed._helpers import build_flow
from tests.distributed.conftest import REPO, START_TIMEOUT_S, Cluster, Proc, spawn, wait_http

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "distributed"


@pytest.fixture(scope="module")
def example(cluster: Cluster) -> Iterator[str]:
    """Base URL of service A, with service B and the worker running behind it."""
    py = sys.executable
    a_port, b_port = free_port(), free_port()
    env = {**cluster.env, "EXAMPLE_QUEUE": f"{cluster.prefix}example",
           "CELERY_BROKER_URL": cluster.env["DISTRIBUTED_CELERY_BROKER"],
           "CELERY_RESULT_BACKEND": cluster.env["DISTRIBUTED_CELERY_BACKEND"],
           "PAYMENTS_URL": f"http://127.0.0.1:{b_port}"}
    env.pop("PYTHONPATH", None)  # the example runs from its own directory, as the README says
    procs: list[Proc] = [
        spawn("example_worker", [py, "-m", "celery", "-A", "worker", "worker", "--pool=solo",
                                 "--without-heartbeat", "--without-gossip", "--without-mingle",
                                 "--loglevel=WARNING"],
              {**env, "DASHFROG_SERVICE_NAME": "fulfilment"}, cluster.log_dir, cwd=EXAMPLE),
        spawn("example_b", [py, "-m", "uvicorn", "service_b:app", "--port", str(b_port)],
              {**env, "DASHFROG_SERVICE_NAME": "payments"}, cluster.log_dir, cwd=EXAMPLE,
              url=f"http://127.0.0.1:{b_port}"),
        spawn("example_a", [py, "-m", "uvicorn", "service_a:app", "--port", str(a_port)],
              {**env, "DASHFROG_SERVICE_NAME": "orders"}, cluster.log_dir, cwd=EXAMPLE,
              url=f"http://127.0.0.1:{a_port}"),
    ]
    cluster.procs.extend(procs)  # their logs show up in failure messages
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for proc in procs[1:]:
            wait_http(proc, deadline)
        yield procs[2].url
    finally:
        for proc in procs:
            proc.stop()


def test_order_flows_through_three_services(dist: Cluster, example: str) -> None:
    order = {"items": ["sku-1", "sku-2"], "amount": 42, "flaky_warehouse": True}
    body = httpx.post(f"{example}/orders/acme-corp", json=order, timeout=10).json()
    assert body["status"] == "accepted"
    flow_id = body["flow_id"]

    got = build_flow(flow_id, dist.events.of_flow(flow_id, timeout=60))
    assert (got.status, got.ended_by, got.tenants) == ("success", "fulfilment", {"acme-corp"})
    services = {(s.name, s.service) for s in got.steps.values()}
    assert {("validate_order", "orders"), ("call_payments", "orders"), ("charge_payment", "payments"),
            ("enqueue_fulfilment", "payments"), ("ship", "fulfilment")} <= services
    attempts = sorted(got.named("worker.fulfil_order"), key=lambda s: s.attributes["attempt"])
    assert [(s.attributes["attempt"], s.status) for s in attempts] == [("1", "failed"), ("2", "success")]
    assert got.one("charge_payment").parent_step_id == got.one("call_payments").step_id


def test_declined_payment_fails_the_flow(dist: Cluster, example: str) -> None:
    body = httpx.post(f"{example}/orders/globex", json={"items": ["sku"], "amount": 5000}, timeout=10).json()
    assert body["status"] == "refused"
    got = build_flow(body["flow_id"], dist.events.of_flow(body["flow_id"], timeout=30))
    assert got.status == "failed"
    charge = got.one("charge_payment")
    assert (charge.service, charge.status) == ("payments", "failed")
    assert not got.named("enqueue_fulfilment")
