"""Errors as the API answers them: ``{"detail": ...}`` with a 4xx status.

One body model for every error, so ``/openapi.json`` documents them, and the
handlers that turn DashFrog's exceptions into those answers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dashfrog._exceptions import QueryError
from dashfrog.storage import QueryLimitError
from dashfrog.web._auth import Forbidden, Unauthorized


class ErrorBody(BaseModel):
    """What went wrong and what to do; ``dashfrog.query`` reads ``detail``."""

    detail: str
    limit: str | None = Field(
        None, description="For a SQL query stopped by a limit: the setting that sets it"
    )


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid parameters, or SQL refused or stopped by a limit"},
    401: {"model": ErrorBody, "description": "No valid bearer token (tokens are configured)"},
    403: {"model": ErrorBody, "description": "The token may not read this (another tenant, or SQL)"},
}


def error(status: int, message: str) -> JSONResponse:
    # "detail" as FastAPI's own errors carry it: dashfrog.query reads that key.
    return JSONResponse({"detail": message}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QueryError)
    async def _query_error(request: Request, exc: QueryError) -> JSONResponse:
        if isinstance(exc, QueryLimitError):
            # Which limit, by the setting that raises it.
            return JSONResponse({"detail": str(exc), "limit": exc.setting}, status_code=400)
        return error(400, str(exc))

    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        response = error(401, str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> JSONResponse:
        return error(403, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'] if p not in ('query', 'body', 'path'))}: {err['msg']}"
            for err in exc.errors()
        )
        return error(400, f"invalid request: {problems}")
