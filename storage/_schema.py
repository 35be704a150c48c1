"""DDL, migrations and the flow/step projection, shared by every adapter.

Projection design: ``flows``, ``steps`` and ``flow_runs`` (the part of a flow's
state that stats read, ordered by flow name) are AggregatingMergeTree tables
whose columns are ``SimpleAggregateFunction``s with commutative, idempotent
merge functions (min, max, max over tuples, maxMap, groupUniqArrayArray).
Materialized views fill them from ``events``, so the projected state is the same
whatever order events arrive in and however often they repeat: re-applying an
event is a no-op under every one of those functions. Reads aggregate with the
same functions (``GROUP BY tenant, flow_id``) instead of relying on background
merges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dashfrog import schemas
from dashfrog.storage import _incidents, _metrics

# Neutral elements for tuple min/max: a row that is not about an error or a
# step start must never win those aggregates. UInt64 max is later than any
# real timestamp in microseconds; 0 is earlier than any.
NO_ERROR_TS = 18446744073709551615
# The same for flow_runs' start (min) and end (max) in microseconds.
NO_START_US = 9223372036854775807
NO_END_US = -9223372036854775808

TS = "DateTime64(6, 'UTC')"


def _event_columns() -> tuple[str, ...]:
    # The fields of the Avro Event record in their order, with the error
    # record split into has_error and one column per part.
    columns: list[str] = []
    for name in schemas.EVENT_FIELDS:
        if name == "error":
            columns += ["has_error", "error_type", "error_message", "error_stack"]
        elif name == schemas.METRICS_FIELD:
            continue  # metric points go to metric_points (see storage._metrics)
        else:
            columns.append(name)
    return tuple(columns)


# What an insert writes into ``events``, derived from ``event_batch.avsc``; a
# field added there needs its column added by a migration.
EVENT_COLUMNS: tuple[str, ...] = _event_columns()

_EVENTS = f"""
CREATE TABLE IF NOT EXISTS events (
    event_id String,
    kind LowCardinality(String),
    flow_id String,
    tenant String,
    flow_name LowCardinality(String),
    step_id String,
    parent_step_id String,
    step_name String,
    status LowCardinality(String),
    has_error UInt8,
    error_type String,
    error_message String,
    error_stack String CODEC(ZSTD(3)),
    labels Map(String, String),
    attributes Map(String, String),
    timestamp {TS},
    service LowCardinality(String),
    host LowCardinality(String),
    trace_id String,
    span_id String,
    sdk_version LowCardinality(String),
    inserted_at DateTime DEFAULT now(),
    INDEX idx_flow_id flow_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_kind kind TYPE set(8) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant, flow_id, event_id)
TTL toDateTime(timestamp) + INTERVAL __RETENTION_DAYS__ DAY
SETTINGS non_replicated_deduplication_window = 10000
"""

# Every event of a flow carries its tenant, flow id and name; the partial row
# each insert block contributes is merged with the others by the column
# functions, never overwritten.
_FLOWS = f"""
CREATE TABLE IF NOT EXISTS flows (
    tenant String,
    flow_id String,
    flow_name SimpleAggregateFunction(max, String),
    started_at SimpleAggregateFunction(min, Nullable({TS})),
    first_seen SimpleAggregateFunction(min, {TS}),
    ended_at SimpleAggregateFunction(max, Nullable({TS})),
    last_activity SimpleAggregateFunction(max, {TS}),
    end_failed SimpleAggregateFunction(max, UInt8),
    end_success SimpleAggregateFunction(max, UInt8),
    steps_started SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    steps_ended SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    steps_failed SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    current_step SimpleAggregateFunction(max, Tuple(UInt64, String, String)),
    first_error SimpleAggregateFunction(min, Tuple(UInt64, String, String, String, String, String)),
    labels SimpleAggregateFunction(maxMap, Map(String, String)),
    services SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    trace_id SimpleAggregateFunction(max, String),
    INDEX idx_flow_id flow_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_label_keys mapKeys(labels) TYPE bloom_filter GRANULARITY 4,
    INDEX idx_label_values mapValues(labels) TYPE bloom_filter GRANULARITY 4
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant, flow_id)
TTL toDateTime(last_activity) + INTERVAL __RETENTION_DAYS__ DAY
"""

_FLOWS_SELECT = """
SELECT
    tenant,
    flow_id,
    max(flow_name) AS flow_name,
    min(if(kind = 'flow_started', CAST(timestamp, 'Nullable(DateTime64(6, \\'UTC\\'))'), NULL)) AS started_at,
    min(timestamp) AS first_seen,
    max(if(kind = 'flow_ended', CAST(timestamp, 'Nullable(DateTime64(6, \\'UTC\\'))'), NULL)) AS ended_at,
    max(timestamp) AS last_activity,
    max(toUInt8(kind = 'flow_ended' AND status = 'failed')) AS end_failed,
    max(toUInt8(kind = 'flow_ended' AND status = 'success')) AS end_success,
    groupUniqArrayArray(if(kind = 'step_started', [step_id], [])) AS steps_started,
    groupUniqArrayArray(if(kind = 'step_ended', [step_id], [])) AS steps_ended,
    groupUniqArrayArray(if(kind = 'step_ended' AND status = 'failed', [step_id], [])) AS steps_failed,
    max(if(kind = 'step_started',
           tuple(toUInt64(toUnixTimestamp64Micro(timestamp)), step_name, step_id),
           tuple(toUInt64(0), '', ''))) AS current_step,
    min(if(has_error = 1,
           tuple(toUInt64(toUnixTimestamp64Micro(timestamp)), step_id, step_name,
                 error_type, error_message, error_stack),
           tuple(toUInt64(18446744073709551615), '', '', '', '', ''))) AS first_error,
    maxMap(labels) AS labels,
    groupUniqArrayArray(if(service = '', [], [toString(service)])) AS services,
    max(if(kind = 'flow_started', trace_id, '')) AS trace_id
FROM {source}
GROUP BY tenant, flow_id
"""

_STEPS = f"""
CREATE TABLE IF NOT EXISTS steps (
    tenant String,
    flow_id String,
    step_id String,
    flow_name SimpleAggregateFunction(max, String),
    step_name SimpleAggregateFunction(max, String),
    parent_step_id SimpleAggregateFunction(max, String),
    started_at SimpleAggregateFunction(min, Nullable({TS})),
    first_seen SimpleAggregateFunction(min, {TS}),
    ended_at SimpleAggregateFunction(max, Nullable({TS})),
    last_activity SimpleAggregateFunction(max, {TS}),
    end_failed SimpleAggregateFunction(max, UInt8),
    end_success SimpleAggregateFunction(max, UInt8),
    error SimpleAggregateFunction(min, Tuple(UInt64, String, String, String)),
    attributes SimpleAggregateFunction(maxMap, Map(String, String)),
    services SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    hosts SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    INDEX idx_flow_id flow_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_step_name step_name TYPE bloom_filter GRANULARITY 4
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant, flow_id, step_id)
TTL toDateTime(last_activity) + INTERVAL __RETENTION_DAYS__ DAY
"""

_STEPS_SELECT = """
SELECT
    tenant,
    flow_id,
    step_id,
    max(flow_name) AS flow_name,
    max(step_name) AS step_name,
    max(parent_step_id) AS parent_step_id,
    min(if(kind = 'step_started', CAST(timestamp, 'Nullable(DateTime64(6, \\'UTC\\'))'), NULL)) AS started_at,
    min(timestamp) AS first_seen,
    max(if(kind = 'step_ended', CAST(timestamp, 'Nullable(DateTime64(6, \\'UTC\\'))'), NULL)) AS ended_at,
    max(timestamp) AS last_activity,
    max(toUInt8(kind = 'step_ended' AND status = 'failed')) AS end_failed,
    max(toUInt8(kind = 'step_ended' AND status = 'success')) AS end_success,
    min(if(has_error = 1,
           tuple(toUInt64(toUnixTimestamp64Micro(timestamp)), error_type, error_message, error_stack),
           tuple(toUInt64(18446744073709551615), '', '', ''))) AS error,
    maxMap(attributes) AS attributes,
    groupUniqArrayArray(if(service = '', [], [toString(service)])) AS services,
    groupUniqArrayArray(if(host = '', [], [toString(host)])) AS hosts
FROM {source}
WHERE kind IN ('step_started', 'step_ended') AND step_id != ''
GROUP BY tenant, flow_id, step_id
"""


# What stats read, one partial row per (flow name, tenant, flow id) and insert
# block: name first so that stats for a name read that name's rows only, and
# plain integers with neutral elements instead of Nullable columns so that the
# per-flow merge of a stats query stays cheap. ``outcome`` orders like the
# flow status rule (a failed end wins over a successful one): 0 no end seen,
# 1 success, 2 failed. ``steps_failed`` holds (step id, step name) of failed
# step ends, so failures per step need no read of ``steps``.
_FLOW_RUNS = f"""
CREATE TABLE IF NOT EXISTS flow_runs (
    flow_name LowCardinality(String),
    tenant String,
    flow_id String,
    outcome SimpleAggregateFunction(max, UInt8),
    started_us SimpleAggregateFunction(min, Int64),
    first_seen_us SimpleAggregateFunction(min, Int64),
    ended_us SimpleAggregateFunction(max, Int64),
    last_activity SimpleAggregateFunction(max, {TS}),
    steps_failed SimpleAggregateFunction(groupUniqArrayArray, Array(Tuple(String, String)))
)
ENGINE = AggregatingMergeTree
ORDER BY (flow_name, tenant, flow_id)
TTL toDateTime(last_activity) + INTERVAL __RETENTION_DAYS__ DAY
"""

_FLOW_RUNS_SELECT = (
    """
SELECT
    flow_name,
    tenant,
    flow_id,
    max(toUInt8(multiIf(kind != 'flow_ended', 0, status = 'failed', 2, status = 'success', 1, 0))) AS outcome,
    min(if(kind = 'flow_started', toUnixTimestamp64Micro(timestamp), toInt64("""
    + str(NO_START_US)
    + """))) AS started_us,
    min(toUnixTimestamp64Micro(timestamp)) AS first_seen_us,
    max(if(kind = 'flow_ended', toUnixTimestamp64Micro(timestamp), toInt64("""
    + str(NO_END_US)
    + """))) AS ended_us,
    max(timestamp) AS last_activity,
    groupUniqArrayArray(if(kind = 'step_ended' AND status = 'failed' AND step_id != '',
                           [(step_id, step_name)], [])) AS steps_failed
FROM {source}
GROUP BY flow_name, tenant, flow_id
"""
)


def flows_projection(source: str) -> str:
    return _FLOWS_SELECT.replace("{source}", source)


def steps_projection(source: str) -> str:
    return _STEPS_SELECT.replace("{source}", source)


def flow_runs_projection(source: str) -> str:
    return _FLOW_RUNS_SELECT.replace("{source}", source)


# One row per dead-lettered message, keyed by where it came from: a message
# dead-lettered again after a redelivery replaces its row (read with FINAL).
# ``head`` holds its first bytes only (the DLQ topic holds the whole message
# when it fits there; ``in_dlq`` says whether it did).
_DEAD_LETTERS = """
CREATE TABLE IF NOT EXISTS dead_letters (
    topic String,
    partition UInt32,
    offset UInt64,
    size UInt64,
    reason String,
    in_dlq LowCardinality(String),
    head String CODEC(ZSTD(3)),
    key String,
    headers Map(String, String),
    dead_lettered_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset)
TTL toDateTime(dead_lettered_at) + INTERVAL __RETENTION_DAYS__ DAY
"""


@dataclass(frozen=True)
class Backfill:
    """A migration step that projects the raw events already stored into
    ``table``; run in chunks of flows so a terminal can show its progress."""

    table: str
    projection: Callable[[str], str]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str | Backfill, ...]


SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""

# Append only: a released migration never changes. Each statement is
# idempotent on its own, so a migration interrupted halfway reruns cleanly.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "events", (_EVENTS,)),
    Migration(
        2,
        "flows",
        (
            _FLOWS,
            "CREATE MATERIALIZED VIEW IF NOT EXISTS flows_mv TO flows AS "
            + flows_projection("events"),
        ),
    ),
    Migration(
        3,
        "steps",
        (
            _STEPS,
            "CREATE MATERIALIZED VIEW IF NOT EXISTS steps_mv TO steps AS "
            + steps_projection("events"),
        ),
    ),
    Migration(
        4,
        "flow_runs",
        (
            _FLOW_RUNS,
            "CREATE MATERIALIZED VIEW IF NOT EXISTS flow_runs_mv TO flow_runs AS "
            + flow_runs_projection("events"),
            # The view first: an event written after it exists is projected by
            # it, one written before by this backfill, and one projected by both
            # changes nothing. An insert already under way on another
            # connection while the view is created can miss both; rebuild()
            # repairs that.
            Backfill("flow_runs", flow_runs_projection),
        ),
    ),
    # A custom event's name gets its own column (the Avro field event_name);
    # rows written before it keep the name in step_name, and readers fall back.
    Migration(8, "events.event_name", ("ALTER TABLE events ADD COLUMN IF NOT EXISTS event_name String DEFAULT ''",)),
    Migration(5, "dead_letters", (_DEAD_LETTERS,)),
    # Metric points (raw, one row per point id once merged) and the catalog of
    # declared metrics; then the per-minute projection (see storage._metrics).
    Migration(6, "metric_points", _metrics.MIGRATION_6),
    Migration(7, "metric_minutes", _metrics.MIGRATION_7),
    # Alert notices claimed by evaluators (see storage._incidents).
    Migration(10, "alert_incidents", _incidents.MIGRATION_10),
)

# Tables whose TTL follows DASHFROG_RETENTION_DAYS, with the column it counts from.
TTL_COLUMNS: dict[str, str] = {
    "events": "toDateTime(timestamp)",
    "dead_letters": "toDateTime(dead_lettered_at)",
    "flows": "toDateTime(last_activity)",
    "steps": "toDateTime(last_activity)",
    "flow_runs": "toDateTime(last_activity)",
    **_metrics.TTL_COLUMNS,
    **_incidents.TTL_COLUMNS,
}


def render(statement: str, retention_days: int) -> str:
    # retention_days is an int from validated settings, never user text.
    return statement.replace("__RETENTION_DAYS__", str(int(retention_days)))
