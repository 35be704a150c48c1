"""Service B (FastAPI): charges the payment and hands fulfilment to the Celery worker.

Run from this directory:  DASHFROG_SERVICE_NAME=payments uvicorn service_b:app --port 8002
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from worker import fulfil_order

from dashfrog import flow, step, with_fastapi

app = FastAPI(title="payments")
# Requests from service A arrive with the flow in their W3C baggage.
with_fastapi(app)


@app.post("/payments")
async def pay(order: dict) -> dict:
    with step.start("charge_payment", amount=order["amount"]):
        if order["amount"] > 1000:
            # The step and the flow show as failed, with this error.
            raise HTTPException(status_code=402, detail="card declined")

    with step.start("enqueue_fulfilment"):
        task = fulfil_order.apply_async(args=[order])

    return {"status": "paid", "flow_id": flow.current_id(), "task_id": task.id}


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}
