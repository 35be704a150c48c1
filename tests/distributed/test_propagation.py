"""What goes on the wire, and what a receiver admits, checked in one process.

Under OpenTelemetry's default no-op tracer (nothing here configures a
TracerProvider) the instrumentations still inject baggage; ``traceparent``
only when a span context exists upstream. Flows need only baggage.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import DefaultGetter, DefaultSetter, TextMapPropagator

import dashfrog
from dashfrog import Settings, _context, flow, step
from dashfrog._instrument import ensure_propagators
from dashfrog._settings import set_settings
from tests.distributed._helpers import baggage_header


@pytest.fixture
def offline() -> Iterator[None]:
    """The SDK with events switched off: these tests look at context, not at events."""
    set_settings(Settings(disabled=True))  # type: ignore[call-arg]
    try:
        yield
    finally:
        set_settings(None)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """An HTTP server on loopback that records the headers of each request."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None: ...

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _entries(header: str) -> dict[str, str]:
    ctx = propagate.extract({"baggage": header})
    return {k: str(v) for k, v in baggage.get_all(ctx).items()}


def test_noop_tracer_carries_baggage_but_no_traceparent(offline: None, echo_server: Any) -> None:
    url, seen = echo_server
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nobody configured one
    dashfrog.with_requests()
    with flow.start(name="order", tenant="acme") as flow_id:
        with step.start("call") as step_id:
            requests.get(url, timeout=5)
    headers = seen[-1]
    assert "traceparent" not in headers
    entries = _entries(headers["baggage"])
    assert entries["dashfrog.flow_id"] == flow_id
    assert (entries["dashfrog.tenant"], entries["dashfrog.flow_name"]) == ("acme", "order")
    assert entries["dashfrog.step_id"] == step_id
    assert "dashfrog.sig" not in entries  # no secret configured: nothing to sign with

    requests.get(url, timeout=5)  # outside a flow: no flow entries
    assert "dashfrog" not in seen[-1].get("baggage", "")


def test_upstream_traceparent_passes_through_the_noop_tracer(offline: None, echo_server: Any) -> None:
    url, seen = echo_server
    dashfrog.with_requests()
    upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    token = context.attach(propagate.extract({"traceparent": upstream}))
    try:
        with flow.start(name="order", tenant="acme"):
            requests.get(url, timeout=5)
    finally:
        context.detach(token)
    assert seen[-1]["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert "dashfrog.flow_id" in seen[-1]["baggage"]


def test_with_a_real_tracer_provider_traceparent_rides_along(tmp_path: Any) -> None:
    """An application that configured the OpenTelemetry SDK: both headers go out.

    In a child process, since a TracerProvider can be set once per process.
    """
    script = """
import http.server, threading, requests
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
import dashfrog
from dashfrog import flow
trace.set_tracer_provider(TracerProvider())
dashfrog.setup(disabled=True)
dashfrog.with_requests()
seen = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        seen.append(dict(self.headers)); self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
with flow.start(name="order", tenant="acme") as flow_id:
    requests.get(f"http://127.0.0.1:{server.server_address[1]}", timeout=5)
h = {k.lower(): v for k, v in seen[0].items()}
assert h["traceparent"].startswith("00-"), h
assert flow_id in h["baggage"], h
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


class _Marker(TextMapPropagator):
    """Stands for a propagator the application configured (B3, Jaeger...)."""

    def extract(self, carrier: Any, context: Any = None, getter: Any = DefaultGetter()) -> Any:  # noqa: B008
        return context if context is not None else context_of()

    def inject(self, carrier: Any, context: Any = None, setter: Any = DefaultSetter()) -> None:  # noqa: B008
        setter.set(carrier, "x-marker", "1")

    @property
    def fields(self) -> set[str]:
        return {"x-marker"}


def context_of() -> Any:
    return context.get_current()


def test_propagators_of_the_application_are_kept() -> None:
    original = propagate.get_global_textmap()
    try:
        propagate.set_global_textmap(_Marker())
        ensure_propagators()
        ensure_propagators()  # idempotent
        assert propagate.get_global_textmap().fields == {"x-marker", "traceparent", "tracestate", "baggage"}
        carrier: dict[str, str] = {}
        ctx = baggage.set_baggage("k", "v")
        propagate.inject(carrier, context=ctx)
        assert carrier["x-marker"] == "1" and carrier["baggage"] == "k=v"
    finally:
        propagate.set_global_textmap(original)


def _admit(header: str, *, peer_trusted: bool) -> Context:
    """What a server admits of a request carrying ``header`` (and nothing else)."""
    carrier = {"baggage": header}
    return _context.admit(propagate.extract(carrier), carrier, DefaultGetter(), peer_trusted=peer_trusted)


def _admitted(header: str, *, peer_trusted: bool) -> _context.FlowContext | None:
    return _context.current_flow(_admit(header, peer_trusted=peer_trusted))


def _ignored() -> int:
    return int(dashfrog.stats()["ignored_remote_contexts"])


def test_admission_rules(offline: None) -> None:
    secret = Settings(context_secret="s3cret")  # type: ignore[call-arg]
    flow_id = "0123456789abcdef0123456789abcdef"
    unsigned = baggage_header(flow_id, "acme", "order", step_id="00aa11bb22cc33dd")
    signed = baggage_header(flow_id, "acme", "order", secret="s3cret")
    before = dashfrog.stats()["ignored_remote_contexts"]

    got = _admitted(unsigned, peer_trusted=True)
    assert got is not None and (got.flow_id, got.tenant, got.step_id, got.local) == (
        flow_id, "acme", "00aa11bb22cc33dd", False
    )
    assert _admitted(unsigned, peer_trusted=False) is None
    set_settings(secret)
    assert _admitted(signed, peer_trusted=False) is not None
    assert _admitted(baggage_header(flow_id, "other", "order", secret="s3cret",
                                    signed_as=(flow_id, "acme", "order")), peer_trusted=False) is None
    malformed = [
        baggage_header("not an id!", "acme", "order", secret="s3cret"),
        baggage_header(flow_id, "", "order"),
        baggage_header(flow_id, "acme", "order", step_id="bad step"),
        baggage_header(flow_id, "x" * 600, "order"),
    ]
    for header in malformed:
        assert _admitted(header, peer_trusted=True) is None, header
    assert dashfrog.stats()["ignored_remote_contexts"] == before + 2 + len(malformed)


def test_an_ignored_context_leaves_no_flow_entries_to_forward(offline: None) -> None:
    header = baggage_header("0123456789abcdef0123456789abcdef", "acme", "order", extra={"other": "kept"})
    assert dict(baggage.get_all(_admit(header, peer_trusted=False))) == {"other": "kept"}


def test_admitted_context_is_resigned_for_the_next_hop(offline: None) -> None:
    set_settings(Settings(context_secret="s3cret"))  # type: ignore[call-arg]
    # From a trusted peer, unsigned, with the caller's step.
    header = baggage_header("0123456789abcdef0123456789abcdef", "acme", "order", step_id="00aa11bb22cc33dd")
    ctx = _admit(header, peer_trusted=True)
    out: dict[str, str] = {}
    propagate.inject(out, context=ctx)
    entries = _entries(out["baggage"])
    assert dashfrog._trust.check_signature(
        entries["dashfrog.flow_id"], entries["dashfrog.tenant"], entries["dashfrog.flow_name"],
        entries["dashfrog.step_id"], entries["dashfrog.iat"], entries["dashfrog.sig"],
    ) is None


def test_signature_binds_the_parent_step_and_expires(offline: None) -> None:
    set_settings(Settings(disabled=True, context_secret="s3cret", context_max_age_s=3600))  # type: ignore[call-arg]
    flow_id, step_id = "0123456789abcdef0123456789abcdef", "00aa11bb22cc33dd"
    now = int(time.time())

    def header(**kw: Any) -> str:
        return baggage_header(flow_id, "acme", "order", secret="s3cret", **{"step_id": step_id, **kw})

    before = _ignored()
    got = _admitted(header(), peer_trusted=False)
    assert got is not None and got.step_id == step_id
    assert _admitted(header(issued_at=now - 3000), peer_trusted=False) is not None
    refused = {
        # Steps re-parented under a valid signature: the step is signed too.
        "other step": header(step_id="11bb22cc33dd44ee", signed_as=(flow_id, "acme", "order", step_id)),
        "step dropped": header(step_id=None, signed_as=(flow_id, "acme", "order", step_id)),
        "older than the max age": header(issued_at=now - 3700),
        "issued in the future": header(issued_at=now + 3600),
        # The issued-at time is signed: moving a stale one forward breaks the signature.
        "issued-at moved": header(issued_at=now - 7200).replace(f"dashfrog.iat={now - 7200}", f"dashfrog.iat={now}"),
        "no issued-at": header(issued_at=now).replace(f",dashfrog.iat={now}", ""),
    }
    for what, h in refused.items():
        assert _admitted(h, peer_trusted=False) is None, what
    assert _ignored() == before + len(refused)


def test_default_max_age_lets_a_week_old_task_join() -> None:
    assert Settings().context_max_age_s == 7 * 24 * 3600  # type: ignore[call-arg]
    s = Settings(context_secret="s3cret")  # type: ignore[call-arg]
    now = time.time()
    for age, ok in ((6 * 24 * 3600, True), (8 * 24 * 3600, False)):
        issued = int(now - age)
        sig = dashfrog._trust.sign("f" * 32, "acme", "order", None, issued, s)
        why = dashfrog._trust.check_signature("f" * 32, "acme", "order", None, str(issued), sig, s, now=now)
        assert (why is None) == ok, why


def test_baggage_size_is_checked_before_opentelemetry_parses(offline: None) -> None:
    set_settings(Settings(disabled=True, context_secret="s3cret"))  # type: ignore[call-arg]
    flow_id = "0123456789abcdef0123456789abcdef"
    signed = baggage_header(flow_id, "acme", "order", secret="s3cret")
    # 6 KB: OpenTelemetry drops the one entry over its 4096-byte pair limit and keeps
    # the validly signed flow entries; parsed first, the header would pass the limit.
    six_kb = signed + ",padding=" + "x" * 6000
    assert _entries(six_kb)["dashfrog.flow_id"] == flow_id
    # 9 KB: over W3C's 8192 bytes, OpenTelemetry drops the whole header, silently.
    nine_kb = signed + ",padding=" + "x" * 9000
    assert "dashfrog.flow_id" not in _entries(nine_kb)
    before = _ignored()
    assert _admitted(six_kb, peer_trusted=False) is None
    assert _admitted(nine_kb, peer_trusted=False) is None
    assert _ignored() == before + 2
    assert _admitted(signed, peer_trusted=False) is not None  # the same flow entries alone
    # A limit raised past W3C's still stops there: what OpenTelemetry drops is counted.
    set_settings(Settings(disabled=True, context_secret="s3cret", max_baggage_bytes=65536))  # type: ignore[call-arg]
    assert _admitted(six_kb, peer_trusted=False) is not None
    assert _admitted(nine_kb, peer_trusted=False) is None
    assert _ignored() == before + 3
    # Someone else's large baggage, with nothing of ours in it, is not ours to count.
    assert _admitted("other=" + "y" * 9000, peer_trusted=False) is None
    assert _ignored() == before + 3


def test_trusted_network_defaults() -> None:
    from dashfrog import _trust

    def trusted(address: str, **settings: Any) -> bool:
        return _trust.address_trusted(address, Settings(**settings))

    assert trusted("127.0.0.1") and trusted("::1") and trusted("::ffff:127.0.0.1")
    assert not trusted("192.0.2.2") and not trusted("") and not trusted("/run/app.sock")
    assert not trusted("127.0.0.1", context_secret="s")  # a secret: signatures only
    assert not trusted("127.0.0.1", trusted_networks="none")
    assert trusted("10.1.2.3", trusted_networks="10.0.0.0/8, 192.168.0.0/16")
    assert not trusted("127.0.0.1", trusted_networks="10.0.0.0/8")
    assert trusted("10.1.2.3", trusted_networks="10.0.0.0/8", context_secret="s")
    with pytest.raises(dashfrog.ConfigurationError):
        _trust.trusted_networks(Settings(trusted_networks="10.0.0.0/33"))  # type: ignore[call-arg]


def test_sdk_imports_without_the_frameworks() -> None:
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'fastapi','flask','celery','requests','httpx','starlette'}"
        " or name.startswith('opentelemetry.instrumentation'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import dashfrog\n"
        "try:\n"
        "    dashfrog.with_fastapi(object())\n"
        "except dashfrog.ConfigurationError as e:\n"
        "    print('ConfigurationError', 'dashfrog[fastapi]' in str(e))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ConfigurationError True", done.stderr
