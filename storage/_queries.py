"""Read queries shared by every adapter.

Each function takes ``run(sql, params) -> rows`` (an adapter's raw query
method) and returns the models of :mod:`dashfrog._models`. Every value, label
names included, travels as a ``{name:Type}`` query parameter; the SQL text is
assembled only from the fixed fragments in this module and generated parameter
names.

Flow and step state is read with ``GROUP BY`` over the aggregate columns
rather than ``FINAL``: it is exact whatever background merges have done, and
filters on derived values (status, labels) apply to merged state only. Time
values cross the boundary as Int64 microseconds so both drivers return plain
integers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from dashfrog._exceptions import QueryError
from dashfrog._models import (
    ErrorInfo,
    FlowDetail,
    FlowEventRecord,
    FlowFilter,
    FlowList,
    FlowStats,
    FlowSummary,
    StatsFilter,
    StepFailureCount,
    StepRecord,
)
from dashfrog.storage._schema import NO_END_US, NO_ERROR_TS, NO_START_US

Rows = list[dict[str, Any]]
Runner = Callable[[str, Mapping[str, Any]], Rows]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Merged state per flow; {where} only ever tests key columns (tenant, flow_id)
# so that every partial row of a selected flow takes part in the aggregation.
_FLOW_STATE = """
SELECT
    tenant,
    flow_id,
    max(flow_name) AS name_,
    min(started_at) AS started_at_,
    min(first_seen) AS first_seen_,
    max(ended_at) AS ended_at_,
    max(last_activity) AS last_activity_,
    max(end_failed) AS end_failed_,
    max(end_success) AS end_success_,
    length(groupUniqArrayArray(steps_started)) AS steps_started_,
    length(groupUniqArrayArray(steps_ended)) AS steps_ended_,
    length(groupUniqArrayArray(steps_failed)) AS steps_failed_,
    max(current_step) AS current_step_,
    min(first_error) AS first_error_,
    maxMap(labels) AS labels_,
    arraySort(groupUniqArrayArray(services)) AS services_,
    max(trace_id) AS trace_id_
FROM flows
WHERE {where}
GROUP BY tenant, flow_id
"""

# A flow's outcome is what its flow_ended event says. The SDK already ends a
# flow failed when one of its steps failed and the flow caught the exception
# (flows-seed "Error Handling"); a failed attempt that was retried and then
# succeeded leaves the flow successful. Failed steps stay visible in the counts.
_FLOW_ROWS = (
    """
SELECT
    tenant,
    flow_id,
    name_ AS name,
    multiIf(end_failed_ = 1, 'failed', end_success_ = 1, 'success', 'running') AS status,
    status = 'running' AND toUnixTimestamp64Micro(last_activity_) < {stalled_before:Int64} AS stalled,
    toUnixTimestamp64Micro(coalesce(started_at_, first_seen_)) AS started_us,
    toUnixTimestamp64Micro(ended_at_) AS ended_us,
    if(ended_at_ IS NULL, NULL, ended_us - started_us) AS duration_us,
    toUnixTimestamp64Micro(last_activity_) AS last_activity_us,
    if(current_step_.1 = 0, NULL, current_step_.2) AS current_step,
    if(current_step_.1 = 0, NULL, current_step_.3) AS current_step_id,
    steps_started_ AS steps_started,
    steps_ended_ AS steps_ended,
    steps_failed_ AS steps_failed,
    first_error_.1 != """
    + str(NO_ERROR_TS)
    + """ AS has_error,
    toInt64(if(has_error, first_error_.1, 0)) AS error_us,
    first_error_.2 AS error_step_id,
    first_error_.3 AS error_step_name,
    first_error_.4 AS error_type,
    first_error_.5 AS error_message,
    first_error_.6 AS error_stack,
    labels_ AS labels,
    services_ AS services,
    trace_id_ AS trace_id
FROM ({state})
WHERE {having}
"""
)

# A step_ended with neither success nor failure is an attempt that raised a
# retry (status "retried": the only other status a step end may carry).
_STEP_STATUS = (
    "multiIf(end_failed_ = 1, 'failed', end_success_ = 1, 'success', "
    "ended_at_ IS NOT NULL, 'retried', 'running')"
)

_STEP_ROWS = (
    """
SELECT
    step_id,
    name_ AS name,
    parent_ AS parent_step_id,
    """
    + _STEP_STATUS
    + """ AS status,
    toUnixTimestamp64Micro(coalesce(started_at_, first_seen_)) AS started_us,
    toUnixTimestamp64Micro(ended_at_) AS ended_us,
    if(ended_at_ IS NULL, NULL, ended_us - started_us) AS duration_us,
    toUnixTimestamp64Micro(last_activity_) AS last_activity_us,
    error_.1 != {no_error:UInt64} AS has_error,
    toInt64(if(has_error, error_.1, 0)) AS error_us,
    error_.2 AS error_type,
    error_.3 AS error_message,
    error_.4 AS error_stack,
    attributes_ AS attributes,
    services_ AS services,
    hosts_ AS hosts
FROM (
    SELECT
        step_id,
        max(step_name) AS name_,
        max(parent_step_id) AS parent_,
        min(started_at) AS started_at_,
        min(first_seen) AS first_seen_,
        max(ended_at) AS ended_at_,
        max(last_activity) AS last_activity_,
        max(end_failed) AS end_failed_,
        max(end_success) AS end_success_,
        min(error) AS error_,
        maxMap(attributes) AS attributes_,
        arraySort(groupUniqArrayArray(services)) AS services_,
        arraySort(groupUniqArrayArray(hosts)) AS hosts_
    FROM steps
    WHERE tenant = {tenant:String} AND flow_id = {flow_id:String}
    GROUP BY step_id
)
ORDER BY started_us, step_id
"""
)

# The two candidates for a flow's current step (see _current_step), per flow
# of a page: the latest-started step still running and the last step to end.
_CURRENT_STEPS = """
SELECT
    tenant,
    flow_id,
    argMaxIf(tuple(name_, step_id), tuple(start_us, step_id), ended_at_ IS NULL) AS running_,
    countIf(ended_at_ IS NULL) > 0 AS any_running,
    argMaxIf(tuple(name_, step_id), tuple(end_us, step_id), ended_at_ IS NOT NULL) AS ended_,
    countIf(ended_at_ IS NOT NULL) > 0 AS any_ended
FROM (
    SELECT
        tenant,
        flow_id,
        step_id,
        max(step_name) AS name_,
        toUnixTimestamp64Micro(coalesce(min(started_at), min(first_seen))) AS start_us,
        max(ended_at) AS ended_at_,
        toUnixTimestamp64Micro(coalesce(ended_at_, min(first_seen))) AS end_us
    FROM steps
    WHERE {where}
    GROUP BY tenant, flow_id, step_id
)
GROUP BY tenant, flow_id
"""

# A redelivered event repeats its event_id with the same content until merges
# drop it. LIMIT 1 BY keeps one copy of the few rows of one flow; FINAL would
# do the same at twice the cost, since it reads every column of the flow's
# granules before the kind/has_error filter can apply.
_FLOW_EVENTS = """
SELECT
    event_id,
    kind,
    step_id,
    -- Rows from SDKs before event_name existed carry a custom event's name in step_name.
    if(event_name != '', event_name, step_name) AS event_name,
    has_error,
    error_type,
    error_message,
    error_stack,
    attributes,
    toUnixTimestamp64Micro(timestamp) AS ts_us,
    toString(service) AS service
FROM events
WHERE tenant = {tenant:String} AND flow_id = {flow_id:String}
  AND (kind = 'flow_event' OR has_error = 1)
ORDER BY timestamp, event_id
LIMIT 1 BY event_id
"""

# Per flow, what stats need, from flow_runs (see _schema). {where} only tests
# flow_runs' key columns (flow name, tenant) so that every partial row of a
# selected flow takes part in the aggregation; {having} tests the merged start.
_RUNS = """
SELECT
    tenant,
    flow_id,
    max(outcome) AS outcome_,
    outcome_ = 0 AND toUnixTimestamp64Micro(max(last_activity)) < {stalled_before:Int64} AS stalled_,
    if(min(started_us) = {no_start:Int64}, min(first_seen_us), min(started_us)) AS started_us_,
    if(max(ended_us) = {no_end:Int64}, NULL, max(ended_us) - started_us_) AS duration_us_
FROM flow_runs
WHERE {where}
GROUP BY tenant, flow_id
HAVING {having}
"""

_STATS = """
SELECT
    toInt64(count()) AS runs,
    toInt64(countIf(outcome_ = 0)) AS running,
    toInt64(countIf(stalled_)) AS stalled,
    toInt64(countIf(outcome_ = 1)) AS succeeded,
    toInt64(countIf(outcome_ = 2)) AS failed,
    toInt64(count(duration_us_)) AS timed,
    quantilesExact(0.5, 0.95, 0.99)(duration_us_) AS q
FROM ({runs})
"""

# A failed step is counted once however many partial rows repeat it (its
# start and end in different insert blocks, a redelivered end), under the
# name its failed end carried.
_STEP_FAILURES = """
SELECT step_name, toInt64(count()) AS failures
FROM (
    SELECT max(failed.2) AS step_name
    FROM flow_runs
    ARRAY JOIN steps_failed AS failed
    WHERE {scope}
    GROUP BY tenant, flow_id, failed.1
)
GROUP BY step_name
ORDER BY failures DESC, step_name
LIMIT 100
"""


def _micros(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=int(us))


def _ms(us: int | float | None) -> float | None:
    return None if us is None else float(us) / 1000.0


class _Sql:
    """Accumulates WHERE conditions and their parameters under generated names."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.where: list[str] = []
        self.having: list[str] = []

    def bind(self, value: Any, type_: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{type_}}}"

    def started_between(self, since: datetime | None, until: datetime | None, column: str) -> None:
        """Flows started in [since, until): a test on the merged start, so HAVING."""
        if since is not None:
            self.having.append(f"{column} >= {self.bind(_micros(since), 'Int64')}")
        if until is not None:
            self.having.append(f"{column} < {self.bind(_micros(until), 'Int64')}")


def _flow_rows_sql(
    flt: FlowFilter,
    params: dict[str, Any],
    stalled_before_us: int,
    *,
    flow_id: str | None = None,
) -> str:
    """The filtered flow rows, unordered and unlimited; fills ``params``."""
    q = _Sql(params)
    params["stalled_before"] = stalled_before_us
    tenant_cond = None
    if flt.tenant is not None:
        tenant_cond = f"tenant = {q.bind(flt.tenant, 'String')}"
        q.where.append(tenant_cond)
    if flow_id is not None:
        q.where.append(f"flow_id = {q.bind(flow_id, 'String')}")
    if flt.name is not None:
        name = q.bind(flt.name, "String")
        # Every event names its flow, so every partial row has the name: filter
        # before merging (5x fewer rows to group), and re-check the merged name.
        q.where.append(f"flow_name = {name}")
        q.having.append(f"name = {name}")
    q.started_between(flt.since, flt.until, "started_us")
    if flt.cursor is not None:
        q.where.append(f"flow_id < {q.bind(flt.cursor, 'String')}")
    if flt.status == "stalled":
        q.having.append("stalled")
    elif flt.status is not None:
        q.having.append(f"status = {q.bind(flt.status, 'String')}")
    if flt.labels:
        matches = [tenant_cond] if tenant_cond else []
        for key, value in flt.labels.items():
            k, v = q.bind(key, "String"), q.bind(value, "String")
            matches.append(f"mapContains(labels, {k}) AND labels[{k}] = {v}")
            q.having.append(f"mapContains(labels, {k}) AND labels[{k}] = {v}")
        # Narrow with the label skip indexes over partial rows first (a
        # flow's labels sit on the rows its flow_started produced); the
        # HAVING above re-checks the merged labels.
        pre = " AND ".join(matches)
        q.where.append(
            f"(tenant, flow_id) IN (SELECT tenant, flow_id FROM flows WHERE {pre})"  # noqa: S608
        )
    state = _FLOW_STATE.replace("{where}", " AND ".join(q.where) or "1")
    return _FLOW_ROWS.replace("{state}", state).replace("{having}", " AND ".join(q.having) or "1")


def _stalled_before(stalled_after_s: float, now: datetime | None) -> int:
    return _micros((now or datetime.now(UTC)) - timedelta(seconds=stalled_after_s))


def _error(row: Mapping[str, Any], step_id: str | None, step_name: str | None) -> ErrorInfo:
    return ErrorInfo(
        type=row["error_type"],
        message=row["error_message"],
        stack=row["error_stack"],
        step_id=step_id or None,
        step_name=step_name or None,
        at=_time(row["error_us"]),
    )


def _current_step(
    status: str, running: tuple[str, str] | None, ended: tuple[str, str] | None
) -> tuple[str, str] | None:
    """A flow's current step, (name, step id), the one definition every surface shows.

    While the flow runs: its latest-started step that is still running, or if
    none runs, the last step to end. Once the flow has ended: the last step to
    end (a step that never reported its end does not stay "current" after
    the flow is over).
    """
    if status == "running" and running is not None:
        return running
    return ended if ended is not None else running


def _with_current_steps(run: Runner, rows: Rows) -> Rows:
    """``rows`` with current_step / current_step_id set by :func:`_current_step`."""
    if not rows:
        return rows
    q = _Sql({})
    tenants = sorted({r["tenant"] for r in rows})
    ids = sorted({r["flow_id"] for r in rows})
    where = (
        f"tenant IN ({', '.join(q.bind(t, 'String') for t in tenants)}) "
        f"AND flow_id IN ({', '.join(q.bind(i, 'String') for i in ids)})"
    )
    found = {
        (c["tenant"], c["flow_id"]): c
        for c in run(_CURRENT_STEPS.replace("{where}", where), q.params)
    }
    out: Rows = []
    for row in rows:
        c = found.get((row["tenant"], row["flow_id"]))
        current = None
        if c is not None:
            current = _current_step(
                row["status"],
                (str(c["running_"][0]), str(c["running_"][1])) if c["any_running"] else None,
                (str(c["ended_"][0]), str(c["ended_"][1])) if c["any_ended"] else None,
            )
        out.append(
            {
                **row,
                "current_step": current[0] if current else None,
                "current_step_id": current[1] if current else None,
            }
        )
    return out


def _summary_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "flow_id": row["flow_id"],
        "tenant": row["tenant"],
        "name": row["name"],
        "status": row["status"],
        "stalled": bool(row["stalled"]),
        "started_at": _time(row["started_us"]),
        "ended_at": _time(row["ended_us"]),
        "duration_ms": _ms(row["duration_us"]),
        "last_activity": _time(row["last_activity_us"]),
        "current_step": row["current_step"],
        "current_step_id": row["current_step_id"],
        "steps_started": row["steps_started"],
        "steps_ended": row["steps_ended"],
        "steps_failed": row["steps_failed"],
        "error": _error(row, row["error_step_id"], row["error_step_name"])
        if row["has_error"]
        else None,
        "labels": dict(row["labels"] or {}),
        "services": list(row["services"] or []),
        "trace_id": row["trace_id"] or None,
    }


def list_flows(
    run: Runner, flt: FlowFilter, *, stalled_after_s: float, now: datetime | None = None
) -> FlowList:
    """Flows matching ``flt``, newest first (flow ids sort by creation time)."""
    params: dict[str, Any] = {}
    sql = _flow_rows_sql(flt, params, _stalled_before(stalled_after_s, now))
    params["limit"] = flt.limit
    rows = _with_current_steps(run, run(sql + "ORDER BY flow_id DESC\nLIMIT {limit:UInt32}", params))
    flows = [FlowSummary(**_summary_fields(row)) for row in rows]
    cursor = flows[-1].flow_id if len(flows) == flt.limit else None
    return FlowList(flows=flows, next_cursor=cursor)


def changed_flows(
    run: Runner,
    since_s: int | None,
    tenants: Sequence[str] | None,
    limit: int,
    *,
    stalled_after_s: float,
) -> tuple[int, list[FlowSummary]]:
    """Flows with events written since ``since_s`` (server epoch seconds), newest
    activity first, for the tenants given (None: all), and the server's clock
    (alone when ``since_s`` is None).

    Rows are exactly what :func:`list_flows` returns for those flows, so a live
    view can compare and replace them.
    """
    now = int(run("SELECT toInt64(toUnixTimestamp(now())) AS now", {})[0]["now"])
    if since_s is None:  # only the clock was asked for
        return now, []
    params: dict[str, Any] = {"since": since_s, "limit": limit}
    q = _Sql(params)
    if tenants is None:
        scope = "1"
    else:
        scope = (
            f"tenant IN ({', '.join(q.bind(t, 'String') for t in sorted(set(tenants)))})"
            if tenants
            else "0"
        )
    params["stalled_before"] = _stalled_before(stalled_after_s, None)
    changed = (
        "(tenant, flow_id) IN (SELECT DISTINCT tenant, flow_id FROM events "  # noqa: S608
        f"WHERE inserted_at >= toDateTime({{since:Int64}}) AND {scope})"
    )
    state = _FLOW_STATE.replace("{where}", changed)
    sql = _FLOW_ROWS.replace("{state}", state).replace("{having}", "1")
    rows = run(sql + "ORDER BY last_activity_us DESC, flow_id DESC\nLIMIT {limit:UInt32}", params)
    return now, [FlowSummary(**_summary_fields(row)) for row in _with_current_steps(run, rows)]


# Flow ids are 32 characters (see dashfrog._ids): 12 of creation milliseconds,
# then random ones, so 12 characters name a flow unless two started in the same ms.
FLOW_ID_LENGTH = 32
MIN_FLOW_ID_PREFIX = 6
_PREFIX_CANDIDATES = 20

_FLOWS_BY_PREFIX = """
SELECT DISTINCT flow_id
FROM flows
WHERE startsWith(flow_id, {prefix:String}) AND {scope}
ORDER BY flow_id
LIMIT {limit:UInt32}
"""


def resolve_flow_id(run: Runner, text: str, *, tenant: str | None = None) -> str | None:
    """The full id of the one flow (of ``tenant``, if given) whose id starts with ``text``.

    None when no flow matches, or ``text`` is a full id or shorter than
    MIN_FLOW_ID_PREFIX. A trailing ellipsis (as ``events tail`` prints it) is
    ignored. Raises QueryError when the prefix matches several flows, saying
    how many.
    """
    prefix = text.strip().removesuffix("…").removesuffix("...")
    if not MIN_FLOW_ID_PREFIX <= len(prefix) < FLOW_ID_LENGTH:
        return None  # a full id, or too short to be meant as a prefix: no such flow
    q = _Sql({"prefix": prefix, "limit": _PREFIX_CANDIDATES + 1})
    scope = f"tenant = {q.bind(tenant, 'String')}" if tenant is not None else "1"
    found = [r["flow_id"] for r in run(_FLOWS_BY_PREFIX.replace("{scope}", scope), q.params)]
    if len(found) > 1:
        many = (
            f"more than {_PREFIX_CANDIDATES}" if len(found) > _PREFIX_CANDIDATES else str(len(found))
        )
        raise QueryError(
            f"flow id prefix {prefix!r} matches {many} flows (e.g. {found[0]}, {found[1]}); "
            "give more characters or the full id"
        )
    return found[0] if found else None


def get_flow(
    run: Runner,
    flow_id: str,
    *,
    tenant: str | None = None,
    stalled_after_s: float,
    now: datetime | None = None,
) -> FlowDetail | None:
    """One flow with its step tree, errors and custom events; None if unknown.

    ``flow_id`` may be a unique prefix of the id (what ``events tail`` prints):
    see :func:`resolve_flow_id`.
    """
    flt = FlowFilter.parse(tenant=tenant, limit=2)
    params: dict[str, Any] = {}
    sql = _flow_rows_sql(flt, params, _stalled_before(stalled_after_s, now), flow_id=flow_id)
    rows = run(sql + "ORDER BY tenant LIMIT 2", params)
    if not rows:
        full = resolve_flow_id(run, flow_id, tenant=tenant)
        if full is None or full == flow_id:
            return None
        return get_flow(run, full, tenant=tenant, stalled_after_s=stalled_after_s, now=now)
    (row,) = _with_current_steps(run, rows[:1])
    key = {"tenant": row["tenant"], "flow_id": row["flow_id"]}
    step_rows = run(_STEP_ROWS, {**key, "no_error": NO_ERROR_TS})
    event_rows = run(_FLOW_EVENTS, key)
    names = {s["step_id"]: s["name"] for s in step_rows}
    errors: list[ErrorInfo] = []
    events: list[FlowEventRecord] = []
    for ev in event_rows:
        if ev["kind"] == "flow_event":
            events.append(
                FlowEventRecord(
                    event_id=ev["event_id"],
                    name=ev["event_name"],
                    timestamp=_time(ev["ts_us"]),
                    step_id=ev["step_id"] or None,
                    attributes=dict(ev["attributes"] or {}),
                    service=ev["service"],
                )
            )
        if ev["has_error"]:
            step_id = ev["step_id"] if ev["kind"].startswith("step_") else None
            errors.append(
                _error({**ev, "error_us": ev["ts_us"]}, step_id, names.get(step_id or "", None))
            )
    return FlowDetail(
        **_summary_fields(row), steps=_step_tree(step_rows), errors=errors, events=events
    )


def _retry_reason(row: Mapping[str, Any], step_id: str) -> ErrorInfo | None:
    """A retried attempt's reason (its ``retry_reason`` attribute, "Type: message")
    as the step's error, so the step says why it ran again. It is never an
    error of the flow: the flow's first error and error list skip it."""
    reason = (row["attributes"] or {}).get("retry_reason")
    if row["status"] != "retried" or not reason:
        return None
    type_, sep, message = reason.partition(": ")
    return ErrorInfo(
        type=type_ if sep else "Retry",
        message=message if sep else reason,
        step_id=step_id,
        step_name=row["name"] or None,
        at=_time(row["ended_us"]),
    )


def _step_tree(rows: Rows) -> list[StepRecord]:
    # Build bottom-up so each frozen record is created once with its children;
    # a step whose parent is unknown (not arrived yet, or outside the flow)
    # is shown at the top level rather than hidden.
    by_id = {row["step_id"]: row for row in rows}
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for row in rows:
        parent = row["parent_step_id"]
        if parent and parent in by_id and parent != row["step_id"]:
            children.setdefault(parent, []).append(row["step_id"])
        else:
            roots.append(row["step_id"])

    def build(step_id: str, seen: frozenset[str]) -> StepRecord:
        row = by_id[step_id]
        seen = seen | {step_id}
        return StepRecord(
            step_id=step_id,
            name=row["name"],
            parent_step_id=row["parent_step_id"] or None,
            status=row["status"],
            started_at=_time(row["started_us"]),
            ended_at=_time(row["ended_us"]),
            duration_ms=_ms(row["duration_us"]),
            last_activity=_time(row["last_activity_us"]),
            error=_error(row, step_id, row["name"]) if row["has_error"] else _retry_reason(row, step_id),
            attributes=dict(row["attributes"] or {}),
            services=list(row["services"] or []),
            hosts=list(row["hosts"] or []),
            children=[build(c, seen) for c in children.get(step_id, []) if c not in seen],
        )

    return [build(step_id, frozenset()) for step_id in roots]


class _StatsSql(NamedTuple):
    runs: str  # one row per flow: the subquery of ``stats``
    stats: str
    failures: str


def _stats_sql(flt: StatsFilter, params: dict[str, Any], stalled_before_us: int) -> _StatsSql:
    """The statements of :func:`flow_stats`; fills ``params``."""
    q = _Sql(params)
    params.update(stalled_before=stalled_before_us, no_start=NO_START_US, no_end=NO_END_US)
    if flt.tenant is not None:
        q.where.append(f"tenant = {q.bind(flt.tenant, 'String')}")
    if flt.name is not None:
        q.where.append(f"flow_name = {q.bind(flt.name, 'String')}")
    q.started_between(flt.since, flt.until, "started_us_")
    where = " AND ".join(q.where) or "1"
    runs = _RUNS.replace("{where}", where).replace("{having}", " AND ".join(q.having) or "1")
    scope = where
    if q.having:
        # A time range is on the merged start: find those flows first.
        scope += f" AND (tenant, flow_id) IN (SELECT tenant, flow_id FROM ({runs}))"  # noqa: S608
    return _StatsSql(runs, _STATS.replace("{runs}", runs), _STEP_FAILURES.replace("{scope}", scope))


def flow_stats(
    run: Runner, flt: StatsFilter, *, stalled_after_s: float, now: datetime | None = None
) -> FlowStats:
    """Runs, success rate, duration percentiles and failures per step."""
    params: dict[str, Any] = {}
    sql = _stats_sql(flt, params, _stalled_before(stalled_after_s, now))
    (row,) = run(sql.stats, params)
    failures = run(sql.failures, params)
    finished = row["succeeded"] + row["failed"]
    quantiles = [_ms(v) for v in row["q"]] if row["timed"] else [None, None, None]
    return FlowStats(
        tenant=flt.tenant,
        name=flt.name,
        since=flt.since,
        until=flt.until,
        runs=row["runs"],
        running=row["running"],
        stalled=row["stalled"],
        succeeded=row["succeeded"],
        failed=row["failed"],
        success_rate=row["succeeded"] / finished if finished else None,
        duration_p50_ms=quantiles[0],
        duration_p95_ms=quantiles[1],
        duration_p99_ms=quantiles[2],
        failures_by_step=[StepFailureCount(**f) for f in failures],
    )
