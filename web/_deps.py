"""What a route takes from the app besides its caller: the store it serves
(``StoreDep``). Routers share it so that none of them holds its own copy."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from dashfrog.storage import Store


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


# A route parameter typed ``StoreDep`` is the store the app serves.
StoreDep = Annotated[Store, Depends(get_store)]
