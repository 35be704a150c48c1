"""``/api/flows``, ``/api/flows/{id}``, ``/api/stats``, ``/api/whoami`` and
``/api/stream``: flow state read by tenant.

Every route takes the caller as a ``Caller`` dependency (401 without a valid
token) and declares its response model, so ``/openapi.json`` is the contract
that ``dashfrog.query`` parses. Store calls run in worker threads, off the
event loop.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from dashfrog._exceptions import QueryError
from dashfrog._models import FlowDetail, FlowList, FlowStats, StatsFilter
from dashfrog.web._auth import Caller, scope_tenant
from dashfrog.web._deps import StoreDep, number_or_text
from dashfrog.web._errors import ERRORS, error
from dashfrog.web._export import EXPORT_FORMATS, FlowQueryDep, export_flow, export_flows
from dashfrog.web._live import CLOSE, LiveHub, TooManySubscribers

router = APIRouter(prefix="/api", tags=["flows"], responses=ERRORS)


class WhoAmI(BaseModel):
    """Who a credential is, and what the page needs to know about the API."""

    tenant: str | None = Field(description="The one tenant this credential reads; null: every tenant")
    admin: bool
    open: bool = Field(description="No token is configured: the API is open (loopback or explicit opt-in)")
    stalled_after_s: float = Field(description="A running flow quiet this long shows as stalled")


_CSV_OR_NDJSON = {
    "description": "One page as JSON; with format=csv or ndjson every matching flow as a download",
    "content": {"text/csv": {"schema": {"type": "string"}}, "application/x-ndjson": {"schema": {"type": "string"}}},
}


@router.get("/flows", response_model=FlowList, responses={200: _CSV_OR_NDJSON})
async def flows(
    query: FlowQueryDep,
    store: StoreDep,
    limit: int = 100,
    cursor: str | None = None,
    format: Annotated[str, Query(description="json (one page), or csv / ndjson: every matching flow")] = "json",
) -> Any:
    """Flows matching every filter, newest first; pass ``next_cursor`` back as ``cursor``.
    ``format=csv`` or ``ndjson`` streams every matching flow as a download."""
    flt = query.filter(limit=limit, cursor=cursor)
    if format in EXPORT_FORMATS:
        return await export_flows(store, run_in_threadpool, flt, format)
    if format != "json":
        raise QueryError(f"format={format!r}: use json, csv or ndjson")
    return await run_in_threadpool(store.find_flows, flt)


@router.get("/flows/{flow_id}", response_model=FlowDetail, responses={404: ERRORS[400]})
async def flow(
    flow_id: str, who: Caller, store: StoreDep, tenant: str | None = None, format: str | None = None
) -> Any:
    """One flow with its step tree, errors and custom events; ``tenant`` narrows the lookup.
    ``format=json`` downloads it with every raw event as an attachment."""
    detail = await run_in_threadpool(store.flow, flow_id, scope_tenant(who, tenant))
    if detail is None:
        # A tenant credential gets 404 for other tenants' flows too: ids never leak.
        return error(404, f"no flow {flow_id!r}")
    if format is not None:
        if format != "json":
            raise QueryError(f"format={format!r}: a flow downloads as format=json")
        return await export_flow(store, run_in_threadpool, detail)
    return detail


@router.get("/stats", response_model=FlowStats)
async def stats(
    who: Caller,
    store: StoreDep,
    tenant: str | None = None,
    name: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Any:
    """Runs, success rate, duration percentiles and failures per step."""
    flt = StatsFilter.parse(
        tenant=scope_tenant(who, tenant),
        name=name,
        since=number_or_text(since),
        until=number_or_text(until),
    )
    return await run_in_threadpool(store.find_stats, flt)


@router.get("/whoami", response_model=WhoAmI)
async def whoami(who: Caller, request: Request, store: StoreDep) -> WhoAmI:
    """Who the credential is: the tenant it reads, or every tenant."""
    return WhoAmI(
        tenant=who.tenant,
        admin=who.is_admin,
        open=request.app.state.auth.open,
        # The page turns a quiet running row stalled on its own: no event announces it.
        stalled_after_s=store.stalled_after_s,
    )


_SSE = {
    "description": "Server-sent events: `hello` on connect, `flows` (a JSON array of flow "
    "summaries whose state changed, in the caller's scope), `resync` (reload: updates were dropped)",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


@router.get("/stream", response_class=EventSourceResponse, responses={200: _SSE, 503: ERRORS[400]})
async def stream(who: Caller, request: Request, tenant: str | None = None) -> Any:
    """Live updates of the flow list. Send the token as a header (fetch-based
    streaming): it never goes in the URL."""
    scope = scope_tenant(who, tenant)
    hub: LiveHub = request.app.state.live
    try:
        sub = hub.subscribe(scope)
    except TooManySubscribers as exc:
        return error(503, str(exc))

    async def messages() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"event": "hello", "data": json.dumps({"tenant": scope})}
            while True:
                message = await sub.queue.get()
                kind = message.pop("type")
                if kind == CLOSE:
                    return
                yield {"event": kind, "data": json.dumps(message, separators=(",", ":"))}
        finally:
            hub.unsubscribe(sub)

    return EventSourceResponse(
        messages(), ping=15, send_timeout=30, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
