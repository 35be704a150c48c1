"""Flows and steps: the context managers application code uses.

One scope object serves ``with``, ``async with`` and decorator use. Entering
a scope emits a ``*_started`` event and makes the flow (or step) current in
the OpenTelemetry context; leaving it emits ``*_ended`` with the outcome and
restores the previous context. Exceptions are recorded and propagate unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import socket
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from importlib import metadata
from types import TracebackType
from typing import Any, Literal, TypeVar

from opentelemetry import context, trace

from dashfrog import _context, _ids
from dashfrog._context import FlowContext
from dashfrog._exceptions import InvalidArgumentError, LabelLimitError, NoActiveFlowError
from dashfrog._producer import get_sender
from dashfrog._settings import Settings, get_settings
from dashfrog.schemas import Kind

log = logging.getLogger("dashfrog")

F = TypeVar("F", bound=Callable[..., Any])
Status = Literal["success", "failed"]

# Judges of whether an exception leaving a step means "this attempt will run
# again" (a Celery ``Retry``, an exception the running task autoretries) rather
# than a failure; instrumentations register theirs (``with_celery``).
retry_judges: list[Callable[[BaseException], bool]] = []


def _is_retry(exc: BaseException) -> bool:
    return any(judge(exc) for judge in retry_judges)

_HOST = socket.gethostname()
try:
    SDK_VERSION = metadata.version("dashfrog")
except metadata.PackageNotFoundError:  # running from a source tree
    SDK_VERSION = "0+unknown"

# Flows started with end_on_exit=False in this process, so flow.end(flow_id) can find them.
_open_flows: dict[str, FlowContext] = {}
_MAX_OPEN_FLOWS = 10_000
_EVICTION_LOG_EVERY_S = 60.0
_evictions = {"since_log": 0, "logged_at": -_EVICTION_LOG_EVERY_S}


def _evict_oldest_open_flow() -> None:
    """Forget the oldest flow left open with end_on_exit=False, and say so: a
    later flow.end(flow_id=...) for it raises NoActiveFlowError. Logged at most
    once a minute, with how many were forgotten since the last line."""
    flow = _open_flows.pop(next(iter(_open_flows)))
    _evictions["since_log"] += 1
    now = time.monotonic()
    if now - _evictions["logged_at"] >= _EVICTION_LOG_EVERY_S:
        log.warning(
            "dashfrog: %d flow(s) started with end_on_exit=False were never ended; forgot the "
            "oldest (latest: %s %r of tenant %r) to keep %d open. flow.end() for them now raises "
            "NoActiveFlowError; end such flows when their work is done",
            _evictions["since_log"], flow.flow_id, flow.name, flow.tenant, _MAX_OPEN_FLOWS,
        )
        _evictions["since_log"] = 0
        _evictions["logged_at"] = now


def _now_micros() -> int:
    return time.time_ns() // 1000


_SURROGATE = re.compile("[\ud800-\udfff]")


def _utf8(text: str) -> str:
    """``text`` as Avro can carry it: lone surrogates (from undecodable bytes in
    paths or exception messages) become U+FFFD instead of failing the send."""
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def _require_text(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{what} must be a non-empty string, got {value!r}")
    return _utf8(value)


def _as_text(what: str, key: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float) or hasattr(value, "__fspath__"):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            pass
    # Other objects' str() is often a repr with an address: refuse rather than store noise.
    raise InvalidArgumentError(
        f"{what} {key!r} has a {type(value).__name__} value; pass a str, int, float or bool "
        f"(convert it yourself, e.g. {key}=str(value))"
    )


def _check_labels(what: str, labels: Mapping[str, object], s: Settings) -> dict[str, str]:
    if len(labels) > s.max_labels:
        raise LabelLimitError(
            f"{len(labels)} {what}s given, the limit is {s.max_labels} (DASHFROG_MAX_LABELS)"
        )
    out: dict[str, str] = {}
    for key, value in labels.items():
        if len(key) > s.max_label_key_length:
            raise LabelLimitError(
                f"{what} key {key[:20]!r}... is {len(key)} characters, the limit is "
                f"{s.max_label_key_length} (DASHFROG_MAX_LABEL_KEY_LENGTH)"
            )
        key, text = _utf8(key), _utf8(_as_text(what, key, value))
        if len(text) > s.max_label_value_length:
            raise LabelLimitError(
                f"{what} {key!r} is {len(text)} characters long, the limit is "
                f"{s.max_label_value_length} (DASHFROG_MAX_LABEL_VALUE_LENGTH)"
            )
        out[key] = text
    return out


def error_of(exc: BaseException, s: Settings) -> dict[str, str]:
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    stack = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    limit = s.error_stack_limit
    # Keep the end of the stack: the frames nearest the raise say the most.
    return {
        "type": name,
        "message": _utf8(str(exc)[:2000]),
        "stack": _utf8(stack[-limit:]) if limit else "",
    }


def _emit(
    s: Settings,
    kind: Kind,
    flow: FlowContext,
    *,
    step_id: str | None = None,
    parent_step_id: str | None = None,
    step_name: str | None = None,
    status: str | None = None,
    error: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    attributes: dict[str, str] | None = None,
    event_name: str | None = None,
) -> None:
    if s.disabled:
        return
    span = trace.get_current_span().get_span_context()
    # Built literally rather than with schemas.make_event: this runs on every
    # SDK call, and the type checker holds the literal to Event.
    get_sender(s).emit(
        {
            "event_id": _ids.new_event_id(),
            "kind": kind,
            "flow_id": flow.flow_id,
            "tenant": flow.tenant,
            "flow_name": flow.name,
            "step_id": step_id,
            "parent_step_id": parent_step_id,
            "step_name": step_name,
            "status": status,
            "error": error,
            "labels": labels or {},
            "attributes": attributes or {},
            "timestamp": _now_micros(),
            "service": s.service_name,
            "host": _HOST,
            "trace_id": format(span.trace_id, "032x") if span.is_valid else None,
            "span_id": format(span.span_id, "016x") if span.is_valid else None,
            "sdk_version": SDK_VERSION,
            "event_name": event_name,
        }
    )


class _Scope:
    """Shared machinery of flow and step scopes: context attach/detach, decorator use."""

    _token: object | None = None

    def _enter(self) -> Any:
        raise NotImplementedError

    def _exit(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _fresh(self) -> _Scope:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self._enter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit(exc)

    async def __aenter__(self) -> Any:
        return self._enter()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit(exc)

    def __call__(self, func: F) -> F:
        """Use as a decorator: every call of ``func`` runs in a scope of its own."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with self._fresh():
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]

    def _attach(self, ctx: context.Context) -> None:
        self._token = context.attach(ctx)

    def _detach(self) -> None:
        if self._token is not None:
            # A scope left in another task/thread than it entered cannot detach; OTel logs it.
            context.detach(self._token)  # type: ignore[arg-type]
            self._token = None


class FlowScope(_Scope):
    """``flow.start(...)``: a new flow for a tenant; yields the flow id."""

    def __init__(self, name: str, tenant: str, end_on_exit: bool, labels: dict[str, object]) -> None:
        self._settings = get_settings()
        self.name = _require_text("flow name", name)
        self.tenant = _require_text("tenant", tenant)
        self.end_on_exit = end_on_exit
        self.labels = _check_labels("label", labels, self._settings)
        self.flow: FlowContext | None = None

    def _fresh(self) -> FlowScope:
        return FlowScope(self.name, self.tenant, self.end_on_exit, dict(self.labels))

    def _enter(self) -> str:
        if self.flow is not None:
            raise InvalidArgumentError("a flow scope can be entered once; call flow.start() again")
        s = self._settings
        flow = FlowContext(_ids.new_flow_id(), self.tenant, self.name)
        self.flow = flow
        if not self.end_on_exit:
            if len(_open_flows) >= _MAX_OPEN_FLOWS:
                _evict_oldest_open_flow()
            _open_flows[flow.flow_id] = flow
        _emit(s, "flow_started", flow, labels=self.labels)
        self._attach(_context.with_flow(flow))
        return flow.flow_id

    def _exit(self, exc: BaseException | None) -> None:
        flow = self.flow
        assert flow is not None
        self._detach()
        if exc is not None:
            # Even a flow meant to end elsewhere is over if its start raised.
            _open_flows.pop(flow.flow_id, None)
            _end(self._settings, flow, "failed", error_of(exc, self._settings))
        elif self.end_on_exit:
            _end(self._settings, flow, None, None)


def _end(s: Settings, flow: FlowContext, status: Status | None, error: dict[str, str] | None) -> None:
    if status is None:
        # A step failure the code caught still fails the flow (its first error is kept).
        status = "failed" if flow.outcome.error is not None else "success"
        error = flow.outcome.error
    _emit(s, "flow_ended", flow, status=status, error=error)


class StepScope(_Scope):
    """``step.start(...)``: a logical operation inside the current flow; yields the step id."""

    def __init__(self, name: str, attributes: dict[str, object]) -> None:
        self._settings = get_settings()
        self.name = _require_text("step name", name)
        self.attributes = _check_labels("attribute", attributes, self._settings)
        self.flow: FlowContext | None = None
        self.step_id: str | None = None

    def _fresh(self) -> StepScope:
        return StepScope(self.name, dict(self.attributes))

    def _enter(self) -> str | None:
        parent = _context.current_flow()
        if parent is None:
            _no_flow(self._settings, f"step.start({self.name!r})")
            return None
        self.step_id = _ids.new_step_id()
        self.flow = parent.with_step(self.step_id)
        _emit(
            self._settings,
            "step_started",
            parent,
            step_id=self.step_id,
            parent_step_id=parent.step_id,
            step_name=self.name,
            attributes=self.attributes,
        )
        self._attach(_context.with_flow(self.flow))
        return self.step_id

    def _exit(self, exc: BaseException | None) -> None:
        flow = self.flow
        if flow is None:
            return
        self._detach()
        if exc is not None and _is_retry(exc):
            # Not an error: the attempt runs again. The reason rides as an
            # attribute so that no error of the flow (first error, error list,
            # failed-step counts) ever points at an attempt that was retried.
            reason = error_of(exc, self._settings)
            _emit(
                self._settings,
                "step_ended",
                flow,
                step_id=self.step_id,
                step_name=self.name,
                status="retried",
                attributes={"retry_reason": f"{reason['type']}: {reason['message']}"[:2000]},
            )
            return
        error = error_of(exc, self._settings) if exc is not None else None
        if error is not None and flow.outcome.error is None:
            flow.outcome.error = {**error, "step": self.name}
        _emit(
            self._settings,
            "step_ended",
            flow,
            step_id=self.step_id,
            step_name=self.name,
            status="failed" if exc is not None else "success",
            error=error,
        )


def _no_flow(s: Settings, call: str) -> None:
    message = f"{call} called with no current flow; wrap it in flow.start(...) or propagate the flow context"
    if s.on_missing_flow == "raise":
        raise NoActiveFlowError(message + " (DASHFROG_ON_MISSING_FLOW=raise)")
    if s.on_missing_flow == "warn":
        warnings.warn(message, RuntimeWarning, stacklevel=4)


# -- the public functions ------------------------------------------------------


def start_flow(name: str, tenant: str, end_on_exit: bool = True, **labels: object) -> FlowScope:
    """Start a flow named ``name`` for ``tenant``; keyword arguments become labels."""
    return FlowScope(name, tenant, end_on_exit, labels)


def start_step(name: str, **attributes: object) -> StepScope:
    """Start a step of the current flow; keyword arguments become attributes."""
    return StepScope(name, attributes)


def _resolve(flow_id: str | None, call: str) -> FlowContext | None:
    if flow_id is not None:
        found = _open_flows.get(flow_id)
        current = _context.current_flow()
        if found is None and current is not None and current.flow_id == flow_id:
            found = current
        if found is None:
            raise NoActiveFlowError(
                f"{call}: flow {flow_id!r} is not open in this process; end it where its context is current"
            )
        return found
    current = _context.current_flow()
    if current is None:
        _no_flow(get_settings(), call)
    return current


def end_flow(
    status: Status | None = None,
    *,
    error: BaseException | str | None = None,
    flow_id: str | None = None,
) -> None:
    """End the current flow (or ``flow_id``), typically one started with ``end_on_exit=False``.

    Without ``status`` the flow succeeds unless a step of it failed in this
    process; ``error`` (an exception or a message) implies ``failed``.
    """
    if status not in (None, "success", "failed"):
        raise InvalidArgumentError(f"status must be 'success' or 'failed', got {status!r}")
    flow = _resolve(flow_id, "flow.end()")
    if flow is None:
        return
    s = get_settings()
    _open_flows.pop(flow.flow_id, None)
    err: dict[str, str] | None = None
    if isinstance(error, BaseException):
        err = error_of(error, s)
    elif error is not None:
        err = {"type": "Error", "message": _utf8(str(error)[:2000]), "stack": ""}
    if err is not None:
        status = "failed"
    if status is None:
        _end(s, flow, None, None)
    else:
        _end(s, flow, status, err)


def succeed_flow(*, flow_id: str | None = None) -> None:
    """End the current flow as successful."""
    end_flow("success", flow_id=flow_id)


def fail_flow(error: BaseException | str | None = None, *, flow_id: str | None = None) -> None:
    """End the current flow as failed, with ``error`` as its reason."""
    end_flow("failed", error=error or "failed", flow_id=flow_id)


def flow_event(name: str, **attributes: object) -> None:
    """Record a custom event (``name`` and attributes) in the current flow."""
    s = get_settings()
    name = _require_text("event name", name)
    attrs = _check_labels("attribute", attributes, s)
    flow = _resolve(None, f"flow.event({name!r})")
    if flow is not None:
        _emit(s, "flow_event", flow, step_id=flow.step_id, event_name=name, attributes=attrs)


def current_flow_id() -> str | None:
    """Id of the current flow, or None outside any flow."""
    flow = _context.current_flow()
    return flow.flow_id if flow is not None else None


def current_tenant() -> str | None:
    """Tenant of the current flow, or None outside any flow."""
    flow = _context.current_flow()
    return flow.tenant if flow is not None else None

