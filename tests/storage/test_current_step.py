"""The one definition of a flow's current step (list and detail agree), and retried steps."""

from __future__ import annotations

from typing import Any

from dashfrog._models import FlowFilter, StatsFilter
from tests.storage.test_store_contract import Flow


def _listed(store: Any, flow: Flow) -> Any:
    (row,) = [f for f in store.find_flows(FlowFilter.parse(tenant=flow.tenant, limit=100)).flows
              if f.flow_id == flow.flow_id]
    return row


def _current(store: Any, flow: Flow) -> tuple[str | None, str | None]:
    detail = store.flow(flow.flow_id)
    listed = _listed(store, flow)
    assert (listed.current_step, listed.current_step_id) == (detail.current_step, detail.current_step_id)
    return detail.current_step, detail.current_step_id


def test_running_flow_current_step_is_latest_started_still_running(chdb_store: Any) -> None:
    f = Flow(tenant="cur-1").start()
    outer = f.step("import")
    inner = f.step("download", parent=outer)
    f.run_step("log_progress", parent=outer)  # started later than both, but already over
    chdb_store.insert_events(f.events, "a")
    assert _current(chdb_store, f) == ("download", inner)
    f.step_end(inner, "download")
    chdb_store.insert_events(f.events[-1:], "b")
    assert _current(chdb_store, f) == ("import", outer)
    f.step_end(outer, "import")
    chdb_store.insert_events(f.events[-1:], "c")
    # Nothing runs any more: the last step to end.
    assert _current(chdb_store, f) == ("import", outer)


def test_ended_flow_current_step_is_last_to_end_even_if_one_never_ended(chdb_store: Any) -> None:
    f = Flow(tenant="cur-2").start()
    f.step("lost_worker")  # its end never arrives
    done = f.run_step("finish")
    f.end()
    chdb_store.insert_events(f.events, "a")
    assert _current(chdb_store, f) == ("finish", done)


def test_retried_attempt_is_no_error_and_no_failure(chdb_store: Any) -> None:
    f = Flow(tenant="cur-3").start()
    first = f.step("charge", attributes={"attempt": "1"})
    f._event("step_ended", step_id=first, step_name="charge", status="retried",
             attributes={"retry_reason": "celery.exceptions.Retry: Retry in 0s"})
    second = f.run_step("charge", attributes={"attempt": "2"})
    f.end()
    chdb_store.insert_events(f.events, "a")
    detail = chdb_store.flow(f.flow_id)
    assert [(s.step_id, s.status) for s in detail.steps] == [(first, "retried"), (second, "success")]
    assert detail.steps[0].attributes["retry_reason"].startswith("celery.exceptions.Retry")
    reason = detail.steps[0].error  # why it ran again, on the step only
    assert reason is not None and (reason.type, reason.message) == ("celery.exceptions.Retry", "Retry in 0s")
    assert detail.steps[1].error is None
    assert (detail.status, detail.error, detail.errors, detail.steps_failed) == ("success", None, [], 0)
    assert _current(chdb_store, f) == ("charge", second)
    stats = chdb_store.find_stats(StatsFilter.parse(tenant="cur-3"))
    assert (stats.succeeded, stats.failed, stats.failures_by_step) == (1, 0, [])
