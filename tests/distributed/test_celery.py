"""Flows through a real Celery worker process (Redis broker): the seed's "Async Task
Flows" sample as written, retries with attempt numbers, chains, groups and chords."""

from __future__ import annotations

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
        ("1", "failed", "worker"), ("2", "failed", "worker"), ("3", "success", "worker")
    ]
    # Attempts sit side by side under the step that enqueued the task, each with its own steps.
    assert {s.parent_step_id for s in attempts} == {enqueue_step}
    assert [[(c.name, c.status) for c in s.children] for s in attempts] == [
        [("try_charge", "failed")], [("try_charge", "failed")], [("try_charge", "success")]
    ]
    assert len({s.attributes["task_id"] for s in attempts}) == 1
    assert got.tenants == {"tenant-retry"}
    assert got.status == "success"  # what flow.end() said
    # Failed attempts that were retried leave the flow successful; their steps stay visible.
    detail = read_back(got)
    assert [s.attributes["attempt"] for s in detail.all_steps() if s.name == TASK + "flaky"] == ["1", "2", "3"]


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
