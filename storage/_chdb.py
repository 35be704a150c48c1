"""The embedded store: the ClickHouse engine in-process through chDB.

chDB holds one database path per process, so a ChdbStore is owned by one
process (``dashfrog up`` runs the processor and the API in it). The processor
calls from an executor thread while the API reads from the event loop: one
lock serialises every call into the engine.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import chdb
import pyarrow as pa

from dashfrog._exceptions import QueryError, StorageError
from dashfrog.storage._avro import (
    NO_SCHEMA_CACHE,
    EncodedGroup,
    GroupResult,
    MalformedEventsError,
    UnsupportedSchema,
    check_sql,
    group_suffix,
    insert_sql,
    mapping,
    sql_quote,
    sweep_spool,
    write_container,
)
from dashfrog.storage._base import USER_ERRORS, SqlStore
from dashfrog.storage._schema import EVENT_COLUMNS

SCHEME = "chdb://"

_INSERT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "  # noqa: S608 - fixed column list
    f"SELECT {', '.join(EVENT_COLUMNS)} FROM Python(dashfrog_batch)"
)



def chdb_path(url: str) -> str:
    """``chdb://.dashfrog/chdb`` → ``.dashfrog/chdb``; ``chdb:///abs`` → ``/abs``."""
    if not url.startswith(SCHEME):
        raise StorageError(f"not a chdb URL: {url!r}")
    path = url[len(SCHEME) :]
    if not path:
        raise StorageError("chdb URL has no path; e.g. chdb://.dashfrog/chdb")
    return path


def _escape(value: Any) -> str:
    # chDB hands parameter values to the engine as text in the escaped (TSV)
    # format, where a raw tab or newline ends the value and a backslash starts
    # an escape; escaping them keeps any string intact.
    if isinstance(value, bool):
        return "1" if value else "0"
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text or "\0" in text:
        text = (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\0", "\\0")
        )
    return text


def _insert_settings(token: str) -> str:
    # A retried batch the events table drops as a duplicate still reaches
    # the views, so a crash between the two writes is repaired by the retry.
    # No merge of each new part with itself (optimize_on_insert): reads of
    # events use FINAL and reads of flows and steps aggregate anyway, and the
    # views' output is already grouped, so it would only cost time. The three
    # views are independent: projecting them on parallel threads cut a
    # 2 000-event write from about 75 to 60 ms here (p50).
    return (
        f" SETTINGS insert_deduplication_token = {sql_quote(token)}, "
        "deduplicate_blocks_in_dependent_materialized_views = 1, optimize_on_insert = 0, "
        "parallel_view_processing = 1"
    )



class ChdbStore(SqlStore):
    """Store on an embedded chDB database directory."""

    def __init__(
        self,
        url: str,
        *,
        retention_days: int | None = None,
        stalled_after_s: float | None = None,
    ) -> None:
        super().__init__(url, retention_days=retention_days, stalled_after_s=stalled_after_s)
        self.path = chdb_path(url)
        if self.path != ":memory:":
            os.makedirs(self.path, exist_ok=True)
        self._lock = threading.RLock()
        sweep_spool()
        try:
            self._conn: Any = chdb.connect(self.path)
        except Exception as exc:
            raise StorageError(
                f"cannot open chDB at {self.path!r}: {exc}. A chDB database is owned by one "
                "process; read it through that process's API (dashfrog.query does)"
            ) from exc

    def _run(
        self, sql: str, fmt: str, params: Mapping[str, Any] | None, batch: pa.Table | None = None
    ) -> Any:
        # Python(dashfrog_batch) in an insert resolves the name among the
        # variables of the frame that calls query(): this one.
        dashfrog_batch = batch  # noqa: F841
        bound = {k: _escape(v) for k, v in params.items()} if params else None
        with self._lock:
            if self._conn is None:
                raise StorageError("store is closed")
            try:
                return self._conn.query(sql, fmt, params=bound)
            except Exception as exc:
                text = str(exc)
                if any(code in text for code in USER_ERRORS):
                    raise QueryError(text) from exc
                raise StorageError(text) from exc

    def _execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(sql, "CSV", params)

    def _query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        result = self._run(sql, "JSONEachRow", params)
        data = result.bytes() if result is not None else b""
        return [json.loads(line) for line in data.splitlines() if line]

    def _insert(self, table: pa.Table, token: str) -> None:
        self._run(_INSERT + _insert_settings(token), "CSV", None, batch=table)

    def insert_encoded(self, groups: Sequence[EncodedGroup], token: str) -> list[GroupResult]:
        """Write undecoded messages' events with ClickHouse's own Avro reader.

        Per group: the bodies go into an Avro container file (under /dev/shm
        when it exists), one query counts the events and finds the messages
        holding invalid ones, and ``INSERT ... SELECT`` maps the valid events
        to the events table (see ``_avro``). Same contract as the base method.
        """
        results: list[GroupResult] = []
        for index, (schema_json, bodies) in enumerate(groups):
            if not bodies:
                results.append(GroupResult(0))
                continue
            if self._conn is None:
                raise StorageError("store is closed")
            try:
                sql_map = mapping(schema_json)
            except UnsupportedSchema as exc:
                raise UnsupportedSchema(str(exc), index, results) from exc
            try:
                path = write_container(schema_json, bodies)
            except OSError as exc:
                raise StorageError(f"cannot write the Avro spool file: {exc}") from exc
            try:
                try:
                    (found,) = self._query(check_sql(path, sql_map))
                except (StorageError, QueryError) as exc:
                    if self._conn is None:
                        raise
                    raise MalformedEventsError(
                        f"ClickHouse cannot read the messages: {exc}", index, results
                    ) from exc
                written = int(found["written"])
                invalid = tuple(int(m) for m in found["invalid"])
                if written:
                    broken = [int(m) for m in found["broken"]]
                    sql = insert_sql(path, sql_map, filtered=bool(invalid), skip=broken)
                    token_g = f"{token}-{group_suffix(schema_json)}"
                    self._run(sql + _insert_settings(token_g) + f", {NO_SCHEMA_CACHE}", "CSV", None)
            finally:
                os.unlink(path)
            results.append(GroupResult(written, invalid))
        return results

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
