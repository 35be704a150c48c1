"""examples/distributed as its README runs it: service A (FastAPI) → service B (FastAPI)
→ Celery worker, each its own process started from the example's directory."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from dashfrog.runtime._broker import free_port
from tests.distributed._helpers import build_flow, read_back
from tests.distributed.conftest import (
    REPO,
    START_TIMEOUT_S,
    Cluster,
    Proc,
    spawn,
    stop_all,
    wait_http,
)

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
        stop_all(procs)


def test_order_flows_through_three_services(dist: Cluster, example: str) -> None:
    order = {"items": ["sku-1", "sku-2"], "amount": 42}
    body = httpx.post(f"{example}/orders/acme-corp", json=order, timeout=10).json()
    assert body["status"] == "accepted"
    flow_id = body["flow_id"]

    got = build_flow(flow_id, dist.events.of_flow(flow_id, ["charge_payment", "ship", "worker.fulfil_order"]))
    assert (got.status, got.ended_by, got.tenants) == ("success", "fulfilment", {"acme-corp"})
    assert [(s.name, s.service, s.status) for s in got.steps.values()] == [
        ("validate_order", "orders", "success"),
        ("call_payments", "orders", "success"),
        ("charge_payment", "payments", "success"),
        ("enqueue_fulfilment", "payments", "success"),
        ("worker.fulfil_order", "fulfilment", "success"),
        ("reserve_stock", "fulfilment", "success"),
        ("ship", "fulfilment", "success"),
    ]
    assert got.one("charge_payment").parent_step_id == got.one("call_payments").step_id
    assert got.one("worker.fulfil_order").parent_step_id == got.one("enqueue_fulfilment").step_id
    detail = read_back(got)
    assert (detail.labels, sorted(detail.services)) == ({"channel": "web"}, ["fulfilment", "orders", "payments"])


def test_flaky_warehouse_is_retried_as_a_second_attempt(dist: Cluster, example: str) -> None:
    order = {"items": ["sku-1"], "amount": 42, "flaky_warehouse": True}
    flow_id = httpx.post(f"{example}/orders/initech", json=order, timeout=10).json()["flow_id"]
    got = build_flow(flow_id, dist.events.of_flow(flow_id, {"worker.fulfil_order": 2, "ship": 1}))
    attempts = sorted(got.named("worker.fulfil_order"), key=lambda s: s.attributes["attempt"])
    assert [(s.attributes["attempt"], s.status) for s in attempts] == [("1", "retried"), ("2", "success")]
    assert [[c.name for c in s.children] for s in attempts] == [["reserve_stock"], ["reserve_stock", "ship"]]
    assert (got.status, got.ended_by) == ("success", "fulfilment")
    detail = read_back(got)
    # A retried attempt is not a failure, and the flow that then succeeded shows no error.
    assert (detail.status, detail.steps_failed, detail.error) == ("success", 0, None)


def test_declined_payment_fails_the_flow(dist: Cluster, example: str) -> None:
    body = httpx.post(f"{example}/orders/globex", json={"items": ["sku"], "amount": 5000}, timeout=10).json()
    assert body["status"] == "refused"
    got = build_flow(body["flow_id"], dist.events.of_flow(body["flow_id"], ["charge_payment"]))
    assert got.status == "failed"
    charge = got.one("charge_payment")
    assert (charge.service, charge.status) == ("payments", "failed")
    assert not got.named("enqueue_fulfilment")
    detail = read_back(got)
    assert detail.error is not None and "card declined" in (detail.error.message or "")
