"""The Celery worker: fulfils orders, then ends the flow service A started.

Run from this directory:  celery -A worker worker --pool=solo --loglevel=INFO
"""

from __future__ import annotations

import os
import random

from celery import Celery

from dashfrog import flow, step, with_celery

app = Celery(
    "fulfilment",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
app.conf.task_default_queue = os.environ.get("EXAMPLE_QUEUE", "dashfrog-example")
app.conf.broker_connection_retry_on_startup = True
# Tasks published from inside a flow carry it; here their steps join that flow.
with_celery(app)


@app.task(bind=True, max_retries=3)
def fulfil_order(self, order: dict) -> dict:
    with step.start("reserve_stock", items=len(order.get("items", []))):
        # The warehouse API is flaky: a retry is recorded as a second attempt of this task.
        if order.get("flaky_warehouse") and self.request.retries == 0:
            raise self.retry(exc=TimeoutError("warehouse did not answer"), countdown=0)

    with step.start("ship", carrier=random.choice(["ups", "dhl"])):
        pass

    # The flow was started in service A with end_on_exit=False: it ends here.
    flow.end()
    return {"status": "shipped", "order_id": order["order_id"]}
