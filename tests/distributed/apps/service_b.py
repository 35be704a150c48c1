"""A FastAPI service for the distributed tests (run by uvicorn in its own process).

Its trust settings come from the environment, so the tests run it twice: with
the defaults, and strict (a secret, no trusted network). Every endpoint
flushes before answering, so the test knows the service's events are on the
broker when the response arrives.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import requests
from fastapi import FastAPI

import dashfrog
from dashfrog import flow, step, with_fastapi, with_httpx, with_requests

from .tasks import process_data_task

app = FastAPI()
with_fastapi(app)
with_requests()
with_httpx()

DOWNSTREAM = os.environ.get("DISTRIBUTED_DOWNSTREAM_URL", "")


def seen() -> dict[str, Any]:
    """What this request made of the flow context it arrived with."""
    dashfrog.flush(10)
    return {
        "flow_id": flow.current_id(),
        "tenant": flow.current_tenant(),
        "ignored": dashfrog.stats()["ignored_remote_contexts"],
    }


def process_payment(order: dict) -> None: ...


def validate(data: dict) -> None: ...


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/stats")
def stats() -> dict[str, Any]:
    return {"ignored": dashfrog.stats()["ignored_remote_contexts"]}


# The seed's "Service B" sample, as written.
@app.post("/process")
async def process_order(order: dict):
    # This step is part of the same flow from Service A
    with step.start("process_payment"):
        process_payment(order)

    return {"status": "success", **seen()}


@app.post("/process-sync")
def process_order_sync(order: dict) -> dict[str, Any]:
    with step.start("process_payment_sync"):
        process_payment(order)
    return {"status": "success", **seen()}


@app.post("/forward")
async def forward(order: dict) -> dict[str, Any]:
    """Calls the Flask service with httpx's async client inside a step."""
    with step.start("forward_async"):
        async with httpx.AsyncClient() as client:
            downstream = (await client.post(f"{DOWNSTREAM}/work", json=order, timeout=10)).json()
    return {"downstream": downstream, **seen()}


@app.post("/forward-sync")
def forward_sync(order: dict) -> dict[str, Any]:
    """Calls the Flask service with requests inside a step (a sync endpoint, in a thread)."""
    with step.start("forward_sync"):
        downstream = requests.post(f"{DOWNSTREAM}/work", json=order, timeout=10).json()
    return {"downstream": downstream, **seen()}


# The seed's "Async Task Flows" API sample, as written.
@app.post("/process-data/{customer_id}")
async def process_data_endpoint(customer_id: str, data: dict):
    # Start flow but don't end it when context exits
    with flow.start(
        name="async_data_processing",
        tenant=customer_id,
        end_on_exit=False  # Flow stays open
    ) as flow_id:
        with step.start("validate_request"):
            validate(data)

        with step.start("enqueue_task"):
            # Send task to worker
            process_data_task.apply_async(
                args=[customer_id, data]
            )

    # Flow is still "running" after returning response
    dashfrog.flush(10)
    return {"status": "processing", "flow_id": flow_id}
