"""Service A (FastAPI): takes orders, starts a flow per order, calls service B.

Run from this directory:  DASHFROG_SERVICE_NAME=orders uvicorn service_a:app --port 8001
"""

from __future__ import annotations

import os
import uuid

import httpx
from fastapi import FastAPI, HTTPException

from dashfrog import flow, step, with_fastapi, with_httpx

PAYMENTS_URL = os.environ.get("PAYMENTS_URL", "http://127.0.0.1:8002")

app = FastAPI(title="orders")
with_fastapi(app)
# Calls made with httpx inside a flow carry it to the next service.
with_httpx()


@app.post("/orders/{customer_id}")
async def place_order(customer_id: str, order: dict) -> dict:
    order = {"order_id": uuid.uuid4().hex[:8], "items": [], "amount": 0, **order}
    try:
        # The worker ends this flow (flow.end()) once the order has shipped.
        with flow.start(
            name="order_fulfilment", tenant=customer_id, end_on_exit=False, channel="web"
        ) as flow_id:
            with step.start("validate_order", items=len(order["items"])):
                if not order["items"]:
                    raise ValueError("an order needs items")

            with step.start("call_payments"):
                async with httpx.AsyncClient(base_url=PAYMENTS_URL, timeout=10) as client:
                    response = await client.post("/payments", json=order)
            if response.status_code != 200:
                flow.fail(f"payment refused: {response.json().get('detail')}")
                return {"status": "refused", "flow_id": flow_id}
    except ValueError as exc:
        # Leaving the flow with an exception has already ended it as failed.
        raise HTTPException(status_code=422, detail=str(exc)) from exc

    return {"status": "accepted", "flow_id": flow_id, "order_id": order["order_id"]}


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}
