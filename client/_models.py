"""What ``dashfrog.query`` returns, and the JSON contract of the HTTP API.

The API serialises these models with ``model_dump(mode="json")`` and
``dashfrog.query`` parses them back with ``model_validate``, so the models are
the contract. They import with the SDK's dependencies only; pandas is imported
when ``to_pandas()`` is called.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dashfrog._exceptions import QueryError
from dashfrog._timeexpr import parse_time

if TYPE_CHECKING:
    import pandas as pd

FlowStatus = Literal["running", "success", "failed"]
# ``retried``: the attempt raised a retry (e.g. Celery ``Retry``) and runs again as a new step.
StepStatus = Literal["running", "success", "failed", "retried"]
STATUS_FILTERS: tuple[str, ...] = ("running", "success", "failed", "stalled")
MAX_LIMIT = 10_000


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ErrorInfo(_Model):
    """An error captured on a failed step or flow."""

    type: str
    message: str
    stack: str = ""
    step_id: str | None = None
    step_name: str | None = Field(None, description="None when the flow itself failed.")
    at: datetime | None = None


class FlowSummary(_Model):
    """Projected state of one flow."""

    flow_id: str
    tenant: str
    name: str
    status: FlowStatus
    stalled: bool = Field(
        False, description="Running with no activity for longer than DASHFROG_STALLED_AFTER_S."
    )
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: float | None = None
    last_activity: datetime
    current_step: str | None = Field(
        None,
        description="While the flow runs, its latest-started step still running (else the last "
        "step to end); once it has ended, the last step to end.",
    )
    current_step_id: str | None = None
    steps_started: int = 0
    steps_ended: int = 0
    steps_failed: int = 0
    error: ErrorInfo | None = Field(None, description="The first error of the flow.")
    labels: dict[str, str] = Field(default_factory=dict)
    services: list[str] = Field(default_factory=list)
    trace_id: str | None = None

    def flat(self) -> dict[str, Any]:
        """One flat record (error fields prefixed ``error_``) for tables and DataFrames."""
        row = self.model_dump(exclude={"error"})
        error = self.error
        row["error_step"] = error.step_name if error else None
        row["error_type"] = error.type if error else None
        row["error_message"] = error.message if error else None
        return row


_Item = TypeVar("_Item")


class _Rows(_Model, Generic[_Item]):
    """A result that is a list of items: iterate it, index it, or ``to_pandas()`` it."""

    def _items(self) -> list[_Item]:
        raise NotImplementedError

    def _records(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[_Item]:  # type: ignore[override]
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __getitem__(self, index: int) -> _Item:
        return self._items()[index]

    def to_pandas(self) -> pd.DataFrame:
        """A DataFrame with one row per item (needs pandas)."""
        import pandas as pd

        return pd.DataFrame.from_records(self._records())


class FlowList(_Rows[FlowSummary]):
    """One page of flows, newest first. Iterate it, index it, or ``to_pandas()`` it."""

    flows: list[FlowSummary] = Field(default_factory=list)
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; None on the last page."
    )

    def _items(self) -> list[FlowSummary]:
        return self.flows

    def _records(self) -> list[dict[str, Any]]:
        return [flow.flat() for flow in self.flows]


class StepRecord(_Model):
    """Projected state of one step; nested steps are in ``children``."""

    step_id: str
    name: str
    parent_step_id: str | None = None
    status: StepStatus
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: float | None = None
    last_activity: datetime
    error: ErrorInfo | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    services: list[str] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list)
    children: list[StepRecord] = Field(default_factory=list)

    def walk(self) -> Iterator[StepRecord]:
        """This step, then its descendants depth-first."""
        yield self
        for child in self.children:
            yield from child.walk()


class FlowEventRecord(_Model):
    """A custom event raised in a flow (``flow.event(...)``)."""

    event_id: str
    name: str
    timestamp: datetime
    step_id: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    service: str = ""


class FlowDetail(FlowSummary):
    """A flow with its step tree, every error and its custom events."""

    steps: list[StepRecord] = Field(default_factory=list, description="Top-level steps.")
    errors: list[ErrorInfo] = Field(default_factory=list)
    events: list[FlowEventRecord] = Field(default_factory=list)

    def all_steps(self) -> list[StepRecord]:
        """Every step, nested ones included, depth-first in start order."""
        return [s for root in self.steps for s in root.walk()]

    def step(self, name: str) -> StepRecord | None:
        """The first step (depth-first) with this name."""
        return next((s for s in self.all_steps() if s.name == name), None)


class StepFailureCount(_Model):
    step_name: str
    failures: int


class FlowStats(_Model):
    """Aggregates over the flows matching a tenant, name and time range."""

    tenant: str | None = None
    name: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    runs: int = 0
    running: int = 0
    stalled: int = 0
    succeeded: int = 0
    failed: int = 0
    success_rate: float | None = Field(
        None, description="succeeded / (succeeded + failed); None with no finished run."
    )
    duration_p50_ms: float | None = None
    duration_p95_ms: float | None = None
    duration_p99_ms: float | None = None
    failures_by_step: list[StepFailureCount] = Field(default_factory=list)


class SqlResult(_Rows[dict[str, Any]]):
    """Rows of a read-only SQL query."""

    columns: list[str] = Field(default_factory=list)
    rows: list[dict[str, Any]] = Field(default_factory=list)

    def _items(self) -> list[dict[str, Any]]:
        return self.rows

    def _records(self) -> list[dict[str, Any]]:
        return self.rows

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame.from_records(self.rows, columns=self.columns or None)


# -- filters ---------------------------------------------------------------


def _as_utc(value: Any, now: datetime) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return now - value
    if isinstance(value, bool):
        raise ValueError("expected a datetime, an ISO 8601 string, a timedelta or epoch seconds")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        return parse_time(value, now)
    if not isinstance(value, datetime):
        raise ValueError("expected a datetime, an ISO 8601 string, a timedelta or epoch seconds")
    # Naive datetimes are taken as UTC: stored timestamps are UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _Filter(_Model):
    tenant: str | None = None
    name: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @field_validator("tenant", "name")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("must not be empty (use None for no filter)")
        return value

    def _check_range(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise QueryError(
                f"since ({self.since.isoformat()}) is after until ({self.until.isoformat()})"
            )

    @classmethod
    def parse(cls, **values: Any) -> Any:
        """Validate and normalise filter values; raises QueryError with what is wrong."""
        now = values.pop("now", None) or datetime.now(UTC)
        for bound in ("since", "until"):
            try:
                values[bound] = _as_utc(values.get(bound), now)
            except ValueError as exc:
                raise QueryError(f"{bound}: {exc}") from None
        try:
            parsed = cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'filter'}: {err['msg']}"
                for err in exc.errors()
            )
            raise QueryError(f"invalid query filter: {problems}") from None
        parsed._check_range()
        return parsed

    def query_params(self) -> dict[str, str]:
        """The filter as HTTP query parameters (see dashfrog.query for the API)."""
        params: dict[str, str] = {}
        for key, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, datetime):
                params[key] = value.isoformat()
            elif isinstance(value, dict):
                params[key] = json.dumps(value, separators=(",", ":"))
            else:
                params[key] = str(value)
        return params


def parse_label_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``key=value`` label filters (CLI ``--label``, API ``label=``, UI) as a mapping.

    The older HTTP form ``key:value`` still works: whichever of ``=`` and ``:``
    comes first separates the name, so values may hold either (``url=http://x``,
    ``k:a=b``). Raises QueryError on a pair with no name or no separator.
    """
    labels: dict[str, str] = {}
    for pair in pairs:
        cuts = [i for i in (pair.find("="), pair.find(":")) if i >= 0]
        if not cuts or min(cuts) == 0:
            raise QueryError(f"label filter {pair!r}: expected key=value (e.g. env=prod)")
        cut = min(cuts)
        labels[pair[:cut]] = pair[cut + 1 :]
    return labels


class FlowFilter(_Filter):
    """Filters of ``dashfrog.query.flows`` and ``GET /api/flows``.

    ``labels`` are exact matches, all of which must hold; in HTTP they travel
    as one JSON object (``labels={"env":"prod"}``) so any key or value works.
    """

    status: Literal["running", "success", "failed", "stalled"] | None = None
    labels: dict[str, str] | None = None
    limit: int = Field(100, ge=1, le=MAX_LIMIT)
    cursor: str | None = None

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError("labels must be a JSON object of strings") from None
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError("labels must be a mapping of label name to value")
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"label names must be non-empty strings, got {key!r}")
            if not isinstance(item, str):
                raise ValueError(f"label {key!r} must be compared with a string, got {item!r}")
        return dict(value) or None

    @field_validator("cursor")
    @classmethod
    def _cursor(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("must not be empty (use None for the first page)")
        return value


class StatsFilter(_Filter):
    """Filters of ``dashfrog.query.stats`` and ``GET /api/stats``."""
