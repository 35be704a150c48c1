"""Admission of user SQL (``dashfrog sql``, ``dashfrog.query.sql``, ``POST /api/sql``).

``readonly=1`` alone is no sandbox: chDB follows clickhouse-local's rules, so
``file()`` reads any absolute path under readonly (``/proc/self/environ``
gave away the API tokens). The guard is the engine's own parser plus
allowlists, never a pattern over the text:

1. ``formatQuery({q:String})`` parses the text as exactly one statement
   (the engine refuses multi-statements) and gives its canonical form;
2. ``EXPLAIN AST <canonical>`` parses that again without executing anything
   (unlike ``EXPLAIN SYNTAX`` / ``QUERY TREE``, which fold constants and so
   ran ``file()`` in a trial) and lists the syntax tree, user parameters
   substituted;
3. every node type, function and table in that tree must be on an allowlist;
   ``SETTINGS``, ``INTO OUTFILE`` and ``FORMAT`` clauses are refused;
4. the canonical statement, the one that was checked, runs under
   ``readonly=1`` and the limits of :class:`SqlLimits`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dashfrog._exceptions import QueryError
from dashfrog._settings import Settings

# Step 1: one of our statements, the user's text only ever a bound value.
PARSE_SQL = (
    "SELECT formatQuery({dashfrog_user_sql:String}) AS statement, "
    "currentDatabase() AS database, "
    "(SELECT groupArray(name) FROM system.databases) AS databases"
)
PARSE_PARAM = "dashfrog_user_sql"

# System tables that describe DashFrog's own storage and nothing else: no
# settings, processes, query_log, users or grants (they show other people's
# SQL and the server's configuration). On a server, the DashFrog user's
# grants decide which rows these show.
SYSTEM_TABLES = frozenset({"one", "tables", "columns", "parts", "merges"})

# Table functions that read nothing outside the query.
TABLE_FUNCTIONS = frozenset({"numbers"})

# Aggregate functions; any of them takes the combinators below.
AGGREGATES = frozenset(
    name.lower()
    for name in """
    count sum avg min max any anyLast anyHeavy argMin argMax uniq uniqExact uniqCombined
    uniqCombined64 uniqHLL12 uniqUpTo groupArray groupUniqArray groupArraySorted groupConcat
    groupBitAnd groupBitOr groupBitXor median medianExact quantile quantiles quantileExact
    quantilesExact quantileTiming quantilesTiming quantileTDigest quantilesTDigest
    quantileDeterministic quantileExactWeighted stddevPop stddevSamp varPop varSamp covarPop
    covarSamp corr topK topKWeighted sumMap minMap maxMap avgWeighted countDistinct histogram
    simpleLinearRegression first_value last_value any_value singleValueOrNull entropy skewPop
    skewSamp kurtPop kurtSamp deltaSum retention windowFunnel sequenceMatch sequenceCount
    sumWithOverflow sumCount boundingRatio rankCorr
    """.split()
)

# Combinators an aggregate may carry (sumIf, uniqExactState, countMerge...).
COMBINATORS = tuple(
    c.lower()
    for c in (
        "If", "Array", "Map", "SimpleState", "MergeState", "State", "Merge", "ForEach",
        "Distinct", "OrDefault", "OrNull", "Resample", "ArgMin", "ArgMax",
    )
)  # fmt: skip

# Scalar and window functions: operators (as the parser names them), types,
# dates, strings, JSON, arrays, maps, maths, hashes. Nothing that reads a
# file, a URL, a dictionary, another server, the process or its settings.
FUNCTIONS = frozenset(
    name.lower()
    for name in """
    plus minus multiply divide intDiv intDivOrZero modulo moduloOrZero positiveModulo negate abs
    equals notEquals less greater lessOrEquals greaterOrEquals and or not xor
    in notIn globalIn globalNotIn nullIn notNullIn like notLike ilike notILike match
    isNull isNotNull isZeroOrNull isNotDistinctFrom coalesce ifNull nullIf assumeNotNull
    toNullable if multiIf CAST _CAST accurateCast accurateCastOrNull toTypeName tuple tupleElement
    untuple array arrayElement map lambda exists grouping materialize
    toInt8 toInt16 toInt32 toInt64 toInt128 toInt256 toUInt8 toUInt16 toUInt32 toUInt64
    toUInt128 toUInt256 toFloat32 toFloat64 toDecimal32 toDecimal64 toDecimal128 toString
    toFixedString toDate toDate32 toDateTime toDateTime64 toUUID toBool toLowCardinality
    toInt32OrZero toInt64OrZero toUInt32OrZero toUInt64OrZero toFloat64OrZero toInt32OrNull
    toInt64OrNull toUInt32OrNull toUInt64OrNull toFloat64OrNull toDateOrNull toDateTimeOrNull
    toDateOrZero toDateTimeOrZero toDateTime64OrNull toUUIDOrNull
    parseDateTimeBestEffort parseDateTimeBestEffortOrNull parseDateTimeBestEffortOrZero
    parseDateTime64BestEffort parseDateTime64BestEffortOrNull parseDateTime parseDateTimeOrNull
    formatReadableSize formatReadableQuantity formatReadableTimeDelta formatDateTime
    toIntervalMicrosecond toIntervalMillisecond toIntervalSecond toIntervalMinute toIntervalHour
    toIntervalDay toIntervalWeek toIntervalMonth toIntervalQuarter toIntervalYear
    now now64 today yesterday toYear toQuarter toMonth toDayOfMonth toDayOfWeek toDayOfYear
    toHour toMinute toSecond toISOWeek toWeek toYearWeek toYYYYMM toYYYYMMDD toYYYYMMDDhhmmss
    toStartOfYear toStartOfQuarter toStartOfMonth toStartOfWeek toMonday toStartOfDay
    toStartOfHour toStartOfMinute toStartOfSecond toStartOfFiveMinutes toStartOfTenMinutes
    toStartOfFifteenMinutes toStartOfInterval toUnixTimestamp toUnixTimestamp64Milli
    toUnixTimestamp64Micro fromUnixTimestamp fromUnixTimestamp64Milli fromUnixTimestamp64Micro
    toTimeZone toTimezone dateDiff date_diff age dateAdd date_add dateSub date_sub dateTrunc
    date_trunc timeSlot addSeconds addMinutes addHours addDays addWeeks addMonths addYears
    subtractSeconds subtractMinutes subtractHours subtractDays subtractWeeks subtractMonths
    subtractYears
    length lengthUTF8 empty notEmpty lower upper lowerUTF8 upperUTF8 concat concatWithSeparator
    substring substr substringUTF8 left right trim trimLeft trimRight trimBoth ltrim rtrim
    position positionCaseInsensitive locate startsWith endsWith replaceAll replaceOne replace
    replaceRegexpAll replaceRegexpOne splitByChar splitByString splitByRegexp splitByWhitespace
    arrayStringConcat extract extractAll extractAllGroups format reverse repeat leftPad
    rightPad lpad rpad toValidUTF8 isValidUTF8 base64Encode base64Decode tryBase64Decode hex
    unhex countSubstrings multiSearchAny multiMatchAny domain domainWithoutWWW protocol path
    queryString extractURLParameter cutQueryString
    JSONExtract JSONExtractString JSONExtractInt JSONExtractUInt JSONExtractFloat JSONExtractBool
    JSONExtractRaw JSONExtractKeys JSONExtractArrayRaw JSONExtractKeysAndValues JSONHas
    JSONLength JSONType simpleJSONExtractString toJSONString JSON_VALUE JSON_QUERY JSON_EXISTS
    cityHash64 sipHash64 xxHash64 murmurHash3_64 farmHash64 MD5 SHA1 SHA256 generateUUIDv4
    round roundBankers floor ceil ceiling trunc truncate sqrt cbrt exp exp2 exp10 log ln log2
    log10 pow power greatest least sign e pi isNaN isFinite isInfinite ifNotFinite rand rand64
    randCanonical bitAnd bitOr bitXor bitNot bar transform
    has hasAll hasAny indexOf countEqual arrayMap arrayFilter arrayExists arrayAll arrayCount
    arraySum arrayAvg arrayMin arrayMax arraySort arrayReverseSort arrayDistinct arrayUniq
    arrayConcat arraySlice arrayPushBack arrayPushFront arrayPopBack arrayPopFront arrayReverse
    arrayFlatten flatten arrayZip arrayEnumerate arrayEnumerateUniq arrayFirst arrayLast
    arrayFirstIndex arrayLastIndex arrayCumSum arrayDifference arrayResize arrayIntersect
    arrayCompact arrayJoin range emptyArrayString
    mapKeys mapValues mapContains mapFilter mapApply mapFromArrays mapUpdate
    currentDatabase
    row_number rank dense_rank percent_rank cume_dist ntile nth_value lagInFrame leadInFrame
    """.split()
)

# Node types EXPLAIN AST prints for read queries. Anything else (Set for a
# SETTINGS clause, ColumnsApplyTransformer naming a function, an INSERT...)
# is refused.
NODES = frozenset(
    """
    SelectWithUnionQuery SelectIntersectExceptQuery SelectQuery ExpressionList Function
    Identifier Literal Asterisk QualifiedAsterisk ColumnsRegexpMatcher ColumnsListMatcher
    QualifiedColumnsRegexpMatcher QualifiedColumnsListMatcher ColumnsTransformerList
    ColumnsExceptTransformer ColumnsReplaceTransformer ColumnsReplaceTransformer::Replacement
    TablesInSelectQuery TablesInSelectQueryElement TableExpression TableIdentifier TableJoin
    ArrayJoin Subquery WithElement OrderByElement InterpolateElement WindowDefinition
    WindowListElement SampleRatio DescribeQuery ExistsTableQuery ShowTables
    """.split()
)

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TABLE = re.compile(rf"^({_NAME})(?:\.({_NAME}))?(?: \(alias .*\))?(?: \(children \d+\))?$")
_FUNCTION = re.compile(rf"^({_NAME})(?: .*)?$")
_OTHER_SCHEMAS = frozenset({"system", "information_schema"})

READ_STATEMENTS = "SELECT, WITH, DESCRIBE TABLE, SHOW TABLES or EXISTS TABLE"


class QueryLimitError(QueryError):
    """A user query hit one of its limits; ``setting`` names the one to raise."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


# FINAL on every table that supports it, for every user query: raw ``events``
# rows that a redelivered message wrote twice (a different offset range, so a
# different insert token) count once, and the AggregatingMergeTree projections
# read as one merged row per key. Kept apart from the sandbox rules.
EXACT_READS = "final = 1"

USER_SQL_NICE = 19


@dataclass(frozen=True)
class SqlLimits:
    """What one user query may spend; 0 means no limit (the engine's own meaning)."""

    max_execution_s: float = 30.0
    max_result_rows: int = 100_000
    max_result_bytes: int = 100_000_000
    max_memory_bytes: int = 2_000_000_000
    max_threads: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlLimits:
        return cls(
            max_execution_s=settings.sql_max_execution_s,
            max_result_rows=settings.sql_max_result_rows,
            max_result_bytes=settings.sql_max_result_bytes,
            max_memory_bytes=settings.sql_max_memory_bytes,
            max_threads=settings.sql_max_threads,
        )

    def settings_clause(self) -> str:
        # readonly last: once it is 1 no further setting may change.
        return (
            f"SETTINGS max_execution_time = {float(self.max_execution_s)!r}, "
            f"max_result_rows = {int(self.max_result_rows)}, "
            f"max_result_bytes = {int(self.max_result_bytes)}, "
            "result_overflow_mode = 'throw', timeout_overflow_mode = 'throw', "
            f"max_memory_usage = {int(self.max_memory_bytes)}, max_threads = {max(1, int(self.max_threads))}, "
            # Interactive SQL yields the CPU to ingestion and the API's own reads
            # (the Linux nice value of the query's threads; a no-op without
            # CAP_SYS_NICE, where max_threads alone bounds it).
            f"os_thread_priority = {USER_SQL_NICE}, "
            f"{EXACT_READS}, readonly = 1"
        )

    def error(self, text: str) -> QueryLimitError | None:
        """The limit an engine error ``text`` reports, as a QueryLimitError; None if none."""
        # TOO_SLOW: the engine estimated the query would overrun the time limit.
        if "TIMEOUT_EXCEEDED" in text or "TOO_SLOW" in text:
            return QueryLimitError(
                f"query stopped after {self.max_execution_s:g} s, the time limit "
                "(DASHFROG_SQL_MAX_EXECUTION_S): narrow it (fewer rows, a tighter WHERE) or raise the limit",
                "DASHFROG_SQL_MAX_EXECUTION_S",
            )
        if "TOO_MANY_ROWS_OR_BYTES" in text:
            if "max bytes" in text:
                return QueryLimitError(
                    f"result larger than {self.max_result_bytes} bytes, the limit "
                    "(DASHFROG_SQL_MAX_RESULT_BYTES): select fewer columns or rows (LIMIT)",
                    "DASHFROG_SQL_MAX_RESULT_BYTES",
                )
            return QueryLimitError(
                f"result has more than {self.max_result_rows} rows, the limit "
                "(DASHFROG_SQL_MAX_RESULT_ROWS): aggregate, add a LIMIT, or page with WHERE",
                "DASHFROG_SQL_MAX_RESULT_ROWS",
            )
        if "MEMORY_LIMIT_EXCEEDED" in text:
            return QueryLimitError(
                f"query needs more than {self.max_memory_bytes} bytes of memory, the limit "
                "(DASHFROG_SQL_MAX_MEMORY_BYTES): aggregate less at once or raise the limit",
                "DASHFROG_SQL_MAX_MEMORY_BYTES",
            )
        return None


def parse_error(text: str) -> QueryError:
    """The engine's refusal of step 1 without our wrapper statement around it."""
    message = text.split(": In scope SELECT formatQuery(", 1)[0]
    message = message.split("DB::Exception: ", 1)[-1].strip()
    return QueryError(f"SQL does not parse: {message}")


def admit(
    statement: str,
    ast: Sequence[str],
    database: str,
    databases: Sequence[str],
    limits: SqlLimits,
) -> str:
    """The statement to run for the canonical ``statement`` whose ``EXPLAIN AST``
    lines are ``ast``; raises QueryError saying what is not allowed.

    ``database`` is the store's database: unqualified tables resolve there (or
    to a CTE of the query), so only qualified names need checking.
    """
    if not ast:
        raise QueryError("empty SQL: give one " + READ_STATEMENTS + " statement")
    root = ast[0].strip()
    kind = root.split(" ", 1)[0]
    if kind == "SelectWithUnionQuery":
        # A second child of the root is an INTO OUTFILE target or a FORMAT name.
        if root != "SelectWithUnionQuery (children 1)":
            raise QueryError(
                "INTO OUTFILE and FORMAT clauses are not allowed: rows are returned as records"
            )
    elif kind == "ShowTables":
        # The node carries no detail (FROM, LIKE): admit the plain form only.
        if statement.strip() != "SHOW TABLES":
            raise QueryError("only plain SHOW TABLES is allowed")
    elif kind not in ("DescribeQuery", "ExistsTableQuery"):
        first = statement.split(None, 1)[0].upper() if statement.strip() else "nothing"
        raise QueryError(f"only read queries are allowed ({READ_STATEMENTS}); got {first!r}")
    others = {d.lower() for d in databases if d != database} | _OTHER_SCHEMAS
    # Identifiers and aliases are printed unescaped, so a name holding a line
    # break adds lines to this listing. Added lines are checked like the others
    # and can only cause a refusal: each real node keeps its own line, so the
    # checks below look at single lines and never at their place in the tree.
    for line in ast:
        text = line.strip()
        node, _, rest = text.partition(" ")
        if node == "Set":
            raise QueryError("settings cannot be changed inside a query (SETTINGS, SET)")
        if node not in NODES:
            raise QueryError(f"{node or 'this'} is not allowed in a query")
        if node == "Function":
            _check_function(rest)
        elif node == "TableIdentifier":
            _check_table(rest, database, others)
        elif node in ("Identifier", "ExistsTableQuery"):
            name = rest.split(" (", 1)[0].strip()
            parts = name.split(".")
            if len(parts) >= 2 and parts[0].lower() in others:
                _check_qualified(parts[0], parts[1])
    if kind == "SelectWithUnionQuery":
        # One SETTINGS clause for the whole statement, whatever clauses it carries.
        return f"SELECT * FROM (\n{statement.strip()}\n) {limits.settings_clause()}"  # noqa: S608
    return f"{statement.strip()} {limits.settings_clause()}"


def _check_function(rest: str) -> None:
    found = _FUNCTION.match(rest)
    if not found:
        raise QueryError(f"function {rest.split(' ', 1)[0]!r} is not allowed in a query")
    name = found.group(1)
    if not allowed_function(name):
        raise QueryError(
            f"function {name!r} is not allowed in a query: user SQL may read DashFrog's tables "
            "with ClickHouse's scalar, aggregate and window functions, not files, URLs, "
            "other servers, dictionaries or the process"
        )


def allowed_function(name: str) -> bool:
    """Whether ``name`` is an allowlisted function, table function or aggregate
    (with combinators). Case-insensitive, as most of ClickHouse's SQL names are."""
    lower = name.lower()
    if lower in FUNCTIONS or lower in AGGREGATES or lower in TABLE_FUNCTIONS:
        return True
    # Strip combinators from the end: uniqExactIf -> uniqExact, sumStateIf -> sum.
    base = lower
    stripped = True
    while stripped:
        stripped = False
        for suffix in COMBINATORS:
            if base.endswith(suffix) and len(base) > len(suffix):
                base = base[: -len(suffix)]
                stripped = True
                if base in AGGREGATES:
                    return True
                break
    return False


def _check_table(rest: str, database: str, others: set[str]) -> None:
    found = _TABLE.match(rest)
    if not found:
        raise QueryError("table names must be plain identifiers (letters, digits, _)")
    first, second = found.group(1), found.group(2)
    if second is None or first == database:
        return  # a table of the store's database, or a CTE of the query
    _check_qualified(first, second)


def _check_qualified(db: str, table: str) -> None:
    if db.lower() == "system" and table.lower() in SYSTEM_TABLES:
        return
    allowed = ", ".join(f"system.{t}" for t in sorted(SYSTEM_TABLES))
    raise QueryError(
        f"table {db}.{table} is not readable here: query DashFrog's tables (events, flows, "
        f"steps, flow_runs, ...) or {allowed}"
    )
