"""SDK behaviour beyond the seed samples: concurrency, nesting, misuse, ending elsewhere."""

from __future__ import annotations

import asyncio
import contextvars
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

import dashfrog
from dashfrog import (
    InvalidArgumentError,
    LabelLimitError,
    NoActiveFlowError,
    flow,
    step,
)
from tests.client.test_seed_samples import by_flow
from tests.conftest import consume_events


def test_async_flows_each_see_their_own_context(sdk: dict) -> None:
    async def one(i: int) -> tuple[str, str | None]:
        async with flow.start(name="async_job", tenant=f"tenant-{i % 5}", n=i) as flow_id:
            for s in range(3):
                async with step.start(f"step-{s}"):
                    await asyncio.sleep(0)  # let the other tasks interleave
                    assert flow.current_id() == flow_id
            return flow_id, flow.current_tenant()

    async def main() -> list[tuple[str, str | None]]:
        return await asyncio.gather(*(one(i) for i in range(50)))

    results = asyncio.run(main())
    assert len({fid for fid, _ in results}) == 50
    assert dashfrog.flush(10)
    flows = by_flow(consume_events(sdk["bootstrap"], sdk["topic"], 50 * 8))
    assert len(flows) == 50
    for flow_id, tenant in results:
        events = flows[flow_id]
        assert [e["kind"] for e in events] == ["flow_started"] + ["step_started", "step_ended"] * 3 + [
            "flow_ended"
        ]
        assert {e["tenant"] for e in events} == {tenant}
        assert [e["step_name"] for e in events if e["kind"] == "step_ended"] == ["step-0", "step-1", "step-2"]


def test_threads_see_the_flow_when_the_context_is_copied(sdk: dict) -> None:
    def work(n: int) -> str | None:
        with step.start("chunk", n=n):
            return flow.current_id()

    with flow.start(name="fan_out", tenant="acme-corp") as flow_id, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(contextvars.copy_context().run, work, n) for n in range(8)]
        seen = [f.result() for f in futures]
        # Without copying, a pool thread has no flow.
        assert pool.submit(flow.current_id).result() is None
    assert seen == [flow_id] * 8
    assert dashfrog.flush(10)
    events = consume_events(sdk["bootstrap"], sdk["topic"], 18)
    chunks = [e for e in events if e["kind"] == "step_started"]
    assert sorted(e["attributes"]["n"] for e in chunks) == sorted(str(n) for n in range(8))
    assert {e["flow_id"] for e in events} == {flow_id}


def test_nested_steps_record_their_parent(sdk: dict) -> None:
    with flow.start(name="nested", tenant="acme-corp"), step.start("outer") as outer:
        with step.start("inner") as inner:
            flow.event("checkpoint", rows=10)
    assert dashfrog.flush(10)
    events = consume_events(sdk["bootstrap"], sdk["topic"], 7)
    inner_started = next(e for e in events if e["kind"] == "step_started" and e["step_name"] == "inner")
    assert inner_started["step_id"] == inner and inner_started["parent_step_id"] == outer
    custom = next(e for e in events if e["kind"] == "flow_event")
    # Its own name field; step_id says which step it was raised in.
    assert custom["event_name"] == "checkpoint" and custom["step_name"] is None and custom["step_id"] == inner
    assert custom["attributes"] == {"rows": "10"}


def test_decorator_use_starts_a_flow_per_call(sdk: dict) -> None:
    @flow.start(name="decorated", tenant="acme-corp")
    def handle(x: int) -> str | None:
        with step.start("work"):
            return flow.current_id()

    @step.start("async_step")
    async def async_step() -> str | None:
        return flow.current_id()

    first, second = handle(1), handle(2)
    assert first and second and first != second
    with flow.start(name="outer", tenant="acme-corp") as outer_id:
        assert asyncio.run(async_step()) == outer_id


def test_flow_left_open_is_ended_explicitly(sdk: dict) -> None:
    with flow.start(name="async_data_processing", tenant="c1", end_on_exit=False) as flow_id:
        with step.start("enqueue_task"):
            pass
    assert flow.current_id() is None
    flow.end(flow_id=flow_id)
    with flow.start(name="explicit_failure", tenant="c1", end_on_exit=False):
        flow.fail("upstream said no")
    assert dashfrog.flush(10)
    flows = by_flow(consume_events(sdk["bootstrap"], sdk["topic"], 6))
    # Flows may sit on different partitions: tell them apart by name, not arrival order.
    named = {events[0]["flow_name"]: events for events in flows.values()}
    first, second = named["async_data_processing"], named["explicit_failure"]
    assert [e["kind"] for e in first] == ["flow_started", "step_started", "step_ended", "flow_ended"]
    assert first[-1]["status"] == "success"
    assert [(e["kind"], e["status"]) for e in second][-1] == ("flow_ended", "failed")
    assert second[-1]["error"]["message"] == "upstream said no"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "tenant": "acme"}, "flow name must be a non-empty string"),
        ({"name": "x", "tenant": ""}, "tenant must be a non-empty string"),
        ({"name": "x", "tenant": None}, "tenant must be a non-empty string"),
        ({"name": "x", "tenant": "acme", "order": object()}, "label 'order' has a object value"),
    ],
)
def test_misuse_raises_precise_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        flow.start(**kwargs)


def test_label_limits_are_enforced() -> None:
    dashfrog.setup(max_labels=2, max_label_key_length=5, max_label_value_length=4, disabled=True)
    try:
        with pytest.raises(LabelLimitError, match="3 labels given, the limit is 2"):
            flow.start(name="x", tenant="t", a="1", b="2", c="3")
        with pytest.raises(LabelLimitError, match="the limit is 5"):
            flow.start(name="x", tenant="t", longkey="1")
        with pytest.raises(LabelLimitError, match="'a' is 5 characters long"):
            flow.start(name="x", tenant="t", a="12345")
        # Numbers and booleans are converted, not refused.
        with flow.start(name="x", tenant="t", a=12, b=True) as flow_id:
            assert flow_id
    finally:
        dashfrog.setup()


def test_step_without_a_flow_warns_or_raises() -> None:
    dashfrog.setup(disabled=True)
    try:
        with pytest.warns(RuntimeWarning, match=r"step.start\('orphan'\) called with no current flow"):
            with step.start("orphan") as step_id:
                assert step_id is None
        dashfrog.setup(disabled=True, on_missing_flow="raise")
        with pytest.raises(NoActiveFlowError, match="no current flow"), step.start("orphan"):
            pass
        with pytest.raises(NoActiveFlowError):
            flow.end()
        dashfrog.setup(disabled=True, on_missing_flow="ignore")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with step.start("orphan"):
                pass
    finally:
        dashfrog.setup()


def test_disabled_sdk_starts_no_sender() -> None:
    from dashfrog._producer import current_sender

    dashfrog.setup(disabled=True)
    try:
        with flow.start(name="x", tenant="t") as flow_id, step.start("s"):
            assert flow.current_id() == flow_id
        assert current_sender() is None
        assert dashfrog.stats()["disabled"] is True
    finally:
        dashfrog.setup()


def test_public_api_is_sorted_and_complete() -> None:
    for module in (dashfrog, dashfrog.flow, dashfrog.step, dashfrog.schemas):
        assert module.__all__ == sorted(module.__all__), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
