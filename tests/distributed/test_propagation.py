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
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from opentelemetry import baggage, context, propagate, trace
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


def _admitted(header: str, *, peer_trusted: bool) -> _context.FlowContext | None:
    ctx = _context.admit(propagate.extract({"baggage": header}), peer_trusted=peer_trusted)
    return _context.current_flow(ctx)


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
    ctx = _context.admit(propagate.extract({"baggage": header}), peer_trusted=False)
    assert dict(baggage.get_all(ctx)) == {"other": "kept"}


def test_admitted_context_is_resigned_for_the_next_hop(offline: None) -> None:
    set_settings(Settings(context_secret="s3cret"))  # type: ignore[call-arg]
    header = baggage_header("0123456789abcdef0123456789abcdef", "acme", "order")  # from a trusted peer
    ctx = _context.admit(propagate.extract({"baggage": header}), peer_trusted=True)
    out: dict[str, str] = {}
    propagate.inject(out, context=ctx)
    entries = _entries(out["baggage"])
    assert dashfrog._trust.signature_valid(
        entries["dashfrog.flow_id"], entries["dashfrog.tenant"], entries["dashfrog.flow_name"],
        entries["dashfrog.sig"],
    )


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
