"""The embedded store: the ClickHouse engine in-process through chDB.

chDB holds one database path per process, so a ChdbStore is owned by one
process (``dashfrog up`` runs the processor and the API in it). Several
``chdb.connect(path)`` connections to that path run queries concurrently, so
the store keeps one writer connection (DDL, inserts, rebuilds) and a small
pool of reader connections: reads never wait behind a write nor writes behind
a read, and user SQL may hold at most all readers but one, so a long user
query leaves the API's own reads a connection. Each connection serves one
call at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
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

# Reader connections per store: the API's reads, the live stream's poll and
# user SQL share them; user SQL may take all but one.
READERS = 3

_INSERT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "  # noqa: S608 - fixed column list
    f"SELECT {', '.join(EVENT_COLUMNS)} FROM Python(dashfrog_batch)"
)



def chdb_owner(url: str) -> int | None:
    """The id of another running process that holds the chDB database at
    ``url`` (its engine keeps an exclusive lock on ``status`` and writes its
    pid there), or None when no process does. Meant for a fresh process (the
    CLI) before it opens the store: a store open in this very process counts
    as another owner too."""
    status = os.path.join(chdb_path(url), "status")
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 4096).decode(errors="replace")
            found = re.search(r"^PID: (\d+)", text, re.MULTILINE)
            return int(found.group(1)) if found else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


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

    embedded = True  # one owning process, which migrates it (see SqlStore.ensure_schema)

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
        sweep_spool()
        try:
            self._writer: Any = chdb.connect(self.path)
            readers = [chdb.connect(self.path) for _ in range(READERS)]
        except Exception as exc:
            raise StorageError(
                f"cannot open chDB at {self.path!r}: {exc}. A chDB database is owned by one "
                "process; read it through that process's API (dashfrog.query does)"
            ) from exc
        self._write_lock = threading.Lock()
        self._readers: queue.LifoQueue[Any] = queue.LifoQueue()
        for conn in readers:
            self._readers.put(conn)
        self._user_slots = threading.BoundedSemaphore(max(1, READERS - 1))
        self._closed = False

    def _take_reader(self) -> Any:
        while True:
            if self._closed:
                raise StorageError("store is closed")
            try:
                # A bounded wait, so a store closed meanwhile is noticed.
                return self._readers.get(timeout=0.5)
            except queue.Empty:
                continue

    def _run(
        self,
        conn: Any,
        sql: str,
        fmt: str,
        params: Mapping[str, Any] | None,
        batch: pa.Table | None = None,
    ) -> Any:
        # Python(dashfrog_batch) in an insert resolves the name among the
        # variables of the frame that calls query(): this one.
        dashfrog_batch = batch  # noqa: F841
        bound = {k: _escape(v) for k, v in params.items()} if params else None
        if self._closed:
            raise StorageError("store is closed")
        try:
            return conn.query(sql, fmt, params=bound)
        except Exception as exc:
            text = str(exc)
            if any(code in text for code in USER_ERRORS):
                raise QueryError(text) from exc
            raise StorageError(text) from exc

    def _write(
        self, sql: str, fmt: str, params: Mapping[str, Any] | None, batch: pa.Table | None = None
    ) -> Any:
        with self._write_lock:
            try:
                return self._run(self._writer, sql, fmt, params, batch)
            except (QueryError, StorageError):
                self._writer = self._renew(self._writer)
                raise

    def _read(self, sql: str, params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        conn = self._take_reader()
        try:
            return _rows(self._run(conn, sql, "JSONEachRow", params))
        except (QueryError, StorageError):
            conn = self._renew(conn)
            raise
        finally:
            self._readers.put(conn)

    def _renew(self, conn: Any) -> Any:
        # A query that fails after sending a block leaves that block in its
        # connection's buffer, and chDB hands it out as the start of the next
        # result on that connection (measured with chDB 4.4: a result-rows
        # limit hit at 100 000 rows prefixed the next query's rows with 65 409
        # of them). A connection that failed is therefore replaced.
        if self._closed:
            return conn
        try:
            fresh = chdb.connect(self.path)
        except Exception:
            return conn  # keep the store usable; the engine said why on the failed query
        with contextlib.suppress(Exception):
            conn.close()
        return fresh

    def _execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._write(sql, "CSV", params)

    def _query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._read(sql, params)

    def _user_query(self, sql: str, params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        with self._user_slots:
            return self._read(sql, params)

    def _insert(self, table: pa.Table, token: str) -> None:
        self._write(_INSERT + _insert_settings(token), "CSV", None, batch=table)

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
            if self._closed:
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
                    (found,) = _rows(self._write(check_sql(path, sql_map), "JSONEachRow", None))
                except (StorageError, QueryError) as exc:
                    if self._closed:
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
                    self._write(sql + _insert_settings(token_g) + f", {NO_SCHEMA_CACHE}", "CSV", None)
            finally:
                os.unlink(path)
            results.append(GroupResult(written, invalid))
        return results

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Wait for the calls in flight: the writer's lock, then every reader back.
        with self._write_lock:
            self._writer.close()
        taken = [self._readers.get() for _ in range(READERS)]
        for conn in taken:
            conn.close()


def _rows(result: Any) -> list[dict[str, Any]]:
    data = result.bytes() if result is not None else b""
    return [json.loads(line) for line in data.splitlines() if line]
