"""Where the current flow lives: the OpenTelemetry context.

A flow started in this process is kept under a private context key (with the
mutable state only this process needs); the same ids are also written into W3C
baggage so that any OpenTelemetry propagator carries them to other services.

A flow that arrived in baggage from elsewhere is untrusted input. The
``with_*`` instrumentations decide once, where a request or task enters the
service, whether it is honoured (:func:`admit`): a valid, fresh signature, or a
peer inside the trust boundary. The raw ``baggage`` header is measured before
anything parses it: OpenTelemetry's propagator silently drops what exceeds its
own limits, which would let an oversized header through in part. An honoured
flow is then kept under the private key like a local one; an ignored one is
counted and its entries are removed from the baggage, so this service never
forwards them to services that trust it. A request or task that brings no flow
context of its own keeps the flow of the code that made it in this process (a
test client, an eagerly run task). Baggage that reached the context some other
way (an application's own OpenTelemetry setup) is still checked on every read
(:func:`remote_flow`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from opentelemetry import baggage, context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from dashfrog import _trust
from dashfrog._settings import get_settings

log = logging.getLogger("dashfrog")

FLOW_ID = "dashfrog.flow_id"
TENANT = "dashfrog.tenant"
FLOW_NAME = "dashfrog.flow_name"
STEP_ID = "dashfrog.step_id"
SIGNATURE = "dashfrog.sig"
ISSUED_AT = "dashfrog.iat"
BAGGAGE_KEYS = (FLOW_ID, TENANT, FLOW_NAME, STEP_ID, SIGNATURE, ISSUED_AT)
BAGGAGE_HEADER = "baggage"
# OpenTelemetry's W3C propagator drops a longer header whole, without a word.
W3C_MAX_HEADER_BYTES = 8192

_FLOW_KEY = context.create_key("dashfrog-flow")
_W3C = W3CBaggagePropagator()
Carrier = TypeVar("Carrier")

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
    issued_at = str(entries.get(ISSUED_AT) or "") or None
    if baggage_size(entries) > get_settings().max_baggage_bytes:
        return None, "baggage larger than DASHFROG_MAX_BAGGAGE_BYTES"
    if not (_ID.fullmatch(flow_id) and tenant and name) or len(tenant) > _MAX_TEXT or len(name) > _MAX_TEXT:
        return None, "malformed"
    if step_id is not None and not _ID.fullmatch(step_id):
        return None, "malformed"
    if not peer_trusted:
        why = _trust.check_signature(flow_id, tenant, name, step_id, issued_at, signature)
        if why is not None:
            return None, "unsigned, from outside the trusted networks" if why == "unsigned" else why
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
    flow, reason = _verify(entries, peer_trusted=False)
    if flow is None:
        _ignore(reason)
    return flow


def _arrived(carrier: Carrier, getter: Getter[Carrier], peer_trusted: bool) -> tuple[FlowContext | None, dict[str, str]]:
    """The flow ``carrier`` brings, if it may be honoured, with the signature
    entries it came with; counts it as ignored otherwise."""
    values = getter.get(carrier, BAGGAGE_HEADER) or ()
    if not any("dashfrog." in value for value in values):
        return None, {}
    # Measured as received, before any parser drops what exceeds its limits.
    size = sum(len(value.encode()) for value in values) + max(len(values) - 1, 0)
    limit = min(get_settings().max_baggage_bytes, W3C_MAX_HEADER_BYTES)
    if size > limit:
        _ignore(f"baggage header of {size} bytes, over {limit} (DASHFROG_MAX_BAGGAGE_BYTES, at most W3C's 8 KB)")
        return None, {}
    entries = baggage.get_all(_W3C.extract(carrier, Context(), getter))
    if not entries.get(FLOW_ID):
        return None, {}  # stray entries without a flow: dropped, nothing to count
    flow, reason = _verify(entries, peer_trusted)
    if flow is None:
        _ignore(reason)
        return None, {}
    return flow, {k: str(entries[k]) for k in (SIGNATURE, ISSUED_AT) if entries.get(k)}


def admit(
    ctx: Context,
    carrier: Carrier,
    getter: Getter[Carrier],
    *,
    peer_trusted: bool,
    caller: Context | None = None,
) -> Context:
    """Decide, where a request or task enters this service, which flow it runs in.

    ``carrier`` (read with the OpenTelemetry ``getter`` of its framework) is
    what arrived; ``ctx`` is the context the framework's instrumentation made
    of it; ``caller`` is the context the request or task was started from in
    this process, if it is known (a test client, an eager task): by default,
    ``ctx``. Flow context that arrived and is admitted (valid, fresh
    signature, or a trusted peer) becomes current, re-signed with this
    service's secret for the next hop; without it, the caller's own flow stays
    current. Returns ``ctx`` itself when nothing changes. Never raises: an
    ignored context is counted, not an error.
    """
    arrived, signed = _arrived(carrier, getter, peer_trusted)
    source = ctx if caller is None else caller
    in_process: FlowContext | None = context.get_value(_FLOW_KEY, source)  # type: ignore[assignment]
    if arrived is not None:
        if in_process is not None and in_process.flow_id == arrived.flow_id:
            # The same flow, called from this process: keep what it has seen go wrong.
            arrived = replace(in_process, step_id=arrived.step_id)
        return _with_signature(with_flow(arrived, without_flow(ctx)), signed)
    if in_process is not None:
        entries = baggage.get_all(source)
        signed = {k: str(entries[k]) for k in (SIGNATURE, ISSUED_AT) if entries.get(k)}
        return _with_signature(with_flow(in_process, without_flow(ctx)), signed)
    if context.get_value(_FLOW_KEY, ctx) is None and not any(k in baggage.get_all(ctx) for k in BAGGAGE_KEYS):
        return ctx
    return without_flow(ctx)


def _with_signature(ctx: Context, signed: Mapping[str, str]) -> Context:
    if signed and baggage.get_baggage(SIGNATURE, ctx) is None:
        # We hold no secret to sign with; the caller's signature still vouches for
        # these ids (flow, tenant, name and step, unchanged) to a next hop that does.
        for key, value in signed.items():
            ctx = baggage.set_baggage(key, value, ctx)
    return ctx


# -- writing flow context -----------------------------------------------------------


def with_flow(flow: FlowContext, ctx: Context | None = None) -> Context:
    """A context where ``flow`` is current and its ids ride in baggage, signed
    (with the time of signing) when this service holds a secret."""
    ctx = context.set_value(_FLOW_KEY, flow, ctx)
    entries = baggage.get_all(ctx)
    changed = False
    if (entries.get(FLOW_ID), entries.get(TENANT), entries.get(FLOW_NAME)) != (flow.flow_id, flow.tenant, flow.name):
        ctx = baggage.set_baggage(FLOW_ID, flow.flow_id, ctx)
        ctx = baggage.set_baggage(TENANT, flow.tenant, ctx)
        ctx = baggage.set_baggage(FLOW_NAME, flow.name, ctx)
        changed = True
    if entries.get(STEP_ID) != flow.step_id:
        if flow.step_id is not None:
            ctx = baggage.set_baggage(STEP_ID, flow.step_id, ctx)
        else:
            ctx = baggage.remove_baggage(STEP_ID, ctx)
        changed = True
    issued = int(time.time())
    signature = _trust.sign(flow.flow_id, flow.tenant, flow.name, flow.step_id, issued)
    if signature is not None:
        ctx = baggage.set_baggage(SIGNATURE, signature, ctx)
        ctx = baggage.set_baggage(ISSUED_AT, str(issued), ctx)
    elif changed:
        # A signature carried from elsewhere vouches for the ids it came with only.
        for key in (SIGNATURE, ISSUED_AT):
            if key in entries:
                ctx = baggage.remove_baggage(key, ctx)
    return ctx


def without_flow(ctx: Context | None = None) -> Context:
    """A context with no flow: the private key and the baggage entries removed."""
    ctx = context.set_value(_FLOW_KEY, None, ctx)
    for key in BAGGAGE_KEYS:
        ctx = baggage.remove_baggage(key, ctx)
    return ctx
