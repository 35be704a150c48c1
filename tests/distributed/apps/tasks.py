"""Celery tasks the distributed tests run in a real worker process.

``process_data_task`` is the seed's "Async Task Flows" worker sample as written.
Broker, result backend and queue come from the environment the test sets.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, chain, group

import dashfrog
from dashfrog import flow, step, with_celery

app = Celery("tasks")
app.conf.update(
    broker_url=os.environ.get("DISTRIBUTED_CELERY_BROKER", "redis://127.0.0.1:6379/0"),
    result_backend=os.environ.get("DISTRIBUTED_CELERY_BACKEND", "redis://127.0.0.1:6379/0"),
    task_default_queue=os.environ.get("DISTRIBUTED_CELERY_QUEUE", "dashfrog-tests"),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
with_celery(app)


# What the seed's sample calls; what they do does not matter to DashFrog.
def process(data: dict[str, Any]) -> dict[str, Any]:
    return {"rows": len(data)}


def store(customer_id: str, result: dict[str, Any]) -> None: ...


def notify_customer(customer_id: str, message: str) -> None: ...


@app.task
def process_data_task(customer_id: str, data: dict):
    # These steps are added to the existing flow
    with step.start("process_data"):
        result = process(data)

    with step.start("store_results"):
        store(customer_id, result)

    with step.start("send_notification"):
        notify_customer(customer_id, "Processing complete")

    # Explicitly end the flow when done
    flow.end()

    return {"status": "success"}


@app.task(bind=True, max_retries=3)
def flaky(self: Any, fail_times: int) -> int:
    """Fails its first ``fail_times`` attempts, then succeeds; a step per attempt."""
    with step.start("try_charge"):
        if self.request.retries < fail_times:
            raise self.retry(exc=ValueError(f"attempt {self.request.retries + 1} failed"), countdown=0)
    return int(self.request.retries) + 1


@app.task
def add_one(value: int) -> int:
    with step.start("add_one", value=value):
        return value + 1


@app.task
def finish_flow(results: Any) -> Any:
    with step.start("collect"):
        pass
    flow.end()
    return results


@app.task
def pipeline(value: int) -> str:
    """Starts a chain and a chord from inside a task: both must keep the flow."""
    workflow = chain(add_one.s(value), add_one.s(), group(add_one.s(), add_one.s()) | finish_flow.s())
    return str(workflow.apply_async().id)


@app.task
def whoami() -> dict[str, Any]:
    """What the worker made of the message's flow context."""
    with step.start("whoami"):
        pass
    return {
        "flow_id": flow.current_id(),
        "tenant": flow.current_tenant(),
        "ignored": dashfrog.stats()["ignored_remote_contexts"],
    }


@app.task(bind=True, max_retries=3)
def retry_once(self: Any) -> str:
    """Raises ``Retry`` on its first attempt, succeeds on the second and ends the flow."""
    with step.start("reserve_stock"):
        if self.request.retries == 0:
            raise self.retry(exc=TimeoutError("warehouse busy"), countdown=0)
    flow.end()
    return "reserved"


@app.task(bind=True, autoretry_for=(ConnectionError,), retry_kwargs={"max_retries": 1, "countdown": 0})
def autoretry_once(self: Any, fail_times: int) -> int:
    """Raises ConnectionError for its first ``fail_times`` attempts; Celery's autoretry retries once."""
    with step.start("call_bank"):
        if self.request.retries < fail_times:
            raise ConnectionError(f"bank unreachable on attempt {self.request.retries + 1}")
    return int(self.request.retries) + 1
