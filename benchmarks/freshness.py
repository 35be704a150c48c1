"""3. Freshness: delay from a step's exit to its row being visible in ``dashfrog.query``.

An application process (``benchmarks._loadgen``) emits flows through the SDK
at a steady 10 000 events/s. One flow in ``PROBE_EVERY`` belongs to a probe
tenant; the exit of its last step is the measured moment (the step_ended
event's timestamp is taken at exit, on this machine's clock).

Product: one Faust worker with a chDB store in this process (as in
``dashfrog up``). A probe step is visible from the first of two moments, both
upper bounds on the true one: the store write holding its event returned
(recorded by a thin wrapper around the store's write method; chDB inserts are
synchronous, the flows/steps/flow_runs materialized views are filled within the insert,
and a write may span several statements, so rows can show before it returns),
or a ``dashfrog.query.sql`` poll of the probe tenant's ended steps in the
``steps`` projection, every ``POLL_S``, first returned it. Every probe must be
seen by the poller, and never before its write started.

Baseline: the transport alone, i.e. the delay from the same step's exit to a
raw aiokafka consumer, in a process of its own, having fetched and decoded
its event (SDK linger, broker, fetch). The ratio says how much later than the
bare transport the projection makes a step visible.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from benchmarks._common import Row, broker, fmt_ms, percentile, quiet_logs, unique_prefix

NAME = "freshness"
TARGET = "p99 ≤ 1 s"
PARTITIONS = 6
RATE = 10_000
PROBE_EVERY = 10
PROBE_TENANT = "bench-probe"
PROBE_STEP = "store"
POLL_S = 0.1
WINDOW_S = 5.0

# The concurrent-query row: a user query that would run for hours, stopped by
# its time limit after HEAVY_S, starting HEAVY_AT seconds into the load.
HEAVY_S = 20.0
HEAVY_AT = 28.0
HEAVY_SQL = "SELECT count() AS n FROM numbers(100000000000000) WHERE sipHash64(number) % 1000 = 7"
CONCURRENT_TARGET = "p99 ≤ 1.5x without"

# Flow ids start with their creation time in hex milliseconds and the steps
# table is ordered by (tenant, flow_id): the lower bound on flow_id keeps each
# poll to the recent granules.
_POLL_SQL = (
    "SELECT step_id, toUnixTimestamp64Micro(ended_at) AS ended_us FROM steps "
    "WHERE tenant = {tenant:String} AND flow_id >= {since_id:String} "
    "AND step_name = {step:String} AND ended_at IS NOT NULL"
)


class _TimedStore:
    """The real store, observed: when each probe step's write started and returned, and when
    the processor's agent received its message.

    Whichever write path the processor takes is covered: decoded events
    (``insert_events``, scanned on the spot) or undecoded Avro message bodies
    (``insert_encoded``, kept by reference and decoded after the run, so the
    measurement adds no decoding to the store thread). Each wrapped call runs
    unchanged.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self.inserts: list[tuple[int, float]] = []  # (events, seconds) per write
        # step id → (exit time, write started, write returned), epoch seconds
        self.committed: dict[str, tuple[float, float, float]] = {}
        self._encoded_writes: list[tuple[float, float, Any]] = []
        self._received: list[tuple[float, bytes]] = []  # (when, message value) seen by the agent
        if callable(getattr(store, "insert_encoded", None)):
            self.insert_encoded = self._insert_encoded

    def insert_events(self, events: Any, token: str) -> None:
        started = time.time()
        self._store.insert_events(events, token)
        done = time.time()
        self.inserts.append((len(events), done - started))
        for e in events:
            if _is_probe(e):
                self.committed.setdefault(e["step_id"], (e["timestamp"] / 1e6, started, done))

    def _insert_encoded(self, groups: Any, token: str, *args: Any, **kwargs: Any) -> Any:
        started = time.time()
        result = self._store.insert_encoded(groups, token, *args, **kwargs)
        done = time.time()
        self._encoded_writes.append((started, done, groups))
        self.inserts.append((sum(getattr(r, "events", 0) for r in result or ()), done - started))
        return result

    def watch_agent(self) -> None:
        """Note when the agent receives each message (wraps the processor's read function)."""
        from dashfrog.streams import _processor

        received = self._received
        for name in ("decode_message", "inspect_message"):
            read = getattr(_processor, name, None)
            if not callable(read):
                continue

            def timed_read(*args: Any, _read: Any = read) -> Any:
                received.append((time.time(), args[4]))
                return _read(*args)

            setattr(_processor, name, timed_read)

    def settle(self) -> dict[str, float]:
        """After the run: decode what was kept; returns step id → when the agent received it."""
        import io

        import fastavro

        from dashfrog import schemas

        writers: dict[str, Any] = {}
        for started, done, groups in self._encoded_writes:
            for schema_json, bodies in groups:
                if schema_json not in writers:
                    writers[schema_json] = fastavro.parse_schema(json.loads(schema_json))
                for body in bodies:
                    batch: Any = fastavro.schemaless_reader(io.BytesIO(body), writers[schema_json])
                    for e in batch["events"]:
                        if _is_probe(e):
                            self.committed.setdefault(
                                e["step_id"], (e["timestamp"] / 1e6, started, done)
                            )
        agent: dict[str, float] = {}
        for when, value in self._received:
            try:
                events = schemas.decode(value)
            except Exception:
                continue
            for e in events:
                if _is_probe(e):
                    agent.setdefault(e["step_id"], when)
        return agent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _is_probe(e: dict[str, Any]) -> bool:
    return (
        e["tenant"] == PROBE_TENANT and e["kind"] == "step_ended" and e["step_name"] == PROBE_STEP
    )


async def _start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )


async def measure(
    bootstrap: str, prefix: str, seconds: float, tmp: str, heavy_at: float | None = None
) -> dict[str, Any]:
    """Run the load and record when each probe became visible; with ``heavy_at``,
    a user SQL query (``HEAVY_SQL`` under a ``HEAVY_S`` time limit) starts that
    many seconds into the load, through ``dashfrog.query.sql`` like any user's."""
    from dashfrog import query
    from dashfrog._settings import Settings
    from dashfrog.storage import open_store
    from dashfrog.streams import Processor, ensure_event_topics

    settings = Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        topic_partitions=PARTITIONS,
        processor_group=f"{prefix}processor",
        rebalance_timeout_s=2.0,  # only shortens the group join, before the load starts
    )
    await ensure_event_topics(settings)
    store = open_store(f"chdb://{os.path.join(tmp, 'chdb')}")
    store.migrate()
    query.use_store(store)
    timed = _TimedStore(store)
    timed.watch_agent()
    processor = Processor(settings, timed, datadir=os.path.join(tmp, "faust"))
    await processor.start()
    watcher = await _start(
        "benchmarks._watch", bootstrap, settings.topic, str(PARTITIONS), PROBE_TENANT, PROBE_STEP
    )
    loop = asyncio.get_running_loop()
    seen: dict[str, float] = {}  # step id → when the poller first saw it
    poll_times: list[float] = []
    heavy: dict[str, Any] = {}

    def heavy_query() -> None:
        heavy["started"] = time.time()
        try:
            query.sql(HEAVY_SQL)
            heavy["outcome"] = "finished"
        except Exception as exc:  # the time limit stops it: that is the plan
            heavy["outcome"] = f"{type(exc).__name__}: {str(exc)[:80]}"
        heavy["ended"] = time.time()

    def poll() -> None:
        since_id = f"{int((time.time() - WINDOW_S) * 1000):012x}"
        params = {"tenant": PROBE_TENANT, "step": PROBE_STEP, "since_id": since_id}
        t0 = time.perf_counter()
        rows = query.sql(_POLL_SQL, params).rows
        now = time.time()
        poll_times.append(time.perf_counter() - t0)
        for row in rows:
            seen.setdefault(row["step_id"], now)

    try:
        assert watcher.stdout is not None
        ready = await asyncio.wait_for(watcher.stdout.readline(), 60)
        if ready.strip() != b"ready":
            raise RuntimeError(f"topic watcher failed to start: {ready!r}")
        deadline = time.monotonic() + 60
        while processor.lag() is None:
            if processor.crashed or time.monotonic() > deadline:
                raise RuntimeError("the processor was not assigned its partitions within 60s")
            await asyncio.sleep(0.01)
        gen = await _start(
            "benchmarks._loadgen",
            bootstrap,
            prefix,
            str(RATE),
            str(seconds),
            PROBE_TENANT,
            str(PROBE_EVERY),
        )
        gen_done = asyncio.create_task(gen.communicate())
        load_started = time.monotonic()
        heavy_task: asyncio.Future[None] | None = None
        report: dict[str, Any] | None = None
        tail_deadline = 0.0
        while True:
            if heavy_at is not None and heavy_task is None and time.monotonic() - load_started >= heavy_at:
                heavy_task = loop.run_in_executor(None, heavy_query)
            await loop.run_in_executor(None, poll)
            if processor.crashed:
                raise RuntimeError(f"processor crashed: {processor.crash_reason!r}")
            if report is None and gen_done.done():
                out, _ = gen_done.result()
                report = json.loads(out.decode().strip().splitlines()[-1])
                tail_deadline = time.monotonic() + WINDOW_S - 1
            if report is not None and (
                len(seen) >= report["probes"] or time.monotonic() > tail_deadline
            ):
                break
            await asyncio.sleep(POLL_S)
        out, _ = await asyncio.wait_for(watcher.communicate(b""), 30)
        transport: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        if heavy_task is not None:
            await heavy_task
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()
        await processor.stop()
        query.use_store(None)
        store.close()
    agent = timed.settle()
    return {
        "committed": timed.committed,
        "agent": agent,
        "seen": seen,
        "transport": transport,
        "report": report,
        "poll_p50": percentile(poll_times, 0.5),
        "inserts": timed.inserts,
        "write_path": "store.insert_encoded (undecoded Avro)"
        if timed._encoded_writes
        else "store.insert_events (decoded events)",
        "batch_wait": settings.processor_batch_wait_s,
        "heavy": heavy,
    }


def run(quick: bool) -> list[Row]:
    quiet_logs()
    seconds = 5.0 if quick else 60.0
    warmup = 1.0 if quick else 5.0
    tmp = os.environ.get("DASHFROG_BENCH_TMP") or os.getcwd()
    with broker() as running:
        result = asyncio.run(measure(running.bootstrap, unique_prefix("fresh"), seconds, tmp))
    committed, seen, transport, report = (
        result["committed"],
        result["seen"],
        result["transport"],
        result["report"],
    )
    # Leave out the first probes: the producer connecting, the first chDB parts.
    if not committed:
        raise RuntimeError("no probe step was written: did the processor write through the store?")
    first = min(exit_ for exit_, _, _ in committed.values())
    measured = [s for s, (exit_, _, _) in committed.items() if exit_ >= first + warmup]
    # Both moments are upper bounds on when the row became visible: the earlier one is tighter.
    delays = [
        min(committed[s][2], seen.get(s, committed[s][2])) - committed[s][0] for s in measured
    ]
    polled = [seen[s] - committed[s][0] for s in measured if s in seen]
    by_write = [committed[s][2] - committed[s][0] for s in measured]
    base = [transport[s] for s in measured if s in transport]
    unseen = report["probes"] - len(seen)
    # A poll cannot show a row before the write holding it started: that would mean lost tracking.
    impossible = sum(1 for s in measured if s in seen and seen[s] < committed[s][1])
    before_return = sum(1 for s in measured if s in seen and seen[s] < committed[s][2])
    p50, p99 = percentile(delays, 0.5), percentile(delays, 0.99)
    b50, b99 = percentile(base, 0.5), percentile(base, 0.99)
    sizes = [n for n, _ in result["inserts"]]
    durations = [t for _, t in result["inserts"]]
    achieved = report["events"] / report["seconds"]
    agent = result["agent"]
    stages = [s for s in measured if s in agent]

    def stage(values: list[float]) -> str:
        return f"p50 {fmt_ms(percentile(values, 0.5))} / p99 {fmt_ms(percentile(values, 0.99))}"

    breakdown = (
        "where the time goes (p50 / p99): exit → its message reaches the processor's agent "
        + stage([agent[s] - committed[s][0] for s in stages])
        + "; agent → its write starts (batching, waiting for the previous write) "
        + stage([committed[s][1] - agent[s] for s in stages])
        + "; the write "
        + stage([committed[s][2] - committed[s][1] for s in stages])
    )
    notes = [
        f"load: {report['events']:,} events in {report['seconds']:.1f}s ({achieved:,.0f} events/s, "
        f"asked {RATE:,}) from a separate SDK process in {report['messages']:,} Kafka messages "
        f"({report['sent'] / max(report['messages'], 1):,.1f} events each); SDK dropped {report['dropped']:,}",
        f"{len(delays):,} probe steps (first {warmup:.0f}s left out); max {fmt_ms(max(delays))}; "
        f"as of the write returning alone: p50 {fmt_ms(percentile(by_write, 0.5))}, "
        f"p99 {fmt_ms(percentile(by_write, 0.99))}",
        f"polled through dashfrog.query.sql every {POLL_S * 1e3:.0f} ms (p50 query "
        f"{fmt_ms(result['poll_p50'])}): as the poller saw it p50 {fmt_ms(percentile(polled, 0.5))}, "
        f"p99 {fmt_ms(percentile(polled, 0.99))}; {before_return} probes showed before their write "
        f"returned, {impossible} before it started, {unseen} never",
        f"transport baseline (exit → fetched and decoded by a raw consumer in its own process): "
        f"p50 {fmt_ms(b50)}, p99 {fmt_ms(b99)}",
        f"processor batch wait {result['batch_wait']}s; {len(sizes):,} store writes of "
        f"p50 {percentile(sizes, 0.5):,.0f} events taking p50 {fmt_ms(percentile(durations, 0.5))}, "
        f"p99 {fmt_ms(percentile(durations, 0.99))} through {result['write_path']} (chDB insert "
        f"through the flows, steps and flow_runs materialized views, in parallel)",
    ]
    notes.append(breakdown)
    if report["dropped"]:
        notes.append("WARNING: the load generator's SDK dropped events (its queue filled)")
    if achieved < 0.95 * RATE:
        notes.append(f"WARNING: the load generator reached only {achieved:,.0f} events/s")
    return [
        Row(
            NAME,
            f"p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}",
            f"p50 {fmt_ms(b50)}, p99 {fmt_ms(b99)}",
            p99 / b99,
            TARGET,
            p99 <= 1.0 and unseen == 0 and impossible == 0,
            notes,
        )
    ]


def run_during_query(quick: bool) -> list[Row]:
    """Freshness p99 while a user query runs for 20 s, against freshness p99
    without it, in the same run: the same store, processor and load, the
    probes split by whether their step exited during the query."""
    quiet_logs()
    heavy_s = 3.0 if quick else HEAVY_S  # quick: the same measurement, too short to mean much
    heavy_at = 4.0 if quick else HEAVY_AT
    warmup = 1.0 if quick else 5.0
    seconds = heavy_at + heavy_s + (2.0 if quick else 4.0)
    os.environ["DASHFROG_SQL_MAX_EXECUTION_S"] = str(heavy_s)  # the store reads it when opened
    tmp = os.environ.get("DASHFROG_BENCH_TMP") or os.getcwd()
    with broker() as running:
        result = asyncio.run(
            measure(running.bootstrap, unique_prefix("freshq"), seconds, tmp, heavy_at=heavy_at)
        )
    committed, seen, heavy = result["committed"], result["seen"], result["heavy"]
    if "started" not in heavy:
        raise RuntimeError("the concurrent query never started")
    first = min(exit_ for exit_, _, _ in committed.values())

    def delay(s: str) -> float:
        return min(committed[s][2], seen.get(s, committed[s][2])) - committed[s][0]

    # Steps that exited before the query (after the warm-up), and while it ran.
    before = [delay(s) for s, (x, _, _) in committed.items() if first + warmup <= x < heavy["started"]]
    during = [delay(s) for s, (x, _, _) in committed.items() if heavy["started"] <= x < heavy["ended"]]
    if not before or not during:
        raise RuntimeError(f"too few probes: {len(before)} before the query, {len(during)} during it")
    p99_before, p99_during = percentile(before, 0.99), percentile(during, 0.99)
    ratio = p99_during / p99_before
    ran = heavy["ended"] - heavy["started"]
    notes = [
        f"same run: {RATE:,} events/s from a separate SDK process, one processor writing to chDB; "
        f"at {heavy_at:.0f} s into the load, `dashfrog.query.sql` runs `{HEAVY_SQL}` under "
        f"DASHFROG_SQL_MAX_EXECUTION_S={heavy_s:g} (ran {ran:.1f} s, {heavy.get('outcome')})",
        f"{len(before):,} probe steps exited before it (first {warmup:.0f} s left out): p50 "
        f"{fmt_ms(percentile(before, 0.5))}, p99 {fmt_ms(p99_before)}; {len(during):,} while it ran: "
        f"p50 {fmt_ms(percentile(during, 0.5))}, p99 {fmt_ms(p99_during)}",
        f"the store's writes use their own chDB connection, user SQL its own readers; "
        f"polled through dashfrog.query.sql every {POLL_S * 1e3:.0f} ms (p50 {fmt_ms(result['poll_p50'])})",
    ]
    return [
        Row(
            "freshness during a 20 s query",
            f"p50 {fmt_ms(percentile(during, 0.5))}, p99 {fmt_ms(p99_during)}",
            f"without it: p50 {fmt_ms(percentile(before, 0.5))}, p99 {fmt_ms(p99_before)}",
            ratio,
            CONCURRENT_TARGET,
            ratio <= 1.5,
            notes,
        )
    ]
