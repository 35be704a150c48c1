"""Signing of propagated flow context, and the trust boundary.

Baggage has no integrity check: anyone who can send a request can claim to be
inside any flow. A service that shares ``DASHFROG_CONTEXT_SECRET`` signs the
flow id, tenant, flow name, parent step and the time it signed
(``dashfrog.iat``, seconds since the epoch) it propagates; a receiver honours
remote flow context only when that signature verifies and is younger than
``DASHFROG_CONTEXT_MAX_AGE_S`` (default seven days, so that a Celery task with
a distant ETA still joins its flow), or when the request came from a network
the operator declared trusted (``DASHFROG_TRUSTED_NETWORKS``).

Defaults, chosen so the seed's samples run on a laptop without configuration
while a configured deployment is strict:

- ``DASHFROG_TRUSTED_NETWORKS`` unset (empty) and no secret: loopback
  (``127.0.0.0/8``, ``::1``) is trusted, nothing else.
- ``DASHFROG_TRUSTED_NETWORKS`` unset and a secret set: no network is trusted;
  only signed context is honoured.
- ``DASHFROG_TRUSTED_NETWORKS=none``: no network is trusted, secret or not.
- Any other value: exactly those comma-separated CIDRs.

A reverse proxy on the same host makes outside requests arrive from loopback:
such deployments set a secret or ``DASHFROG_TRUSTED_NETWORKS=none``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import time
from functools import cache

from dashfrog._exceptions import ConfigurationError
from dashfrog._settings import Settings, get_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = "127.0.0.0/8,::1/128"
# v1 signed flow id, tenant and name only; it is no longer accepted.
_SIGNATURE_VERSION = "v2"
# How far ahead of this host's clock a signing host's may run.
CLOCK_SKEW_S = 300


def sign(
    flow_id: str,
    tenant: str,
    name: str,
    step_id: str | None,
    issued_at: int,
    settings: Settings | None = None,
) -> str | None:
    """HMAC of the flow's identity, its parent step and the signing time with the
    shared secret, or None without a secret."""
    secret = (settings or get_settings()).context_secret
    if secret is None:
        return None
    # JSON framing: with a plain separator, a tenant containing it could be shifted
    # into the flow name and keep the signature valid for a different tenant.
    message = json.dumps([_SIGNATURE_VERSION, flow_id, tenant, name, step_id or "", issued_at]).encode()
    digest = hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()
    return f"{_SIGNATURE_VERSION}.{digest[:32]}"


def check_signature(
    flow_id: str,
    tenant: str,
    name: str,
    step_id: str | None,
    issued_at: str | None,
    signature: str | None,
    settings: Settings | None = None,
    now: float | None = None,
) -> str | None:
    """None if the signature vouches for this context now, else why not."""
    s = settings or get_settings()
    if not signature:
        return "unsigned"
    if not issued_at or not issued_at.isdigit() or len(issued_at) > 12:
        return "signed without a valid issued-at time"
    issued = int(issued_at)
    expected = sign(flow_id, tenant, name, step_id, issued, s)
    if expected is None or not hmac.compare_digest(expected, signature):
        return "bad signature"
    age = (time.time() if now is None else now) - issued
    if age > s.context_max_age_s:
        return f"signed {int(age)} s ago, older than DASHFROG_CONTEXT_MAX_AGE_S"
    if age < -CLOCK_SKEW_S:
        return "signed in the future (clocks apart by more than 5 minutes)"
    return None


@cache
def _parse(spec: str) -> tuple[Network, ...]:
    networks = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ConfigurationError(
                f"DASHFROG_TRUSTED_NETWORKS: {part!r} is not a network (use CIDRs such as "
                f"10.0.0.0/8, comma-separated, or 'none')"
            ) from exc
    return tuple(networks)


def trusted_networks(settings: Settings | None = None) -> tuple[Network, ...]:
    """The networks whose unsigned flow context is honoured (see the module's defaults)."""
    s = settings or get_settings()
    spec = s.trusted_networks.strip()
    if spec.lower() == "none":
        return ()
    if not spec:
        return () if s.context_secret is not None else _parse(LOOPBACK)
    return _parse(spec)


def address_trusted(address: str | None, settings: Settings | None = None) -> bool:
    """Whether a peer address lies inside the trusted networks."""
    if not address:
        return False
    try:
        # Scoped IPv6 literals ("fe80::1%eth0") carry an interface the networks do not.
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # a unix socket path, a hostname: nothing we can place
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d
    return any(ip in net for net in trusted_networks(settings))
