"""Real processes for the distributed tests, started once per session.

- two FastAPI services (``apps/service_b.py``) served by uvicorn: one with
  DashFrog's default trust settings, one strict (a context secret, no
  trusted network);
- a Flask service (``apps/flask_service.py``) served by werkzeug;
- two Celery workers (``apps/tasks.py``, solo pool) with Redis on
  127.0.0.1:6379 as broker: one with the defaults, one strict;
- ``dashfrog up`` (processor, chDB, API) on the same topics;
- the test process itself plays "service A": it starts flows and calls the
  services with requests and httpx, or enqueues tasks.

Every process sends its events to the session's tansu broker on topics of
its own prefix. Tests check them twice: decoded straight from the topic
(:class:`EventLog`, what each service emitted) and read back through
``dashfrog.query`` from ``dashfrog up`` (what the projection made of them).
Nothing waits by sleeping a guessed time: every wait is on a condition with
a deadline.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dashfrog.runtime._broker import ensure_topics_sync, free_port

REPO = Path(__file__).resolve().parents[2]
SECRET = "distributed-tests-shared-secret"
REDIS = "redis://127.0.0.1:6379/0"
START_TIMEOUT_S = 60.0


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), 1):
            return True
    except OSError:
        return False


def outside_address() -> str | None:
    """An address of this machine outside loopback, to call a service from 'outside'."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.254", 9))  # no packet is sent: this only picks a route
            address = str(s.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") else address


# -- events read back from the broker ---------------------------------------------


class EventLog:
    """Consumes a topic from the beginning in a background thread; tests wait on it."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.events: list[dict[str, Any]] = []
        self._positions: dict[int, int] = {}
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._consumer: Any = None
        self._stop = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("event log consumer did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from dashfrog import schemas

        try:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await consumer.start()
            partitions = sorted((await consumer._client.fetch_all_metadata()).partitions_for_topic(self.topic) or ())
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._consumer = consumer
            self._tps = tps
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop:
                batches = await consumer.getmany(timeout_ms=100)
                decoded: list[dict[str, Any]] = []
                moved: dict[int, int] = {}
                for tp, messages in batches.items():
                    for message in messages:
                        decoded.extend(schemas.decode(message.value, dict(message.headers)))
                        moved[tp.partition] = message.offset + 1
                with self._changed:
                    self.events.extend(decoded)
                    self._positions.update(moved)
                    self._changed.notify_all()
        finally:
            await consumer.stop()

    def close(self) -> None:
        self._stop = True
        self._thread.join(10)

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0, what: str = ""
    ) -> list[dict[str, Any]]:
        """Wait until ``predicate(events)`` holds; return a copy of all events."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
                self._changed.wait(remaining)
            return list(self.events)

    def sync(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until everything on the topic right now has been read; return all events."""
        future = asyncio.run_coroutine_threadsafe(self._consumer.end_offsets(self._tps), self._loop)
        ends = {tp.partition: offset for tp, offset in future.result(timeout).items()}
        return self.wait_for(
            lambda _: all(self._positions.get(p, 0) >= end for p, end in ends.items()),
            timeout,
            "the event log to reach the end of the topic",
        )

    def of_flow(
        self, flow_id: str, steps: dict[str, int] | list[str] | None = None, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """The events of one flow once it is complete: its flow_ended arrived, each step
        named in ``steps`` ended (``{name: times}`` for repeated ones), and every step
        that started has ended.

        Services send on their own schedules, so one's last event says nothing of another's:
        name the remote steps a test expects, or it may look before they arrive.
        """
        wanted = dict.fromkeys(steps, 1) if isinstance(steps, list) else dict(steps or {})

        def complete(events: list[dict[str, Any]]) -> bool:
            started = {e["step_id"]: e["step_name"] for e in events if e["kind"] == "step_started"}
            ended = [e["step_id"] for e in events if e["kind"] == "step_ended"]
            names = [started.get(step_id) for step_id in ended]
            return (
                any(e["kind"] == "flow_ended" for e in events)
                and set(started) <= set(ended)
                and all(names.count(name) >= times for name, times in wanted.items())
            )

        events = self.wait_for(
            lambda evs: complete([e for e in evs if e["flow_id"] == flow_id]), timeout,
            f"flow {flow_id} to complete with steps {wanted}",
        )
        return [e for e in events if e["flow_id"] == flow_id]


# -- processes ----------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    queue: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        stop_all([self])


def stop_all(procs: list[Proc]) -> None:
    """SIGTERM to all first, then wait: they shut down side by side."""
    for proc in procs:
        if proc.process.poll() is None:
            proc.process.terminate()
    for proc in procs:
        try:
            proc.process.wait(15)
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait()


def spawn(
    name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path = REPO, **extra: Any
) -> Proc:
    log = log_dir / f"{name}.log"
    out = open(log, "wb")
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return Proc(name, process, log, env=env, **extra)


def wait_http(proc: Proc, deadline: float, path: str = "/health") -> None:
    import httpx

    while True:
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}:\n{proc.tail()}")
        try:
            if httpx.get(f"{proc.url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} did not answer within {START_TIMEOUT_S}s:\n{proc.tail()}")
        time.sleep(0.05)  # polling interval of a condition wait, not a guess at timing


# Stops the cluster once the last test of this folder has run, instead of at the end of
# the session: its eight idle processes would otherwise compete with later suites.
_shutdown: list[Callable[[], None]] = []
_HERE = Path(__file__).resolve().parent


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    items = item.session.items
    later = items[items.index(item) + 1 :] if item in items else []
    if not any(_HERE in Path(str(i.path)).resolve().parents for i in later):
        while _shutdown:
            _shutdown.pop()()


@dataclass
class Cluster:
    bootstrap: str
    prefix: str
    topic: str
    events: EventLog
    service_b: Proc
    strict_b: Proc
    flask_c: Proc
    worker: Proc
    strict_worker: Proc
    reader: Proc
    caller_settings: Any
    outside: str | None
    procs: list[Proc]
    env: dict[str, str]  # what every process of the cluster gets: broker, topics, Redis
    log_dir: Path

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.procs)


@pytest.fixture(scope="session")
def cluster(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not _redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379 (the Celery broker of these tests)")
    import dashfrog
    from dashfrog import Settings
    from tests.distributed.apps import tasks

    run = f"dist{os.getpid()}"
    prefix = f"{run}."
    topic = prefix + "dashfrog.events"
    ensure_topics_sync(broker, {topic: 3, prefix + "dashfrog.events.dlq": 1})
    log_dir = tmp_path_factory.mktemp("distributed")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DASHFROG_", "OTEL_"))}
    base.update(
        DASHFROG_KAFKA_BOOTSTRAP=broker,
        DASHFROG_TOPIC_PREFIX=prefix,
        DASHFROG_LINGER_MS="5",
        DISTRIBUTED_CELERY_BROKER=REDIS,
        DISTRIBUTED_CELERY_BACKEND=REDIS,
        DISTRIBUTED_CELERY_QUEUE=f"{run}-tasks",
        PYTHONPATH=str(REPO),
    )
    strict = {"DASHFROG_CONTEXT_SECRET": SECRET, "DASHFROG_TRUSTED_NETWORKS": "none"}
    py = sys.executable
    flask_port, b_port, strict_port = free_port(), free_port(), free_port()

    def uvicorn(host: str, port: int) -> list[str]:
        return [py, "-m", "uvicorn", "tests.distributed.apps.service_b:app", "--host", host,
                "--port", str(port), "--log-level", "warning", "--no-access-log"]

    def worker(queue: str) -> list[str]:
        return [py, "-m", "celery", "-A", "tests.distributed.apps.tasks", "worker", "--pool=solo",
                "-Q", queue, "-n", f"{queue}@%h", "--without-heartbeat", "--without-gossip",
                "--without-mingle", "--loglevel=WARNING"]

    flask_c = spawn("flask_c", [py, "-m", "tests.distributed.apps.flask_service", str(flask_port)],
                     {**base, "DASHFROG_SERVICE_NAME": "service-c"}, log_dir, url=f"http://127.0.0.1:{flask_port}")
    # Listening on every address, so a test can reach it from a non-loopback address too.
    service_b = spawn("service_b", uvicorn("0.0.0.0", b_port),
                       {**base, "DASHFROG_SERVICE_NAME": "service-b",
                        "DISTRIBUTED_DOWNSTREAM_URL": flask_c.url}, log_dir, url=f"http://127.0.0.1:{b_port}")
    strict_b = spawn("strict_b", uvicorn("127.0.0.1", strict_port),
                      {**base, **strict, "DASHFROG_SERVICE_NAME": "strict-b"}, log_dir,
                      url=f"http://127.0.0.1:{strict_port}")
    celery_worker = spawn("worker", worker(f"{run}-tasks"),
                           {**base, "DASHFROG_SERVICE_NAME": "worker"}, log_dir, queue=f"{run}-tasks")
    strict_worker = spawn("strict_worker", worker(f"{run}-strict"),
                           {**base, **strict, "DASHFROG_SERVICE_NAME": "strict-worker",
                            "DISTRIBUTED_CELERY_QUEUE": f"{run}-strict"}, log_dir, queue=f"{run}-strict")
    api_port = free_port()
    reader = spawn("dashfrog_up", [str(Path(py).parent / "dashfrog"), "up", "--status-every", "0"],
                   {**base, "DASHFROG_CLICKHOUSE_URL": f"chdb://{log_dir / 'chdb'}",
                    "DASHFROG_API_HOST": "127.0.0.1", "DASHFROG_API_PORT": str(api_port),
                    "DASHFROG_PROCESSOR_GROUP": f"{run}-processor"}, log_dir,
                   url=f"http://127.0.0.1:{api_port}")
    procs = [flask_c, service_b, strict_b, celery_worker, strict_worker, reader]
    events: EventLog | None = None

    def shutdown() -> None:
        if events is not None:
            events.close()
        stop_all(procs)

    _shutdown.append(shutdown)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for proc in (flask_c, service_b, strict_b):
            wait_http(proc, deadline)
        wait_http(reader, deadline, path="/healthz")
        # A round trip through each worker: it is consuming its queue.
        for proc in (celery_worker, strict_worker):
            try:
                tasks.whoami.apply_async(queue=proc.queue).get(timeout=START_TIMEOUT_S)
            except Exception as exc:
                raise RuntimeError(f"{proc.name} did not run a task: {exc}\n{proc.tail()}") from exc
        events = EventLog(broker, topic)
        # The test process is "service A": seed-like, no secret.
        caller = Settings(kafka_bootstrap=broker, topic_prefix=prefix, service_name="service-a",
                          linger_ms=5, api_url=reader.url)
        dashfrog.with_requests()
        dashfrog.with_httpx()
        dashfrog.with_celery(tasks.app)
        yield Cluster(broker, prefix, topic, events, service_b, strict_b, flask_c, celery_worker,
                      strict_worker, reader, caller, outside_address(), procs, base, log_dir)
    finally:
        shutdown()


@pytest.fixture
def dist(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, with this process's SDK sending to the cluster's topics as "service-a"."""
    import dashfrog
    from dashfrog._settings import set_settings

    set_settings(cluster.caller_settings)
    try:
        yield cluster
    finally:
        dashfrog.flush(10)
        set_settings(None)
