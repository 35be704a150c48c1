"""The store contract, run against every adapter: real chDB always, a ClickHouse
server when one is reachable."""

from __future__ import annotations

import os
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashfrog._exceptions import QueryError, StorageError
from dashfrog._models import FlowFilter, StatsFilter
from dashfrog.schemas import Event, Kind, make_event
from dashfrog.storage._schema import MIGRATIONS

NOW_US = int(time.time() * 1_000_000)
HOUR_US = 3_600_000_000


def _id() -> str:
    return uuid.uuid4().hex


class Flow:
    """Builds the events one flow's SDK calls would emit, with explicit times."""

    def __init__(
        self,
        tenant: str = "acme-corp",
        name: str = "data_import",
        start_us: int | None = None,
        labels: dict[str, str] | None = None,
        service: str = "svc-a",
        flow_id: str | None = None,
    ) -> None:
        self.tenant, self.name, self.service = tenant, name, service
        self.t = NOW_US - HOUR_US if start_us is None else start_us
        self.flow_id = flow_id or f"{self.t // 1000:012x}{os.urandom(10).hex()}"
        self.labels = labels or {}
        self.events: list[Event] = []
        self.step_error: str | None = None  # first failed step, as the SDK remembers it

    def _event(self, kind: Kind, **fields: Any) -> Event:
        self.t += 1000
        fields = {"service": self.service, "host": "host-1", "trace_id": "ab" * 16, "span_id": "cd" * 8,
                  "sdk_version": "test", **fields}
        event = make_event(kind, flow_id=self.flow_id, tenant=self.tenant, flow_name=self.name,
                           timestamp=self.t, **fields)
        self.events.append(event)
        return event

    def start(self) -> Flow:
        self._event("flow_started", labels=dict(self.labels))
        return self

    def step(
        self,
        name: str,
        parent: str | None = None,
        service: str | None = None,
        attributes: dict[str, str] | None = None,
    ) -> str:
        step_id = os.urandom(8).hex()
        self._event(
            "step_started",
            step_id=step_id,
            step_name=name,
            parent_step_id=parent,
            service=service or self.service,
            attributes=attributes or {},
        )
        return step_id

    def step_end(
        self, step_id: str, name: str, error: str | None = None, service: str | None = None
    ) -> None:
        if error and self.step_error is None:
            self.step_error = error
        self._event(
            "step_ended",
            step_id=step_id,
            step_name=name,
            status="failed" if error else "success",
            error={"type": "builtins.ValueError", "message": error, "stack": "Traceback..."}
            if error
            else None,
            service=service or self.service,
        )

    def run_step(self, name: str, error: str | None = None, **kw: Any) -> str:
        step_id = self.step(name, **kw)
        self.step_end(step_id, name, error, service=kw.get("service"))
        return step_id

    def event(self, name: str, step_id: str | None = None, **attributes: str) -> None:
        self._event("flow_event", event_name=name, step_id=step_id, attributes=attributes)

    def end(
        self, error: str | None = None, service: str | None = None, status: str | None = None
    ) -> Flow:
        # Like the SDK: a flow whose step failed ends failed unless told otherwise.
        error = error or (self.step_error if status is None else None)
        self._event(
            "flow_ended",
            status=status or ("failed" if error else "success"),
            error={"type": "builtins.RuntimeError", "message": error, "stack": "tb"}
            if error
            else None,
            service=service or self.service,
        )
        return self


def simple(
    tenant: str = "acme-corp",
    name: str = "data_import",
    fail: str | None = None,
    end: bool = True,
    **kw: Any,
) -> Flow:
    f = Flow(tenant, name, **kw).start()
    for step in ("read", "validate", "process"):
        f.run_step(step, error="Invalid data format" if step == fail else None)
    return f.end() if end else f


def ids(flows: Any) -> set[str]:
    return {f.flow_id for f in flows}


def snapshot(store: Any, tenant: str) -> list[dict[str, Any]]:
    """Everything the read side says about a tenant, comparable across stores."""
    out = []
    for summary in store.find_flows(FlowFilter.parse(tenant=tenant, limit=10_000)):
        detail = store.flow(summary.flow_id, tenant=tenant)
        out.append(detail.model_dump(exclude={"tenant"}))
    return out


# The properties are inherited by one test class per adapter, which Hypothesis
# sees as one test run by differing executors; each class gets its own store
# from a function-scoped fixture, reused across examples on purpose (every
# example writes under fresh tenant ids).
_SHARED_BY_ADAPTERS = [
    HealthCheck.function_scoped_fixture,
    HealthCheck.too_slow,
    HealthCheck.differing_executors,
]


class StoreContract:
    """Behaviour every store adapter must have. Subclasses provide ``store``."""

    @pytest.fixture
    def store(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- migrations ---------------------------------------------------------------

    def test_migrations_run_twice_safely(self, store: Any) -> None:
        f = simple()
        store.insert_events(f.events, "t1")
        store.migrate()
        store.migrate()
        assert store.schema_version() == max(m.version for m in MIGRATIONS)
        assert store.select("SELECT count() AS n FROM schema_migrations FINAL")[0]["n"] == len(MIGRATIONS)
        assert ids(store.find_flows(FlowFilter.parse())) == {f.flow_id}
        assert store.find_stats(StatsFilter.parse()).runs == 1

    def test_upgrade_projects_existing_events_for_stats(self, store: Any) -> None:
        # A store at version 3: events, flows and steps exist, flow_runs not yet.
        store._execute("DROP TABLE flow_runs_mv")
        store._execute("DROP TABLE flow_runs")
        store._execute("TRUNCATE TABLE schema_migrations")
        store._execute(
            "INSERT INTO schema_migrations (version, name) "
            "VALUES (1, 'events'), (2, 'flows'), (3, 'steps')"
        )
        old = simple(fail="validate")
        store.insert_events(old.events, "before-upgrade")
        store.migrate()
        assert store.schema_version() == max(m.version for m in MIGRATIONS)
        new = simple(fail="process")
        store.insert_events(new.events, "after-upgrade")
        s = store.find_stats(StatsFilter.parse())
        assert (s.runs, s.failed) == (2, 2)
        assert [(x.step_name, x.failures) for x in s.failures_by_step] == [
            ("process", 1),
            ("validate", 1),
        ]

    def test_upgrade_adds_event_name_and_old_rows_keep_their_names(self, store: Any) -> None:
        # A store from before migration 8 holding a custom event as SDKs before
        # event_name wrote it: the name in step_name.
        store._execute("ALTER TABLE events DROP COLUMN event_name")
        kept = store.select("SELECT version, name FROM schema_migrations FINAL WHERE version != 8")
        store._execute("TRUNCATE TABLE schema_migrations")
        for row in kept:
            store._execute(
                "INSERT INTO schema_migrations (version, name) VALUES ({v:UInt32}, {n:String})",
                {"v": row["version"], "n": row["name"]},
            )
        old = Flow().start()
        store._execute(
            "INSERT INTO events (event_id, kind, flow_id, tenant, flow_name, step_name, timestamp)"
            " VALUES ({id:String}, 'flow_event', {f:String}, {t:String}, {n:String}, 'legacy', now64(6))",
            {"id": _id(), "f": old.flow_id, "t": old.tenant, "n": old.name},
        )
        store.migrate()
        assert store.schema_version() == max(m.version for m in MIGRATIONS)
        old.event("current")
        old.end()
        store.insert_events(old.events, "after-upgrade")
        d = store.flow(old.flow_id)
        assert sorted(e.name for e in d.events) == ["current", "legacy"]

    def test_custom_event_name_is_its_own_column(self, store: Any) -> None:
        f = Flow().start()
        sid = f.step("process")
        f.event("rows_skipped", step_id=sid)
        f.end()
        store.insert_events(f.events, "t1")
        (row,) = store.select(
            "SELECT event_name, step_name, step_id FROM events WHERE kind = 'flow_event' AND flow_id = {f:String}",
            {"f": f.flow_id},
        )
        assert row == {"event_name": "rows_skipped", "step_name": "", "step_id": sid}

    def test_retention_change_updates_ttl(self, store: Any) -> None:
        store.retention_days = 7
        store.migrate()
        for table in ("events", "flows", "steps", "flow_runs"):
            (row,) = store.select(
                "SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
                "AND name = {t:String}",
                {"t": table},
            )
            assert "toIntervalDay(7)" in row["engine_full"], table

    # -- projection of lifecycles --------------------------------------------------

    def test_successful_flow(self, store: Any) -> None:
        f = simple(labels={"env": "prod", "webhook_type": "stripe.payment.success"})
        store.insert_events(f.events, "t1")
        (s,) = store.find_flows(FlowFilter.parse())
        assert (s.status, s.stalled, s.name, s.tenant) == (
            "success",
            False,
            "data_import",
            "acme-corp",
        )
        assert (s.steps_started, s.steps_ended, s.steps_failed) == (3, 3, 0)
        assert s.current_step == "process"
        assert s.error is None
        assert s.labels == {"env": "prod", "webhook_type": "stripe.payment.success"}
        assert s.started_at == datetime.fromtimestamp(0, UTC) + timedelta(
            microseconds=f.events[0]["timestamp"]
        )
        assert s.duration_ms == pytest.approx(
            (f.events[-1]["timestamp"] - f.events[0]["timestamp"]) / 1000
        )
        assert s.trace_id == "ab" * 16
        d = store.flow(f.flow_id)
        assert [st.name for st in d.steps] == ["read", "validate", "process"]
        assert all(st.status == "success" and st.duration_ms == 1.0 for st in d.steps)
        assert d.errors == [] and d.events == []

    def test_caught_step_failure_marks_flow_failed(self, store: Any) -> None:
        # flows-seed "Error Handling": the flow catches the step's exception
        # and exits normally, yet shows as failed with the error details.
        f = Flow().start()
        f.run_step("validate", error="Invalid data format")
        f.end()  # the SDK ends such a flow failed, carrying the step's error
        store.insert_events(f.events, "t1")
        (s,) = store.find_flows(FlowFilter.parse(status="failed"))
        assert s.flow_id == f.flow_id and s.ended_at is not None
        assert s.error is not None
        assert (s.error.step_name, s.error.type, s.error.message) == (
            "validate",
            "builtins.ValueError",
            "Invalid data format",
        )
        d = store.flow(f.flow_id)
        assert d.steps[0].status == "failed" and d.steps[0].error.message == "Invalid data format"
        # The step's error, then the flow's end repeating it.
        assert [(e.step_name, e.message) for e in d.errors] == [
            ("validate", "Invalid data format"),
            (None, "Invalid data format"),
        ]
        assert store.find_flows(FlowFilter.parse(status="success")).flows == []

    def test_retried_step_that_finally_succeeds_leaves_flow_successful(self, store: Any) -> None:
        f = Flow().start()
        f.run_step("charge", error="card network timeout")
        f.run_step("charge")
        f.end(status="success")  # e.g. a Celery task's flow.end() after its retry succeeded
        store.insert_events(f.events, "t1")
        (s,) = store.find_flows(FlowFilter.parse())
        assert s.status == "success" and s.steps_failed == 1
        assert s.error is not None and s.error.message == "card network timeout"

    def test_flow_failing_itself(self, store: Any) -> None:
        f = Flow().start()
        f.run_step("read")
        f.end(error="boom")
        store.insert_events(f.events, "t1")
        (s,) = store.find_flows(FlowFilter.parse())
        assert s.status == "failed" and s.steps_failed == 0
        assert s.error.step_name is None and s.error.message == "boom"

    def test_never_ending_flow_stays_running_then_stalls(self, store: Any) -> None:
        now = datetime.now(UTC)
        # Relative to this test's clock: the suite may run long after import.
        now_us = int(now.timestamp() * 1_000_000)
        old = simple(end=False, start_us=now_us - 10 * 60 * 1_000_000)
        fresh = Flow(start_us=now_us - 5_000_000).start()
        fresh.step("read")
        store.insert_events(old.events + fresh.events, "t1")
        by_id = {s.flow_id: s for s in store.find_flows(FlowFilter.parse(now=now), now=now)}
        assert by_id[old.flow_id].status == "running" and by_id[old.flow_id].stalled
        assert by_id[fresh.flow_id].status == "running" and not by_id[fresh.flow_id].stalled
        assert by_id[fresh.flow_id].current_step == "read" and by_id[fresh.flow_id].ended_at is None
        assert ids(store.find_flows(FlowFilter.parse(status="stalled", now=now), now=now)) == {old.flow_id}
        assert ids(store.find_flows(FlowFilter.parse(status="running", now=now), now=now)) == {old.flow_id, fresh.flow_id}
        # Stalled is derived when asked: later activity clears it.
        old.t = int(time.time() * 1_000_000)
        old.run_step("late")
        store.insert_events(old.events[-2:], "t2")
        assert store.find_flows(FlowFilter.parse(status="stalled")).flows == []

    def test_nested_steps(self, store: Any) -> None:
        f = Flow().start()
        outer = f.step("process")
        inner = f.step("batch", parent=outer, attributes={"rows": "10"})
        leaf = f.run_step("row", parent=inner)
        f.step_end(inner, "batch")
        f.step_end(outer, "process")
        f.end()
        store.insert_events(f.events, "t1")
        d = store.flow(f.flow_id)
        (root,) = d.steps
        assert root.name == "process" and root.parent_step_id is None
        (batch,) = root.children
        assert batch.name == "batch" and batch.parent_step_id == outer
        assert batch.attributes == {"rows": "10"}
        assert [c.step_id for c in batch.children] == [leaf]
        assert [s.name for s in d.all_steps()] == ["process", "batch", "row"]
        assert d.steps_started == 3

    def test_flow_across_services(self, store: Any) -> None:
        # Started in the API (service A), finished by a Celery worker (B),
        # the worker's events written in an earlier batch than the API's.
        f = Flow(service="api").start()
        f.run_step("validate_request")
        f.run_step("enqueue_task")
        api_events = list(f.events)
        f.run_step("process_data", service="worker")
        f.run_step("store_results", service="worker")
        f.end(service="worker")
        store.insert_events(f.events[len(api_events) :], "worker-1")
        store.insert_events(api_events, "api-1")
        (s,) = store.find_flows(FlowFilter.parse())
        assert s.status == "success" and s.services == ["api", "worker"]
        assert (s.steps_started, s.steps_ended) == (4, 4)
        d = store.flow(f.flow_id)
        assert {st.name: st.services for st in d.steps}["process_data"] == ["worker"]

    def test_custom_events_in_detail(self, store: Any) -> None:
        f = Flow().start()
        sid = f.step("process")
        f.event("rows_skipped", step_id=sid, count="3")
        f.step_end(sid, "process")
        f.event("done")
        f.end()
        store.insert_events(f.events, "t1")
        d = store.flow(f.flow_id)
        assert [(e.name, e.step_id, e.attributes) for e in d.events] == [
            ("rows_skipped", sid, {"count": "3"}),
            ("done", None, {}),
        ]
        # A custom event raised in a step is not a step of its own.
        assert d.steps_started == 1 and len(d.all_steps()) == 1

    def test_unknown_flow(self, store: Any) -> None:
        assert store.flow("nope") is None

    # -- duplicates, order, tokens -------------------------------------------------

    def test_same_token_reinsert_changes_nothing(self, store: Any) -> None:
        f = simple(fail="validate")
        store.insert_events(f.events, "events/0/100-107")
        before = snapshot(store, "acme-corp")
        raw = store.select("SELECT count() AS n FROM events")[0]["n"]
        store.insert_events(f.events, "events/0/100-107")
        assert store.select("SELECT count() AS n FROM events")[0]["n"] == raw == len(f.events)
        assert snapshot(store, "acme-corp") == before

    def test_retry_repairs_projection_lost_in_a_crash(self, store: Any) -> None:
        # The crash window: events committed, the views' writes lost. The
        # processor retries the batch with the same token.
        f = simple(fail="validate")
        store.insert_events(f.events, "events/0/0-7")
        before = snapshot(store, "acme-corp")
        stats = store.find_stats(StatsFilter.parse())
        for table in ("flows", "steps", "flow_runs"):
            store._execute(f"TRUNCATE TABLE {table}")
        store.insert_events(f.events, "events/0/0-7")
        assert store.select("SELECT count() AS n FROM events")[0]["n"] == len(f.events)
        assert snapshot(store, "acme-corp") == before
        assert store.find_stats(StatsFilter.parse()) == stats

    def test_duplicates_under_other_tokens_change_nothing(self, store: Any) -> None:
        f = simple(fail="process")
        store.insert_events(f.events, "a")
        before = snapshot(store, "acme-corp")
        store.insert_events(f.events[2:5], "b")
        store.insert_events(f.events, "c")
        assert snapshot(store, "acme-corp") == before
        assert store.find_stats(StatsFilter.parse(tenant="acme-corp")).runs == 1

    def test_failed_step_split_over_insert_blocks_counts_once(self, store: Any) -> None:
        # Each insert block projects its own partial rows: a failed step whose
        # start, end and redelivered end arrive apart has several of them.
        a = Flow().start()
        a_step = a.step("validate")
        a.step_end(a_step, "validate", error="bad row")
        a.run_step("process", error="timeout")
        a.end()
        b = Flow(tenant="globex").start()
        b_step = b.step("validate")
        b.step_end(b_step, "validate", error="bad row")
        b.end()
        a_end = a.events[2]
        assert (a_end["kind"], a_end["step_id"]) == ("step_ended", a_step)
        store.insert_events(a.events[:2], "a-start")
        store.insert_events([a_end], "a-end")
        store.insert_events(a.events[3:] + b.events, "rest")
        store.insert_events([a_end, b.events[2]], "redelivered")
        store.insert_events(list(reversed(a.events)), "replayed")
        # The unmerged rows themselves: user SQL (select) reads FINAL, so ask the engine directly.
        assert store._query(
            "SELECT count() AS n FROM flow_runs WHERE notEmpty(steps_failed)"
        )[0]["n"] > 2
        hour_ago = datetime.fromtimestamp((NOW_US - 2 * HOUR_US) / 1e6, UTC)
        for filters in ({}, {"name": "data_import"}, {"since": hour_ago}):
            s = store.find_stats(StatsFilter.parse(**filters))
            assert (s.runs, s.failed) == (2, 2), filters
            assert [(x.step_name, x.failures) for x in s.failures_by_step] == [
                ("validate", 2),
                ("process", 1),
            ], filters
        acme = store.find_stats(StatsFilter.parse(tenant="acme-corp", until=datetime.now(UTC)))
        assert [(x.step_name, x.failures) for x in acme.failures_by_step] == [
            ("process", 1),
            ("validate", 1),
        ]

    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=_SHARED_BY_ADAPTERS,
    )
    @given(data=st.data())
    def test_order_and_duplicates_do_not_matter(self, store: Any, data: st.DataObject) -> None:
        run = _id()
        flows = [
            data.draw(_flow_strategy(f"ref-{run}")) for _ in range(data.draw(st.integers(1, 3)))
        ]
        events = [e for f in flows for e in f.events]
        store.insert_events(events, f"ref-{run}")
        # The same flows under a second tenant: shuffled, some events
        # repeated, cut into batches at random points.
        copies = [dict(e, tenant=f"perm-{run}") for e in events]
        extra = data.draw(st.lists(st.sampled_from(copies), max_size=len(copies)))
        stream = data.draw(st.permutations(copies + extra))
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
        for i, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, len(stream)], strict=True)):
            store.insert_events(stream[lo:hi], f"perm-{run}-{i}")
        assert snapshot(store, f"perm-{run}") == snapshot(store, f"ref-{run}")
        assert store.find_stats(StatsFilter.parse(tenant=f"perm-{run}")).model_dump(exclude={"tenant"}) == store.find_stats(StatsFilter.parse(
            tenant=f"ref-{run}"
        )).model_dump(exclude={"tenant"})

    # -- filters --------------------------------------------------------------------

    @pytest.fixture
    def population(self, store: Any) -> dict[str, Flow]:
        base = NOW_US - 3 * HOUR_US
        flows = {
            "acme_ok": simple("acme-corp", "data_import", start_us=base, labels={"env": "prod"}),
            "acme_fail": simple(
                "acme-corp",
                "data_import",
                fail="validate",
                start_us=base + HOUR_US,
                labels={"env": "staging", "region": "eu"},
            ),
            "acme_run": simple(
                "acme-corp",
                "payment",
                end=False,
                start_us=base + 2 * HOUR_US,
                labels={"env": "prod", "region": "eu"},
            ),
            "globex_ok": simple(
                "globex", "data_import", start_us=base + HOUR_US, labels={"env": "prod"}
            ),
            "globex_fail": simple("globex", "payment", fail="read", start_us=base + 2 * HOUR_US),
        }
        events = [e for f in flows.values() for e in f.events]
        random.Random(7).shuffle(events)
        store.insert_events(events[:20], "p1")
        store.insert_events(events[20:], "p2")
        return flows

    def _expect(self, population: dict[str, Flow], *names: str) -> set[str]:
        return {population[n].flow_id for n in names}

    def test_filters_return_exactly_matching_flows(
        self, store: Any, population: dict[str, Flow]
    ) -> None:
        p, at = (
            population,
            lambda hours: datetime.fromtimestamp((NOW_US - hours * HOUR_US) / 1e6, UTC),
        )
        cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
            ({}, tuple(p)),
            ({"tenant": "acme-corp"}, ("acme_ok", "acme_fail", "acme_run")),
            ({"tenant": "globex"}, ("globex_ok", "globex_fail")),
            ({"status": "failed"}, ("acme_fail", "globex_fail")),
            ({"status": "success", "tenant": "globex"}, ("globex_ok",)),
            ({"status": "running"}, ("acme_run",)),
            ({"name": "payment"}, ("acme_run", "globex_fail")),
            ({"labels": {"env": "prod"}}, ("acme_ok", "acme_run", "globex_ok")),
            ({"labels": {"env": "prod", "region": "eu"}}, ("acme_run",)),
            ({"labels": {"region": "eu"}, "tenant": "globex"}, ()),
            ({"labels": {"env": ""}}, ()),
            ({"since": at(2.5)}, ("acme_fail", "acme_run", "globex_ok", "globex_fail")),
            ({"until": at(2.5)}, ("acme_ok",)),
            ({"since": at(2.5), "until": at(1.5), "tenant": "acme-corp"}, ("acme_fail",)),
            ({"since": timedelta(hours=1.5)}, ("acme_run", "globex_fail")),
            ({"tenant": "nobody"}, ()),
        ]
        for filters, expected in cases:
            assert ids(store.find_flows(FlowFilter.parse(**filters))) == self._expect(p, *expected), filters

    def test_newest_first_and_cursor_pages(self, store: Any, population: dict[str, Flow]) -> None:
        everything = [f.flow_id for f in store.find_flows(FlowFilter.parse())]
        assert everything == sorted(everything, reverse=True)
        seen: list[str] = []
        cursor = None
        while True:
            page = store.find_flows(FlowFilter.parse(limit=2, cursor=cursor))
            seen += [f.flow_id for f in page]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == everything

    def test_tenant_isolation(self, store: Any, population: dict[str, Flow]) -> None:
        acme = population["acme_ok"].flow_id
        assert store.flow(acme, tenant="globex") is None
        assert store.flow(acme, tenant="acme-corp").tenant == "acme-corp"
        assert all(f.tenant == "globex" for f in store.find_flows(FlowFilter.parse(tenant="globex")))
        assert store.find_stats(StatsFilter.parse(tenant="globex")).runs == 2

    def test_stats(self, store: Any, population: dict[str, Flow]) -> None:
        s = store.find_stats(StatsFilter.parse(tenant="acme-corp", name="data_import"))
        assert (s.runs, s.succeeded, s.failed, s.running) == (2, 1, 1, 0)
        assert s.success_rate == 0.5
        assert s.duration_p50_ms == pytest.approx(7.0) and s.duration_p99_ms == pytest.approx(7.0)
        assert [(x.step_name, x.failures) for x in s.failures_by_step] == [("validate", 1)]
        everyone = store.find_stats(StatsFilter.parse())
        assert everyone.runs == 5 and everyone.running == 1
        assert {x.step_name: x.failures for x in everyone.failures_by_step} == {
            "validate": 1,
            "read": 1,
        }
        # A time range finds the flows first: globex's read failure started 2 h after base.
        recent = store.find_stats(StatsFilter.parse(since=datetime.fromtimestamp((NOW_US - 90 * 60 * 1_000_000) / 1e6, UTC)))
        assert recent.runs == 2
        assert [(x.step_name, x.failures) for x in recent.failures_by_step] == [("read", 1)]
        by_name = store.find_stats(StatsFilter.parse(name="data_import"))
        assert [(x.step_name, x.failures) for x in by_name.failures_by_step] == [("validate", 1)]
        empty = store.find_stats(StatsFilter.parse(tenant="nobody"))
        assert empty.runs == 0 and empty.success_rate is None and empty.duration_p95_ms is None

    @pytest.mark.parametrize(
        "filters",
        [
            {"status": "bogus"},
            {"limit": 0},
            {"limit": 10**6},
            {"labels": {"k": 1}},
            {"labels": {"": "v"}},
            {"labels": ["env"]},
            {"tenant": ""},
            {"since": "yesterday-ish"},
            {"since": datetime(2026, 2, 1, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)},
        ],
    )
    def test_invalid_filters_raise_query_error(self, store: Any, filters: dict[str, Any]) -> None:
        with pytest.raises(QueryError):
            store.find_flows(FlowFilter.parse(**filters))

    # -- injection ----------------------------------------------------------------------

    NASTY = [
        "env' OR 1=1 --",
        "x'); DROP TABLE flows; --",
        "a\\",
        "back\\'slash",
        "tab\there",
        "new\nline",
        "{p0:String}",
        "\\N",
        "é🐸",
        "]['x",
        "`tick`",
        '"quoted"',
        "\x00nul",
    ]

    def test_injection_in_label_keys_and_values_is_harmless(self, store: Any) -> None:
        flows = [simple(labels={text: text}) for text in self.NASTY]
        store.insert_events([e for f in flows for e in f.events], "t1")
        for text, f in zip(self.NASTY, flows, strict=True):
            assert ids(store.find_flows(FlowFilter.parse(labels={text: text}))) == {f.flow_id}, repr(text)
            assert store.flow(f.flow_id).labels == {text: text}
            assert store.find_flows(FlowFilter.parse(tenant=text)).flows == []
            assert store.find_flows(FlowFilter.parse(name=text)).flows == []
            assert store.find_flows(FlowFilter.parse(cursor=text, labels={"env": text})).flows == []
        assert len(store.find_flows(FlowFilter.parse())) == len(self.NASTY)
        assert store.select("SELECT count() AS n FROM flows")[0]["n"] > 0

    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=_SHARED_BY_ADAPTERS,
    )
    @given(key=st.text(min_size=1, max_size=20), value=st.text(max_size=20))
    def test_any_label_text_round_trips(self, store: Any, key: str, value: str) -> None:
        tenant = _id()
        f = simple(tenant, labels={key: value})
        store.insert_events(f.events, tenant)
        assert ids(store.find_flows(FlowFilter.parse(tenant=tenant, labels={key: value}))) == {f.flow_id}
        assert store.find_flows(FlowFilter.parse(tenant=tenant, labels={key: value + "x"})).flows == []
        assert store.flow(f.flow_id).labels == {key: value}

    # -- rebuild, SQL, threads -------------------------------------------------------

    def test_rebuild_gives_same_results(self, store: Any, population: dict[str, Flow]) -> None:
        before = {t: snapshot(store, t) for t in ("acme-corp", "globex")}
        stats = store.find_stats(StatsFilter.parse())
        store.rebuild()
        assert {t: snapshot(store, t) for t in ("acme-corp", "globex")} == before
        assert store.find_stats(StatsFilter.parse()) == stats
        store.rebuild()
        assert {t: snapshot(store, t) for t in ("acme-corp", "globex")} == before

    def test_select_runs_read_queries_with_params(
        self, store: Any, population: dict[str, Flow]
    ) -> None:
        rows = store.select(
            "SELECT tenant, count() AS n FROM events WHERE tenant = {t:String} GROUP BY tenant",
            {"t": "globex"},
        )
        assert rows == [{"tenant": "globex", "n": 16}]
        assert store.select("WITH 1 AS x SELECT x; ") == [{"x": 1}]
        assert {r["name"] for r in store.select("SHOW TABLES")} >= {"events", "flows", "steps"}
        assert "event_id" in {r["name"] for r in store.select("DESCRIBE TABLE events")}
        assert store.select("SELECT ';' AS s -- ; DROP TABLE x") == [{"s": ";"}]

    @pytest.mark.parametrize(
        "sql",
        [
            "INSERT INTO events SELECT * FROM events",
            "DROP TABLE flows",
            "SELECT 1; DROP TABLE flows",
            "ALTER TABLE flows DELETE WHERE 1",
            "SELECT 1 INTO OUTFILE '/tmp/x.csv'",
            "SELECT 1 SETTINGS readonly = 0",
            "SELECT 1 FORMAT JSON",
            "DESCRIBE file('/etc/passwd', 'LineAsString')",
            "SELECT * FROM file('/etc/hostname', 'LineAsString')",
            "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV')",
            "",
            "SELECT 'unterminated",
        ],
    )
    def test_select_rejects_anything_but_reads(self, store: Any, sql: str) -> None:
        with pytest.raises(QueryError):
            store.select(sql)
        # The engine still writes afterwards: readonly was per query.
        f = simple()
        store.insert_events(f.events, _id())
        assert store.flow(f.flow_id) is not None

    def test_inserts_from_worker_thread_while_reading(self, store: Any) -> None:
        flows = [simple(labels={"n": str(i)}) for i in range(40)]

        def write(i: int) -> None:
            store.insert_events(flows[i].events, f"batch-{i}")

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(write, i) for i in range(40)]
            while not all(fut.done() for fut in futures):
                store.find_flows(FlowFilter.parse(limit=5))
            for fut in futures:
                fut.result()
        assert len(store.find_flows(FlowFilter.parse(limit=100))) == 40

    def test_bad_events_raise_storage_error(self, store: Any) -> None:
        event = simple().events[0]
        with pytest.raises(StorageError):
            store.insert_events([{k: v for k, v in event.items() if k != "flow_id"}], "x")
        with pytest.raises(StorageError):
            store.insert_events([dict(event, timestamp="soon")], "y")
        store.insert_events([], "empty")


@st.composite
def _flow_strategy(draw: st.DrawFn, tenant: str) -> Flow:
    """A flow with random steps (some nested, some failing), events and ending."""
    f = Flow(
        tenant,
        draw(st.sampled_from(["import", "payment"])),
        labels=draw(
            st.dictionaries(st.sampled_from(["env", "region"]), st.sampled_from(["a", "b"]))
        ),
    )
    f.start()
    open_steps: list[tuple[str, str]] = []
    for i in range(draw(st.integers(0, 5))):
        action = draw(st.sampled_from(["step", "nested", "end", "event"]))
        if action == "end" and open_steps:
            sid, name = open_steps.pop()
            f.step_end(sid, name, error=draw(st.sampled_from([None, None, "bad"])))
        elif action == "event":
            f.event(f"ev{i}", step_id=open_steps[-1][0] if open_steps else None, i=str(i))
        else:
            parent = open_steps[-1][0] if action == "nested" and open_steps else None
            name = f"s{i}"
            open_steps.append(
                (f.step(name, parent=parent, service=draw(st.sampled_from(["a", "b"]))), name)
            )
    if draw(st.booleans()):
        while open_steps:
            sid, name = open_steps.pop()
            f.step_end(sid, name)
        f.end(error=draw(st.sampled_from([None, "boom"])))
    return f


class TestChdbStore(StoreContract):
    @pytest.fixture
    def store(self, chdb_store: Any) -> Any:
        return chdb_store

    def test_second_path_in_process_is_refused_clearly(self, store: Any, tmp_path: Any) -> None:
        from dashfrog.storage import open_store

        with pytest.raises(StorageError, match="owned by one process"):
            open_store(f"chdb://{tmp_path / 'other'}")

    def test_data_survives_reopen(self, store: Any) -> None:
        from dashfrog.storage import open_store

        f = simple()
        store.insert_events(f.events, "t1")
        store.close()
        again = open_store(store.url)
        try:
            again.migrate()
            assert ids(again.find_flows(FlowFilter.parse())) == {f.flow_id}
        finally:
            again.close()


class TestClickhouseStore(StoreContract):
    @pytest.fixture
    def store(self, clickhouse_store: Any) -> Any:
        return clickhouse_store
