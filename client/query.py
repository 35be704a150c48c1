"""Query projected flows: ``from dashfrog import query``.

::

    from dashfrog import query

    for f in query.flows(tenant="acme-corp", status="failed", labels={"env": "prod"}):
        print(f.flow_id, f.name, f.error)
    detail = query.flow(flow_id)
    query.stats(tenant="acme-corp", name="data_import").success_rate
    query.sql("SELECT tenant, count() FROM flows GROUP BY tenant").to_pandas()
    query.metric("api_calls", tenant="acme-corp", since=timedelta(hours=6), step="5m").to_pandas()

Where the answers come from, first match wins:

1. a store registered in this process with :func:`use_store` (``dashfrog up``
   does this: the process that owns the chDB database serves its own reads);
2. the ClickHouse server of ``DASHFROG_CLICKHOUSE_URL`` when it is
   ``clickhouse://`` (any process can read a server directly);
3. otherwise the HTTP API of a running ``dashfrog up`` / ``dashfrog api`` at
   ``DASHFROG_API_URL`` (default ``http://DASHFROG_API_HOST:DASHFROG_API_PORT``).

HTTP contract (the models' JSON, ``model_dump(mode="json")``):

- ``GET /api/flows?tenant=&status=&name=&labels=<JSON object>&since=<ISO 8601>&until=&limit=&cursor=``
  → :class:`FlowList`
- ``GET /api/flows/{flow_id}?tenant=`` → :class:`FlowDetail`, 404 when unknown
- ``GET /api/stats?tenant=&name=&since=&until=`` → :class:`FlowStats`
- ``POST /api/sql`` with ``{"sql": "...", "params": {...}}`` → :class:`SqlResult`
- ``GET /api/metrics?tenant=`` → :class:`MetricList`
- ``GET /api/metrics/{name}?tenant=&labels=<JSON object>&since=&until=&step=<seconds>&group_by=a,b``
  → :class:`MetricSeries`, 404 when the metric has no points (in the tenant)
- ``GET /api/metrics/{name}/ratio?where=<JSON object>&...`` (same parameters) → :class:`MetricRatio`
- invalid filters or SQL: 400 with ``{"detail": "reason"}``, raised here as QueryError.

Requests carry ``Authorization: Bearer DASHFROG_ADMIN_TOKEN`` when that is set.
This module imports with the SDK's dependencies only.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from dashfrog._exceptions import DashfrogError, QueryError
from dashfrog._metric_models import (
    MetricFilter,
    MetricInfo,
    MetricList,
    MetricRatio,
    MetricRow,
    MetricSeries,
    RatioRow,
)
from dashfrog._models import (
    ErrorInfo,
    FlowDetail,
    FlowEventRecord,
    FlowFilter,
    FlowList,
    FlowStats,
    FlowSummary,
    SqlResult,
    StatsFilter,
    StepFailureCount,
    StepRecord,
)
from dashfrog._settings import get_settings

if TYPE_CHECKING:  # the SDK imports without the storage extra
    from dashfrog.storage import Store

TimeArg = datetime | timedelta | str | int | float | None

_HTTP_TIMEOUT_S = 30.0


class _Backend(Protocol):
    def flows(self, flt: FlowFilter) -> FlowList: ...
    def flow(self, flow_id: str, tenant: str | None) -> FlowDetail | None: ...
    def stats(self, flt: StatsFilter) -> FlowStats: ...
    def sql(self, sql: str, params: Mapping[str, Any] | None) -> SqlResult: ...
    def metrics(self, tenant: str | None) -> MetricList: ...
    def metric(self, flt: MetricFilter) -> MetricSeries | None: ...
    def metric_ratio(self, flt: MetricFilter) -> MetricRatio | None: ...


class _StoreBackend:
    def __init__(self, store: Store) -> None:
        self.store = store

    def flows(self, flt: FlowFilter) -> FlowList:
        return self.store.find_flows(flt)

    def flow(self, flow_id: str, tenant: str | None) -> FlowDetail | None:
        return self.store.flow(flow_id, tenant)

    def stats(self, flt: StatsFilter) -> FlowStats:
        return self.store.find_stats(flt)

    def sql(self, sql: str, params: Mapping[str, Any] | None) -> SqlResult:
        rows = self.store.select(sql, params)
        return SqlResult(columns=list(rows[0]) if rows else [], rows=rows)

    def metrics(self, tenant: str | None) -> MetricList:
        from dashfrog.storage import list_metrics

        return list_metrics(self.store, tenant)

    def metric(self, flt: MetricFilter) -> MetricSeries | None:
        from dashfrog.storage import metric_series

        return metric_series(self.store, flt)

    def metric_ratio(self, flt: MetricFilter) -> MetricRatio | None:
        from dashfrog.storage import metric_ratio

        return metric_ratio(self.store, flt)


class _HttpBackend:
    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def _request(
        self, path: str, query: Mapping[str, str] | None = None, body: Any = None
    ) -> Any | None:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and path.startswith(("/api/flows/", "/api/metrics/")):
                return None
            detail = _error_detail(exc)
            if exc.code in (400, 422):
                raise QueryError(detail) from None
            raise DashfrogError(
                f"DashFrog API {self.base_url} answered {exc.code}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise DashfrogError(
                f"cannot reach the DashFrog API at {self.base_url} ({exc}); start `dashfrog up` "
                "or `dashfrog api`, or set DASHFROG_API_URL / DASHFROG_CLICKHOUSE_URL"
            ) from None

    def flows(self, flt: FlowFilter) -> FlowList:
        return FlowList.model_validate(self._request("/api/flows", flt.query_params()))

    def flow(self, flow_id: str, tenant: str | None) -> FlowDetail | None:
        path = "/api/flows/" + urllib.parse.quote(flow_id, safe="")
        found = self._request(path, {"tenant": tenant} if tenant else None)
        return None if found is None else FlowDetail.model_validate(found)

    def stats(self, flt: StatsFilter) -> FlowStats:
        return FlowStats.model_validate(self._request("/api/stats", flt.query_params()))

    def sql(self, sql: str, params: Mapping[str, Any] | None) -> SqlResult:
        body = {"sql": sql, "params": dict(params or {})}
        return SqlResult.model_validate(self._request("/api/sql", body=body))

    def metrics(self, tenant: str | None) -> MetricList:
        return MetricList.model_validate(self._request("/api/metrics", {"tenant": tenant} if tenant else None))

    def metric(self, flt: MetricFilter) -> MetricSeries | None:
        found = self._request("/api/metrics/" + urllib.parse.quote(flt.name, safe=""), flt.query_params())
        return None if found is None else MetricSeries.model_validate(found)

    def metric_ratio(self, flt: MetricFilter) -> MetricRatio | None:
        path = "/api/metrics/" + urllib.parse.quote(flt.name, safe="") + "/ratio"
        found = self._request(path, flt.query_params())
        return None if found is None else MetricRatio.model_validate(found)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"{}")
    except ValueError:
        return exc.reason or str(exc.code)
    detail = payload.get("detail") if isinstance(payload, dict) else None
    return str(detail or exc.reason or exc.code)


_lock = threading.Lock()
_registered: Store | None = None
_direct: dict[str, Store] = {}


def use_store(store: Store | None) -> None:
    """Answer queries in this process from ``store`` (None: back to the default).

    ``dashfrog up`` registers its store so in-process code reads it directly;
    tests register a chDB store in a temporary directory.
    """
    global _registered
    _registered = store


def _backend() -> _Backend:
    if _registered is not None:
        return _StoreBackend(_registered)
    settings = get_settings()
    url = settings.clickhouse_url
    if url.split("://", 1)[0].lower() in ("clickhouse", "clickhouses"):
        with _lock:
            store = _direct.get(url)
            if store is None:
                from dashfrog.storage import open_store

                store = _direct[url] = open_store(url)
        return _StoreBackend(store)
    base = settings.api_url or f"http://{settings.api_host}:{settings.api_port}"
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    return _HttpBackend(base, token)


def flows(
    tenant: str | None = None,
    status: str | None = None,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    since: TimeArg = None,
    until: TimeArg = None,
    limit: int = 100,
    cursor: str | None = None,
) -> FlowList:
    """Flows matching every given filter, newest first.

    ``status`` is running, success, failed or stalled (running with no
    activity for DASHFROG_STALLED_AFTER_S). ``labels`` must all match exactly.
    ``since``/``until`` bound the start time: datetimes (naive ones are UTC),
    a timedelta meaning "that long ago", epoch seconds, or a string in the
    CLI's and API's grammar: ISO 8601, ``15m``/``2h``/``7d``/``1w``, ``now``,
    ``today``, ``yesterday`` (UTC). Pass ``next_cursor`` of a page as
    ``cursor`` for the next one. ``flow()`` takes a unique id prefix too.
    """
    flt = FlowFilter.parse(
        tenant=tenant,
        status=status,
        name=name,
        labels=labels,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    return _backend().flows(flt)


def flow(flow_id: str, tenant: str | None = None) -> FlowDetail | None:
    """One flow with its step tree, errors and custom events; None when unknown."""
    if not isinstance(flow_id, str) or not flow_id:
        raise QueryError("flow_id must be a non-empty string")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise QueryError("tenant must be a non-empty string or None")
    return _backend().flow(flow_id, tenant)


def stats(
    tenant: str | None = None,
    name: str | None = None,
    since: TimeArg = None,
    until: TimeArg = None,
) -> FlowStats:
    """Runs, success rate, duration p50/p95/p99 and failures per step."""
    return _backend().stats(StatsFilter.parse(tenant=tenant, name=name, since=since, until=until))


def sql(query: str, params: Mapping[str, Any] | None = None) -> SqlResult:
    """Run one read-only statement (SELECT, WITH, SHOW, DESCRIBE) with
    ``{name:Type}`` parameters bound from ``params``."""
    if not isinstance(query, str) or not query.strip():
        raise QueryError("empty SQL: give one SELECT, WITH, SHOW or DESCRIBE statement")
    return _backend().sql(query, params)


def metrics(tenant: str | None = None) -> MetricList:
    """Declared metrics with kind, pretty name, unit and labels (those with
    points in ``tenant`` when given)."""
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise QueryError("tenant must be a non-empty string or None")
    return _backend().metrics(tenant)


def metric(
    name: str,
    tenant: str | None = None,
    labels: Mapping[str, str] | None = None,
    since: TimeArg = None,
    until: TimeArg = None,
    step: str | int | timedelta = "1m",
    group_by: list[str] | str | None = None,
) -> MetricSeries:
    """One metric in time buckets of ``step`` (whole minutes: "1m", "5m", "1h").

    Rows hold, for a counter, ``total`` and ``rate`` (per second); for a
    histogram, ``count``, ``sum``, ``avg``, ``min``, ``max`` and ``p50``/``p95``/
    ``p99`` (within ``error_bound``, see MetricSeries); for a gauge, ``last``,
    ``min`` and ``max``. ``labels`` must all match; ``group_by`` splits rows
    by label values (or ``"tenant"``). ``since`` defaults to an hour before
    ``until`` (default now). Raises QueryError for an unknown metric.
    """
    flt = MetricFilter.parse(
        name=name, tenant=tenant, labels=labels, since=since, until=until, step=step, group_by=group_by
    )
    found = _backend().metric(flt)
    if found is None:
        raise QueryError(_unknown(name, tenant))
    return found


def metric_ratio(
    name: str,
    where: Mapping[str, str],
    tenant: str | None = None,
    labels: Mapping[str, str] | None = None,
    since: TimeArg = None,
    until: TimeArg = None,
    step: str | int | timedelta = "1m",
    group_by: list[str] | str | None = None,
) -> MetricRatio:
    """Per bucket, the share of a counter's total (a histogram's count) whose
    labels match ``where``, e.g. ``where={"status": "500"}`` for an error rate."""
    flt = MetricFilter.parse(
        name=name, where=where, tenant=tenant, labels=labels, since=since, until=until, step=step,
        group_by=group_by,
    )  # fmt: skip
    if not flt.where:
        raise QueryError('metric_ratio needs where={"label": "value"}: the share to compute')
    found = _backend().metric_ratio(flt)
    if found is None:
        raise QueryError(_unknown(name, tenant))
    return found


def _unknown(name: str, tenant: str | None) -> str:
    scope = f" for tenant {tenant!r}" if tenant else ""
    return f"no metric named {name!r} has points{scope}; query.metrics() lists the known ones"


__all__ = [
    "ErrorInfo",
    "FlowDetail",
    "FlowEventRecord",
    "FlowFilter",
    "FlowList",
    "FlowStats",
    "FlowSummary",
    "MetricFilter",
    "MetricInfo",
    "MetricList",
    "MetricRatio",
    "MetricRow",
    "MetricSeries",
    "RatioRow",
    "SqlResult",
    "StatsFilter",
    "StepFailureCount",
    "StepRecord",
    "flow",
    "flows",
    "metric",
    "metric_ratio",
    "metrics",
    "sql",
    "stats",
    "use_store",
]
