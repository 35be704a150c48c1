"""Signing of propagated flow context, and the trust boundary.

Baggage has no integrity check: anyone who can send a request can claim to be
inside any flow. A service that shares ``DASHFROG_CONTEXT_SECRET`` signs the
flow id, tenant and flow name it propagates; a receiver honours remote flow
context only when that signature verifies, or when the request came from a
network the operator declared trusted (``DASHFROG_TRUSTED_NETWORKS``).

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
from functools import cache

from dashfrog._exceptions import ConfigurationError
from dashfrog._settings import Settings, get_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = "127.0.0.0/8,::1/128"
_SIGNATURE_VERSION = "v1"


def sign(flow_id: str, tenant: str, name: str, settings: Settings | None = None) -> str | None:
    """HMAC of the flow's identity with the shared secret, or None without a secret."""
    secret = (settings or get_settings()).context_secret
    if secret is None:
        return None
    # JSON framing: with a plain separator, a tenant containing it could be shifted
    # into the flow name and keep the signature valid for a different tenant.
    message = json.dumps([_SIGNATURE_VERSION, flow_id, tenant, name]).encode()
    digest = hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()
    return f"{_SIGNATURE_VERSION}.{digest[:32]}"


def signature_valid(
    flow_id: str, tenant: str, name: str, signature: str | None, settings: Settings | None = None
) -> bool:
    if not signature:
        return False
    expected = sign(flow_id, tenant, name, settings)
    return expected is not None and hmac.compare_digest(expected, signature)


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
