"""Signing of propagated flow context.

Baggage has no integrity check: anyone who can send a request can claim to be
inside any flow. A service that shares ``DASHFROG_CONTEXT_SECRET`` signs the
flow id, tenant and flow name it propagates; a receiver honours remote flow
context only when that signature verifies, or when the request came from a
network the operator declared trusted (``DASHFROG_TRUSTED_NETWORKS``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from functools import cache

from dashfrog._settings import get_settings


def sign(flow_id: str, tenant: str, name: str) -> str | None:
    secret = get_settings().context_secret
    if secret is None:
        return None
    message = f"{flow_id}\n{tenant}\n{name}".encode()
    return hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()[:32]


def signature_valid(flow_id: str, tenant: str, name: str, signature: str | None) -> bool:
    if not signature:
        return False
    expected = sign(flow_id, tenant, name)
    return expected is not None and hmac.compare_digest(expected, signature)


@cache
def _networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip())


def address_trusted(address: str | None) -> bool:
    """Whether a peer address lies inside ``DASHFROG_TRUSTED_NETWORKS``."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in _networks(get_settings().trusted_networks))
