"""Where the current flow lives: the OpenTelemetry context.

A flow started in this process is kept under a private context key (with the
mutable state only this process needs); the same ids are also written into W3C
baggage so that any OpenTelemetry propagator carries them to other services.

A flow that arrived in baggage from elsewhere is untrusted input. The
``with_*`` instrumentations decide once, where a request or task enters the
service, whether it is honoured (:func:`admit`): a valid signature, or a peer
inside the trust boundary. An honoured flow is then kept under the private key
like a local one; an ignored one is counted and its entries are removed from
the baggage, so this service never forwards them to services that trust it.
Baggage that reached the context some other way (an application's own
OpenTelemetry setup) is still checked on every read (:func:`remote_flow`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from opentelemetry import baggage, context
from opentelemetry.context import Context

from dashfrog import _trust
from dashfrog._settings import get_settings

log = logging.getLogger("dashfrog")

FLOW_ID = "dashfrog.flow_id"
TENANT = "dashfrog.tenant"
FLOW_NAME = "dashfrog.flow_name"
STEP_ID = "dashfrog.step_id"
SIGNATURE = "dashfrog.sig"
BAGGAGE_KEYS = (FLOW_ID, TENANT, FLOW_NAME, STEP_ID, SIGNATURE)

_FLOW_KEY = context.create_key("dashfrog-flow")
# Set by server-side instrumentation when the request's peer is inside the trust boundary.
TRUSTED_PEER_KEY = context.create_key("dashfrog-trusted-peer")

# Ids come from SDKs, not people: a conservative alphabet keeps odd bytes out of events.
_ID = re.compile(r"[0-9A-Za-z_.:-]{1,128}")
_MAX_TEXT = 512  # longest tenant or flow name accepted from a remote caller


@dataclass
class FlowOutcome:
    """What this process has seen go wrong in a flow, so flow exit can report it."""

    error: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class FlowContext:
    flow_id: str
    tenant: str
    name: str
    step_id: str | None = None
    local: bool = True
    outcome: FlowOutcome = field(default_factory=FlowOutcome, compare=False)

    def with_step(self, step_id: str) -> FlowContext:
        return replace(self, step_id=step_id)


# -- ignored remote contexts: counted, and logged at a bounded rate -------------

_ignored_lock = threading.Lock()
_ignored_remote = 0
_last_log: dict[str, float] = {}
_LOG_EVERY_S = 60.0


def ignored_remote_count() -> int:
    return _ignored_remote


def _ignore(reason: str) -> None:
    global _ignored_remote
    now = time.monotonic()
    with _ignored_lock:
        _ignored_remote += 1
        total = _ignored_remote
        report = now - _last_log.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S
        if report:
            _last_log[reason] = now
    if report:
        log.warning(
            "dashfrog: ignored propagated flow context (%s); %d ignored so far. Services share "
            "DASHFROG_CONTEXT_SECRET to sign it, or DASHFROG_TRUSTED_NETWORKS lists their networks.",
            reason,
            total,
        )


# -- reading remote flow context --------------------------------------------------


def baggage_size(entries: Mapping[str, object]) -> int:
    """Bytes the entries take on the wire, near enough (``key=value`` joined by commas)."""
    return sum(len(k.encode()) + len(str(v).encode()) + 2 for k, v in entries.items())


def _verify(entries: Mapping[str, object], peer_trusted: bool) -> tuple[FlowContext | None, str]:
    """The flow in ``entries`` if it may be honoured, else None and why not."""
    flow_id, tenant, name = (str(entries.get(k) or "") for k in (FLOW_ID, TENANT, FLOW_NAME))
    step_id = str(entries.get(STEP_ID) or "") or None
    signature = str(entries.get(SIGNATURE) or "") or None
    if baggage_size(entries) > get_settings().max_baggage_bytes:
        return None, "baggage larger than DASHFROG_MAX_BAGGAGE_BYTES"
    if not (_ID.fullmatch(flow_id) and tenant and name) or len(tenant) > _MAX_TEXT or len(name) > _MAX_TEXT:
        return None, "malformed"
    if step_id is not None and not _ID.fullmatch(step_id):
        return None, "malformed"
    if not peer_trusted and not _trust.signature_valid(flow_id, tenant, name, signature):
        return None, "bad signature" if signature else "unsigned, from outside the trusted networks"
    return FlowContext(flow_id, tenant, name, step_id, local=False), ""


def current_flow(ctx: Context | None = None) -> FlowContext | None:
    """The flow active in ``ctx`` (default: the current context), if any."""
    local = context.get_value(_FLOW_KEY, ctx)
    if local is not None:
        return local  # type: ignore[return-value]
    return remote_flow(ctx)


def remote_flow(ctx: Context | None = None) -> FlowContext | None:
    """A flow carried in baggage from another service, if present and trusted.

    Reached only for baggage no ``with_*`` instrumentation admitted; then every
    read that finds an untrusted flow counts as one ignored context.
    """
    entries = baggage.get_all(ctx)
    if not entries.get(FLOW_ID):
        return None
    flow, reason = _verify(entries, context.get_value(TRUSTED_PEER_KEY, ctx) is True)
    if flow is None:
        _ignore(reason)
    return flow


def admit(ctx: Context, *, peer_trusted: bool) -> Context:
    """Decide, where a request or task enters this service, whether its flow context counts.

    Returns ``ctx`` with the flow made current (and re-signed with this
    service's secret for the next hop), or with every DashFrog baggage entry
    removed. Never raises: an ignored context is counted, not an error.
    """
    if context.get_value(_FLOW_KEY, ctx) is not None:
        return ctx  # this process's own flow: nothing arrived from outside
    entries = baggage.get_all(ctx)
    if not any(key in entries for key in BAGGAGE_KEYS):
        return ctx
    if not entries.get(FLOW_ID):
        return without_flow(ctx)  # stray entries without a flow: drop, nothing to count
    flow, reason = _verify(entries, peer_trusted)
    if flow is None:
        _ignore(reason)
        return without_flow(ctx)
    admitted = with_flow(flow, without_flow(ctx))
    incoming = entries.get(SIGNATURE)
    if incoming and baggage.get_baggage(SIGNATURE, admitted) is None:
        # We hold no secret to sign with; the caller's signature still vouches for
        # these ids to a next hop that does.
        admitted = baggage.set_baggage(SIGNATURE, str(incoming), admitted)
    return admitted


# -- writing flow context -----------------------------------------------------------


def with_flow(flow: FlowContext, ctx: Context | None = None) -> Context:
    """A context where ``flow`` is current and its ids ride in baggage."""
    ctx = context.set_value(_FLOW_KEY, flow, ctx)
    if baggage.get_baggage(FLOW_ID, ctx) != flow.flow_id:
        ctx = baggage.set_baggage(FLOW_ID, flow.flow_id, ctx)
        ctx = baggage.set_baggage(TENANT, flow.tenant, ctx)
        ctx = baggage.set_baggage(FLOW_NAME, flow.name, ctx)
        signature = _trust.sign(flow.flow_id, flow.tenant, flow.name)
        ctx = (
            baggage.set_baggage(SIGNATURE, signature, ctx)
            if signature
            else baggage.remove_baggage(SIGNATURE, ctx)
        )
    if flow.step_id is not None:
        ctx = baggage.set_baggage(STEP_ID, flow.step_id, ctx)
    else:
        ctx = baggage.remove_baggage(STEP_ID, ctx)
    return ctx


def without_flow(ctx: Context | None = None) -> Context:
    """A context with no flow: the private key and the baggage entries removed."""
    ctx = context.set_value(_FLOW_KEY, None, ctx)
    for key in BAGGAGE_KEYS:
        ctx = baggage.remove_baggage(key, ctx)
    return ctx
