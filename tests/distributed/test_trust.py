"""Forged flow context from outside cannot add steps to another tenant's flow.

The strict service and worker share a secret and trust no network; the
default ones trust loopback (no secret configured). Every forged request gets
a normal answer: an ignored context is counted, never an error.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from dashfrog import flow, step
from tests.distributed._helpers import baggage_header, build_flow, read_back
from tests.distributed.apps import tasks
from tests.distributed.conftest import SECRET, Cluster

pytestmark = pytest.mark.slow

ATTACKER_FLOW = "0123456789abcdef0123456789abcdef"


def _post(url: str, baggage: str) -> dict[str, Any]:
    response = requests.post(url, json={}, headers={"baggage": baggage}, timeout=10)
    assert response.status_code == 200, response.text  # never an error for the caller
    return response.json()  # type: ignore[no-any-return]


def _ignored(url: str) -> int:
    return int(requests.get(f"{url}/stats", timeout=10).json()["ignored"])


def _forgeries(victim: str) -> dict[str, str]:
    """Headers an outsider could send, claiming the victim's flow."""
    return {
        "unsigned": baggage_header(victim, "victim-corp", "payout"),
        "wrong secret": baggage_header(victim, "victim-corp", "payout", secret="guessed-secret"),
        # The attacker holds a valid signature for a flow of their own (say it leaked
        # from a call to them) and swaps in the victim's tenant, or the victim's flow id.
        "tenant changed under a valid signature": baggage_header(
            ATTACKER_FLOW, "victim-corp", "payout", secret=SECRET,
            signed_as=(ATTACKER_FLOW, "attacker-corp", "payout"),
        ),
        "flow id changed under a valid signature": baggage_header(
            victim, "victim-corp", "payout", secret=SECRET,
            signed_as=(ATTACKER_FLOW, "victim-corp", "payout"),
        ),
        # Separator games: the same bytes split differently must not verify.
        "fields shifted under a valid signature": baggage_header(
            victim, "victim-corp", "payout", secret=SECRET,
            signed_as=(victim, "victim-corp\npayout", ""),
        ),
        # A valid signature for one step of the victim's flow, replayed to hang
        # steps under another step.
        "parent step changed under a valid signature": baggage_header(
            victim, "victim-corp", "payout", step_id="00aa11bb22cc33dd", secret=SECRET,
            signed_as=(victim, "victim-corp", "payout", "11bb22cc33dd44ee"),
        ),
        # A signature that leaked long ago (older than DASHFROG_CONTEXT_MAX_AGE_S, 7 days).
        "expired signature": baggage_header(
            victim, "victim-corp", "payout", secret=SECRET, issued_at=int(time.time()) - 8 * 24 * 3600,
        ),
    }


def _assert_no_attacker_flows() -> None:
    from dashfrog import query

    assert query.flow(ATTACKER_FLOW) is None
    assert query.flows(tenant="attacker-corp").flows == []


def _assert_untouched(dist: Cluster, victim: str, service: str) -> None:
    events = dist.events.sync()  # everything the services flushed before answering is read
    assert not [e for e in events if e["flow_id"] == victim and e["service"] == service]
    assert not [e for e in events if e["flow_id"] == ATTACKER_FLOW]
    assert {e["tenant"] for e in events if e["flow_id"] == victim} == {"victim-corp"}


def test_forged_http_context_cannot_join_another_tenants_flow(dist: Cluster) -> None:
    url = dist.strict_b.url
    with flow.start(name="payout", tenant="victim-corp", end_on_exit=False) as victim:
        with step.start("approve"):
            pass
    before = _ignored(url)
    forgeries = _forgeries(victim)
    for what, header in forgeries.items():
        body = _post(f"{url}/process", header)
        assert (body["flow_id"], body["tenant"]) == (None, None), what
    assert _ignored(url) == before + len(forgeries)
    _assert_untouched(dist, victim, "strict-b")

    # Control: the same service honours context signed with the shared secret.
    signed = _post(f"{url}/process", baggage_header(victim, "victim-corp", "payout", secret=SECRET))
    assert (signed["flow_id"], signed["tenant"]) == (victim, "victim-corp")
    flow.end(flow_id=victim)
    got = build_flow(victim, dist.events.of_flow(victim, ["process_payment"]))
    assert [(s.name, s.service) for s in got.steps.values()] == [
        ("approve", "service-a"), ("process_payment", "strict-b")
    ]
    # What the projection shows: the victim's flow has its own step and the signed one, nothing forged.
    read_back(got)
    _assert_no_attacker_flows()


def test_default_service_trusts_loopback_only(dist: Cluster) -> None:
    if dist.outside is None:
        pytest.skip("this machine has no non-loopback address to call from")
    port = dist.service_b.url.rsplit(":", 1)[1]
    outside_url = f"http://{dist.outside}:{port}"
    with flow.start(name="payout", tenant="victim-corp", end_on_exit=False) as victim:
        pass
    header = baggage_header(victim, "victim-corp", "payout")  # unsigned, like an outsider's
    before = _ignored(dist.service_b.url)

    # From outside loopback: ignored and counted, and not forwarded to the next hop either.
    assert _post(f"{outside_url}/process", header)["flow_id"] is None
    forwarded = _post(f"{outside_url}/forward", header)
    assert forwarded["flow_id"] is None and forwarded["downstream"]["flow_id"] is None
    assert _ignored(dist.service_b.url) == before + 2
    _assert_untouched(dist, victim, "service-b")
    assert not [e for e in dist.events.sync() if e["flow_id"] == victim and e["service"] == "service-c"]

    # From loopback (a service on this host), unsigned context is honoured by default.
    assert _post(f"{dist.service_b.url}/process", header)["flow_id"] == victim
    flow.end(flow_id=victim)
    got = build_flow(victim, dist.events.of_flow(victim, ["process_payment"]))
    assert [(s.name, s.services) for s in read_back(got).all_steps()] == [("process_payment", ["service-b"])]


def test_oversized_baggage_is_ignored(dist: Cluster) -> None:
    with flow.start(name="payout", tenant="victim-corp", end_on_exit=False) as flow_id:
        pass
    # Over DASHFROG_MAX_BAGGAGE_BYTES (4096) but within W3C limits, so OpenTelemetry extracts it.
    header = baggage_header(flow_id, "victim-corp", "payout", extra={"padding": "x" * 4000})
    before = _ignored(dist.service_b.url)
    assert _post(f"{dist.service_b.url}/process", header)["flow_id"] is None
    assert _ignored(dist.service_b.url) == before + 1
    # Validly signed flow entries in a 6 KB header: OpenTelemetry drops only the
    # padding entry (over its 4096-byte pair limit); in a 9 KB one, the whole header
    # (over W3C's 8192 bytes). The size is checked on the raw header, so both are
    # ignored, and counted.
    url = dist.strict_b.url
    before = _ignored(url)
    for size in (6000, 9000):
        signed = baggage_header(flow_id, "victim-corp", "payout", secret=SECRET, extra={"padding": "x" * size})
        assert _post(f"{url}/process", signed)["flow_id"] is None, size
    assert _ignored(url) == before + 2
    control = baggage_header(flow_id, "victim-corp", "payout", secret=SECRET)
    assert _post(f"{url}/process", control)["flow_id"] == flow_id
    flow.end(flow_id=flow_id)


def _whoami(queue: str, baggage: str | None) -> dict[str, Any]:
    headers = {"baggage": baggage} if baggage else None
    # Outside any flow here, so the instrumentation adds no baggage of its own.
    return tasks.whoami.apply_async(queue=queue, headers=headers).get(timeout=30)  # type: ignore[no-any-return]


def test_forged_task_messages_cannot_join_another_tenants_flow(dist: Cluster) -> None:
    queue = dist.strict_worker.queue
    with flow.start(name="payout", tenant="victim-corp", end_on_exit=False) as victim:
        pass
    before = _whoami(queue, None)["ignored"]
    forgeries = _forgeries(victim)
    for what, header in forgeries.items():
        seen = _whoami(queue, header)
        assert (seen["flow_id"], seen["tenant"]) == (None, None), what
    assert _whoami(queue, None)["ignored"] == before + len(forgeries)
    _assert_untouched(dist, victim, "strict-worker")

    signed = _whoami(queue, baggage_header(victim, "victim-corp", "payout", secret=SECRET))
    assert (signed["flow_id"], signed["tenant"]) == (victim, "victim-corp")
    flow.end(flow_id=victim)
    got = build_flow(victim, dist.events.of_flow(victim, ["whoami", "tests.distributed.apps.tasks.whoami"]))
    assert {(s.name, s.service) for s in got.steps.values()} == {
        ("whoami", "strict-worker"), ("tests.distributed.apps.tasks.whoami", "strict-worker")
    }
    read_back(got)
    _assert_no_attacker_flows()


def test_default_worker_trusts_its_broker(dist: Cluster) -> None:
    """Without a secret, whoever can enqueue tasks (and so run any of them) is trusted."""
    with flow.start(name="payout", tenant="acme", end_on_exit=False) as flow_id:
        pass
    seen = _whoami(dist.worker.queue, baggage_header(flow_id, "acme", "payout"))
    assert (seen["flow_id"], seen["tenant"]) == (flow_id, "acme")
    flow.end(flow_id=flow_id)
