"""The store interface. Adapters (chDB, clickhouse-connect) implement it in
full and share the DDL and queries; :func:`open_store` picks one by the URL's
scheme and imports its driver only then. Consumers (the processor, the API,
``dashfrog.query``) type against :class:`Store`, never against an adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from dashfrog._models import FlowDetail, FlowFilter, FlowList, FlowStats, FlowSummary, StatsFilter
from dashfrog.schemas import Event
from dashfrog.storage._avro import EncodedGroup, GroupResult
from dashfrog.storage._dead_letters import DeadLetter

# Called with (raw events projected so far, raw events in all) as a backfill
# (a rebuild, or a schema upgrade that fills a new table) goes.
Progress = Callable[[int, int], None]


class Store(Protocol):
    """Where raw events land and flows and steps are projected.

    Writes are idempotent per ``token``; reads take a validated filter
    (:class:`FlowFilter`, :class:`StatsFilter`) and return the API's models.
    Every method may raise StorageError (the engine failed) and the reads
    QueryError (the caller's query is wrong).
    """

    url: str
    # Seconds without activity after which a running flow reads as stalled.
    stalled_after_s: float

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...

    def close(self) -> None:
        """Release the engine; later calls raise StorageError."""

    # -- schema ------------------------------------------------------------------

    def migrate(self, progress: Progress | None = None) -> None:
        """Create or upgrade tables; safe to run any number of times.
        ``progress`` follows upgrades that backfill a table from the raw events."""

    def schema_version(self) -> int:
        """The highest migration applied."""

    def pending_migrations(self) -> list[int]:
        """The versions of the migrations not applied yet, in order."""

    def ensure_schema(self) -> None:
        """At a process's start: migrate an embedded store; on a server, only
        check (no DDL) and raise SchemaOutdatedError if a migration is missing."""

    def rebuild(self, progress: Progress | None = None) -> None:
        """Re-project flows and steps from the raw events table; ``progress`` follows it."""

    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Record messages the processor could not write in ``dead_letters``
        (one row per topic, partition and offset, however often recorded)."""

    def dead_letters(
        self,
        limit: int = 50,
        topic: str | None = None,
        partition: int | None = None,
        reason: str | None = None,
        since: datetime | float | None = None,
    ) -> list[dict[str, Any]]:
        """The most recent dead letters, newest first, as JSON-ready dicts."""

    # -- writes ------------------------------------------------------------------

    def insert_events(self, events: Sequence[Event], token: str) -> None:
        """Write ``events`` durably and project them into flows and steps.

        ``token`` names the batch deterministically (e.g. topic/partition/offset
        range): writing the same batch with the same token again, after a crash,
        changes nothing that queries return.
        """

    def insert_encoded(self, groups: Sequence[EncodedGroup], token: str) -> list[GroupResult]:
        """Write the events of undecoded messages, grouped by writer schema.

        Each group is (writer schema JSON, message bodies after their 10-byte
        single-object prefix). Valid events are written under ``token`` (plus
        a per-group suffix); one result per group gives the events written and
        the indexes of messages holding invalid events (not written). Raises
        MalformedEventsError naming the first group that does not read (groups
        before it were written), StorageError when the engine fails.
        """

    # -- reads -------------------------------------------------------------------

    def select(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one read-only statement with bound ``{name:Type}`` parameters; rows as dicts."""

    def find_flows(self, flt: FlowFilter, *, now: datetime | None = None) -> FlowList:
        """Flows matching a validated filter, newest first (keyset pages by flow id)."""

    def changed_flows(
        self, since_s: int | None, tenants: Sequence[str] | None = None, limit: int = 1000
    ) -> tuple[int, list[FlowSummary]]:
        """Flows with events written since ``since_s`` (server epoch seconds) and
        the server's current second; ``tenants`` None means every tenant."""

    def flow(
        self, flow_id: str, tenant: str | None = None, *, now: datetime | None = None
    ) -> FlowDetail | None:
        """One flow with its step tree, errors and custom events; None if unknown."""

    def find_stats(self, flt: StatsFilter, *, now: datetime | None = None) -> FlowStats:
        """Runs, success rate, duration percentiles and failures per step."""

    def flow_overview(self, flt: FlowFilter, *, now: datetime | None = None) -> dict[str, Any]:
        """Over every flow matching ``flt`` (its limit and cursor ignored): counts
        by status, success rate, duration p50/p95/p99 (ms), a duration histogram
        (1-2-5 ms buckets, ``lo_ms``/``hi_ms``/``count``) and failures per step."""

    def flow_timeseries(
        self, flt: FlowFilter, *, bucket_s: int | None = None, now: datetime | None = None
    ) -> dict[str, Any]:
        """``{"bucket_s", "points"}``: flows started per bucket by status, with
        duration p50/p95, empty buckets included; ``bucket_s`` None picks a round
        width giving about 60 buckets. QueryError past 500 buckets."""

    def flow_events(self, tenant: str, flow_id: str, *, limit: int = 100_000) -> list[dict[str, Any]]:
        """Every lifecycle and custom event of one flow (duplicates dropped),
        oldest first, as JSON-ready records."""

    # -- alert incidents -----------------------------------------------------------

    def claim_incident(
        self,
        *,
        key: str,
        seq: int,
        transition: str,
        rule: str,
        condition: str,
        tenant: str,
        subject: str,
        details: dict[str, Any],
        me: str,
    ) -> bool:
        """Claim the notice of ``transition`` ("opened" or "resolved") of incident
        (``key``, ``seq``) for evaluator ``me``; True if ``me`` won it: of all
        evaluators sharing the store, exactly one wins each transition."""

    def latest_incidents(self, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """The latest incident of every rule and subject (of ``tenant`` if given),
        open or resolved, as JSON-ready dicts."""
