"""Flows through a real Celery worker process (Redis broker): the seed's "Async Task
Flows" sample as written, retries with attempt numbers, chains, groups and chords."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from celery import group

from dashfrog import flow, step
from tests.distributed._helpers import build_flow, read_back
from tests.distributed.apps import tasks
from tests.distributed.conftest import Cluster

pytestmark = pytest.mark.slow

TASK = "tests.distributed.apps.tasks."


def test_seed_async_task_flow(dist: Cluster) -> None:
    """Service B runs the seed's API sample; the worker runs the seed's task sample."""
    response = requests.post(f"{dist.service_b.url}/process-data/customer-42", json={"a": 1}, timeout=10)
    assert response.json()["status"] == "processing"
    flow_id = response.json()["flow_id"]

    got = build_flow(flow_id, dist.events.of_flow(flow_id, ["send_notification", TASK + "process_data_task"]))
    assert (got.status, got.ended_by, got.tenants) == ("success", "worker", {"customer-42"})
    assert [e["service"] for e in got.events if e["kind"] == "flow_started"] == ["service-b"]
    validate, enqueue = got.one("validate_request"), got.one("enqueue_task")
    task = got.one(TASK + "process_data_task")
    assert (validate.service, enqueue.service, task.service) == ("service-b", "service-b", "worker")
    assert task.parent_step_id == enqueue.step_id  # enqueued inside that step
    assert task.attributes["attempt"] == "1"
    assert [(c.name, c.service, c.status) for c in task.children] == [
        ("process_data", "worker", "success"),
        ("store_results", "worker", "success"),
        ("send_notification", "worker", "success"),
    ]
    assert all(s.status == "success" for s in got.steps.values())
    detail = read_back(got)
    assert (detail.status, sorted(detail.services)) == ("success", ["service-b", "worker"])


def test_retries_record_each_attempt(dist: Cluster) -> None:
    with flow.start(name="charge", tenant="tenant-retry", end_on_exit=False) as flow_id:
        with step.start("enqueue") as enqueue_step:
            result = tasks.flaky.apply_async(args=[2], queue=dist.worker.queue)
    assert result.get(timeout=30) == 3
    flow.end(flow_id=flow_id)

    # The task's result is stored before its last step ends: wait for the steps, not the result.
    got = build_flow(flow_id, dist.events.of_flow(flow_id, {"try_charge": 3, TASK + "flaky": 3}))
    attempts = sorted(got.named(TASK + "flaky"), key=lambda s: s.attributes["attempt"])
    assert [(s.attributes["attempt"], s.status, s.service) for s in attempts] == [
        ("1", "retried", "worker"), ("2", "retried", "worker"), ("3", "success", "worker")
    ]
    assert attempts[0].attributes["retry_reason"].startswith("celery.exceptions.Retry: ")
    # Attempts sit side by side under the step that enqueued the task, each with its own steps.
    assert {s.parent_step_id for s in attempts} == {enqueue_step}
    assert [[(c.name, c.status) for c in s.children] for s in attempts] == [
        [("try_charge", "retried")], [("try_charge", "retried")], [("try_charge", "success")]
    ]
    assert len({s.attributes["task_id"] for s in attempts}) == 1
    assert got.tenants == {"tenant-retry"}
    assert got.status == "success"  # what flow.end() said
    # Attempts that were retried leave the flow successful and error-free; their steps stay visible.
    detail = read_back(got)
    assert [s.attributes["attempt"] for s in detail.all_steps() if s.name == TASK + "flaky"] == ["1", "2", "3"]
    assert (detail.error, detail.errors, detail.steps_failed) == (None, [], 0)


def _one_retry_then_success(dist: Cluster, task: Any, inner: str, *args: Any) -> tuple[Any, Any, Any]:
    """Run ``task`` in a flow; it fails its first attempt with a retry, then succeeds.

    Returns the emitted flow, the projected detail (once it shows every step)
    and the flow as ``query.flows`` lists it.
    """
    from dashfrog import query

    with flow.start(name="order", tenant="tenant-retry-once", end_on_exit=False) as flow_id:
        with step.start("enqueue"):
            result = task.apply_async(args=list(args), queue=dist.worker.queue)
    result.get(timeout=30)  # the task ends the flow on its successful attempt
    got = build_flow(flow_id, dist.events.of_flow(flow_id, {inner: 2, task.name: 2}, timeout=30))
    detail = read_back(got)
    (listed,) = [f for f in query.flows(tenant="tenant-retry-once", limit=100) if f.flow_id == flow_id]
    return got, detail, listed


def test_retry_once_then_success_is_a_clean_success(dist: Cluster) -> None:
    """``self.retry()`` once, then success: flow success, one retried attempt, one
    successful attempt, no error anywhere, and one current step on every surface."""
    _, detail, listed = _one_retry_then_success(dist, tasks.retry_once, "reserve_stock")
    attempts = sorted(
        (s for s in detail.all_steps() if s.name == TASK + "retry_once"), key=lambda s: s.attributes["attempt"]
    )
    assert [(s.attributes["attempt"], s.status) for s in attempts] == [("1", "retried"), ("2", "success")]
    assert "warehouse busy" in attempts[0].attributes["retry_reason"]
    assert [[(c.name, c.status) for c in s.children] for s in attempts] == [
        [("reserve_stock", "retried")], [("reserve_stock", "success")]
    ]
    # The retried attempt says why it ran again; that is never the flow's error.
    reason = attempts[0].error
    assert reason is not None and attempts[0].ended_at is not None
    assert (reason.type, reason.step_name) == ("celery.exceptions.Retry", TASK + "retry_once")
    assert "warehouse busy" in reason.message and attempts[1].error is None
    assert (detail.status, detail.error, detail.errors) == ("success", None, [])
    assert (detail.steps_failed, listed.steps_failed, listed.error, listed.status) == (0, 0, None, "success")
    # The flow is over: its current step is the last step to end, the same in the list and the detail.
    last = max(detail.all_steps(), key=lambda s: (s.ended_at, s.step_id))
    assert (detail.current_step, detail.current_step_id) == (last.name, last.step_id)
    assert (listed.current_step, listed.current_step_id) == (detail.current_step, detail.current_step_id)
    assert last.status == "success"


def test_autoretry_for_attempt_is_retried(dist: Cluster) -> None:
    """``autoretry_for``: the task's own exception passes through its steps; those
    steps and the attempt are retried, not failed."""
    with flow.start(name="payout", tenant="tenant-autoretry", end_on_exit=False) as flow_id:
        result = tasks.autoretry_once.apply_async(args=[1], queue=dist.worker.queue)
    assert result.get(timeout=30) == 2
    flow.end(flow_id=flow_id)
    got = build_flow(flow_id, dist.events.of_flow(flow_id, {"call_bank": 2, TASK + "autoretry_once": 2}))
    attempts = sorted(got.named(TASK + "autoretry_once"), key=lambda s: s.attributes["attempt"])
    assert [(s.status, [(c.name, c.status) for c in s.children]) for s in attempts] == [
        ("retried", [("call_bank", "retried")]), ("success", [("call_bank", "success")])
    ]
    (retried,) = [s for s in got.named("call_bank") if s.status == "retried"]
    assert "bank unreachable on attempt 1" in retried.attributes["retry_reason"]
    detail = read_back(got)
    assert (detail.status, detail.error, detail.steps_failed) == ("success", None, 0)


def test_autoretry_exhausted_fails(dist: Cluster) -> None:
    """Once no retry is left, the same exception is a failure again."""
    with flow.start(name="payout", tenant="tenant-autoretry", end_on_exit=False) as flow_id:
        result = tasks.autoretry_once.apply_async(args=[5], queue=dist.worker.queue)
    with pytest.raises(ConnectionError):
        result.get(timeout=30)
    flow.end(flow_id=flow_id)
    got = build_flow(flow_id, dist.events.of_flow(flow_id, {"call_bank": 2, TASK + "autoretry_once": 2}))
    attempts = sorted(got.named(TASK + "autoretry_once"), key=lambda s: s.attributes["attempt"])
    assert [(s.status, [(c.name, c.status) for c in s.children]) for s in attempts] == [
        ("retried", [("call_bank", "retried")]), ("failed", [("call_bank", "failed")])
    ]
    read_back(got)


def test_chains_groups_and_chords_keep_the_flow(dist: Cluster) -> None:
    with flow.start(name="pipeline", tenant="tenant-canvas", end_on_exit=False) as flow_id:
        with step.start("fan_out"):
            # A group sent from here, and a task that sends a chain ending in a chord.
            group(tasks.add_one.s(i) for i in range(3)).apply_async(queue=dist.worker.queue).get(timeout=30)
            tasks.pipeline.apply_async(args=[10], queue=dist.worker.queue).get(timeout=30)

    # pipeline: add_one(10) → add_one(11) → group(add_one(12), add_one(12)) → finish_flow
    got = build_flow(flow_id, dist.events.of_flow(flow_id, {
        "fan_out": 1, "collect": 1, TASK + "finish_flow": 1, TASK + "add_one": 7, "add_one": 7}))
    values = sorted(int(s.attributes["value"]) for s in got.named("add_one"))
    assert values == [0, 1, 2, 10, 11, 12, 12]
    assert got.one("collect").service == "worker"
    assert (got.status, got.ended_by, got.tenants) == ("success", "worker", {"tenant-canvas"})
    assert {s.service for s in got.steps.values() if s.name != "fan_out"} == {"worker"}
    assert all(s.status == "success" for s in got.steps.values())
    read_back(got)
