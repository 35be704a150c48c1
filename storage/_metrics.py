"""Metric points: their tables, how a batch is written, and the read queries.

Tables (migrations 6 and 7):

- ``metric_points``: every point as the SDK sent it, kept for rebuilds. A
  ReplacingMergeTree whose key ends with the point id, so a point written twice
  (a redelivered message, a batch retried under another token, an SDK re-send
  after a lost acknowledgement) is one row once merged; readers take one row
  per point id (``LIMIT 1 BY``) and never count a duplicate before that.
- ``metric_catalog``: per metric and tenant, the latest declaration (kind,
  pretty name, unit, label names) and when points were first and last seen;
  filled by a view with idempotent functions (max of a tuple led by the time,
  min, max).
- ``metric_minutes``: the projection, one row per metric, tenant, label set
  and minute, with mergeable states: counter total, histogram count, sum, min,
  max, zero count and bucket maps (``sumMap`` after bringing every map to the
  coarsest scale), gauge last sample (``argMax`` by time), min and max. A
  coarser step merges minute rows with the same functions.

Why the projection is not a materialized view over inserts: a view sums what
each insert block holds, so a point inserted twice under different
deduplication tokens would be counted twice. Instead, after each write, the
minutes the batch touched are recomputed from ``metric_points`` with one row
per point id and written as a new version of those rows
(ReplacingMergeTree(version), read with FINAL). A minute's row is therefore a
function of the set of distinct points in it: the same whatever order points
arrive in and however often they repeat. Two workers recomputing one minute
at once each read a snapshot; the one that reads later also writes the
higher version, and any point it could have missed is repaired by the next
write to that minute or by ``rebuild()``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from dashfrog._exceptions import QueryError, StorageError
from dashfrog._metric_models import (
    MetricFilter,
    MetricInfo,
    MetricList,
    MetricRatio,
    MetricRow,
    MetricSeries,
    RatioRow,
)

TS = "DateTime64(6, 'UTC')"
METRIC_KINDS = ("counter", "histogram", "gauge")

Execute = Callable[[str, Mapping[str, Any] | None], None]
Query = Callable[[str, Mapping[str, Any] | None], list[dict[str, Any]]]

METRIC_POINTS = f"""
CREATE TABLE IF NOT EXISTS metric_points (
    point_id String,
    name LowCardinality(String),
    kind LowCardinality(String),
    tenant String,
    labels Map(String, String),
    labels_key String,
    start_time {TS},
    time {TS},
    value Float64,
    count UInt64,
    sum Float64,
    min Float64,
    max Float64,
    scale Int8,
    zero_count UInt64,
    positive Map(Int32, UInt64),
    negative Map(Int32, UInt64),
    pretty_name LowCardinality(String),
    unit LowCardinality(String),
    label_names Array(String),
    service LowCardinality(String),
    host LowCardinality(String),
    inserted_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, name, toStartOfMinute(time), point_id)
TTL toDateTime(time) + INTERVAL __RETENTION_DAYS__ DAY
SETTINGS non_replicated_deduplication_window = 10000
"""

METRIC_CATALOG = f"""
CREATE TABLE IF NOT EXISTS metric_catalog (
    name String,
    tenant String,
    declaration SimpleAggregateFunction(max, Tuple({TS}, String, String, String, Array(String))),
    first_seen SimpleAggregateFunction(min, {TS}),
    last_seen SimpleAggregateFunction(max, {TS})
)
ENGINE = AggregatingMergeTree
ORDER BY (name, tenant)
TTL toDateTime(last_seen) + INTERVAL __RETENTION_DAYS__ DAY
"""

_CATALOG_SELECT = """
SELECT name, tenant,
    max(tuple(time, toString(kind), toString(pretty_name), toString(unit), label_names)) AS declaration,
    min(time) AS first_seen,
    max(time) AS last_seen
FROM {source}
GROUP BY name, tenant
"""

METRIC_MINUTES = f"""
CREATE TABLE IF NOT EXISTS metric_minutes (
    tenant String,
    name LowCardinality(String),
    minute DateTime('UTC'),
    labels_key String,
    labels Map(String, String),
    kind LowCardinality(String),
    points UInt32,
    total Float64,
    count UInt64,
    sum Float64,
    min Float64,
    max Float64,
    scale Int8,
    zero_count UInt64,
    positive Map(Int32, UInt64),
    negative Map(Int32, UInt64),
    last_time {TS},
    last Float64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, name, minute, labels_key)
TTL minute + INTERVAL __RETENTION_DAYS__ DAY
"""

# One row per distinct point, then per (tenant, name, minute, label set); the
# bucket maps of points at finer scales are brought down to the coarsest scale
# of the group (index >> difference) before they are summed.
_MINUTES_SELECT = """
SELECT
    tenant, name, minute, labels_key,
    any(p_labels) AS labels,
    any(p_kind) AS kind,
    toUInt32(count()) AS points,
    sum(if(p_kind = 'counter', p_value, 0)) AS total,
    sum(p_count) AS count,
    sum(p_sum) AS sum,
    min(p_min) AS min,
    max(p_max) AS max,
    toInt8(min(p_scale)) AS scale,
    sum(p_zero) AS zero_count,
    sumMap(mapApply((k, v) -> (bitShiftRight(k, toUInt8(p_scale - p_target)), v), p_positive)) AS positive,
    sumMap(mapApply((k, v) -> (bitShiftRight(k, toUInt8(p_scale - p_target)), v), p_negative)) AS negative,
    max(p_time) AS last_time,
    argMax(p_value, p_time) AS last,
    toUInt64(toUnixTimestamp64Micro(now64(6))) AS version
FROM (
    SELECT tenant, name, toStartOfMinute(time) AS minute, labels_key, labels AS p_labels,
        kind AS p_kind, value AS p_value, count AS p_count, sum AS p_sum, min AS p_min,
        max AS p_max, scale AS p_scale, zero_count AS p_zero, positive AS p_positive,
        negative AS p_negative, time AS p_time,
        min(scale) OVER (PARTITION BY tenant, name, toStartOfMinute(time), labels_key) AS p_target
    FROM (SELECT * FROM metric_points {where} ORDER BY point_id LIMIT 1 BY tenant, name, point_id)
)
GROUP BY tenant, name, minute, labels_key
"""

MIGRATION_6 = (
    METRIC_POINTS,
    METRIC_CATALOG,
    "CREATE MATERIALIZED VIEW IF NOT EXISTS metric_catalog_mv TO metric_catalog AS "
    + _CATALOG_SELECT.replace("{source}", "metric_points"),
)
MIGRATION_7 = (
    METRIC_MINUTES,
    # Points written before this migration (none unless 6 ran alone).
    "INSERT INTO metric_minutes " + _MINUTES_SELECT.replace("{where}", ""),
)
TTL_COLUMNS = {
    "metric_points": "toDateTime(time)",
    "metric_catalog": "toDateTime(last_seen)",
    "metric_minutes": "minute",
}

_STRUCTURE = (
    "point_id String, name String, kind String, tenant String, labels Map(String, String), "
    "labels_key String, start_us Int64, time_us Int64, value Float64, count UInt64, sum Float64, "
    "min Float64, max Float64, scale Int8, zero_count UInt64, positive Map(Int32, UInt64), "
    "negative Map(Int32, UInt64), pretty_name String, unit String, label_names Array(String), "
    "service String, host String"
)
_INSERT = (
    "INSERT INTO metric_points (point_id, name, kind, tenant, labels, labels_key, start_time, time, "  # noqa: S608 - values are bound parameters
    "value, count, sum, min, max, scale, zero_count, positive, negative, pretty_name, unit, "
    "label_names, service, host) "
    "SELECT point_id, name, kind, tenant, labels, labels_key, fromUnixTimestamp64Micro(start_us, 'UTC'), "
    "fromUnixTimestamp64Micro(time_us, 'UTC'), value, count, sum, min, max, scale, zero_count, "
    "positive, negative, pretty_name, unit, label_names, service, host "
    f"FROM format(JSONEachRow, '{_STRUCTURE}', {{rows:String}})"
)


_INSERT_CHARS = 200_000


def labels_key(labels: Mapping[str, str]) -> str:
    """The canonical text of a label set (sorted JSON): equal sets, equal keys."""
    return json.dumps(dict(sorted(labels.items())), ensure_ascii=False, separators=(",", ":"))


def _finite(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else 0.0


def point_rows(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``metrics`` events → one row per point (the insert's JSON rows)."""
    rows: list[dict[str, Any]] = []
    for event in events:
        service, host = event.get("service", ""), event.get("host", "")
        for metric in event.get("metrics") or ():
            kind = metric["kind"]
            if kind not in METRIC_KINDS:
                raise StorageError(f"metric {metric.get('name')!r} has unknown kind {kind!r}")
            for p in metric["points"]:
                labels = dict(p.get("labels") or {})
                pos_offset, neg_offset = (
                    int(p.get("positive_offset", 0)),
                    int(p.get("negative_offset", 0)),
                )
                rows.append(
                    {
                        "point_id": p["point_id"],
                        "name": metric["name"],
                        "kind": kind,
                        "tenant": p["tenant"],
                        "labels": labels,
                        "labels_key": labels_key(labels),
                        "start_us": int(p["start"]),
                        "time_us": int(p["time"]),
                        "value": _finite(p.get("value", 0.0)),
                        "count": int(p.get("count", 0)),
                        "sum": _finite(p.get("sum", 0.0)),
                        "min": _finite(p.get("min", 0.0)),
                        "max": _finite(p.get("max", 0.0)),
                        "scale": int(p.get("scale", 0)),
                        "zero_count": int(p.get("zero_count", 0)),
                        "positive": {
                            str(pos_offset + i): int(c)
                            for i, c in enumerate(p.get("positive") or ())
                            if c
                        },
                        "negative": {
                            str(neg_offset + i): int(c)
                            for i, c in enumerate(p.get("negative") or ())
                            if c
                        },
                        "pretty_name": metric.get("pretty_name") or metric["name"],
                        "unit": metric.get("unit") or "",
                        "label_names": list(metric.get("label_names") or ()),
                        "service": service,
                        "host": host,
                    }
                )
    return rows


class _Binder:
    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def __call__(self, value: Any, type_: str) -> str:
        name = f"m{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{type_}}}"


def _minute_of(micros: int) -> int:
    return micros // 60_000_000 * 60


def write_points(execute: Execute, events: Sequence[Mapping[str, Any]], token: str) -> int:
    """Write the points of ``metrics`` events and re-project the minutes they
    touch; the number of points. Writing the same points again changes nothing
    queries return."""
    # Here, not at the top: _avro imports _schema, which imports this module.
    from dashfrog.storage._avro import sql_quote

    rows = point_rows(events)
    if not rows:
        return 0
    # The rows travel as one bound parameter, which a server takes in the URL
    # (percent-encoded, under its 1 MiB URI limit): inserts of at most about
    # 200 kB of JSON each.
    lines = [json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows]
    chunk: list[str] = []
    size = part = 0
    for i, line in enumerate(lines):
        chunk.append(line)
        size += len(line) + 1
        if size >= _INSERT_CHARS or i == len(lines) - 1:
            execute(
                _INSERT + f" SETTINGS insert_deduplication_token = {sql_quote(f'{token}-{part}')}",
                {"rows": "\n".join(chunk)},
            )
            chunk, size, part = [], 0, part + 1
    keys = sorted({(r["tenant"], r["name"], _minute_of(r["time_us"])) for r in rows})
    reproject(execute, keys)
    return len(rows)


def reproject(execute: Execute, keys: Sequence[tuple[str, str, int]]) -> None:
    """Recompute ``metric_minutes`` for (tenant, name, minute epoch seconds) keys."""
    for start in range(0, len(keys), 200):
        bind = _Binder()
        tuples = ", ".join(
            f"({bind(t, 'String')}, {bind(n, 'String')}, toDateTime({bind(m, 'UInt32')}, 'UTC'))"
            for t, n, m in keys[start : start + 200]
        )
        where = f"WHERE (tenant, name, toStartOfMinute(time)) IN ({tuples})"
        execute(
            "INSERT INTO metric_minutes " + _MINUTES_SELECT.replace("{where}", where), bind.params
        )


def rebuild(execute: Execute) -> None:
    """Re-project the catalog and every minute from ``metric_points``."""
    execute("TRUNCATE TABLE IF EXISTS metric_catalog", None)
    execute(
        "INSERT INTO metric_catalog "  # noqa: S608 - values are bound parameters
        + _CATALOG_SELECT.replace("{source}", "(SELECT * FROM metric_points FINAL)"),
        None,
    )
    execute("TRUNCATE TABLE IF EXISTS metric_minutes", None)
    execute("INSERT INTO metric_minutes " + _MINUTES_SELECT.replace("{where}", ""), None)


# -- reads ------------------------------------------------------------------------


def _ts(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace(" ", "T")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _list(query: Query, tenant: str | None = None) -> MetricList:
    """Declared metrics (with points in ``tenant`` when given), by name."""
    bind = _Binder()
    where = f"WHERE tenant = {bind(tenant, 'String')}" if tenant is not None else ""
    rows = query(
        "SELECT name, max(declaration) AS d, uniqExact(tenant) AS tenants,"  # noqa: S608 - values are bound parameters
        " min(first_seen) AS first_seen, max(last_seen) AS last_seen"
        f" FROM metric_catalog {where} GROUP BY name ORDER BY name",
        bind.params,
    )
    out = []
    for row in rows:
        declaration = _declaration(row["d"])
        out.append(
            MetricInfo(
                name=row["name"],
                kind=declaration[1],
                pretty_name=declaration[2] or row["name"],
                unit=declaration[3],
                labels=list(declaration[4]),
                tenants=int(row["tenants"]),
                first_seen=_ts(row["first_seen"]),
                last_seen=_ts(row["last_seen"]),
            )
        )
    return MetricList(metrics=out)


def _declaration(value: Any) -> tuple[Any, ...]:
    # Drivers give a tuple as a list, a dict keyed by position, or a tuple.
    if isinstance(value, dict):
        return tuple(
            value[k] for k in sorted(value, key=lambda k: int(k) if str(k).isdigit() else 0)
        )
    return tuple(value)


def _info(query: Query, name: str, tenant: str | None) -> MetricInfo | None:
    bind = _Binder()
    where = [f"name = {bind(name, 'String')}"]
    if tenant is not None:
        where.append(f"tenant = {bind(tenant, 'String')}")
    rows = query(
        "SELECT name, max(declaration) AS d, uniqExact(tenant) AS tenants,"  # noqa: S608 - values are bound parameters
        " min(first_seen) AS first_seen, max(last_seen) AS last_seen"
        f" FROM metric_catalog WHERE {' AND '.join(where)} GROUP BY name",
        bind.params,
    )
    if not rows:
        return None
    declaration = _declaration(rows[0]["d"])
    return MetricInfo(
        name=name,
        kind=declaration[1],
        pretty_name=declaration[2] or name,
        unit=declaration[3],
        labels=list(declaration[4]),
        tenants=int(rows[0]["tenants"]),
        first_seen=_ts(rows[0]["first_seen"]),
        last_seen=_ts(rows[0]["last_seen"]),
    )


def _filtered(flt: MetricFilter, bind: _Binder) -> tuple[str, list[str]]:
    """The WHERE clause over metric_minutes and the group expressions."""
    since = int(flt.since.timestamp()) // 60 * 60
    where = [
        f"name = {bind(flt.name, 'String')}",
        f"minute >= toDateTime({bind(since, 'UInt32')}, 'UTC')",
        f"minute < toDateTime({bind(math.ceil(flt.until.timestamp()), 'UInt32')}, 'UTC')",
    ]
    if flt.tenant is not None:
        where.append(f"tenant = {bind(flt.tenant, 'String')}")
    for key, value in (flt.labels or {}).items():
        where.append(f"labels[{bind(key, 'String')}] = {bind(value, 'String')}")
    groups = ["tenant" if g == "tenant" else f"labels[{bind(g, 'String')}]" for g in flt.group_by]
    return " AND ".join(where), groups


def _series(query: Query, flt: MetricFilter, info: MetricInfo) -> MetricSeries:
    """Time-bucketed values of one metric (see MetricRow for the fields per kind)."""
    bind = _Binder()
    where, groups = _filtered(flt, bind)
    step = bind(flt.step_s, "UInt32")
    group_cols = "".join(f", {expr} AS g{i}" for i, expr in enumerate(groups))
    group_names = "".join(f", g{i}" for i in range(len(groups)))
    sql = (
        "SELECT t" + group_names + ","  # noqa: S608 - values are bound parameters
        " sum(p_total) AS total, sum(p_count) AS count, sum(p_sum) AS sum,"
        " min(p_min) AS min, max(p_max) AS max, toInt32(min(p_scale)) AS scale,"
        " sum(p_zero) AS zero_count,"
        " sumMap(mapApply((k, v) -> (bitShiftRight(k, toUInt8(p_scale - p_target)), v), p_positive)) AS positive,"
        " sumMap(mapApply((k, v) -> (bitShiftRight(k, toUInt8(p_scale - p_target)), v), p_negative)) AS negative,"
        " argMax(p_last, p_last_time) AS last"
        " FROM ("
        f"SELECT toStartOfInterval(minute, toIntervalSecond({step})) AS t{group_cols},"
        " total AS p_total, count AS p_count, sum AS p_sum, min AS p_min, max AS p_max,"
        " scale AS p_scale, zero_count AS p_zero, positive AS p_positive, negative AS p_negative,"
        " last AS p_last, last_time AS p_last_time,"
        f" min(scale) OVER (PARTITION BY t{group_names}) AS p_target"
        f" FROM metric_minutes FINAL WHERE {where}"
        f") GROUP BY t{group_names} ORDER BY t{group_names}"
    )
    rows = query(sql, bind.params)
    now = datetime.now(UTC)
    end = min(flt.until, now)
    out: list[MetricRow] = []
    coarsest: int | None = None
    for row in rows:
        time = _ts(row["t"])
        assert time is not None
        group = {g: str(row[f"g{i}"]) for i, g in enumerate(flt.group_by)}
        if info.kind == "counter":
            seconds = max(1.0, min(float(flt.step_s), (end - time).total_seconds()))
            total = float(row["total"])
            out.append(MetricRow(time=time, group=group, total=total, rate=total / seconds))
        elif info.kind == "gauge":
            out.append(
                MetricRow(
                    time=time,
                    group=group,
                    last=float(row["last"]),
                    min=float(row["min"]),
                    max=float(row["max"]),
                )
            )
        else:
            count = int(row["count"])
            if not count:
                continue
            scale = int(row["scale"])
            lo, hi = float(row["min"]), float(row["max"])
            pos = {int(k): int(v) for k, v in (row["positive"] or {}).items()}
            neg = {int(k): int(v) for k, v in (row["negative"] or {}).items()}
            p50, p95, p99 = percentiles(
                (0.5, 0.95, 0.99), scale, pos, neg, int(row["zero_count"]), lo, hi
            )
            if pos or neg:
                coarsest = scale if coarsest is None else min(coarsest, scale)
            total_sum = float(row["sum"])
            out.append(
                MetricRow(
                    time=time,
                    group=group,
                    count=count,
                    sum=total_sum,
                    avg=total_sum / count,
                    min=lo,
                    max=hi,
                    p50=p50,
                    p95=p95,
                    p99=p99,
                )
            )
    return MetricSeries(
        name=info.name,
        kind=info.kind,
        pretty_name=info.pretty_name,
        unit=info.unit,
        tenant=flt.tenant,
        labels=flt.labels,
        group_by=flt.group_by,
        since=flt.since,
        until=flt.until,
        step_s=flt.step_s,
        error_bound=error_bound(coarsest) if coarsest is not None else None,
        rows=out,
    )


def _ratio(query: Query, flt: MetricFilter, info: MetricInfo) -> MetricRatio:
    """Per bucket, the share of the measure (counter total, histogram count)
    whose labels match ``flt.where``."""
    if info.kind == "gauge":
        raise QueryError(f"{info.name} is a gauge: a ratio needs a counter or a histogram")
    if not flt.where:
        raise QueryError('metric_ratio needs where={"label": "value"}: the share to compute')
    bind = _Binder()
    where, groups = _filtered(flt, bind)
    step = bind(flt.step_s, "UInt32")
    condition = " AND ".join(
        (
            f"tenant = {bind(v, 'String')}"
            if k == "tenant"
            else f"labels[{bind(k, 'String')}] = {bind(v, 'String')}"
        )
        for k, v in flt.where.items()
    )
    measure = "toFloat64(count)" if info.kind == "histogram" else "total"
    group_cols = "".join(f", {expr} AS g{i}" for i, expr in enumerate(groups))
    group_names = "".join(f", g{i}" for i in range(len(groups)))
    sql = (
        f"SELECT toStartOfInterval(minute, toIntervalSecond({step})) AS t{group_cols},"  # noqa: S608 - values are bound parameters
        f" sumIf({measure}, {condition}) AS matching, sum({measure}) AS overall"
        f" FROM metric_minutes FINAL WHERE {where}"
        f" GROUP BY t{group_names} ORDER BY t{group_names}"
    )
    rows = []
    for row in query(sql, bind.params):
        time = _ts(row["t"])
        assert time is not None
        total = float(row["overall"])
        matching = float(row["matching"])
        rows.append(
            RatioRow(
                time=time,
                group={g: str(row[f"g{i}"]) for i, g in enumerate(flt.group_by)},
                matching=matching,
                total=total,
                ratio=matching / total if total else None,
            )
        )
    return MetricRatio(
        name=info.name, kind=info.kind, where=flt.where, tenant=flt.tenant, labels=flt.labels,
        group_by=flt.group_by, since=flt.since, until=flt.until, step_s=flt.step_s, rows=rows,
    )  # fmt: skip


# -- the storage public face: functions of a store -------------------------------------


def list_metrics(store: Any, tenant: str | None = None) -> MetricList:
    """Declared metrics (those with points in ``tenant`` when given), by name."""
    return _list(store._query, tenant)


def metric_info(store: Any, name: str, tenant: str | None = None) -> MetricInfo | None:
    """One metric's declaration; None when it has no points (in ``tenant``)."""
    return _info(store._query, name, tenant)


def metric_series(store: Any, flt: MetricFilter) -> MetricSeries | None:
    """Time-bucketed values of ``flt.name``; None when the metric has no points
    (in ``flt.tenant``: another tenant's metric names stay unseen)."""
    info = _info(store._query, flt.name, flt.tenant)
    return None if info is None else _series(store._query, flt, info)


def metric_ratio(store: Any, flt: MetricFilter) -> MetricRatio | None:
    """Share of ``flt.where`` per bucket; None when the metric is unknown (in ``flt.tenant``)."""
    info = _info(store._query, flt.name, flt.tenant)
    return None if info is None else _ratio(store._query, flt, info)


# -- percentiles from exponential buckets -------------------------------------------------


def error_bound(scale: int) -> float:
    """Largest relative error of a percentile read from buckets at ``scale``."""
    base = 2.0 ** (2.0**-scale)
    return (base - 1) / (base + 1)


def _estimate(index: int, scale: int) -> float:
    """The point of bucket (b**i, b**(i+1)] nearest, relatively, to all of it."""
    base = 2.0 ** (2.0**-scale)
    lo = base**index
    hi = lo * base
    return 2 * lo * hi / (lo + hi)


def percentiles(
    qs: Sequence[float],
    scale: int,
    positive: Mapping[int, int],
    negative: Mapping[int, int],
    zero: int,
    lo: float,
    hi: float,
) -> list[float | None]:
    """Nearest-rank percentiles ``qs`` of a histogram, each within
    ``error_bound(scale)`` of the true one (clamped to the recorded min/max)."""
    # Ascending value order: most negative first, then zero, then positive.
    ordered: list[tuple[float, int]] = [
        (-_estimate(i, scale), negative[i]) for i in sorted(negative, reverse=True)
    ]
    if zero:
        ordered.append((0.0, zero))
    ordered += [(_estimate(i, scale), positive[i]) for i in sorted(positive)]
    count = sum(c for _, c in ordered)
    if not count:
        return [None for _ in qs]
    out: list[float | None] = []
    for q in qs:
        rank = max(1, math.ceil(q * count))
        seen = 0
        value = ordered[-1][0]
        for estimate, c in ordered:
            seen += c
            if seen >= rank:
                value = estimate
                break
        out.append(min(max(value, lo), hi))
    return out
