"""``dashfrog migrate`` owns the DDL; workers and API processes on a server only
read the schema version, so they run as users without DDL rights.

The clickhouse-http shim has no users or grants, so what is checked here is
what those processes send: every statement is recorded at the driver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from dashfrog.storage import SchemaOutdatedError, open_store
from dashfrog.storage._schema import MIGRATIONS

READS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "EXISTS")


def _database_url(server: str) -> str:
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path=f"/dashfrog_priv_{uuid.uuid4().hex[:12]}"))


@pytest.fixture
def fresh_url(clickhouse_server: str) -> Iterator[str]:
    """A database URL on the server; the database is dropped afterwards."""
    url = _database_url(clickhouse_server)
    yield url
    with open_store(url) as store:
        store._execute(f"DROP DATABASE IF EXISTS `{urlsplit(url).path[1:]}`")  # type: ignore[attr-defined]


def _record(store: Any) -> list[str]:
    """Every statement the store sends from now on."""
    sent: list[str] = []
    client = store._client
    for name in ("command", "query", "raw_query", "insert_arrow", "raw_insert"):
        original = getattr(client, name)

        def wrapped(sql: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            sent.append(str(sql))
            return _original(sql, *args, **kwargs)

        setattr(client, name, wrapped)
    return sent


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DASHFROG_CLICKHOUSE_URL": url, "DASHFROG_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    return subprocess.run(
        [sys.executable, "-c", "from dashfrog.runtime._cli import main; main()", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )


def test_a_current_server_schema_is_only_read_at_start(fresh_url: str) -> None:
    with open_store(fresh_url) as store:
        store.migrate()
    with open_store(fresh_url) as store:
        sent = _record(store)
        store.ensure_schema()
        assert sent, "the schema version was not read"
        assert all(s.lstrip().upper().startswith(READS) for s in sent), sent


def test_a_server_schema_behind_stops_the_process_with_one_clear_line(fresh_url: str) -> None:
    with open_store(fresh_url) as store:
        store.migrate()
        # As a store written by an older release: the last migration missing.
        last = max(m.version for m in MIGRATIONS)
        store._execute(  # type: ignore[attr-defined]
            "ALTER TABLE schema_migrations DELETE WHERE version = {v:UInt32} SETTINGS mutations_sync = 1",
            {"v": last},
        )
        sent = _record(store)
        with pytest.raises(SchemaOutdatedError, match=r"run `dashfrog migrate`"):
            store.ensure_schema()
        assert all(s.lstrip().upper().startswith(READS) for s in sent), sent

    for command in ("worker", "api"):
        done = _cli(command, url=fresh_url)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        lines = [x for x in done.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and f"migrations [{last}]" in lines[0], (command, done.stderr)
        assert "dashfrog migrate" in lines[0] and "Traceback" not in done.stderr

    migrated = _cli("migrate", url=fresh_url)
    assert migrated.returncode == 0, migrated.stderr
    assert f"at schema version {last} (applied [{last}])" in migrated.stdout
    again = _cli("migrate", url=fresh_url)
    assert again.returncode == 0 and "nothing to apply" in again.stdout
    with open_store(fresh_url) as store:
        assert store.pending_migrations() == []  # type: ignore[attr-defined]


def test_migrate_creates_a_database_that_does_not_exist(fresh_url: str) -> None:
    done = _cli("migrate", url=fresh_url)
    assert done.returncode == 0, done.stderr
    with open_store(fresh_url) as store:
        assert store.schema_version() == max(m.version for m in MIGRATIONS)


def test_an_embedded_store_migrates_itself(tmp_path: Any) -> None:
    with open_store(f"chdb://{tmp_path / 'db'}") as store:
        store.ensure_schema()
        assert store.pending_migrations() == []  # type: ignore[attr-defined]
