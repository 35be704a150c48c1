"""Reading flows back from decoded events, and forging baggage the way an outsider would."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from dashfrog import Settings, _trust


@dataclass
class Step:
    step_id: str
    name: str
    service: str
    tenant: str
    parent_step_id: str | None
    attributes: dict[str, str]
    status: str | None = None
    ended_by: str | None = None
    children: list[Step] = field(default_factory=list)


@dataclass
class Flow:
    flow_id: str
    events: list[dict[str, Any]]
    steps: dict[str, Step]

    @property
    def status(self) -> str | None:
        ended = [e for e in self.events if e["kind"] == "flow_ended"]
        return ended[-1]["status"] if ended else None

    @property
    def ended_by(self) -> str | None:
        ended = [e for e in self.events if e["kind"] == "flow_ended"]
        return ended[-1]["service"] if ended else None

    def named(self, name: str) -> list[Step]:
        return [s for s in self.steps.values() if s.name == name]

    def one(self, name: str) -> Step:
        found = self.named(name)
        assert len(found) == 1, f"expected one step {name!r}, found {len(found)}: {self.summary()}"
        return found[0]

    def summary(self) -> list[tuple[str, str, str | None]]:
        return [(s.name, s.service, s.status) for s in self.steps.values()]

    @property
    def tenants(self) -> set[str]:
        return {e["tenant"] for e in self.events}


def build_flow(flow_id: str, events: list[dict[str, Any]]) -> Flow:
    # Services send on their own schedules: the topic's order is not the order things happened.
    events = sorted(events, key=lambda e: e["timestamp"])
    steps: dict[str, Step] = {}
    for e in events:
        if e["kind"] == "step_started":
            steps[e["step_id"]] = Step(
                e["step_id"], e["step_name"], e["service"], e["tenant"], e["parent_step_id"],
                dict(e["attributes"] or {}),
            )
    for e in events:
        if e["kind"] == "step_ended" and e["step_id"] in steps:
            steps[e["step_id"]].status = e["status"]
            steps[e["step_id"]].attributes.update(e["attributes"] or {})  # e.g. a retry's reason
            steps[e["step_id"]].ended_by = e["service"]
    for s in steps.values():
        if s.parent_step_id in steps:
            steps[s.parent_step_id].children.append(s)
    return Flow(flow_id, events, steps)


def _projected(detail: Any) -> dict[str, tuple[Any, ...]]:
    return {
        s.step_id: (s.name, s.parent_step_id, s.status, sorted(s.services), dict(s.attributes))
        for s in detail.all_steps()
    }


def _emitted(flow: Flow) -> dict[str, tuple[Any, ...]]:
    return {
        s.step_id: (s.name, s.parent_step_id, s.status or "running", [s.service], s.attributes)
        for s in flow.steps.values()
    }


def read_back(flow: Flow, timeout: float = 30.0, status: str | None = None) -> Any:
    """``dashfrog.query.flow`` of ``flow``, once the projection shows every step it emitted.

    Checks every step (name, parent, status, service, attributes), the tenant
    and the final status (``status``, default: what flow_ended said) against
    what the services emitted; returns the detail.
    """
    from dashfrog import query

    (tenant,) = flow.tenants
    want_status = status or flow.status or "running"
    want_steps = _emitted(flow)
    services = {s.service for s in flow.steps.values()}
    deadline = time.monotonic() + timeout
    while True:
        detail = query.flow(flow.flow_id, tenant=tenant)
        # The flows and steps tables are fed by separate materialized views, so one
        # read can land between them: wait until the flow row shows the services too.
        if (
            detail is not None
            and (detail.tenant, detail.status) == (tenant, want_status)
            and _projected(detail) == want_steps
            and services <= set(detail.services)
        ):
            return detail
        if time.monotonic() > deadline:
            seen = (
                (detail.tenant, detail.status, detail.services, _projected(detail))
                if detail is not None else None
            )
            raise AssertionError(
                f"query.flow({flow.flow_id!r}) did not show {(tenant, want_status, services, want_steps)} "
                f"within {timeout}s; last answer: {seen}"
            )
        time.sleep(0.1)  # polling interval of a condition wait


def baggage_header(
    flow_id: str,
    tenant: str,
    name: str,
    *,
    secret: str | None = None,
    signed_as: tuple[str, ...] | None = None,
    step_id: str | None = None,
    issued_at: int | None = None,
    extra: dict[str, str] | None = None,
) -> str:
    """A W3C ``baggage`` header claiming a flow, signed with ``secret`` over
    ``signed_as`` (flow id, tenant, name and optionally step id; default: what
    the header claims) at ``issued_at`` (default: now)."""
    entries = {"dashfrog.flow_id": flow_id, "dashfrog.tenant": tenant, "dashfrog.flow_name": name}
    if step_id:
        entries["dashfrog.step_id"] = step_id
    if secret is not None:
        who = signed_as or (flow_id, tenant, name, step_id)
        if len(who) == 3:
            who = (*who, step_id)
        when = int(time.time()) if issued_at is None else issued_at
        signature = _trust.sign(*who, when, settings=Settings(context_secret=secret))  # type: ignore[call-arg,arg-type]
        assert signature is not None
        entries["dashfrog.sig"] = signature
        entries["dashfrog.iat"] = str(when)
    entries.update(extra or {})
    return ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in entries.items())
