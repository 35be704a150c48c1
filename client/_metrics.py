"""Per-customer metrics: counters, histograms and gauges aggregated in the process.

As OpenTelemetry's metrics SDK does, recording only updates an aggregate in
memory: a counter's sum, a histogram's base-2 exponential buckets with count,
sum, min and max, a gauge's last value (with min and max). Every
``DASHFROG_METRICS_INTERVAL_S`` one thread takes the aggregates of the
interval (delta temporality: each point covers one interval) and hands them,
as ``metrics`` events, to the sender every flow event goes through: same
queue bounds, same topic. What is left is sent at exit and by
``dashfrog.flush()``.

A series is one tenant plus one value per declared label. Each metric keeps at
most ``DASHFROG_METRICS_MAX_SERIES`` series per interval; values for more go to
one overflow series (tenant ``_overflow``, every label ``_overflow``) and are
counted in ``dashfrog.stats()["metrics_overflowed"]``, so memory stays bounded
whatever the label values.

The recording path is a dict lookup keyed by the tenant and the label values
(in declaration order) under the metric's lock; labels are checked by
counting them, and converted to text only when a series is created.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from dashfrog import _ids
from dashfrog._exceptions import (
    EmptyTenantError,
    InvalidArgumentError,
    LabelLimitError,
    MetricConflictError,
    MetricValueError,
    MissingLabelError,
    NegativeIncrementError,
    UndeclaredLabelError,
)
from dashfrog._producer import METRICS_KEY_PREFIX, get_sender
from dashfrog._settings import Settings, get_settings

log = logging.getLogger("dashfrog")

MetricKind = Literal["counter", "histogram", "gauge"]

OVERFLOW_TENANT = "_overflow"
OVERFLOW_VALUE = "_overflow"
# OpenTelemetry's defaults for exponential histograms: start as fine as
# scale 20 and halve the resolution whenever 160 buckets no longer span the
# values seen in the interval.
MAX_SCALE = 20
MIN_SCALE = -10
MAX_BUCKETS = 160
# Points per ``metrics`` event: about 500 bytes each for a wide histogram,
# so an event stays far below the sender's message size limit.
POINTS_PER_EVENT = 500
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
_INF = math.inf
_LN2 = math.log(2)
_FACTORS = [math.ldexp(1.0, s) / _LN2 if s > 0 else 0.0 for s in range(MAX_SCALE + 1)]
_THREAD_NAME = "dashfrog-metrics"
_CALLBACK_ERRORS_EVERY_S = 60.0


def _now_us() -> int:
    return time.time_ns() // 1000


# -- argument checks (off the hot path: called when a check already failed) -------


def _as_number(value: Any) -> float:
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        raise MetricValueError(f"metric value {value!r} is not a number; pass an int or a float")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MetricValueError(
            f"metric value of type {type(value).__name__} is not a number; pass an int or a float"
        ) from None


def _value_error(value: float) -> MetricValueError:
    return MetricValueError(f"metric value {value!r} is not a finite number")


def _increment_error(value: float) -> MetricValueError:
    if value < 0:
        return NegativeIncrementError(
            f"a counter only goes up: add() got {value!r}; record a value that goes down "
            "with a Gauge, or a distribution with a Histogram"
        )
    return _value_error(value)


def _tenant_error(tenant: Any) -> InvalidArgumentError:
    if tenant is None or tenant == "":
        return EmptyTenantError("a metric value needs the customer it is for: pass tenant='...'")
    if isinstance(tenant, str):
        return EmptyTenantError(f"tenant {tenant!r} is blank; pass the customer's id")
    return InvalidArgumentError(f"tenant must be a str, got {type(tenant).__name__}")


def _text(what: str, value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float):
        text = str(value)
    else:
        raise InvalidArgumentError(
            f"{what} has a {type(value).__name__} value; pass a str, int, float or bool"
        )
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode()
    return text


# -- aggregation cells -----------------------------------------------------------


class _Histogram:
    """One series of a histogram: OpenTelemetry's base-2 exponential buckets.

    Bucket ``i`` at scale ``s`` holds values in ``(b**i, b**(i+1)]`` with
    ``b = 2**(2**-s)``; positive and negative values have their own buckets
    (by absolute value), zero its own count. Both sides share the scale, which
    drops (halving the resolution each step) when the buckets in use would
    span more than ``MAX_BUCKETS``.
    """

    __slots__ = (
        "count",
        "hi",
        "labels",
        "lo",
        "max",
        "min",
        "neg",
        "nhi",
        "nlo",
        "pos",
        "scale",
        "sum",
        "tenant",
        "zero",
    )  # fmt: skip

    def __init__(self, tenant: str, labels: dict[str, str]) -> None:
        self.tenant = tenant
        self.labels = labels
        self.count = 0
        self.sum = 0.0
        self.min = _INF
        self.max = -_INF
        self.zero = 0
        self.scale = MAX_SCALE
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.lo = self.hi = self.nlo = self.nhi = 0

    def record(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value > 0:
            index = _index(value, self.scale)
            buckets = self.pos
            count = buckets.get(index)
            if count is not None:
                buckets[index] = count + 1
            else:
                self._new_bucket(index, True)
        elif value < 0:
            index = _index(-value, self.scale)
            count = self.neg.get(index)
            if count is not None:
                self.neg[index] = count + 1
            else:
                self._new_bucket(index, False)
        else:
            self.zero += 1

    def _new_bucket(self, index: int, positive: bool) -> None:
        buckets = self.pos if positive else self.neg
        if buckets:
            lo, hi = (self.lo, self.hi) if positive else (self.nlo, self.nhi)
            lo, hi = min(lo, index), max(hi, index)
        else:
            lo = hi = index
        change = 0
        while (hi >> change) - (lo >> change) + 1 > MAX_BUCKETS:
            change += 1
        if change:
            change = min(change, self.scale - MIN_SCALE)
            self._downscale(change)
            index >>= change
            lo >>= change
            hi >>= change
            buckets = self.pos if positive else self.neg
        buckets[index] = buckets.get(index, 0) + 1
        if positive:
            self.lo, self.hi = lo, hi
        else:
            self.nlo, self.nhi = lo, hi

    def _downscale(self, change: int) -> None:
        self.scale -= change
        for side in ("pos", "neg"):
            merged: dict[int, int] = {}
            for index, count in getattr(self, side).items():
                merged[index >> change] = merged.get(index >> change, 0) + count
            setattr(self, side, merged)
        self.lo >>= change
        self.hi >>= change
        self.nlo >>= change
        self.nhi >>= change


def _index(value: float, scale: int) -> int:
    """Bucket index of ``value`` > 0 at ``scale`` (OpenTelemetry's mapping)."""
    mantissa, exponent = math.frexp(value)
    if mantissa == 0.5:  # an exact power of two is the upper bound of its bucket
        return ((exponent - 1) << scale) - 1 if scale > 0 else (exponent - 2) >> -scale
    if scale > 0:
        return math.ceil(math.log(value) * _FACTORS[scale]) - 1
    return (exponent - 1) >> -scale


def bucket_bounds(index: int, scale: int) -> tuple[float, float]:
    """The (lower, upper] bounds of bucket ``index`` at ``scale``."""
    base = 2.0 ** (2.0**-scale)
    return base**index, base ** (index + 1)


def _dense(buckets: Mapping[int, int]) -> tuple[int, list[int]]:
    if not buckets:
        return 0, []
    lo, hi = min(buckets), max(buckets)
    counts = [0] * (hi - lo + 1)
    for index, count in buckets.items():
        counts[index - lo] = count
    return lo, counts


# -- metrics --------------------------------------------------------------------


@dataclass(eq=False)
class _Metric:
    """What every instrument declared with one name shares."""

    name: str
    kind: MetricKind
    labels: tuple[str, ...]
    pretty_name: str
    unit: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Series of the current interval: (tenant, *label values) → cell; a
    # metric without labels uses the tenant alone as the key.
    series: dict[Any, Any] = field(default_factory=dict)
    started_us: int = field(default_factory=_now_us)
    overflow: Any = None

    def declaration(self) -> tuple[Any, ...]:
        return (self.kind, self.labels, self.pretty_name, self.unit)

    def new_series(self, key: Any, tenant: Any, labels: Mapping[str, Any]) -> Any:
        """The cell for a key not found (under ``lock``): a new series, the
        series of the key's text form, or the overflow series past the cap."""
        if tenant.__class__ is not str or not tenant.strip():
            raise _tenant_error(tenant)
        names = self.labels
        text = {name: _text(f"label {name!r}", labels[name]) for name in names}
        tenant = _text("tenant", tenant)
        text_key = (tenant, *text.values()) if names else tenant
        if text_key != key or any(v.__class__ is not str for v in labels.values()):
            # Non-text label values: their series is keyed by the text, never
            # by the values themselves (True == 1 would alias "True" and "1").
            cell = self.series.get(text_key)
            if cell is not None:
                return cell
        settings = get_settings()
        limit = settings.max_label_value_length
        for name, value in (("tenant", tenant), *text.items()):
            if len(value) > limit:
                raise LabelLimitError(
                    f"{self.name}: {name} is {len(value)} characters long, the limit is "
                    f"{limit} (DASHFROG_MAX_LABEL_VALUE_LENGTH)"
                )
        if len(self.series) >= settings.metrics_max_series:
            _registry.overflowed += 1
            if self.overflow is None:
                self.overflow = _new_cell(
                    self.kind, OVERFLOW_TENANT, dict.fromkeys(names, OVERFLOW_VALUE)
                )
            return self.overflow
        cell = self.series[text_key] = _new_cell(self.kind, tenant, text)
        return cell

    def take(self, now_us: int) -> tuple[int, list[Any]]:
        """The interval's cells (and its start), leaving empty aggregates."""
        with self.lock:
            series, self.series = self.series, {}
            overflow, self.overflow = self.overflow, None
            started, self.started_us = self.started_us, now_us
        cells = list(series.values())
        if overflow is not None:
            cells.append(overflow)
        return started, cells


def _new_cell(kind: MetricKind, tenant: str, labels: dict[str, str]) -> Any:
    if kind == "histogram":
        return _Histogram(tenant, labels)
    if kind == "counter":
        return [0.0, tenant, labels]
    # gauge: last, min, max, samples, tenant, labels
    return [0.0, _INF, -_INF, 0, tenant, labels]


def _point(kind: MetricKind, cell: Any, start_us: int, now_us: int) -> dict[str, Any]:
    point: dict[str, Any] = {
        "point_id": os.urandom(12).hex(),
        "start": start_us,
        "time": now_us,
        "value": 0.0,
        "count": 0,
        "sum": 0.0,
        "min": 0.0,
        "max": 0.0,
        "scale": 0,
        "zero_count": 0,
        "positive_offset": 0,
        "positive": [],
        "negative_offset": 0,
        "negative": [],
    }
    if kind == "counter":
        point.update(tenant=cell[1], labels=cell[2], value=float(cell[0]))
    elif kind == "gauge":
        point.update(
            tenant=cell[4], labels=cell[5], value=float(cell[0]), min=float(cell[1]),
            max=float(cell[2]), count=cell[3],
        )  # fmt: skip
    else:
        h: _Histogram = cell
        pos_offset, pos = _dense(h.pos)
        neg_offset, neg = _dense(h.neg)
        point.update(
            tenant=h.tenant, labels=h.labels, count=h.count, sum=float(h.sum),
            min=float(h.min), max=float(h.max), scale=h.scale, zero_count=h.zero,
            positive_offset=pos_offset, positive=pos, negative_offset=neg_offset, negative=neg,
        )  # fmt: skip
    return point


class _Instrument:
    _kind: MetricKind

    def __init__(
        self,
        name: str,
        labels: Sequence[str] = (),
        pretty_name: str | None = None,
        unit: str = "",
    ) -> None:
        metric = _registry.declare(self._kind, name, labels, pretty_name, unit)
        self._metric = metric
        self._names = metric.labels

    @property
    def name(self) -> str:
        return self._metric.name

    @property
    def labels(self) -> tuple[str, ...]:
        return self._metric.labels

    @property
    def pretty_name(self) -> str:
        return self._metric.pretty_name

    @property
    def unit(self) -> str:
        return self._metric.unit

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, labels={list(self.labels)!r}, unit={self.unit!r})"

    def _label_error(self, labels: Mapping[str, Any]) -> InvalidArgumentError:
        declared = set(self._names)
        extra = sorted(set(labels) - declared)
        if extra:
            return UndeclaredLabelError(
                f"{self.name}: label(s) {', '.join(map(repr, extra))} not declared; "
                f"declared labels: {sorted(declared) or 'none'} (declare them in labels=[...])"
            )
        missing = [n for n in self._names if n not in labels]
        return MissingLabelError(
            f"{self.name}: missing label(s) {', '.join(map(repr, missing))}; every declared "
            f"label needs a value: {list(self._names)}"
        )

    def _cell(self, tenant: Any, labels: dict[str, Any]) -> Any:
        """The series cell for ``tenant`` and ``labels``; call under the metric's lock."""
        metric = self._metric
        names = self._names
        if len(labels) != len(names):
            raise self._label_error(labels)
        if names:
            try:
                key: Any = (tenant, *map(labels.__getitem__, names))
            except KeyError:
                raise self._label_error(labels) from None
        else:
            key = tenant
        try:
            cell = metric.series.get(key)
        except TypeError:  # an unhashable label value: new_series says what is wrong
            cell = None
        if cell is None:
            cell = metric.new_series(key, tenant, labels)
        return cell


class Counter(_Instrument):
    """A value that only goes up, summed per tenant and label values.

    >>> api_calls = Counter("api_calls", labels=["method", "status"], unit="count")
    >>> api_calls.add(1, tenant="acme-corp", method="POST", status="200")
    """

    _kind: MetricKind = "counter"

    def add(self, value: float, tenant: str, **labels: Any) -> None:
        """Add ``value`` (>= 0) to the series of ``tenant`` and ``labels``.

        Raises NegativeIncrementError, MetricValueError, EmptyTenantError,
        UndeclaredLabelError or MissingLabelError at the call site.
        """
        cls = value.__class__
        if cls is not int and cls is not float:
            value = _as_number(value)
        if not 0 <= value < _INF:
            raise _increment_error(value)
        if tenant.__class__ is not str or not tenant:
            raise _tenant_error(tenant)
        with self._metric.lock:
            self._cell(tenant, labels)[0] += value


class Histogram(_Instrument):
    """A distribution (durations, sizes): exponential buckets, count, sum, min
    and max per tenant and label values; queries give percentiles.

    >>> duration = Histogram("request_duration_seconds", labels=["endpoint"], unit="seconds")
    >>> duration.record(0.234, tenant="acme-corp", endpoint="/api/users")
    """

    _kind: MetricKind = "histogram"

    def record(self, value: float, tenant: str, **labels: Any) -> None:
        """Record one value. Raises MetricValueError, EmptyTenantError,
        UndeclaredLabelError or MissingLabelError at the call site."""
        cls = value.__class__
        if cls is not float and cls is not int:
            value = _as_number(value)
        if not -_INF < value < _INF:
            raise _value_error(value)
        if tenant.__class__ is not str or not tenant:
            raise _tenant_error(tenant)
        with self._metric.lock:
            self._cell(tenant, labels).record(value)


@dataclass(frozen=True, slots=True)
class GaugeValue:
    """One value a gauge callback yields: for ``tenant``, with the gauge's labels."""

    value: float
    tenant: str
    labels: Mapping[str, Any] = field(default_factory=dict)


GaugeCallback = Callable[..., Iterable[GaugeValue]]


class Gauge(_Instrument):
    """A value sampled now and then (a quota, a queue length); queries give
    its last, min and max per time bucket.

    >>> def quota(timeout_seconds: int):
    ...     yield GaugeValue(value=420, tenant="acme-corp", labels={"env": "prod"})
    >>> monthly_quota = Gauge("monthly_quota", labels=["env"]).set_periodically(300, quota)
    """

    _kind: MetricKind = "gauge"

    def set(self, value: float, tenant: str, **labels: Any) -> None:
        """Set the current value of the series of ``tenant`` and ``labels``."""
        cls = value.__class__
        if cls is not float and cls is not int:
            value = _as_number(value)
        if not -_INF < value < _INF:
            raise _value_error(value)
        if tenant.__class__ is not str or not tenant:
            raise _tenant_error(tenant)
        with self._metric.lock:
            cell = self._cell(tenant, labels)
            cell[0] = value
            if value < cell[1]:
                cell[1] = value
            if value > cell[2]:
                cell[2] = value
            cell[3] += 1

    def set_periodically(
        self,
        period_in_seconds: float,
        callback: GaugeCallback,
        *,
        timeout_seconds: float | None = None,
    ) -> Gauge:
        """Call ``callback(timeout_seconds=...)`` every ``period_in_seconds`` in a
        thread of its own and set the GaugeValues it yields (or returns).

        The callback may declare ``timeout_seconds`` or take ``**kwargs``. One
        that raises, yields something invalid or runs past ``timeout_seconds``
        (default: the period, at most 30 s) is logged and skipped; the next
        period calls it again (unless it is still running). Returns this gauge.
        """
        if isinstance(period_in_seconds, bool) or not isinstance(period_in_seconds, int | float):
            raise InvalidArgumentError(
                f"period_in_seconds must be a number, got {period_in_seconds!r}"
            )
        if not 0 < period_in_seconds < _INF:
            raise InvalidArgumentError(f"period_in_seconds must be > 0, got {period_in_seconds!r}")
        if not callable(callback):
            raise InvalidArgumentError(f"callback must be callable, got {type(callback).__name__}")
        _check_callback_signature(callback)
        timeout = (
            float(timeout_seconds)
            if timeout_seconds is not None
            else min(float(period_in_seconds), 30.0)
        )
        if not timeout > 0:
            raise InvalidArgumentError(f"timeout_seconds must be > 0, got {timeout_seconds!r}")
        _registry.schedule(_Periodic(self, float(period_in_seconds), callback, timeout))
        return self

    def stop_periodically(self) -> Gauge:
        """Stop every schedule of this gauge (a call under way finishes, its
        values still count). Returns this gauge."""
        _registry.unschedule(self.name)
        return self

    def _sample(self, values: Iterable[Any]) -> int:
        """Set the values a callback produced; invalid ones are logged and skipped."""
        n = 0
        for item in values:
            try:
                if not isinstance(item, GaugeValue):
                    raise InvalidArgumentError(
                        f"a gauge callback must yield metrics.GaugeValue, got {type(item).__name__}"
                    )
                self.set(item.value, item.tenant, **dict(item.labels))
                n += 1
            except InvalidArgumentError as exc:
                _registry.callback_failed(self.name, f"skipped a value: {exc}")
        return n


def _check_callback_signature(callback: Callable[..., Any]) -> None:
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return  # a builtin without a signature: trust it
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    if any(
        p.name == "timeout_seconds" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        for p in params
    ):
        return
    raise InvalidArgumentError(
        "a gauge callback is called as callback(timeout_seconds=...): declare that "
        "parameter (def cb(timeout_seconds: int)) or take **kwargs"
    )


@dataclass(eq=False)
class _Periodic:
    gauge: Gauge
    period: float
    callback: GaugeCallback
    timeout: float
    due: float = 0.0
    running: threading.Thread | None = None
    deadline: float = 0.0
    reported_overrun: bool = False


# -- the registry and the exporting thread ------------------------------------------


class _Registry:
    """Declared metrics, gauge callbacks, the exporting thread and its counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metrics: dict[str, _Metric] = {}
        self.periodic: list[_Periodic] = []
        self.overflowed = 0
        self.dropped_points = 0
        self.queued_points = 0
        self.callback_errors = 0
        self._last_callback_report: dict[str, float] = {}
        self._export_lock = threading.Lock()
        self._due_lock = threading.Lock()  # one caller starts due callbacks at a time
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.key = METRICS_KEY_PREFIX + os.urandom(8).hex()

    def declare(
        self, kind: MetricKind, name: Any, labels: Any, pretty_name: Any, unit: Any
    ) -> _Metric:
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidArgumentError(
                f"metric name {name!r} must start with a letter or _ and use letters, digits, "
                "_ . : - (at most 128 characters)"
            )
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise InvalidArgumentError(
                f"{name}: labels must be a list of label names, got {labels!r}"
            )
        names = tuple(labels)
        for label in names:
            if not isinstance(label, str) or not _NAME.match(label) or label == "tenant":
                raise InvalidArgumentError(
                    f"{name}: label name {label!r} must be an identifier other than 'tenant' "
                    "(the tenant is its own argument)"
                )
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"{name}: label names repeat: {list(names)}")
        if len(names) > get_settings().max_labels:
            raise LabelLimitError(f"{name}: {len(names)} labels, the limit is DASHFROG_MAX_LABELS")
        if pretty_name is not None and not isinstance(pretty_name, str):
            raise InvalidArgumentError(f"{name}: pretty_name must be a str")
        if not isinstance(unit, str | None):
            raise InvalidArgumentError(f"{name}: unit must be a str")
        metric = _Metric(name, kind, names, pretty_name or name, unit or "")
        with self.lock:
            existing = self.metrics.get(name)
            if existing is not None:
                if existing.declaration() != metric.declaration():
                    raise MetricConflictError(
                        f"metric {name!r} is already declared as a {existing.kind} with labels "
                        f"{list(existing.labels)}, pretty_name {existing.pretty_name!r}, unit "
                        f"{existing.unit!r}; a name is declared once per process (or identically)"
                    )
                return existing
            self.metrics[name] = metric
        self.ensure_thread()
        return metric

    def schedule(self, periodic: _Periodic) -> None:
        with self.lock:
            # A gauge re-scheduled with the same callback replaces the old schedule.
            self.periodic = [
                p for p in self.periodic
                if not (p.gauge.name == periodic.gauge.name and p.callback == periodic.callback)
            ]  # fmt: skip
            periodic.due = time.monotonic()
            self.periodic.append(periodic)
        if self.ensure_thread():
            # The first sample is taken now, not at the thread's next round.
            self._run_due(time.monotonic())

    def unschedule(self, name: str) -> None:
        with self.lock:
            self.periodic = [p for p in self.periodic if p.gauge.name != name]

    # -- the thread -------------------------------------------------------------

    def ensure_thread(self) -> bool:
        """Start the exporting thread unless it runs or the SDK is disabled
        (then values still aggregate, and nothing samples or leaves); True when it runs."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return True
        if get_settings().disabled:
            return False
        with self.lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
                self._thread.start()
        return True


    def _run(self) -> None:
        # The interval is read every round, so setup() changes it for the next export.
        last_export = time.monotonic()
        while not self._stopping:
            now = time.monotonic()
            try:
                self._run_due(now)
                if now >= last_export + get_settings().metrics_interval_s:
                    last_export = now
                    self.export()
            except Exception:
                # Nothing here may end the thread: metrics would stop silently.
                log.warning(
                    "dashfrog: metrics export failed; retrying next interval", exc_info=True
                )
            with self.lock:
                dues = [p.due for p in self.periodic if p.running is None]
                dues += [
                    p.deadline
                    for p in self.periodic
                    if p.running is not None and not p.reported_overrun
                ]
            next_export = last_export + get_settings().metrics_interval_s
            wait = min([next_export, *dues]) - time.monotonic()
            self._wake.wait(max(0.0, min(wait, 1.0)))
            self._wake.clear()

    def _run_due(self, now: float) -> None:
        with self._due_lock:
            self._start_due(now)

    def _start_due(self, now: float) -> None:
        with self.lock:
            periodic = list(self.periodic)
        for p in periodic:
            thread = p.running
            if thread is not None:
                if thread.is_alive():
                    if now >= p.deadline and not p.reported_overrun:
                        p.reported_overrun = True
                        self.callback_failed(
                            p.gauge.name,
                            f"callback ran past its {p.timeout:g} s timeout; its values are skipped "
                            "and it is not called again until it returns",
                        )
                    continue
                p.running = None
            if now >= p.due:
                p.due = max(p.due + p.period, now)
                p.deadline = now + p.timeout
                p.reported_overrun = False
                p.running = threading.Thread(
                    target=self._call,
                    args=(p, p.deadline),
                    name=f"dashfrog-gauge-{p.gauge.name}",
                    daemon=True,
                )
                p.running.start()

    def _call(self, p: _Periodic, deadline: float) -> None:
        try:
            timeout: float = int(p.timeout) if float(p.timeout).is_integer() else p.timeout
            values = list(p.callback(timeout_seconds=timeout) or ())
        except Exception as exc:
            self.callback_failed(p.gauge.name, f"callback raised {type(exc).__name__}: {exc}", exc)
            return
        finally:
            self._wake.set()
        if time.monotonic() > deadline:
            return  # reported as an overrun by the exporting thread
        p.gauge._sample(values)

    def callback_failed(self, name: str, message: str, exc: BaseException | None = None) -> None:
        self.callback_errors += 1
        now = time.monotonic()
        if now - self._last_callback_report.get(name, -_INF) >= _CALLBACK_ERRORS_EVERY_S:
            self._last_callback_report[name] = now
            log.warning("dashfrog: gauge %r: %s", name, message, exc_info=exc)

    # -- export -------------------------------------------------------------------

    def collect(self) -> list[dict[str, Any]]:
        """The points of every metric since the last collection, as the ``metrics``
        field of events (one entry per metric with points)."""
        now_us = _now_us()
        with self.lock:
            metrics = list(self.metrics.values())
        out: list[dict[str, Any]] = []
        for metric in metrics:
            started, cells = metric.take(now_us)
            if not cells:
                continue
            out.append(
                {
                    "name": metric.name,
                    "kind": metric.kind,
                    "pretty_name": metric.pretty_name,
                    "unit": metric.unit,
                    "label_names": list(metric.labels),
                    "points": [_point(metric.kind, cell, started, now_us) for cell in cells],
                }
            )
        return out

    def export(self) -> int:
        """Collect and queue the points on the sender; the number of points queued."""
        with self._export_lock:
            settings = get_settings()
            collected = self.collect()
            if not collected or settings.disabled:
                return 0
            queued = 0
            sender = get_sender(settings)
            for chunk in _chunks(collected, POINTS_PER_EVENT):
                n = sum(len(m["points"]) for m in chunk)
                if sender.emit_metrics(self._event(settings, chunk)):
                    queued += n
                else:
                    self.dropped_points += n
            self.queued_points += queued
            return queued

    def _event(self, settings: Settings, metrics: list[dict[str, Any]]) -> dict[str, Any]:
        from dashfrog._flow import _HOST, SDK_VERSION

        return {
            "event_id": _ids.new_event_id(),
            "kind": "metrics",
            "flow_id": self.key,
            "tenant": "",
            "flow_name": "",
            "labels": {},
            "attributes": {},
            "timestamp": _now_us(),
            "service": settings.service_name,
            "host": _HOST,
            "sdk_version": SDK_VERSION,
            "metrics": metrics,
        }

    def stats(self) -> dict[str, int]:
        return {
            "metrics_points_queued": self.queued_points,
            "metrics_points_dropped": self.dropped_points,
            "metrics_overflowed": self.overflowed,
            "metrics_callback_errors": self.callback_errors,
        }

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def after_fork_in_child(self) -> None:
        # The parent's aggregates are the parent's to send; its thread is gone.
        self.lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._due_lock = threading.Lock()
        self.key = METRICS_KEY_PREFIX + os.urandom(8).hex()
        for metric in self.metrics.values():
            metric.lock = threading.Lock()
            metric.series = {}
            metric.overflow = None
            metric.started_us = _now_us()
        for p in self.periodic:
            p.running = None
        self._thread = None
        if self.metrics:
            self.ensure_thread()


def _chunks(metrics: list[dict[str, Any]], limit: int) -> Iterable[list[dict[str, Any]]]:
    """Split per-metric point lists into event-sized groups of at most ``limit`` points."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for metric in metrics:
        points = metric["points"]
        for start in range(0, len(points), limit):
            part = points[start : start + limit]
            if size + len(part) > limit and chunk:
                yield chunk
                chunk, size = [], 0
            chunk.append({**metric, "points": part})
            size += len(part)
    if chunk:
        yield chunk


_registry = _Registry()


def export_now() -> int:
    """Queue what the metrics aggregated so far (``dashfrog.flush`` calls this)."""
    return _registry.export()


def settings_changed() -> None:
    """``dashfrog.setup`` ran: a metric declared while the SDK was disabled starts exporting."""
    if _registry.metrics:
        _registry.ensure_thread()


def metrics_stats() -> dict[str, int]:
    return _registry.stats()


def _at_exit() -> None:
    # Registered after the sender's own exit hook, so it runs before it and the
    # sender's exit flush carries these points.
    _registry.stop()
    try:
        _registry.export()
    except Exception:
        log.debug("dashfrog: final metrics export failed", exc_info=True)


os.register_at_fork(after_in_child=_registry.after_fork_in_child)
atexit.register(_at_exit)
