"""``GET /api/alerts`` and the alert evaluator's life inside ``dashfrog api`` / ``dashfrog up``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header

from dashfrog._settings import Settings
from dashfrog.storage import SqlStore, latest_incidents
from dashfrog.web._alerts import Evaluator, EvaluatorThread, load_rules
from dashfrog.web._auth import Authenticator, scope_tenant

AuthHeader = Annotated[str | None, Header(description="Bearer token: admin or tenant-scoped")]


def alerts_router(
    store: Any, auth: Authenticator, run: Callable[..., Awaitable[Any]], settings: Settings
) -> APIRouter:
    """The alerts route over ``store``; when DASHFROG_ALERT_RULES names a rule
    file, an evaluator runs for as long as the app does (its lifespan).

    A rule file that does not parse, or rules that could not notify (no
    webhook, no signing secret), stop the app's creation: better than an
    API that looks fine and never alerts.
    """
    sql_store: SqlStore = store
    rules = load_rules(settings)
    evaluator = Evaluator(sql_store, rules, settings) if rules is not None and rules.rules else None
    if evaluator is not None:
        evaluator.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = EvaluatorThread(evaluator) if evaluator is not None else None
        if thread is not None:
            thread.start()
        try:
            yield
        finally:
            if thread is not None:
                await run(thread.stop)

    router = APIRouter(lifespan=lifespan)

    @router.get("/api/alerts")
    async def alerts(
        authorization: AuthHeader = None, tenant: str | None = None, resolved: bool = False
    ) -> Any:
        """Open incidents, newest first (``resolved=true``: the latest incident of
        every rule and subject, resolved ones too), and how the evaluator of this
        process is doing. A tenant credential sees its tenant's incidents only."""
        who = auth.principal(authorization)
        found = await run(latest_incidents, sql_store, tenant=scope_tenant(who, tenant))
        described = {r.name: r.describe() for r in (rules.rules if rules is not None else [])}
        shown = [
            {**i, "description": described.get(i["rule"])} for i in found if resolved or i["open"]
        ]
        shown.sort(key=lambda i: (i["opened_at"] or "", i["key"]), reverse=True)
        return {
            "incidents": shown,
            "evaluator": evaluator.status() if evaluator is not None else None,
        }

    return router
