"""Chart queries: stats, runs over time and a duration histogram for the flows
matching a full :class:`FlowFilter` (status and labels included).

They aggregate over exactly the rows the flow list shows (the same SQL,
unordered and unlimited), so every number on a page follows every filter on
it. Values travel as query parameters only; the SQL text is built from the
fixed fragments here and in ``_queries``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dashfrog._exceptions import QueryError
from dashfrog._models import FlowFilter, StatsFilter
from dashfrog.storage._queries import (
    _STEP_FAILURES,
    Runner,
    _flow_rows_sql,
    _micros,
    _ms,
    _stalled_before,
    _stats_sql,
    _time,
)

# Bucket widths a time axis snaps to (seconds), so bucket edges fall on round times.
BUCKET_STEPS_S: tuple[int, ...] = (
    1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 7 * 86_400,
)  # fmt: skip
MAX_BUCKETS = 500
TARGET_BUCKETS = 60

# Duration histogram edges (microseconds) on a 1-2-5 scale, 1 ms to 1 day.
HISTOGRAM_EDGES_US: tuple[int, ...] = tuple(
    m * 10**e * 1000 for e in range(0, 8) for m in (1, 2, 5) if m * 10**e <= 86_400_000
)

_OVERVIEW = """
SELECT
    toInt64(count()) AS n_runs,
    toInt64(countIf(status = 'running')) AS n_running,
    toInt64(countIf(stalled)) AS n_stalled,
    toInt64(countIf(status = 'success')) AS n_succeeded,
    toInt64(countIf(status = 'failed')) AS n_failed,
    toInt64(count(duration_us)) AS n_timed,
    quantilesExact(0.5, 0.95, 0.99)(duration_us) AS q,
    -- bucket index i means [edges[i-1], edges[i]); 0 is >= the last edge
    sumMapIf(
        [toInt64(arrayFirstIndex(e -> duration_us < e, {edges:Array(Int64)}))],
        [toInt64(1)],
        duration_us IS NOT NULL
    ) AS histogram
FROM ({rows})
"""

_IN_ROWS = "(tenant, flow_id) IN (SELECT tenant, flow_id FROM ({rows}))"

_TIMESERIES = """
SELECT
    toInt64(intDiv(started_us - {origin:Int64}, {bucket_us:Int64})) AS slot,
    toInt64(countIf(status = 'running' AND NOT stalled)) AS n_running,
    toInt64(countIf(stalled)) AS n_stalled,
    toInt64(countIf(status = 'success')) AS n_success,
    toInt64(countIf(status = 'failed')) AS n_failed,
    toInt64(count(duration_us)) AS n_timed,
    quantilesExact(0.5, 0.95)(duration_us) AS q
FROM ({rows})
WHERE started_us >= {origin:Int64} AND started_us < {end:Int64}
GROUP BY slot
ORDER BY slot
"""


def _unpaged(flt: FlowFilter) -> FlowFilter:
    return flt.model_copy(update={"cursor": None})


# The columns the chart queries read, from the stats projection: one row per
# flow, the same values the flow list derives from ``flows`` (outcome from the
# flow's end, start falling back to the first event, duration from the end).
_RUNS_AS_ROWS = """
SELECT
    tenant,
    flow_id,
    multiIf(outcome_ = 2, 'failed', outcome_ = 1, 'success', 'running') AS status,
    stalled_ AS stalled,
    started_us_ AS started_us,
    duration_us_ AS duration_us
FROM ({runs})
WHERE {status}
"""


def _rows(
    stalled_after_s: float, flt: FlowFilter, params: dict[str, Any], now: datetime | None
) -> str:
    """One row per flow matching ``flt`` (status, stalled, started_us, duration_us).

    Without a label filter the rows come from ``flow_runs``, the narrow
    projection stats read (about 3x faster over 100k flows than merging
    ``flows``); labels live only in ``flows``, so a label filter reads the
    flow list's own SQL.
    """
    stalled_before = _stalled_before(stalled_after_s, now)
    if flt.labels:
        return _flow_rows_sql(_unpaged(flt), params, stalled_before)
    stats = StatsFilter.parse(tenant=flt.tenant, name=flt.name, since=flt.since, until=flt.until)
    runs = _stats_sql(stats, params, stalled_before).runs
    if flt.status is None:
        status = "1"
    elif flt.status == "stalled":
        status = "stalled"
    else:
        params["status_filter"] = flt.status
        status = "status = {status_filter:String}"
    return _RUNS_AS_ROWS.replace("{runs}", runs).replace("{status}", status)


def flow_overview(
    query: Runner, flt: FlowFilter, *, stalled_after_s: float, now: datetime | None = None
) -> dict[str, Any]:
    """Counts, success rate, duration percentiles, a duration histogram and
    failures per step over every flow matching ``flt`` (limit and cursor ignored)."""
    params: dict[str, Any] = {}
    rows = _rows(stalled_after_s, flt, params, now)
    edges = list(HISTOGRAM_EDGES_US)
    (row,) = query(_OVERVIEW.replace("{rows}", rows), {**params, "edges": edges})
    keys, values = row["histogram"]
    counts = {int(k): int(v) for k, v in zip(keys, values, strict=True)}
    if flt.labels or flt.status is not None:
        # flow_runs is ordered by (flow_name, tenant): its key narrows the scan first.
        keys = ["1"]
        if flt.tenant is not None:
            params["failures_tenant"] = flt.tenant
            keys.append("tenant = {failures_tenant:String}")
        if flt.name is not None:
            params["failures_name"] = flt.name
            keys.append("flow_name = {failures_name:String}")
        # The per-step failure count of GET /api/stats, over the flows ``rows`` selects.
        keys.append(_IN_ROWS.replace("{rows}", rows))
        sql = _STEP_FAILURES.replace("{scope}", " AND ".join(keys))
        failures = query(sql, params)
    else:  # exactly GET /api/stats' failures, read by its key columns (~3x faster)
        stats_params: dict[str, Any] = {}
        stats = StatsFilter.parse(tenant=flt.tenant, name=flt.name, since=flt.since, until=flt.until)
        sql = _stats_sql(stats, stats_params, _stalled_before(stalled_after_s, now))
        failures = query(sql.failures, stats_params)
    finished = row["n_succeeded"] + row["n_failed"]
    quantiles = [_ms(v) for v in row["q"]] if row["n_timed"] else [None, None, None]
    return {
        "runs": row["n_runs"],
        "running": row["n_running"],
        "stalled": row["n_stalled"],
        "succeeded": row["n_succeeded"],
        "failed": row["n_failed"],
        "success_rate": row["n_succeeded"] / finished if finished else None,
        "duration_p50_ms": quantiles[0],
        "duration_p95_ms": quantiles[1],
        "duration_p99_ms": quantiles[2],
        "histogram": _histogram(counts, edges),
        "failures_by_step": [dict(f) for f in failures],
    }


def _histogram(counts: dict[int, int], edges: list[int]) -> list[dict[str, Any]]:
    """Buckets from the first to the last non-empty one, empty ones between kept.

    SQL's index i (1-based) is [edges[i-2] or 0, edges[i-1]); 0 is past the last edge.
    """
    overflow = len(edges) + 1
    found = {overflow if i == 0 else i: n for i, n in counts.items()}
    if not found:
        return []
    out = []
    for i in range(min(found), max(found) + 1):
        lo = 0 if i == 1 else edges[i - 2]
        hi = edges[i - 1] if i < overflow else None
        out.append({"lo_ms": _ms(lo), "hi_ms": _ms(hi), "count": found.get(i, 0)})
    return out


def pick_bucket_s(span_s: float) -> int:
    """The smallest round bucket giving at most about TARGET_BUCKETS buckets over ``span_s``."""
    for step in BUCKET_STEPS_S:
        if span_s / step <= TARGET_BUCKETS:
            return step
    return BUCKET_STEPS_S[-1]


def flow_timeseries(
    query: Runner,
    flt: FlowFilter,
    *,
    stalled_after_s: float,
    bucket_s: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Flows started per time bucket, by status, with duration p50/p95 per bucket.

    The range is the filter's since/until, or the span of the matching flows'
    starts; ``bucket_s`` None picks a round width giving about 60 buckets.
    Empty buckets are included (zeros), so a chart's x axis is regular.
    """
    now = now or datetime.now(UTC)
    params: dict[str, Any] = {}
    rows = _rows(stalled_after_s, flt, params, now)
    if flt.since is not None:
        start_us = _micros(flt.since)
    else:
        (span,) = query(
            "SELECT toInt64(min(started_us)) AS first_us, toInt64(count()) AS n FROM ("  # noqa: S608
            + rows
            + ")",
            params,
        )
        if not span["n"]:
            return {"bucket_s": bucket_s or 60, "points": []}
        start_us = int(span["first_us"])
    end_us = _micros(flt.until) if flt.until is not None else _micros(now) + 1
    end_us = max(end_us, start_us + 1)
    span_s = (end_us - start_us) / 1e6
    if bucket_s is None:
        bucket_s = pick_bucket_s(span_s)
    if span_s / bucket_s > MAX_BUCKETS:
        raise QueryError(
            f"bucket={bucket_s}s gives {span_s / bucket_s:.0f} buckets over this range; "
            f"use a wider bucket or a shorter range (at most {MAX_BUCKETS} buckets)"
        )
    bucket_us = bucket_s * 1_000_000
    origin = start_us - start_us % bucket_us  # bucket edges on round times
    params.update(origin=origin, bucket_us=bucket_us, end=end_us)
    found = {r["slot"]: r for r in query(_TIMESERIES.replace("{rows}", rows), params)}
    points = []
    for slot in range((end_us - origin + bucket_us - 1) // bucket_us):
        r = found.get(slot)
        q = [_ms(v) for v in r["q"]] if r and r["n_timed"] else [None, None]
        points.append(
            {
                "t": _time(origin + slot * bucket_us),
                "running": r["n_running"] if r else 0,
                "stalled": r["n_stalled"] if r else 0,
                "success": r["n_success"] if r else 0,
                "failed": r["n_failed"] if r else 0,
                "p50_ms": q[0],
                "p95_ms": q[1],
            }
        )
    return {"bucket_s": bucket_s, "points": points}


_RAW_EVENTS = """
SELECT
    event_id,
    kind,
    step_id,
    parent_step_id,
    step_name,
    -- A custom event's name; rows from SDKs before event_name carry it in step_name.
    if(kind = 'flow_event' AND event_name = '', step_name, event_name) AS event_name,
    status,
    has_error,
    error_type,
    error_message,
    error_stack,
    labels,
    attributes,
    toUnixTimestamp64Micro(timestamp) AS ts_us,
    toString(service) AS service,
    toString(host) AS host,
    trace_id,
    span_id,
    toString(sdk_version) AS sdk_version
FROM events
WHERE tenant = {tenant:String} AND flow_id = {flow_id:String}
ORDER BY timestamp, event_id
LIMIT 1 BY event_id
LIMIT {limit:UInt32}
"""


def flow_events(
    query: Runner, tenant: str, flow_id: str, *, limit: int = 100_000
) -> list[dict[str, Any]]:
    """Every lifecycle and custom event of one flow (duplicates dropped), oldest
    first, as JSON-ready records: what a flow export carries beside its state."""
    rows = query(_RAW_EVENTS, {"tenant": tenant, "flow_id": flow_id, "limit": limit})
    out = []
    for row in rows:
        # Columns a kind does not use are stored empty: absent, not "".
        record = {
            k: (v if v != "" else None)
            for k, v in row.items()
            if k not in ("ts_us", "has_error", "error_type", "error_message", "error_stack")
        }
        record["timestamp"] = _time(row["ts_us"])
        record["error"] = (
            {
                "type": row["error_type"],
                "message": row["error_message"],
                "stack": row["error_stack"],
            }
            if row["has_error"]
            else None
        )
        record["labels"] = dict(row["labels"] or {})
        record["attributes"] = dict(row["attributes"] or {})
        out.append(record)
    return out
