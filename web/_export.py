"""Charts and export over HTTP: stats and runs over time for the list's full
filter set, flows streamed as CSV or NDJSON, one flow downloaded as JSON.

The chart routes take the same filters as ``GET /api/flows`` (status and
labels included) and aggregate over the same rows, so every number on the
page follows every filter. Exports page through the store by flow-id cursor:
memory holds one page whatever the number of flows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from dashfrog._export import flows_csv
from dashfrog._models import (
    FlowDetail,
    FlowFilter,
    FlowSummary,
    StepFailureCount,
    parse_label_pairs,
)
from dashfrog.storage import Store
from dashfrog.web._auth import Caller, scope_tenant
from dashfrog.web._deps import StoreDep, number_or_text
from dashfrog.web._errors import ERRORS

EXPORT_PAGE = 1000
EXPORT_FORMATS = ("csv", "ndjson")

StoreRunner = Callable[..., Awaitable[Any]]
LabelPairs = Annotated[list[str] | None, Query(description="key=value (or key:value), repeatable; all must match")]
JsonLabels = Annotated[str | None, Query(description='JSON object, e.g. {"env":"prod"}')]


@dataclass(frozen=True)
class FlowQuery:
    """The flow list's filter parameters, already scoped to the caller's tenant:
    ``GET /api/flows`` and the chart routes take the same ones."""

    tenant: str | None
    status: str | None
    name: str | None
    label: list[str] | None
    labels: str | None
    since: str | None
    until: str | None

    def filter(self, **extra: Any) -> FlowFilter:
        """The validated filter; ``extra`` adds e.g. ``limit`` and ``cursor``."""
        merged: dict[str, str] = {}
        if self.labels:
            merged.update(FlowFilter.parse(labels=self.labels).labels or {})
        merged.update(parse_label_pairs(self.label or []))
        return FlowFilter.parse(  # type: ignore[no-any-return]
            tenant=self.tenant,
            status=self.status,
            name=self.name,
            labels=merged or None,
            since=number_or_text(self.since),
            until=number_or_text(self.until),
            **extra,
        )


def flow_query(
    who: Caller,
    tenant: str | None = None,
    status: str | None = None,
    name: str | None = None,
    label: LabelPairs = None,
    labels: JsonLabels = None,
    since: str | None = None,
    until: str | None = None,
) -> FlowQuery:
    return FlowQuery(scope_tenant(who, tenant), status, name, label, labels, since, until)


# A route parameter typed ``FlowQueryDep`` takes the flow list's filter parameters.
FlowQueryDep = Annotated[FlowQuery, Depends(flow_query)]

def ndjson_lines(flows: list[FlowSummary]) -> str:
    return "".join(json.dumps(f.model_dump(mode="json"), sort_keys=True) + "\n" for f in flows)


def _filename(stem: str, ext: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80]
    return f"{safe}-{stamp}.{ext}"


async def export_flows(
    store: Store, run: StoreRunner, flt: FlowFilter, fmt: str
) -> StreamingResponse:
    """Every flow matching ``flt`` (its limit and cursor ignored), newest first."""
    first = await run(
        store.find_flows, flt.model_copy(update={"limit": EXPORT_PAGE, "cursor": None})
    )

    async def body() -> AsyncIterator[str]:
        page, header = first, True
        while True:
            flows = list(page.flows)
            yield flows_csv(flows, header=header) if fmt == "csv" else ndjson_lines(flows)
            header = False
            if page.next_cursor is None:
                return
            page = await run(
                store.find_flows,
                flt.model_copy(update={"limit": EXPORT_PAGE, "cursor": page.next_cursor}),
            )

    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(
        body(),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{_filename("flows", fmt)}"',
            "Cache-Control": "no-store",
        },
    )


async def export_flow(store: Store, run: StoreRunner, detail: FlowDetail) -> JSONResponse:
    """One flow with its step tree, errors, custom events and every raw event, as a download."""
    body = detail.model_dump(mode="json")
    raw = await run(store.flow_events, detail.tenant, detail.flow_id)
    body["raw_events"] = json.loads(json.dumps(raw, default=_json_default))
    return JSONResponse(
        body,
        headers={
            "Content-Disposition": f'attachment; filename="{_filename("flow-" + detail.flow_id, "json")}"',
            "Cache-Control": "no-store",
        },
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot encode {type(value).__name__}")


class DurationBucket(BaseModel):
    """Flows whose duration falls in [lo_ms, hi_ms); hi_ms null: the last, open bucket."""

    lo_ms: float
    hi_ms: float | None
    count: int


class FlowOverview(BaseModel):
    """The cards, histogram and failures of the page over every matching flow."""

    runs: int
    running: int = Field(description="Running, stalled ones included")
    stalled: int
    succeeded: int
    failed: int
    success_rate: float | None = Field(description="succeeded / finished; null: none finished")
    duration_p50_ms: float | None
    duration_p95_ms: float | None
    duration_p99_ms: float | None
    histogram: list[DurationBucket] = Field(
        description="1-2-5 ms buckets from the first to the last non-empty one"
    )
    failures_by_step: list[StepFailureCount] = Field(description="Most failures first, at most 100")


class TimeseriesPoint(BaseModel):
    """Flows started in the bucket beginning at ``t``, by status, and their durations."""

    t: datetime
    running: int = Field(description="Running and not stalled")
    stalled: int
    success: int
    failed: int
    p50_ms: float | None
    p95_ms: float | None


class FlowTimeseries(BaseModel):
    bucket_s: int
    points: list[TimeseriesPoint] = Field(description="Every bucket of the range, empty ones as zeros")


router = APIRouter(prefix="/api/stats", tags=["charts"], responses=ERRORS)


@router.get("/overview", response_model=FlowOverview)
async def overview(
    query: FlowQueryDep,
    store: StoreDep,
) -> Any:
    """Runs by status, success rate, duration percentiles, a duration
    histogram (1-2-5 ms buckets) and failures per step, over every flow
    the same filters as ``GET /api/flows`` select."""
    flt = query.filter()
    return await run_in_threadpool(store.flow_overview, flt)


@router.get("/timeseries", response_model=FlowTimeseries)
async def timeseries(
    query: FlowQueryDep,
    store: StoreDep,
    bucket: Annotated[
        int | None,
        Query(ge=1, le=31 * 86_400, description="bucket width in seconds (default: about 60 buckets)"),
    ] = None,
) -> Any:
    """Flows started per bucket by status (running, stalled, success,
    failed) and their duration p50/p95, over the range of ``since`` /
    ``until`` (or of the matching flows), empty buckets included; 400 when
    ``bucket`` would give more than 500 buckets."""
    flt = query.filter()
    return await run_in_threadpool(lambda: store.flow_timeseries(flt, bucket_s=bucket))
