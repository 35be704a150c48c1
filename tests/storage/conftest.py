"""Store fixtures: a real chDB database per test, and a ClickHouse server database
when one is reachable."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STALLED_AFTER_S = 60.0


@pytest.fixture
def chdb_store(tmp_path: Path) -> Iterator[Any]:
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path / 'chdb'}", stalled_after_s=STALLED_AFTER_S)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[str]:
    """Base URL of a ClickHouse server: the env variable's, or a testcontainer's."""
    url = os.environ.get("DASHFROG_TEST_CLICKHOUSE_URL")
    if url:
        yield url
        return
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        pytest.skip(
            "no ClickHouse server reachable: set DASHFROG_TEST_CLICKHOUSE_URL="
            "clickhouse://user:pass@host:8123/db, or run where Docker works so testcontainers "
            f"can start one (Docker unavailable here: {type(exc).__name__})"
        )
    from testcontainers.clickhouse import ClickHouseContainer

    server = ClickHouseContainer("clickhouse/clickhouse-server:25.8").with_exposed_ports(8123)
    with server as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(8123)
        yield f"clickhouse://{container.username}:{container.password}@{host}:{port}/default"


@pytest.fixture
def clickhouse_store(clickhouse_server: str) -> Iterator[Any]:
    """A fresh database on the server per test, dropped afterwards."""
    from urllib.parse import urlsplit, urlunsplit

    from dashfrog.storage import open_store

    parts = urlsplit(clickhouse_server)
    database = f"dashfrog_test_{uuid.uuid4().hex[:12]}"
    url = urlunsplit(parts._replace(path="/" + database))
    store = open_store(url, stalled_after_s=STALLED_AFTER_S)
    store.migrate()
    try:
        yield store
    finally:
        store._execute(f"DROP DATABASE IF EXISTS `{database}`")
        store.close()
