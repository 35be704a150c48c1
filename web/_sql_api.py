"""``POST /api/sql``: one sandboxed read statement, for the admin."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from dashfrog._exceptions import QueryError
from dashfrog._models import SqlResult
from dashfrog.web._auth import Caller, Forbidden
from dashfrog.web._deps import StoreDep
from dashfrog.web._errors import ERRORS

router = APIRouter(prefix="/api", tags=["sql"], responses=ERRORS)


class SqlRequest(BaseModel):
    sql: str = Field(examples=["SELECT tenant, count() AS n FROM flows FINAL GROUP BY tenant"])
    params: dict[str, Any] = Field(
        default_factory=dict, description="Values bound to the statement's {name:Type} placeholders"
    )


@router.post("/sql", response_model=SqlResult)
async def sql(body: SqlRequest, who: Caller, store: StoreDep) -> SqlResult:
    """One read statement (SELECT, WITH, DESCRIBE TABLE, SHOW TABLES, EXISTS TABLE),
    sandboxed: allowlisted functions and tables only, read-only, under the
    DASHFROG_SQL_MAX_* limits (a limit hit is a 400 naming it). Admin only."""
    if not who.is_admin:
        raise Forbidden("SQL reads every tenant's data: it needs the admin token")
    try:
        # select() itself refuses anything but one sandboxed read statement.
        rows = await run_in_threadpool(store.select, body.sql, body.params)
    except QueryError:
        raise
    except Exception as exc:
        # ClickHouse's message says what is wrong with the query.
        raise QueryError(f"query failed: {_first_line(exc)}") from None
    return SqlResult(columns=list(rows[0].keys()) if rows else [], rows=rows)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
