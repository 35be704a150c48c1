"""``GET /api/alerts`` and the alert evaluator's life inside ``dashfrog api`` / ``dashfrog up``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from dashfrog._settings import Settings
from dashfrog.storage import Store
from dashfrog.web._alerts import Evaluator, EvaluatorThread, load_rules
from dashfrog.web._auth import Caller, scope_tenant
from dashfrog.web._deps import StoreDep
from dashfrog.web._errors import ERRORS


class Incident(BaseModel):
    """The latest incident of one rule and subject."""

    key: str = Field(description="Rule and subject: one incident open at a time per key")
    seq: int = Field(description="Which incident of this key, from 0")
    open: bool
    rule: str
    condition: str
    tenant: str
    subject: str
    details: dict[str, Any] = Field(description="What the rule saw when the incident opened")
    opened_at: datetime | None
    resolved_at: datetime | None
    description: str | None = Field(description="The rule in words; null: a rule this process does not know")


class EvaluatorStatus(BaseModel):
    """How this process's evaluator is doing."""

    rules: int
    rounds: int
    last_round_at: datetime | None
    last_error: str | None = Field(description="The last round's failure; null once a round succeeds")
    interval_s: float


class Alerts(BaseModel):
    incidents: list[Incident] = Field(description="Newest first")
    evaluator: EvaluatorStatus | None = Field(
        description="Null: no rule file (DASHFROG_ALERT_RULES), or one without rules"
    )


def alerts_router(store: Store, settings: Settings) -> APIRouter:
    """The alerts route; when DASHFROG_ALERT_RULES names a rule file, an
    evaluator over ``store`` runs for as long as the app does (its lifespan).

    A rule file that does not parse, or rules that could not notify (no
    webhook, no signing secret), stop the app's creation: better than an
    API that looks fine and never alerts.
    """
    rules = load_rules(settings)
    evaluator = Evaluator(store, rules, settings) if rules is not None and rules.rules else None
    if evaluator is not None:
        evaluator.check()
    described = {r.name: r.describe() for r in (rules.rules if rules is not None else [])}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = EvaluatorThread(evaluator) if evaluator is not None else None
        if thread is not None:
            thread.start()
        try:
            yield
        finally:
            if thread is not None:
                await run_in_threadpool(thread.stop)

    router = APIRouter(prefix="/api", tags=["alerts"], responses=ERRORS, lifespan=lifespan)

    @router.get("/alerts", response_model=Alerts)
    async def alerts(
        who: Caller, store: StoreDep, tenant: str | None = None, resolved: bool = False
    ) -> Alerts:
        """Open incidents, newest first (``resolved=true``: the latest incident of
        every rule and subject, resolved ones too), and how the evaluator of this
        process is doing. A tenant credential sees its tenant's incidents only."""
        found = await run_in_threadpool(store.latest_incidents, tenant=scope_tenant(who, tenant))
        shown = [
            Incident(**i, description=described.get(i["rule"])) for i in found if resolved or i["open"]
        ]
        shown.sort(key=lambda i: (i.opened_at.timestamp() if i.opened_at else 0.0, i.key), reverse=True)
        status = evaluator.status() if evaluator is not None else None
        return Alerts(incidents=shown, evaluator=EvaluatorStatus(**status) if status else None)

    return router
