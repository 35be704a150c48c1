"""What ``dashfrog.query.metrics()/metric()/metric_ratio()`` return, and their filters.

Like the flow models, these are the JSON contract of ``GET /api/metrics...``:
the API dumps them with ``model_dump(mode="json")`` and ``dashfrog.query``
parses them back.

Percentiles come from exponential buckets (see ``dashfrog.metrics``): a
bucket at scale ``s`` spans ``(b**i, b**(i+1)]`` with ``b = 2**(2**-s)``, and a
percentile is reported as the point of its bucket nearest, in relative terms,
to every value the bucket can hold. So p50, p95 and p99 are within a relative
error of ``(b - 1) / (b + 1)`` of the nearest-rank percentile of the recorded
values: 2.2 % at scale 4, 4.3 % at scale 3, 8.6 % at scale 2. A histogram
starts at scale 20 and drops one scale each time its values in one interval
would need more than 160 buckets (values spanning 2 decades stay at scale 4;
6 decades, scale 3). Each series states the worst bound of its rows in
``error_bound``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from dashfrog._exceptions import QueryError
from dashfrog._models import _as_utc, _Model, _Rows

MetricKind = Literal["counter", "histogram", "gauge"]

# Points are projected per minute: the finest step a query can ask for.
MIN_STEP_S = 60
MAX_BUCKETS = 10_000
DEFAULT_RANGE = timedelta(hours=1)
_STEP = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_step(step: Any) -> int:
    """``"1m"``, ``"90s"``, ``"1h"``, ``"1d"``, seconds, or a timedelta → seconds.

    Raises QueryError unless it is a whole number of minutes (points are
    projected per minute).
    """
    if isinstance(step, timedelta):
        seconds = step.total_seconds()
    elif isinstance(step, bool):
        raise QueryError(f"step {step!r}: give e.g. '1m', '5m', '1h' or seconds")
    elif isinstance(step, int | float):
        seconds = float(step)
    elif isinstance(step, str):
        found = _STEP.match(step)
        if not found:
            raise QueryError(f"step {step!r}: give e.g. '1m', '5m', '1h', '1d' or seconds")
        seconds = int(found.group(1)) * _UNIT_S[found.group(2)]
    else:
        raise QueryError(f"step {step!r}: give e.g. '1m', '5m', '1h' or seconds")
    if seconds < MIN_STEP_S or seconds % MIN_STEP_S:
        raise QueryError(
            f"step {step!r} is {seconds:g} s: metrics are projected per minute, so the step "
            "is a whole number of minutes (e.g. '1m', '5m', '1h')"
        )
    return int(seconds)


def _check_labels(value: Any, what: str) -> dict[str, str] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{what} must be a JSON object of strings") from None
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping of label name to value")
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{what}: label names must be non-empty strings, got {key!r}")
        if not isinstance(item, str):
            raise ValueError(f"{what}: label {key!r} must be compared with a string, got {item!r}")
    return dict(value) or None


class MetricFilter(_Model):
    """Arguments of ``query.metric`` / ``query.metric_ratio`` and their HTTP routes.

    ``labels`` must all match exactly; ``group_by`` names labels (or
    ``tenant``) to split rows by; ``where`` (ratios only) selects the share.
    """

    name: str
    tenant: str | None = None
    labels: dict[str, str] | None = None
    since: datetime
    until: datetime
    step_s: int = MIN_STEP_S
    group_by: list[str] = Field(default_factory=list)
    where: dict[str, str] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("must not be empty (use None for every tenant)")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        return _check_labels(value, "labels")

    @field_validator("where", mode="before")
    @classmethod
    def _where(cls, value: Any) -> Any:
        return _check_labels(value, "where")

    @field_validator("group_by", mode="before")
    @classmethod
    def _group_by(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError("group_by must be a list of label names")
        for item in value:
            if not isinstance(item, str) or not item:
                raise ValueError(f"group_by: label names must be non-empty strings, got {item!r}")
        if len(set(value)) != len(value):
            raise ValueError("group_by names a label twice")
        return list(value)

    @classmethod
    def parse(cls, **values: Any) -> MetricFilter:
        """Validate and normalise; raises QueryError with what is wrong.

        ``since`` defaults to an hour before ``until`` (default now); both are
        then aligned to ``step`` (default ``"1m"``).
        """
        now = values.pop("now", None) or datetime.now(UTC)
        step_s = parse_step(values.pop("step", None) or values.pop("step_s", None) or "1m")
        try:
            until = _as_utc(values.get("until"), now) or now
            since = _as_utc(values.get("since"), now) or until - DEFAULT_RANGE
        except ValueError as exc:
            raise QueryError(f"since/until: {exc}") from None
        if since >= until:
            raise QueryError(
                f"since ({since.isoformat()}) is not before until ({until.isoformat()})"
            )
        if (until - since).total_seconds() / step_s > MAX_BUCKETS:
            raise QueryError(
                f"{(until - since).total_seconds() / step_s:.0f} buckets of {step_s} s: at most "
                f"{MAX_BUCKETS}; use a larger step or a shorter range"
            )
        values.update(since=since, until=until, step_s=step_s)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'filter'}: {err['msg']}"
                for err in exc.errors()
            )
            raise QueryError(f"invalid metric query: {problems}") from None

    def query_params(self) -> dict[str, str]:
        """The filter as HTTP query parameters (``name`` is in the path)."""
        params = {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "step": str(self.step_s),
        }
        if self.tenant:
            params["tenant"] = self.tenant
        if self.labels:
            params["labels"] = json.dumps(self.labels, separators=(",", ":"))
        if self.group_by:
            params["group_by"] = ",".join(self.group_by)
        if self.where:
            params["where"] = json.dumps(self.where, separators=(",", ":"))
        return params


class MetricInfo(_Model):
    """A declared metric, as its points describe it."""

    name: str
    kind: MetricKind
    pretty_name: str
    unit: str = ""
    labels: list[str] = Field(default_factory=list, description="Declared label names.")
    tenants: int = Field(0, description="Tenants with points (in the caller's scope).")
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class MetricList(_Rows[MetricInfo]):
    """Declared metrics, by name. Iterate it, index it, or ``to_pandas()`` it."""

    metrics: list[MetricInfo] = Field(default_factory=list)

    def _items(self) -> list[MetricInfo]:
        return self.metrics

    def _records(self) -> list[dict[str, Any]]:
        return [m.model_dump() for m in self.metrics]


class MetricRow(_Model):
    """One time bucket (and group). Fields of other kinds are None.

    counter: ``total`` and ``rate`` (per second over the bucket, or over its
    elapsed part for the bucket holding ``until``); histogram: ``count``,
    ``sum``, ``avg``, ``min``, ``max``, ``p50``, ``p95``, ``p99``; gauge:
    ``last`` (latest sample of the matching series), ``min`` and ``max``.
    """

    time: datetime
    group: dict[str, str] = Field(default_factory=dict)
    total: float | None = None
    rate: float | None = None
    count: int | None = None
    sum: float | None = None
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    last: float | None = None


_FIELDS: dict[str, tuple[str, ...]] = {
    "counter": ("total", "rate"),
    "histogram": ("count", "sum", "avg", "min", "max", "p50", "p95", "p99"),
    "gauge": ("last", "min", "max"),
}


class MetricSeries(_Rows[MetricRow]):
    """Time-bucketed values of one metric; buckets without points are left out."""

    name: str
    kind: MetricKind
    pretty_name: str = ""
    unit: str = ""
    tenant: str | None = None
    labels: dict[str, str] | None = None
    group_by: list[str] = Field(default_factory=list)
    since: datetime
    until: datetime
    step_s: int
    error_bound: float | None = Field(
        None,
        description="Histograms: the largest relative error of p50/p95/p99 in these rows "
        "(from the coarsest bucket scale among them).",
    )
    rows: list[MetricRow] = Field(default_factory=list)

    def _items(self) -> list[MetricRow]:
        return self.rows

    def _records(self) -> list[dict[str, Any]]:
        fields = _FIELDS[self.kind]
        return [
            {"time": row.time, **row.group, **{f: getattr(row, f) for f in fields}}
            for row in self.rows
        ]


class RatioRow(_Model):
    """Share of the measure (counter total, histogram count) matching ``where``."""

    time: datetime
    group: dict[str, str] = Field(default_factory=dict)
    matching: float = 0.0
    total: float = 0.0
    ratio: float | None = Field(None, description="matching / total; None when total is 0.")


class MetricRatio(_Rows[RatioRow]):
    """The share of a label value over time."""

    name: str
    kind: MetricKind
    where: dict[str, str]
    tenant: str | None = None
    labels: dict[str, str] | None = None
    group_by: list[str] = Field(default_factory=list)
    since: datetime
    until: datetime
    step_s: int
    rows: list[RatioRow] = Field(default_factory=list)

    def _items(self) -> list[RatioRow]:
        return self.rows

    def _records(self) -> list[dict[str, Any]]:
        return [
            {"time": r.time, **r.group, "matching": r.matching, "total": r.total, "ratio": r.ratio}
            for r in self.rows
        ]
