"""``with_*``: carry flow context across HTTP calls and Celery tasks.

Each function turns on the OpenTelemetry instrumentation package of one
framework; those packages move W3C ``traceparent`` and ``baggage`` between
processes, and the flow rides in baggage (see ``_context``). DashFrog adds
only what OpenTelemetry has no notion of: where a request or task enters a
service, the flow context that came with it is admitted (signed, or from a
trusted peer) or dropped and counted (``_context.admit``), and a request made
from inside this process (a test client) that brings none keeps the flow of
the code that made it.

No TracerProvider is configured here. Under OpenTelemetry's default no-op
tracer the instrumentations still run their propagators: baggage is injected
and extracted, ``traceparent`` only when an upstream span context exists. The
flow needs only baggage, so it travels either way.

Frameworks are imported inside each function: the SDK imports without them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import context
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from dashfrog import _context, _trust
from dashfrog._exceptions import ConfigurationError
from dashfrog._settings import get_settings

log = logging.getLogger("dashfrog")

App = TypeVar("App")
Carrier = TypeVar("Carrier")

_lock = threading.Lock()


def _require(module: str, extra: str) -> None:
    import importlib

    try:
        # The instrumentation package imports its framework: both are checked.
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"{exc.name or module} is not installed; with_{extra}() needs: pip install 'dashfrog[{extra}]'"
        ) from exc


def ensure_propagators() -> None:
    """Make the global propagator carry W3C tracecontext and baggage.

    Whatever the application configured (B3, Jaeger, a composite) stays; the
    W3C propagators it lacks are added beside it.
    """
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    with _lock:
        current = propagate.get_global_textmap()
        fields = set(current.fields)
        missing: list[Any] = []
        if "traceparent" not in fields:
            missing.append(TraceContextTextMapPropagator())
        if "baggage" not in fields:
            missing.append(W3CBaggagePropagator())
        if missing:
            propagate.set_global_textmap(CompositePropagator([current, *missing]))


def _check_trust_settings() -> None:
    # A typo in DASHFROG_TRUSTED_NETWORKS should stop startup, not every request.
    _trust.trusted_networks()


def _admit_current(
    carrier: Carrier, getter: Getter[Carrier], peer_trusted: bool, caller: Context | None
) -> Context | None:
    """The current context as admitted (see ``_context.admit``), or None if that changes nothing.

    The caller attaches it: where it can be detached again depends on the framework.
    """
    current = context.get_current()
    admitted = _context.admit(current, carrier, getter, peer_trusted=peer_trusted, caller=caller)
    if admitted is current:
        return None
    return admitted


# The context a request was made from, when it is made inside this process
# (TestClient, Flask's test client): recorded by a wrapper outside the
# OpenTelemetry middleware, which replaces the context with what it extracts
# from the headers (nothing, for such a request).
_CALLER = "dashfrog.caller_context"


# -- HTTP servers ------------------------------------------------------------------


def with_fastapi(app: App, **instrument_options: Any) -> App:
    """Instrument a FastAPI app; returns it.

    Keyword arguments go to ``FastAPIInstrumentor.instrument_app``; a
    ``server_request_hook`` of yours still runs, before DashFrog's.
    """
    _require("opentelemetry.instrumentation.fastapi", "fastapi")
    from opentelemetry.instrumentation.asgi import asgi_getter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    _check_trust_settings()
    ensure_propagators()
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        log.warning(
            "dashfrog: %r was already instrumented by OpenTelemetry; DashFrog cannot add its trust "
            "check, so only signed flow context (DASHFROG_CONTEXT_SECRET) is honoured there. "
            "Call with_fastapi(app) instead of FastAPIInstrumentor.instrument_app(app).",
            app,
        )
        return app
    user_hook: Callable[[Any, dict[str, Any]], None] | None = instrument_options.pop(
        "server_request_hook", None
    )

    def server_request_hook(span: Any, scope: dict[str, Any]) -> None:
        if user_hook is not None:
            user_hook(span, scope)
        client = scope.get("client")
        peer = client[0] if client else None
        admitted = _admit_current(scope, asgi_getter, _trust.address_trusted(peer), scope.get(_CALLER))
        if admitted is not None:
            # Not detached here on purpose: the middleware calls this hook inside
            # ``use_span``, whose exit resets the context to what it was before the
            # request, which removes this attachment with it.
            context.attach(admitted)

    target: Any = app
    FastAPIInstrumentor.instrument_app(
        target, server_request_hook=server_request_hook, **instrument_options
    )
    # The instrumentation wraps the app's middleware stack in its own; this
    # wraps that, to see the context a request is made from before it does.
    build = target.build_middleware_stack

    def build_middleware_stack() -> Any:
        inner = build()

        async def record_caller(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope.get("type") in ("http", "websocket"):
                scope[_CALLER] = context.get_current()
            await inner(scope, receive, send)

        return record_caller

    target.build_middleware_stack = build_middleware_stack
    return app


_FLASK_TOKEN = "dashfrog.context_token"


def with_flask(app: App, **instrument_options: Any) -> App:
    """Instrument a Flask app; returns it. Call it before registering other request hooks.

    Keyword arguments go to ``FlaskInstrumentor.instrument_app``.
    """
    _require("opentelemetry.instrumentation.flask", "flask")
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.wsgi import wsgi_getter

    _check_trust_settings()
    ensure_propagators()
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        log.warning(
            "dashfrog: %r was already instrumented by OpenTelemetry; only signed flow context "
            "(DASHFROG_CONTEXT_SECRET) is honoured there. Call with_flask(app) instead.",
            app,
        )
        return app
    FlaskInstrumentor.instrument_app(app, **instrument_options)

    # Registered after the instrumentation's own hooks: Flask runs before_request
    # functions in order (so the extracted context is attached by then) and
    # teardown functions in reverse (so ours is detached first, last-in first-out).
    def admit_request() -> None:
        from flask import request

        environ = request.environ
        admitted = _admit_current(
            environ, wsgi_getter, _trust.address_trusted(request.remote_addr), environ.get(_CALLER)
        )
        if admitted is not None:
            request.environ[_FLASK_TOKEN] = (context.attach(admitted), admitted)

    def release_request(exc: BaseException | None) -> None:
        from flask import request

        entry = request.environ.pop(_FLASK_TOKEN, None)
        # If the view left its own context attached, the instrumentation's reset restores order.
        if entry is not None and context.get_current() is entry[1]:
            context.detach(entry[0])

    app.before_request(admit_request)  # type: ignore[attr-defined]
    app.teardown_request(release_request)  # type: ignore[attr-defined]
    # Outside the instrumentation's WSGI wrapper: the context the request is made from.
    inner: Callable[..., Any] = app.wsgi_app  # type: ignore[attr-defined]

    def record_caller(environ: dict[str, Any], start_response: Any) -> Any:
        environ[_CALLER] = context.get_current()
        return inner(environ, start_response)

    app.wsgi_app = record_caller  # type: ignore[attr-defined]
    return app


# -- HTTP clients ----------------------------------------------------------------


def with_requests(**instrument_options: Any) -> None:
    """Instrument the requests library: every call carries the current flow."""
    _require("opentelemetry.instrumentation.requests", "requests")
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    ensure_propagators()
    instrumentor = RequestsInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(**instrument_options)


def with_httpx(**instrument_options: Any) -> None:
    """Instrument httpx (sync and async clients): every call carries the current flow."""
    _require("opentelemetry.instrumentation.httpx", "httpx")
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    ensure_propagators()
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(**instrument_options)


# -- Celery ------------------------------------------------------------------------


@dataclass
class _CeleryOptions:
    trust_broker: bool | None
    task_steps: bool

    def broker_trusted(self) -> bool:
        if self.trust_broker is not None:
            return self.trust_broker
        # Unsigned context from the broker is honoured until the services share a
        # secret; from then on every task message must carry a valid signature.
        return get_settings().context_secret is None


@dataclass
class _TaskRun:
    """What DashFrog attached for one task execution, undone when it ends."""

    arrival: _context.FlowContext | None = None
    tokens: list[object] = field(default_factory=list)
    scope: Any = None  # the StepScope of this attempt, if any
    top: Context | None = None  # the context after our last attach


_celery_apps: dict[int, _CeleryOptions] = {}
_runs: dict[tuple[int, str], _TaskRun] = {}
_celery_connected = False


def with_celery(app: App, *, trust_broker: bool | None = None, task_steps: bool = True) -> App:
    """Instrument a Celery app (producer and worker side); returns it.

    Tasks published inside a flow carry it in their message headers. In the
    worker, each execution of such a task is a step named after the task with
    an ``attempt`` attribute (1 for the first run, 2 for the first retry...);
    steps the task opens nest under it, and ``flow.end()`` works there.

    ``trust_broker``: honour unsigned flow context from task messages. Default
    (None): yes until ``DASHFROG_CONTEXT_SECRET`` is set, then only signed
    context. Whoever can write to the broker can already run any task, but not
    necessarily in any tenant's flow. ``task_steps=False`` records no step per
    execution (and so no attempt numbers).
    """
    _require("opentelemetry.instrumentation.celery", "celery")
    from celery import signals
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    ensure_propagators()
    real = app._get_current_object() if hasattr(app, "_get_current_object") else app  # type: ignore[attr-defined]
    global _celery_connected
    with _lock:
        _celery_apps[id(real)] = _CeleryOptions(trust_broker, task_steps)
        if _celery_connected:
            return app
        instrumentor = CeleryInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
        # Connected after the instrumentation's receivers, which Celery calls first:
        # at prerun its extracted context is attached below ours, at publish its
        # headers are written before we adjust them.
        from dashfrog._flow import retry_judges

        retry_judges.append(_celery_will_retry)
        signals.task_prerun.connect(_on_prerun, weak=False)
        signals.task_success.connect(_on_success, weak=False)
        signals.task_failure.connect(_on_failure, weak=False)
        signals.task_retry.connect(_on_retry, weak=False)
        signals.task_postrun.connect(_on_postrun, weak=False)
        signals.before_task_publish.connect(_on_publish, weak=False)
        # Prefork children leave through os._exit: atexit never flushes their queue.
        signals.worker_process_shutdown.connect(_flush_on_shutdown, weak=False)
        signals.worker_shutdown.connect(_flush_on_shutdown, weak=False)
        _celery_connected = True
    return app


def _celery_will_retry(exc: BaseException) -> bool:
    """Whether ``exc`` leaving a step means Celery runs the attempt again.

    ``self.retry()`` raises ``Retry``. For ``autoretry_for`` the task's own
    exception passes through the steps first and Celery turns it into a retry
    only at the task's edge: judged here by the rules Celery applies there
    (listed type, not in ``dont_autoretry_for``, retries left). A task that
    catches such an exception itself, between the step and its edge, still
    sees the step recorded as retried.
    """
    from celery import current_task
    from celery.exceptions import Ignore, Retry

    if isinstance(exc, Retry):
        return True
    task = current_task._get_current_object() if current_task else None
    if task is None or _options_for(task) is None or isinstance(exc, Ignore):
        return False
    autoretry = tuple(getattr(task, "autoretry_for", ()) or ())
    if not autoretry or not isinstance(exc, autoretry):
        return False
    if isinstance(exc, tuple(getattr(task, "dont_autoretry_for", ()) or ())):
        return False
    retry_kwargs = getattr(task, "retry_kwargs", None) or {}
    limit = retry_kwargs.get("max_retries", getattr(task, "max_retries", None))
    retries = int(getattr(task.request, "retries", 0) or 0)
    return limit is None or retries < int(limit)


def _options_for(task: Any) -> _CeleryOptions | None:
    app = getattr(task, "app", None)
    return _celery_apps.get(id(app)) if app is not None else None


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    options = _options_for(task)
    if options is None or task_id is None:
        return
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.instrumentation.celery import celery_getter

    from dashfrog._flow import start_step

    run = _TaskRun()
    current = context.get_current()
    # Read the message's baggage ourselves: with use_span_links the instrumentation
    # does not attach what it extracted.
    carried = W3CBaggagePropagator().extract(task.request, context=current, getter=celery_getter)
    admitted = _context.admit(
        carried, task.request, celery_getter, peer_trusted=options.broker_trusted(), caller=current
    )
    if admitted is not current:
        run.tokens.append(context.attach(admitted))
    run.arrival = _context.current_flow()
    if options.task_steps and run.arrival is not None:
        attempt = int(getattr(task.request, "retries", 0) or 0) + 1
        run.scope = start_step(task.name, attempt=attempt, task_id=task_id)
        run.scope.__enter__()
    run.top = context.get_current()
    _runs[(threading.get_ident(), task_id)] = run


def _finish(task_id: str | None, exc: BaseException | None) -> None:
    run = _runs.pop((threading.get_ident(), task_id or ""), None)
    if run is None:
        return
    # Undo our attachments only if they are still on top. If they are not (the
    # instrumentation's postrun already reset the context, or the task left a
    # context attached), that reset also removed ours, and detaching now would
    # put this task's context back for the next one.
    in_order = context.get_current() is run.top
    if run.scope is not None:
        if not in_order:
            run.scope._token = None
        run.scope.__exit__(type(exc) if exc is not None else None, exc, None)
    if in_order:
        for token in reversed(run.tokens):
            context.detach(token)  # type: ignore[arg-type]


def _request_id(sender: Any) -> str | None:
    request = getattr(sender, "request", None)
    return getattr(request, "id", None)


# task_success / task_failure / task_retry are sent before task_postrun, while
# the instrumentation's context is still attached below ours.
def _on_success(sender: Any = None, **_: Any) -> None:
    _finish(_request_id(sender), None)


def _on_failure(sender: Any = None, task_id: str | None = None, exception: Any = None, **_: Any) -> None:
    _finish(task_id or _request_id(sender), exception if isinstance(exception, BaseException) else None)


def _on_retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    exc = reason if isinstance(reason, BaseException) else RuntimeError(f"retry: {reason}")
    _finish(getattr(request, "id", None) or _request_id(sender), exc)


def _on_postrun(task_id: str | None = None, **_: Any) -> None:
    # Ignored or rejected tasks send none of the signals above.
    _finish(task_id, None)


def _on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if not headers:
        return
    run = _runs.get((threading.get_ident(), str(headers.get("id"))))
    if run is None or run.arrival is None:
        return
    # The running task re-publishes itself: a retry. Its next attempt should sit
    # beside this one, under the step the task arrived with, not inside this attempt.
    from opentelemetry import propagate

    propagate.inject(headers, context=_context.with_flow(run.arrival, context.get_current()))


def _flush_on_shutdown(**_: Any) -> None:
    from dashfrog._api import flush

    flush(get_settings().exit_flush_timeout_s)
