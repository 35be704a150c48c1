"""``GET /api/dead-letters``: the messages the processor could not write, for admins.

Dead letters hold raw message bytes from any tenant, so only the admin
credential reads them; a tenant token gets 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field

from dashfrog._exceptions import QueryError
from dashfrog._timeexpr import parse_time
from dashfrog.storage import Store
from dashfrog.web._auth import Authenticator, Forbidden
from dashfrog.web._errors import ERRORS

AuthHeader = Annotated[str | None, Header(description="Bearer token: admin only here")]
StoreRunner = Callable[..., Awaitable[Any]]


class DeadLetterRecord(BaseModel):
    """One message the processor could not write."""

    topic: str = Field(description="Topic the message came from")
    partition: int
    offset: int
    size: int = Field(description="Bytes of the message value")
    reason: str = Field(description="Why it was dead-lettered (and why the DLQ topic did not take it whole)")
    in_dlq: str = Field(description="whole, reference (a JSON reference in the DLQ topic) or none")
    head_base64: str = Field(description="The message's first 1 KiB, base64")
    head_text: str = Field(description="Its first 200 bytes as text, undecodable bytes as \\xNN")
    key: str
    headers: dict[str, str] = Field(description="Its headers, 256 bytes of each")
    dead_lettered_at: str = Field(description="ISO 8601, UTC")


class DeadLetters(BaseModel):
    dead_letters: list[DeadLetterRecord]


def dead_letters_router(store: Store, auth: Authenticator, run: StoreRunner) -> APIRouter:
    """The dead-letter route over ``store``; ``run`` runs blocking store calls off the loop."""
    router = APIRouter(tags=["dead letters"], responses=ERRORS)

    @router.get("/api/dead-letters", response_model=DeadLetters)
    async def dead_letters(
        authorization: AuthHeader = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="most rows, newest first")] = 50,
        topic: Annotated[str | None, Query(description="source topic")] = None,
        partition: Annotated[int | None, Query(ge=0, description="source partition")] = None,
        reason: Annotated[str | None, Query(description="part of the reason, any case")] = None,
        since: Annotated[
            str | None, Query(description="dead-lettered at or after: ISO 8601, 15m, 2h, 7d, epoch seconds")
        ] = None,
    ) -> Any:
        """Dead letters, newest first: where each message came from (topic,
        partition, offset), its size, the reason, whether the DLQ topic holds
        it whole or only a reference, its first bytes (base64), key and headers."""
        who = auth.principal(authorization)
        if not who.is_admin:
            raise Forbidden("dead letters hold every tenant's raw messages: they need the admin token")
        when = None
        if since:
            try:
                when = parse_time(since)
            except ValueError as exc:
                raise QueryError(f"since: {exc}") from None
        rows = await run(
            store.dead_letters, limit, topic or None, partition, reason or None, when
        )
        return {"dead_letters": rows}

    return router
