"""What a route takes from the app besides its caller: the store it serves
(``StoreDep``), and how a time query parameter reads (``number_or_text``).
Routers share them so that none of them holds its own copy."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from dashfrog.storage import Store


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


# A route parameter typed ``StoreDep`` is the store the app serves.
StoreDep = Annotated[Store, Depends(get_store)]


def number_or_text(value: str | None) -> Any:
    """Epoch seconds stay numbers; anything else is parsed as a time by the filter."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value
