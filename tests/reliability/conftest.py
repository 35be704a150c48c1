"""Fixtures of the reliability suite: pipeline settings on fresh topics, a
broker of the test's own that can be stopped and started again on its port,
a TCP proxy that cuts a ClickHouse server off and back, and a migrated chDB
store per module (a module that needs another store defines its own)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dashfrog.runtime._broker import LocalBroker, free_port, start_broker


@dataclass
class RestartableBroker:
    """A tansu broker of one test, stopped and started again on the same port
    (memory storage: topics and committed offsets are gone after a restart)."""

    port: int
    log: Path
    running: LocalBroker | None = None
    restarts: int = field(default=0)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.running = start_broker(self.port, log=str(self.log))

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1


@pytest.fixture(scope="module")
def store(module_chdb_store: Any) -> Any:
    """A migrated chDB store shared by the tests of one module."""
    return module_chdb_store


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[RestartableBroker]:
    if os.environ.get("DASHFROG_TEST_KAFKA"):
        pytest.skip("stops and restarts a broker of its own: runs on the local tansu broker only")
    broker = RestartableBroker(free_port(), tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class TcpCut:
    """A TCP proxy to ``target`` on a thread of its own (store calls block the
    test's loop); ``cut()`` closes every connection and refuses new ones until
    ``restore()``, as a stopped server would."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.cut_now = False
        self.refused = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-cut", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_now:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    def cut(self) -> None:
        self.cut_now = True
        self._loop.call_soon_threadsafe(self._abort_all)

    def restore(self) -> None:
        self.cut_now = False

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def cut_broker(tmp_path: Path) -> Iterator[tuple[str, TcpCut]]:
    """A tansu broker that clients reach only through a TcpCut, and its address.

    Cutting the proxy is an outage in which the broker keeps its topics. A
    stopped memory-storage broker loses them, and tansu acknowledges a send
    to a topic that no longer exists and keeps nothing of it: a client that
    reconnects before the topic is made again loses what it sends."""
    if os.environ.get("DASHFROG_TEST_KAFKA"):
        pytest.skip("puts a proxy in front of a broker of its own: runs on the local tansu broker only")
    port = free_port()
    proxy = TcpCut("127.0.0.1", port)
    running = start_broker(port, log=str(tmp_path / "tansu.log"), advertised_port=proxy.port)
    proxy.start()
    try:
        yield f"127.0.0.1:{proxy.port}", proxy
    finally:
        proxy.close()
        running.stop()


@pytest.fixture
def server_store_url() -> Iterator[tuple[str, TcpCut]]:
    """A fresh database on the ClickHouse server of DASHFROG_TEST_CLICKHOUSE_URL,
    reached through a TcpCut; skips without a server."""
    from urllib.parse import urlsplit, urlunsplit

    url = os.environ.get("DASHFROG_TEST_CLICKHOUSE_URL")
    if not url:
        pytest.skip(
            "needs a ClickHouse server: set DASHFROG_TEST_CLICKHOUSE_URL=clickhouse://user:pass@host:8123/db "
            "(CI points it at tools/clickhouse-http)"
        )
    parts = urlsplit(url)
    proxy = TcpCut(parts.hostname or "127.0.0.1", parts.port or 8123)
    proxy.start()
    database = f"dashfrog_rel_{uuid.uuid4().hex[:10]}"
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    cut_url = urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{proxy.port}", path="/" + database))
    try:
        yield cut_url, proxy
    finally:
        proxy.restore()
        with contextlib.suppress(Exception):
            from dashfrog.storage import open_store

            direct = open_store(urlunsplit(parts._replace(path="/" + database)))
            direct._execute(f"DROP DATABASE IF EXISTS `{database}`")
            direct.close()
        proxy.close()
