"""The HTTP API and the web UI over a store: the app and its parts.

Routes live in router modules (``_flows_api``, ``_sql_api``, and the export,
alerts, dead-letter and metrics routers); each takes the caller through the
``Caller`` dependency of ``_auth`` and declares its response model, so
``/openapi.json`` is the contract ``dashfrog.query`` parses. The SQL lives in
:mod:`dashfrog.storage`; store calls run in worker threads, off the event loop.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from dashfrog._models import parse_label_pairs
from dashfrog._settings import Settings, get_settings
from dashfrog.storage import Store
from dashfrog.web import _export, _flows_api, _sql_api
from dashfrog.web._alerts_api import alerts_router
from dashfrog.web._auth import Authenticator
from dashfrog.web._dead_letters import dead_letters_router
from dashfrog.web._errors import install_error_handlers
from dashfrog.web._flows_api import number_or_text as _number_or_text
from dashfrog.web._live import LiveHub
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

# Routers written before the Caller dependency import these from here.
__all__ = ["_number_or_text", "create_app", "parse_label_pairs"]


class Health(BaseModel):
    status: str
    store: bool
    uptime_s: float


def create_app(
    store: Store,
    settings: Settings | None = None,
    *,
    live_interval_s: float = 1.0,
) -> FastAPI:
    """The HTTP API and UI serving ``store``; the live stream polls the store
    every ``live_interval_s``. Routers added here see the store, settings,
    Authenticator and live hub on ``app.state``."""
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
    app.state.auth = auth
    app.state.live = LiveHub(store, runner, interval_s=live_interval_s)
    install_error_handlers(app)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz(request: Request) -> Any:
        """Liveness plus a round trip to the store (no credential needed, no data shown)."""
        try:
            await runner(store.select, "SELECT 1 AS ok", None)
            store_ok = True
        except Exception:
            store_ok = False
        body = Health(status="ok" if store_ok else "degraded", store=store_ok, uptime_s=round(time.time() - started_at, 1))
        if not store_ok:
            return JSONResponse(body.model_dump(), status_code=503)
        return body

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(_flows_api.router)
    app.include_router(_sql_api.router)
    app.include_router(_export.router)
    app.include_router(alerts_router(store, settings))
    app.include_router(dead_letters_router(store, auth, runner))
    app.include_router(metrics_router(store, auth, runner))
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dashfrog")
    except PackageNotFoundError:
        return "0"
