"""Who is calling: the admin (every tenant) or one tenant's read credential."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from dashfrog._exceptions import ConfigurationError
from dashfrog._settings import Settings


@dataclass(frozen=True)
class Principal:
    """``tenant`` is None for the admin (or anyone, when the API is open)."""

    tenant: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant is None


class Unauthorized(Exception):
    """No valid credential where one is required (HTTP 401)."""


class Forbidden(Exception):
    """A valid credential asking for what it may not see (HTTP 403)."""


def parse_tenant_tokens(spec: str) -> list[tuple[str, str]]:
    """``tenant:token`` pairs from the comma-separated setting; raises ValueError."""
    pairs: list[tuple[str, str]] = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        tenant, sep, token = entry.partition(":")
        if not sep or not tenant.strip() or not token.strip():
            raise ValueError(f"DASHFROG_TENANT_TOKENS entry {entry.split(':')[0]!r}…: expected tenant:token")
        pairs.append((tenant.strip(), token.strip()))
    return pairs


class Authenticator:
    """Maps a bearer token to a :class:`Principal`; fails closed.

    With any token configured (admin or tenant), every call needs a valid one.
    With none, the API is open: callers act as admin, which is only allowed
    on a loopback address or by explicit opt-in (see :func:`check_bind`).
    """

    def __init__(self, settings: Settings) -> None:
        self.admin = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.tenants = parse_tenant_tokens(settings.tenant_tokens)

    @property
    def open(self) -> bool:
        return not self.admin and not self.tenants

    def principal(self, authorization: str | None) -> Principal:
        if self.open:
            return Principal(None)
        token = _bearer(authorization)
        if token:
            # Compare against every credential in constant time; never short-cut.
            admin = bool(self.admin) and hmac.compare_digest(token.encode(), (self.admin or "").encode())
            matched: str | None = None
            for tenant, expected in self.tenants:
                if hmac.compare_digest(token.encode(), expected.encode()):
                    matched = tenant
            if admin:
                return Principal(None)
            if matched is not None:
                return Principal(matched)
        raise Unauthorized("missing or unknown bearer token (Authorization: Bearer <token>)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to bind) is reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def auth_mode(settings: Settings) -> str:
    """One line saying who may call the API under ``settings``."""
    auth = Authenticator(settings)
    if not auth.open:
        admin = "admin" if auth.admin else "no admin (SQL disabled)"
        n = len(auth.tenants)
        return f"tokens: {admin} + {n} tenant{'' if n == 1 else 's'}; every /api call needs one"
    if is_loopback(settings.api_host):
        return "open-loopback: no token configured, anyone on this machine reads every tenant"
    return (
        "open by explicit opt-in (DASHFROG_API_ALLOW_OPEN=true): no token configured, "
        f"anyone who reaches {settings.api_host}:{settings.api_port} reads every tenant"
    )


def check_bind(settings: Settings) -> None:
    """Refuse to serve an open API beyond loopback unless explicitly allowed."""
    if Authenticator(settings).open and not is_loopback(settings.api_host) and not settings.api_allow_open:
        raise ConfigurationError(
            f"refusing to serve the API on {settings.api_host} without tokens: set "
            "DASHFROG_ADMIN_TOKEN (and DASHFROG_TENANT_TOKENS), bind DASHFROG_API_HOST=127.0.0.1, "
            "or set DASHFROG_API_ALLOW_OPEN=true to serve every tenant's data to anyone"
        )


def scope_tenant(principal: Principal, tenant: str | None) -> str | None:
    """The tenant a request may read: its own for a tenant credential; 403 for another."""
    if principal.tenant is None:
        return tenant
    if tenant is not None and tenant != principal.tenant:
        raise Forbidden(f"this token reads tenant {principal.tenant!r} only")
    return principal.tenant


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def current_principal(
    request: Request,
    authorization: Annotated[
        str | None, Header(description="`Bearer <token>`: the admin token or a tenant's")
    ] = None,
) -> Principal:
    """FastAPI dependency: who calls, by the app's Authenticator (401 when no valid token)."""
    auth: Authenticator = request.app.state.auth
    return auth.principal(authorization)


# A route parameter typed ``Caller`` is the authenticated Principal.
Caller = Annotated[Principal, Depends(current_principal)]
