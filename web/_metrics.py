"""Metrics over HTTP: the declared metrics, one metric in time buckets, a ratio.

Tenant credentials are scoped as for flows: a tenant token lists and reads
only its tenant's points (another tenant's metric is a 404, never an empty
answer that would confirm its name), and asking for another tenant is a 403.
The models of :mod:`dashfrog._metric_models` are the contract
``dashfrog.query.metric(...)`` parses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from dashfrog._metric_models import MetricFilter
from dashfrog.storage import Store, list_metrics, metric_ratio, metric_series
from dashfrog.web._auth import Authenticator, scope_tenant
from dashfrog.web._deps import number_or_text

StoreRunner = Callable[..., Awaitable[Any]]
AuthHeader = Annotated[str | None, Header(description="Bearer token: admin or tenant-scoped")]
Labels = Annotated[
    str | None, Query(description='JSON object of exact label matches, e.g. {"env":"prod"}')
]
GroupBy = Annotated[
    str | None, Query(description="comma-separated label names (or tenant) to split rows by")
]
Step = Annotated[str, Query(description="bucket width: 1m, 5m, 1h, 1d or seconds (whole minutes)")]


def _not_found(name: str) -> JSONResponse:
    return JSONResponse(
        {"detail": f"no metric named {name!r} has points in your scope"}, status_code=404
    )


def metrics_router(store: Store, auth: Authenticator, run: StoreRunner) -> APIRouter:
    """``/api/metrics`` routes over ``store``; ``run`` runs blocking store calls off the loop."""
    router = APIRouter()

    def parse(
        name: str,
        authorization: str | None,
        tenant: str | None,
        labels: str | None,
        since: str | None,
        until: str | None,
        step: str,
        group_by: str | None,
        where: str | None = None,
    ) -> MetricFilter:
        """The filter of a metric route, in the caller's tenant scope."""
        return MetricFilter.parse(
            name=name,
            where=where,
            tenant=scope_tenant(auth.principal(authorization), tenant),
            labels=labels,
            since=number_or_text(since),
            until=number_or_text(until),
            step=step,
            group_by=group_by,
        )

    @router.get("/api/metrics")
    async def metrics(authorization: AuthHeader = None, tenant: str | None = None) -> Any:
        """Declared metrics with kind, pretty name, unit and labels."""
        scope = scope_tenant(auth.principal(authorization), tenant)
        found = await run(list_metrics, store, scope)
        return found.model_dump(mode="json")

    @router.get("/api/metrics/{name}")
    async def metric(
        name: str,
        authorization: AuthHeader = None,
        tenant: str | None = None,
        labels: Labels = None,
        since: str | None = None,
        until: str | None = None,
        step: Step = "1m",
        group_by: GroupBy = None,
    ) -> Any:
        """One metric in time buckets: counter total and rate; histogram count,
        sum, avg, min, max and p50/p95/p99 (with ``error_bound``); gauge last,
        min and max."""
        flt = parse(name, authorization, tenant, labels, since, until, step, group_by)
        found = await run(metric_series, store, flt)
        return _not_found(name) if found is None else found.model_dump(mode="json")

    @router.get("/api/metrics/{name}/ratio")
    async def ratio(
        name: str,
        where: Annotated[
            str,
            Query(
                description='JSON object: the label values whose share to compute, e.g. {"status":"500"}'
            ),
        ],
        authorization: AuthHeader = None,
        tenant: str | None = None,
        labels: Labels = None,
        since: str | None = None,
        until: str | None = None,
        step: Step = "1m",
        group_by: GroupBy = None,
    ) -> Any:
        """Per bucket, the share of a counter's total (a histogram's count) matching ``where``."""
        flt = parse(name, authorization, tenant, labels, since, until, step, group_by, where)
        found = await run(metric_ratio, store, flt)
        return _not_found(name) if found is None else found.model_dump(mode="json")

    return router
