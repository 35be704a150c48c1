"""The JSON read API over a store, the live stream and the web UI.

Responses are the models of :mod:`dashfrog._models` dumped as JSON: they are
the contract ``dashfrog.query`` parses. The SQL lives in
:mod:`dashfrog.storage._queries`; this module only parses parameters, checks
credentials and runs store calls off the event loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from dashfrog._exceptions import QueryError
from dashfrog._models import FlowFilter, SqlResult, StatsFilter
from dashfrog._models import parse_label_pairs as label_pairs
from dashfrog._settings import Settings, get_settings
from dashfrog.storage import QueryLimitError, Store
from dashfrog.web._alerts_api import alerts_router
from dashfrog.web._auth import Authenticator, Forbidden, Principal, Unauthorized, scope_tenant
from dashfrog.web._dead_letters import dead_letters_router
from dashfrog.web._export import EXPORT_FORMATS, export_flow, export_flows, export_router
from dashfrog.web._live import CLOSE, LiveHub, TooManySubscribers
from dashfrog.web._metrics import metrics_router

STATIC = Path(__file__).parent / "static"

# The page loads only its own script and style; data never becomes markup.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

# Module level: with postponed annotations FastAPI resolves these in the module's globals.
AuthHeader = Annotated[str | None, Header(description="Bearer token: admin or tenant-scoped")]


def _error(status: int, message: str) -> JSONResponse:
    # "detail" as FastAPI's own errors carry it: dashfrog.query reads that key.
    return JSONResponse({"detail": message}, status_code=status)


def parse_label_pairs(pairs: list[str]) -> dict[str, str]:
    """``label=k=v`` query values (or the older ``label=k:v``) to a mapping; QueryError if malformed."""
    return label_pairs(pairs)


def create_app(
    store: Store,
    settings: Settings | None = None,
    *,
    live_interval_s: float = 1.0,
) -> FastAPI:
    """The HTTP API and UI serving ``store`` (blocking store calls run in a
    thread pool); the live stream polls the store every ``live_interval_s``."""
    settings = settings or get_settings()
    auth = Authenticator(settings)
    runner = run_in_threadpool
    started_at = time.time()

    app = FastAPI(
        title="DashFrog",
        summary="Business workflows per customer: flows, steps and their state.",
        version=_version(),
    )
    app.state.store = store
    app.state.settings = settings
    hub = LiveHub(store, runner, interval_s=live_interval_s)
    app.state.live = hub

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, exc: QueryError) -> JSONResponse:
        response = _error(400, str(exc))
        if isinstance(exc, QueryLimitError):
            # Which limit, by the setting that raises it.
            response = JSONResponse({"detail": str(exc), "limit": exc.setting}, status_code=400)
        return response

    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        response = _error(401, str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> JSONResponse:
        return _error(403, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'] if p not in ('query', 'body', 'path'))}: {err['msg']}"
            for err in exc.errors()
        )
        return _error(400, f"invalid request: {problems}")

    def principal(authorization: str | None) -> Principal:
        return auth.principal(authorization)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness plus a round trip to the store (no credential needed, no data shown)."""
        try:
            await runner(store.select, "SELECT 1 AS ok", None)
            store_ok = True
        except Exception:
            store_ok = False
        body = {"status": "ok" if store_ok else "degraded", "store": store_ok, "uptime_s": round(time.time() - started_at, 1)}
        if not store_ok:
            return JSONResponse(body, status_code=503)  # type: ignore[return-value]
        return body

    @app.get("/api/flows")
    async def flows(
        authorization: AuthHeader = None,
        tenant: str | None = None,
        status: str | None = None,
        name: str | None = None,
        label: Annotated[list[str] | None, Query(description="key=value (or key:value), repeatable; all must match")] = None,
        labels: Annotated[str | None, Query(description='JSON object, e.g. {"env":"prod"}')] = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        format: Annotated[str, Query(description="json (one page), or csv / ndjson: every matching flow")] = "json",
    ) -> Any:
        """Flows matching every filter, newest first; pass ``next_cursor`` back as ``cursor``.
        ``format=csv`` or ``ndjson`` streams every matching flow as a download."""
        who = principal(authorization)
        merged: dict[str, str] = {}
        if labels:
            merged.update(FlowFilter.parse(labels=labels).labels or {})
        merged.update(parse_label_pairs(label or []))
        flt = FlowFilter.parse(
            tenant=scope_tenant(who, tenant),
            status=status,
            name=name,
            labels=merged or None,
            since=_number_or_text(since),
            until=_number_or_text(until),
            limit=limit,
            cursor=cursor,
        )
        if format in EXPORT_FORMATS:
            return await export_flows(store, runner, flt, format)
        if format != "json":
            raise QueryError(f"format={format!r}: use json, csv or ndjson")
        result = await runner(store.find_flows, flt)
        return result.model_dump(mode="json")

    @app.get("/api/flows/{flow_id}")
    async def flow(
        flow_id: str, authorization: AuthHeader = None, tenant: str | None = None, format: str | None = None
    ) -> Any:
        """One flow with its step tree, errors and custom events; ``tenant`` narrows the lookup.
        ``format=json`` downloads it with every raw event as an attachment."""
        who = principal(authorization)
        detail = await runner(store.flow, flow_id, scope_tenant(who, tenant))
        if detail is None:
            # A tenant credential gets 404 for other tenants' flows too: ids never leak.
            return _error(404, f"no flow {flow_id!r}")
        if format is not None:
            if format != "json":
                raise QueryError(f"format={format!r}: a flow downloads as format=json")
            return await export_flow(store, runner, detail)
        return detail.model_dump(mode="json")

    @app.get("/api/stats")
    async def stats(
        authorization: AuthHeader = None,
        tenant: str | None = None,
        name: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> Any:
        """Runs, success rate, duration percentiles and failures per step."""
        who = principal(authorization)
        flt = StatsFilter.parse(
            tenant=scope_tenant(who, tenant),
            name=name,
            since=_number_or_text(since),
            until=_number_or_text(until),
        )
        result = await runner(store.find_stats, flt)
        return result.model_dump(mode="json")

    @app.get("/api/whoami")
    async def whoami(authorization: AuthHeader = None) -> Any:
        """Who the credential is: the tenant it reads, or every tenant."""
        who = principal(authorization)
        return {
            "tenant": who.tenant,
            "admin": who.is_admin,
            "open": auth.open,
            # The page turns a quiet running row stalled on its own: no event announces it.
            "stalled_after_s": store.stalled_after_s,
        }

    @app.get("/api/stream")
    async def stream(request: Request, authorization: AuthHeader = None, tenant: str | None = None) -> Any:
        """Server-sent events: ``flows`` (summaries whose state changed, each in
        the caller's tenant scope), ``resync`` (reload: updates were dropped)
        and ``hello`` on connect. Send the token as a header (fetch-based
        streaming): it never goes in the URL."""
        scope = scope_tenant(principal(authorization), tenant)
        try:
            sub = hub.subscribe(scope)
        except TooManySubscribers as exc:
            return _error(503, str(exc))

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

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(export_router(store, auth, runner))
    app.include_router(alerts_router(store, auth, runner, settings))
    app.include_router(dead_letters_router(store, auth, runner))
    app.include_router(metrics_router(store, auth, runner))

    @app.post("/api/sql")
    async def sql(
        body: Annotated[dict[str, Any], Body(examples=[{"sql": "SELECT count() FROM events"}])],
        authorization: AuthHeader = None,
    ) -> Any:
        """One read statement (SELECT, WITH, DESCRIBE TABLE, SHOW TABLES, EXISTS TABLE),
        sandboxed: allowlisted functions and tables only, read-only, under the
        DASHFROG_SQL_MAX_* limits (a limit hit is a 400 naming it). Admin only."""
        who = principal(authorization)
        if not who.is_admin:
            raise Forbidden("SQL reads every tenant's data: it needs the admin token")
        text = body.get("sql")
        params = body.get("params") or {}
        if not isinstance(text, str):
            raise QueryError('body must be a JSON object with a "sql" string')
        if not isinstance(params, dict):
            raise QueryError('"params" must be a JSON object of query parameters')
        try:
            # select() itself refuses anything but one read-only statement.
            rows = await runner(store.select, text, params)
        except QueryError:
            raise
        except Exception as exc:
            # ClickHouse's message says what is wrong with the query.
            raise QueryError(f"query failed: {_first_line(exc)}") from None
        columns = list(rows[0].keys()) if rows else []
        return SqlResult(columns=columns, rows=rows).model_dump(mode="json")

    return app


def _number_or_text(value: str | None) -> Any:
    """Epoch seconds stay numbers; anything else is parsed as ISO 8601 by the filter."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dashfrog")
    except PackageNotFoundError:
        return "0"
