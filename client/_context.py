"""Where the current flow lives: the OpenTelemetry context.

A flow started in this process is kept under a private context key (with the
mutable state only this process needs); the same ids are also written into W3C
baggage so that any OpenTelemetry propagator carries them to other services.
A flow that arrived in baggage from elsewhere is honoured only if it is
trusted (see ``_trust``); then it reads like a local one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from opentelemetry import baggage, context
from opentelemetry.context import Context

from dashfrog import _trust

FLOW_ID = "dashfrog.flow_id"
TENANT = "dashfrog.tenant"
FLOW_NAME = "dashfrog.flow_name"
STEP_ID = "dashfrog.step_id"
SIGNATURE = "dashfrog.sig"
BAGGAGE_KEYS = (FLOW_ID, TENANT, FLOW_NAME, STEP_ID, SIGNATURE)

_FLOW_KEY = context.create_key("dashfrog-flow")
# Set by server-side instrumentation when the request's peer is inside the trust boundary.
TRUSTED_PEER_KEY = context.create_key("dashfrog-trusted-peer")


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


_ignored_remote = 0


def ignored_remote_count() -> int:
    return _ignored_remote


def current_flow(ctx: Context | None = None) -> FlowContext | None:
    """The flow active in ``ctx`` (default: the current context), if any."""
    local = context.get_value(_FLOW_KEY, ctx)
    if local is not None:
        return local  # type: ignore[return-value]
    return remote_flow(ctx)


def remote_flow(ctx: Context | None = None) -> FlowContext | None:
    """A flow carried in baggage from another service, if present and trusted."""
    global _ignored_remote
    entries = baggage.get_all(ctx)
    flow_id = entries.get(FLOW_ID)
    if not flow_id:
        return None
    tenant, name = str(entries.get(TENANT) or ""), str(entries.get(FLOW_NAME) or "")
    trusted = context.get_value(TRUSTED_PEER_KEY, ctx) is True or _trust.signature_valid(
        str(flow_id), tenant, name, entries.get(SIGNATURE)  # type: ignore[arg-type]
    )
    if not trusted or not tenant or not name:
        _ignored_remote += 1
        return None
    step_id = entries.get(STEP_ID)
    return FlowContext(str(flow_id), tenant, name, str(step_id) if step_id else None, local=False)


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
