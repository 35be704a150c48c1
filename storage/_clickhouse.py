"""The server store: a ClickHouse server or cluster through clickhouse-connect.

Shares the DDL and queries with the chDB store; parameters use the server's
own ``{name:Type}`` binding, and inserts go as Arrow with a deduplication
token so a batch written again after a crash is dropped by the server.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import clickhouse_connect
import pyarrow as pa

from dashfrog._exceptions import ConfigurationError, QueryError, StorageError
from dashfrog.storage._avro import (
    INLINE_SOURCE,
    EncodedGroup,
    GroupResult,
    MalformedEventsError,
    UnsupportedSchema,
    check_sql,
    container_parts,
    group_suffix,
    inline_statement,
    insert_sql,
    mapping,
)
from dashfrog.storage._base import USER_ERRORS, SqlStore

# Error names with which the server refuses a container it cannot read.
_UNREADABLE = (
    "AVRO_EXCEPTION",
    "INCORRECT_DATA",
    "CANNOT_READ_ALL_DATA",
    "ATTEMPT_TO_READ_AFTER_EOF",
    "CANNOT_PARSE",
    "CANNOT_EXTRACT_TABLE_STRUCTURE",
    "TOO_LARGE_STRING_SIZE",
    "TOO_LARGE_ARRAY_SIZE",
    "UNKNOWN_TYPE",
    "ILLEGAL_COLUMN",
    "TYPE_MISMATCH",
    "ILLEGAL_TYPE_OF_ARGUMENT",
    "CANNOT_CONVERT_TYPE",
    "BAD_ARGUMENTS",
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXPLAIN_FORMAT = "TabSeparatedRaw"
_CHILDREN = re.compile(r"^(.*) \(children (\d+)\)$")



def client_options(url: str) -> dict[str, Any]:
    """``clickhouse://user:pass@host:8123/db?setting=value`` → get_client() options.

    ``clickhouses://`` (or ``https://``) connects with TLS (default port 8443).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("clickhouse", "clickhouses", "http", "https"):
        raise ConfigurationError(f"not a ClickHouse URL: {url!r}")
    secure = scheme in ("clickhouses", "https")
    database = unquote(parts.path.lstrip("/")) or "default"
    if not _IDENTIFIER.match(database):
        raise ConfigurationError(f"database name {database!r} must be a plain identifier")
    if not parts.hostname:
        raise ConfigurationError(f"ClickHouse URL has no host: {url!r}")
    return {
        "host": parts.hostname,
        "port": parts.port or (8443 if secure else 8123),
        "username": unquote(parts.username or "default"),
        "password": unquote(parts.password or ""),
        "database": database,
        "secure": secure,
        "settings": dict(parse_qsl(parts.query)),
    }


# A retried batch that the events table drops as a duplicate is still pushed
# to the views (servers before 24.x skip them otherwise), so flows and steps
# get whatever part of it a crash kept from them; re-applied state is a no-op.
INSERT_SETTINGS = {
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "parallel_view_processing": 1,  # the views are independent (see _chdb)
}


class ClickhouseStore(SqlStore):
    """Store on a ClickHouse server (HTTP interface)."""

    def __init__(
        self,
        url: str,
        *,
        retention_days: int | None = None,
        stalled_after_s: float | None = None,
    ) -> None:
        super().__init__(url, retention_days=retention_days, stalled_after_s=stalled_after_s)
        options = client_options(url)
        self.database: str = options["database"]
        try:
            try:
                self._client: Any = clickhouse_connect.get_client(**options)
            except Exception as exc:
                if "UNKNOWN_DATABASE" not in str(exc):
                    raise
                # Only a database that does not exist yet is created here (the
                # first `dashfrog migrate`); a worker or API process on an
                # existing one issues no DDL (see SqlStore.ensure_schema).
                admin = clickhouse_connect.get_client(**{**options, "database": "default"})
                try:
                    admin.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                finally:
                    admin.close()
                self._client = clickhouse_connect.get_client(**options)
        except Exception as exc:
            raise StorageError(
                f"cannot connect to ClickHouse at {self._safe_url()}: {exc}"
            ) from exc
        # clickhouse-connect clients are not safe for concurrent queries.
        self._lock = threading.RLock()
        self._user_lock = threading.Lock()
        self._user_client: Any = None
        self._nullable_tuples: bool | None = None

    def _safe_url(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}:{parts.port or ''}{parts.path}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._client is None:
                raise StorageError("store is closed")
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                text = str(exc)
                if any(code in text for code in USER_ERRORS):
                    raise QueryError(text) from exc
                raise StorageError(text) from exc

    def _execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._call(self._client.command, sql, parameters=dict(params) if params else None)

    def _query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        result = self._call(self._client.query, sql, parameters=dict(params) if params else None)
        return list(result.named_results())

    def _explain(self, statement: str, params: Mapping[str, Any] | None) -> list[str]:
        # clickhouse-connect ends every query it sends with a FORMAT clause, and
        # EXPLAIN AST lists that clause as the root's last child: take ours off
        # again, so the tree is the statement's own (a FORMAT of the user's
        # stays, and is refused).
        raw = self._call(
            self._client.raw_query,
            "EXPLAIN AST " + statement,
            parameters=dict(params) if params else None,
            fmt=_EXPLAIN_FORMAT,
        )
        lines = raw.decode().splitlines()
        root = _CHILDREN.match(lines[0]) if lines else None
        if root and len(lines) > 1 and lines[-1] == f" Identifier {_EXPLAIN_FORMAT}":
            children = int(root.group(2)) - 1
            head = root.group(1).rstrip()
            lines = [f"{head} (children {children})" if children else head, *lines[1:-1]]
        return lines

    def _user_query(self, sql: str, params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        # User SQL has a client of its own, so a long query never holds the
        # lock that the writes and the API's own reads take.
        with self._user_lock:
            if self._client is None:
                raise StorageError("store is closed")
            if self._user_client is None:
                try:
                    self._user_client = clickhouse_connect.get_client(**client_options(self.url))
                except Exception as exc:
                    raise StorageError(f"cannot connect to ClickHouse at {self._safe_url()}: {exc}") from exc
            try:
                result = self._user_client.query(sql, parameters=dict(params) if params else None)
            except Exception as exc:
                text = str(exc)
                if any(code in text for code in USER_ERRORS):
                    raise QueryError(text) from exc
                raise StorageError(text) from exc
            return list(result.named_results())

    def _insert(self, table: pa.Table, token: str) -> None:
        self._call(
            self._client.insert_arrow,
            "events",
            table,
            settings=INSERT_SETTINGS | {"insert_deduplication_token": token},
        )

    def _reads_nullable_tuples(self) -> bool:
        # The container's optional error record reads as Nullable(Tuple(...)),
        # a type ClickHouse has since 25.x (24.8 refuses it): older servers get
        # the portable path, decoding in the worker.
        if self._nullable_tuples is None:
            try:
                self._query("SELECT toTypeName(CAST(NULL, 'Nullable(Tuple(a String))')) AS t")
                self._nullable_tuples = True
            except (StorageError, QueryError):
                self._nullable_tuples = False
        return self._nullable_tuples

    def _post(self, first: str, rest: bytes, settings: Mapping[str, Any]) -> bytes:
        """Run the statement ``first`` + newline + ``rest`` (see ``inline_statement``);
        its output. clickhouse-connect's ``command`` scans a body to decide whether
        a retry is safe (~2 µs per event here); its transport is called directly
        when it has the shape of 1.x, without retries (the processor retries)."""
        backend = getattr(self._client, "_backend", None)
        request = getattr(backend, "request", None)
        if request is None:  # another clickhouse-connect: the public path
            out = self._call(self._client.command, first, data=rest, settings=dict(settings))
            return out.encode() if isinstance(out, str) else b""
        params = {"database": self.database, "query": first, **{k: str(v) for k, v in settings.items()}}
        response = self._call(
            request,
            rest,
            params,
            headers={"Content-Type": "application/octet-stream"},
            method="POST",
            server_wait=False,
            retryable=False,
        )
        return bytes(response.data or b"")

    def insert_encoded(self, groups: Sequence[EncodedGroup], token: str) -> list[GroupResult]:
        """Write undecoded messages' events with the server's own Avro reader.

        Per group, the same Avro container as the chDB path, inside the
        statement (``inline_statement``: it travels as the request body, so
        the worker's cost is a base64 pass and the send): one query counts
        the events and finds the messages holding invalid ones, then
        ``INSERT ... SELECT`` maps the valid events to the events table with
        the group's deduplication token. The worker never builds a Python
        object per event. Same contract as the base method.
        """
        if not self._reads_nullable_tuples():
            return super().insert_encoded(groups, token)
        results: list[GroupResult] = []
        for index, (schema_json, bodies) in enumerate(groups):
            if not bodies:
                results.append(GroupResult(0))
                continue
            try:
                sql_map = mapping(schema_json)
            except UnsupportedSchema as exc:
                raise UnsupportedSchema(str(exc), index, results) from exc
            container = b"".join(container_parts(schema_json, bodies))
            first, rest = inline_statement(
                check_sql("", sql_map, source=INLINE_SOURCE) + " FORMAT JSONEachRow", container
            )
            try:
                found = json.loads(self._post(first, rest, {"max_query_size": len(rest) + 4096}))
            except (StorageError, QueryError) as exc:
                # Only the engine refusing the data makes these messages
                # malformed; anything else (network, server down) is retried.
                if self._client is None or not any(code in str(exc) for code in _UNREADABLE):
                    raise
                raise MalformedEventsError(
                    f"ClickHouse cannot read the messages: {exc}", index, results
                ) from exc
            written = int(found["written"])
            invalid = tuple(int(m) for m in found["invalid"])
            if written:
                broken = [int(m) for m in found["broken"]]
                sql = insert_sql("", sql_map, filtered=bool(invalid), skip=broken, source=INLINE_SOURCE)
                first, rest = inline_statement(sql, container)
                self._post(
                    first,
                    rest,
                    INSERT_SETTINGS
                    | {
                        "insert_deduplication_token": f"{token}-{group_suffix(schema_json)}",
                        "max_query_size": len(rest) + 4096,
                    },
                )
            results.append(GroupResult(written, invalid))
        return results

    def close(self) -> None:
        with self._user_lock:
            if self._user_client is not None:
                self._user_client.close()
                self._user_client = None
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None
