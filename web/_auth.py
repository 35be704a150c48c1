"""Who is calling: the admin (every tenant) or one tenant's read credential."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

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
    """Maps a bearer token to a :class:`Principal`.

    With no admin token configured the API is open (the loopback default):
    callers without a token act as admin, and a tenant token still narrows
    what its bearer sees.
    """

    def __init__(self, settings: Settings) -> None:
        self.admin = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.tenants = parse_tenant_tokens(settings.tenant_tokens)

    @property
    def open(self) -> bool:
        return not self.admin

    def principal(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        if token:
            # Compare against every credential in constant time; never short-cut.
            if self.admin and hmac.compare_digest(token.encode(), self.admin.encode()):
                return Principal(None)
            matched: str | None = None
            for tenant, expected in self.tenants:
                if hmac.compare_digest(token.encode(), expected.encode()):
                    matched = tenant
            if matched is not None:
                return Principal(matched)
        if self.open:
            return Principal(None)
        raise Unauthorized("missing or unknown bearer token (Authorization: Bearer <token>)")


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
