"""What every adapter shares: migrations, inserts, rebuild, read-only SQL and the
read queries. An adapter supplies three engine primitives (``_execute``,
``_query``, ``_insert``) and ``close``.
"""

from __future__ import annotations

import abc
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import fastavro
import pyarrow as pa

from dashfrog import schemas
from dashfrog._exceptions import DashfrogError, QueryError, SchemaError, StorageError
from dashfrog._models import FlowDetail, FlowFilter, FlowList, FlowStats, FlowSummary, StatsFilter
from dashfrog._settings import get_settings
from dashfrog.schemas import Event
from dashfrog.storage import _explore, _incidents, _metrics, _queries
from dashfrog.storage._arrow import events_to_arrow
from dashfrog.storage._avro import EncodedGroup, GroupResult, MalformedEventsError, group_suffix
from dashfrog.storage._dead_letters import DeadLetter
from dashfrog.storage._dead_letters import insert_statements as dead_letter_inserts
from dashfrog.storage._dead_letters import read as read_dead_letters
from dashfrog.storage._schema import (
    MIGRATIONS,
    SCHEMA_MIGRATIONS,
    TTL_COLUMNS,
    Backfill,
    flow_runs_projection,
    flows_projection,
    render,
    steps_projection,
)
from dashfrog.storage._sqlcheck import PARSE_PARAM, PARSE_SQL, SqlLimits, admit, parse_error
from dashfrog.storage._store import Progress

# Engine error codes meaning the caller's query is wrong (QueryError), not the store broken.
USER_ERRORS = (
    "SYNTAX_ERROR",
    "UNKNOWN_TABLE",
    "UNKNOWN_IDENTIFIER",
    "UNKNOWN_FUNCTION",
    "READONLY",
    "BAD_QUERY_PARAMETER",
    "UNKNOWN_QUERY_PARAMETER",
    "ILLEGAL_TYPE_OF_ARGUMENT",
    "TYPE_MISMATCH",
    "NUMBER_OF_ARGUMENTS_DOESNT_MATCH",
    "UNKNOWN_DATABASE",
    "ACCESS_DENIED",
)

class SchemaOutdatedError(StorageError):
    """The store's schema is behind this release: run ``dashfrog migrate``."""


_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)", re.DOTALL)

# A backfill projects this many raw events per statement, about.
BACKFILL_CHUNK_EVENTS = 2_000_000


def _projections() -> tuple[tuple[str, Callable[[str], str]], ...]:
    return (
        ("flows", flows_projection),
        ("steps", steps_projection),
        ("flow_runs", flow_runs_projection),
    )


class SqlStore(abc.ABC):
    """Base of the chDB and clickhouse-connect stores."""

    url: str

    def __init__(
        self,
        url: str,
        *,
        retention_days: int | None = None,
        stalled_after_s: float | None = None,
    ) -> None:
        settings = get_settings()
        self.url = url
        self.retention_days = int(retention_days or settings.retention_days)
        self.stalled_after_s = float(stalled_after_s or settings.stalled_after_s)
        self.sql_limits = SqlLimits.from_settings(settings)

    # -- engine primitives ------------------------------------------------------

    @abc.abstractmethod
    def _execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing."""

    @abc.abstractmethod
    def _query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query, unrestricted; rows as dicts of plain Python values."""

    @abc.abstractmethod
    def _insert(self, table: pa.Table, token: str) -> None:
        """Insert an ``events`` Arrow table with ``insert_deduplication_token=token``."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Store protocol -----------------------------------------------------------

    def migrate(self, progress: Progress | None = None) -> None:
        """Create or upgrade tables; safe to run any number of times, even concurrently.
        ``progress`` follows upgrades that backfill a table from the raw events."""
        self._execute(SCHEMA_MIGRATIONS)
        applied = {int(r["version"]) for r in self._query("SELECT version FROM schema_migrations")}
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            for statement in migration.statements:
                if isinstance(statement, Backfill):
                    self._backfill(((statement.table, statement.projection),), progress)
                else:
                    self._execute(render(statement, self.retention_days))
            self._execute(
                "INSERT INTO schema_migrations (version, name) SELECT {v:UInt32}, {n:String}",
                {"v": migration.version, "n": migration.name},
            )
        self._sync_ttl()

    def _sync_ttl(self) -> None:
        # Retention is a setting, so it can change after the tables exist.
        for table, column in TTL_COLUMNS.items():
            rows = self._query(
                "SELECT engine_full FROM system.tables"
                " WHERE database = currentDatabase() AND name = {t:String}",
                {"t": table},
            )
            found = _TTL_DAYS.search(rows[0]["engine_full"]) if rows else None
            if found and int(found.group(1)) != self.retention_days:
                self._execute(
                    f"ALTER TABLE {table} MODIFY TTL {column} + INTERVAL {self.retention_days} DAY"
                )

    def schema_version(self) -> int:
        rows = self._query("SELECT max(version) AS v FROM schema_migrations")
        return int(rows[0]["v"]) if rows else 0

    # Embedded stores belong to the process that opens them, DDL included;
    # a server's schema belongs to ``dashfrog migrate``.
    embedded: bool = False

    def pending_migrations(self) -> list[int]:
        """Versions of MIGRATIONS not applied to this store (reads only)."""
        try:
            rows = self._query("SELECT version FROM schema_migrations")
        except QueryError:  # no schema_migrations table: nothing applied yet
            rows = []
        applied = {int(r["version"]) for r in rows}
        return sorted(m.version for m in MIGRATIONS if m.version not in applied)

    def ensure_schema(self) -> None:
        """What a long-running process does at start: an embedded store
        migrates itself; on a server nothing but reads, so workers and the
        API need no DDL rights, and a schema behind this release stops them
        with SchemaOutdatedError."""
        if self.embedded:
            self.migrate()
            return
        pending = self.pending_migrations()
        if pending:
            raise SchemaOutdatedError(
                f"the store's schema lacks migrations {pending}: run `dashfrog migrate` "
                "(as a user with DDL rights) with this DashFrog version first"
            )

    def insert_events(self, events: Sequence[Event], token: str) -> None:
        """Write ``events`` and project them; the same ``token`` again changes nothing.

        Raises StorageError when the events do not fit the contract or the
        engine fails.
        """
        if not events:
            return
        if any(e["kind"] == schemas.METRICS_KIND for e in events):
            # Metric points have their own tables and projection.
            self.insert_metrics([e for e in events if e["kind"] == schemas.METRICS_KIND], token)
            events = [e for e in events if e["kind"] != schemas.METRICS_KIND]
            if not events:
                return
        self._insert(events_to_arrow(events), token)

    def insert_metrics(self, events: Sequence[Event], token: str) -> int:
        """Write the points of ``metrics`` events and re-project the minutes
        they fall in; the number of points. Writing a point again (any token)
        changes nothing that queries return."""
        return _metrics.write_points(self._execute, events, f"{token}-metrics")

    def insert_encoded(self, groups: Sequence[EncodedGroup], token: str) -> list[GroupResult]:
        """Write the events of undecoded messages; one result per group, in order.

        Each group is (writer schema JSON, message bodies without their 10-byte
        single-object prefix). Valid events are written (the same ``token``
        again changes nothing); a message holding invalid events (see
        ``schemas.validate``) is reported by its index in the group, its
        invalid events not written. Groups are written in order: when one does
        not read as Avro with its schema, MalformedEventsError names it and
        nothing of it or later groups was written.

        This is the portable path (decode in Python, insert the rows); an
        adapter whose engine reads Avro itself overrides it.
        """
        results: list[GroupResult] = []
        reader = schemas.current_schema()
        for index, (schema_json, bodies) in enumerate(groups):
            try:
                writer = fastavro.parse_schema(json.loads(schema_json))
            except Exception as exc:
                raise MalformedEventsError(
                    f"writer schema does not parse: {exc}", index, results
                ) from exc
            valid: list[Event] = []
            invalid: list[int] = []
            for position, body in enumerate(bodies):
                try:
                    batch: Any = fastavro.schemaless_reader(io.BytesIO(body), writer, reader)
                    events = batch["events"]
                except Exception as exc:
                    raise MalformedEventsError(
                        f"message {position} does not decode with its writer schema: {exc!r}",
                        index,
                        results,
                    ) from exc
                bad = False
                for event in events:
                    try:
                        schemas.validate(event)
                    except SchemaError:
                        bad = True
                    else:
                        valid.append(event)
                if bad:
                    invalid.append(position)
            if valid:
                self.insert_events(valid, f"{token}-{group_suffix(schema_json)}")
            results.append(GroupResult(len(valid), tuple(invalid)))
        return results

    def select(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one user read statement (SELECT, WITH, DESCRIBE TABLE, SHOW TABLES,
        EXISTS TABLE) with bound ``{name:Type}`` parameters, in the sandbox of
        :mod:`dashfrog.storage._sqlcheck`: the engine parses it, only
        allowlisted functions and tables pass, and it runs read-only under
        ``sql_limits``. Raises QueryError (QueryLimitError for a limit)."""
        if not isinstance(sql, str) or not sql.strip():
            raise QueryError("empty SQL: give one SELECT, WITH, DESCRIBE, SHOW TABLES or EXISTS statement")
        try:
            (parsed,) = self._query(PARSE_SQL, {PARSE_PARAM: sql})
        except QueryError as exc:
            raise parse_error(str(exc)) from None
        statement = str(parsed["statement"])
        try:
            ast = self._explain(statement, params)
        except StorageError as exc:
            if "Code:" not in str(exc):
                raise
            # The engine refused the statement itself (a server refuses INTO OUTFILE here).
            raise QueryError(f"query refused: {str(exc).splitlines()[0][:300]}") from None
        checked = admit(statement, ast, str(parsed["database"]), list(parsed["databases"]), self.sql_limits)
        try:
            return self._user_query(checked, params)
        except DashfrogError as exc:
            limit = self.sql_limits.error(str(exc))
            if limit is not None:
                raise limit from None
            raise

    def _explain(self, statement: str, params: Mapping[str, Any] | None) -> list[str]:
        """The lines of ``EXPLAIN AST statement``: the parse tree, nothing executed."""
        return [str(row["explain"]) for row in self._query("EXPLAIN AST " + statement, params)]

    def _user_query(self, sql: str, params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """Run an admitted user statement; adapters give it its own connection so a
        long query holds up neither the writes nor the API's other reads."""
        return self._query(sql, params)

    def rebuild(self, progress: Progress | None = None) -> None:
        """Re-project flows, steps and flow_runs from the raw events;
        ``progress`` follows it.

        Safe while inserts continue: the views keep projecting new events and
        re-inserting state that is already there changes nothing.
        """
        for table, _ in _projections():
            self._execute(f"TRUNCATE TABLE IF EXISTS {table}")
        self._backfill(_projections(), progress)
        _metrics.rebuild(self._execute)

    def _backfill(
        self, targets: Sequence[tuple[str, Callable[[str], str]]], progress: Progress | None
    ) -> None:
        """Project the raw events into each ``(table, projection)``, in chunks
        of whole flows (by a hash of the flow id, so every aggregate sees all
        of a flow's events at once), calling ``progress`` after each chunk."""
        total = int(self._query("SELECT count() AS n FROM events")[0]["n"])
        chunks = max(1, -(-total // BACKFILL_CHUNK_EVENTS))
        sizes = {0: total}
        if chunks > 1:
            sizes = {
                int(r["c"]): int(r["n"])
                for r in self._query(
                    f"SELECT cityHash64(flow_id) % {chunks} AS c, count() AS n FROM events GROUP BY c"  # noqa: S608 - an int
                )
            }
        done = 0
        if progress is not None:
            progress(done, total)
        for chunk in range(chunks):
            source = (
                "events FINAL"
                if chunks == 1
                else f"(SELECT * FROM events FINAL WHERE cityHash64(flow_id) % {chunks} = {chunk})"  # noqa: S608 - ints
            )
            for table, projection in targets:
                self._execute(f"INSERT INTO {table} " + projection(source))
            done += sizes.get(chunk, 0)
            if progress is not None:
                progress(done, total)

    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Write rows of the ``dead_letters`` table; a letter recorded again
        (same topic, partition and offset) replaces its row."""
        for sql, params in dead_letter_inserts(letters):
            self._execute(sql, params)

    def dead_letters(
        self,
        limit: int = 50,
        topic: str | None = None,
        partition: int | None = None,
        reason: str | None = None,
        since: datetime | float | None = None,
    ) -> list[dict[str, Any]]:
        """The most recent dead letters, newest first (see ``_dead_letters.read``)."""
        return read_dead_letters(
            self._query, limit=limit, topic=topic, partition=partition, reason=reason, since=since
        )

    # -- reads ------------------------------------------------------------------------

    def find_flows(self, flt: FlowFilter, *, now: datetime | None = None) -> FlowList:
        """Flows matching a validated filter, newest first; see FlowFilter."""
        return _queries.list_flows(self._query, flt, stalled_after_s=self.stalled_after_s, now=now)

    def changed_flows(
        self, since_s: int | None, tenants: Sequence[str] | None = None, limit: int = 1000
    ) -> tuple[int, list[FlowSummary]]:
        """Flows with events written since ``since_s`` (server epoch seconds) and
        the server's current second; ``tenants`` None means every tenant."""
        return _queries.changed_flows(
            self._query, since_s, tenants, limit, stalled_after_s=self.stalled_after_s
        )

    def flow(
        self, flow_id: str, tenant: str | None = None, *, now: datetime | None = None
    ) -> FlowDetail | None:
        """One flow with steps, errors and events; ``tenant`` restricts the lookup."""
        return _queries.get_flow(
            self._query, flow_id, tenant=tenant, stalled_after_s=self.stalled_after_s, now=now
        )

    def find_stats(self, flt: StatsFilter, *, now: datetime | None = None) -> FlowStats:
        """Runs, success rate, duration percentiles and failures per step."""
        return _queries.flow_stats(self._query, flt, stalled_after_s=self.stalled_after_s, now=now)

    def flow_overview(self, flt: FlowFilter, *, now: datetime | None = None) -> dict[str, Any]:
        """Counts, success rate, duration percentiles and histogram, failures per
        step over every flow matching ``flt`` (see ``_explore.flow_overview``)."""
        return _explore.flow_overview(self._query, flt, stalled_after_s=self.stalled_after_s, now=now)

    def flow_timeseries(
        self, flt: FlowFilter, *, bucket_s: int | None = None, now: datetime | None = None
    ) -> dict[str, Any]:
        """Flows started per time bucket by status, with duration p50/p95."""
        return _explore.flow_timeseries(
            self._query, flt, stalled_after_s=self.stalled_after_s, bucket_s=bucket_s, now=now
        )

    def flow_events(self, tenant: str, flow_id: str, *, limit: int = 100_000) -> list[dict[str, Any]]:
        """Every raw event of one flow, oldest first, as JSON-ready records."""
        return _explore.flow_events(self._query, tenant, flow_id, limit=limit)

    # -- alert incidents ----------------------------------------------------------------

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
        """Claim the notice of an incident's transition; True if ``me`` won it
        (see ``_incidents`` for how several evaluators agree)."""
        return _incidents.claim_incident(
            self._query, self._execute, key=key, seq=seq, transition=transition, rule=rule,
            condition=condition, tenant=tenant, subject=subject, details=details, me=me,
        )  # fmt: skip

    def latest_incidents(self, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """The latest incident of every rule and subject (of ``tenant`` if given)."""
        return _incidents.latest_incidents(self._query, tenant=tenant)
