"""4. Query latency on chDB with 1 000 000 flows (10 000 000 events) across 1 000 tenants.

The events are generated column-wise (``benchmarks._columns``) and written
through the store's own insert (the Arrow table the processor would write,
with a deduplication token per chunk), so the ``flows`` and ``steps``
projections are built by the same materialized views as in production. After
loading, the benchmark waits for background merges to finish, then times,
through ``dashfrog.query`` with the store registered in-process (what
``dashfrog up`` and the API do):

- flow list: ``query.flows(tenant=T, labels={"env": "production"}, limit=50)``;
- flow detail: ``query.flow(flow_id)`` (by id alone, as the README shows);
- stats: ``query.stats(name=N)`` over every tenant.

Baseline: ``query.sql("SELECT 1")`` through the same path: the fixed cost of
one round trip into the engine (parameter binding, the store lock, chDB's
query setup, JSON rows back). The ratio says how many such round trips a
query costs; the target is absolute (p50 ≤ 100 ms).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

from benchmarks._columns import chunk
from benchmarks._common import Row, fmt_ms, percentile, quiet_logs, wait_until
from benchmarks._events import FLOW_NAMES

TARGET = "p50 ≤ 100 ms"
N_TENANTS = 1_000
CHUNK_FLOWS = 50_000
SPAN_MS = 30 * 86_400 * 1000  # a month of flows, inside the default 90-day retention


def _time(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def load(store: Any, n_flows: int) -> tuple[float, list[tuple[str, str]]]:
    """Insert ``n_flows`` flows; seconds taken and a sample of (flow id, tenant)."""
    end_ms = int(time.time() * 1000)
    rng = random.Random(11)
    sample: list[tuple[str, str]] = []
    started = time.perf_counter()
    for first in range(0, n_flows, CHUNK_FLOWS):
        size = min(CHUNK_FLOWS, n_flows - first)
        c = chunk(first, size, N_TENANTS, end_ms, SPAN_MS, n_flows, seed=3)
        # The store's insert primitive, as the processor's writes use it.
        store._insert(c.table, f"bench-load-{n_flows}-{first}")
        for i in rng.sample(range(size), min(20, size)):
            sample.append((c.flow_ids[i], f"tenant-{int(c.tenants[i]):04d}"))
    return time.perf_counter() - started, sample


def _stats_breakdown(store: Any, reps: int) -> str:
    """Where ``query.stats(name)`` spends its time: its two statements timed apart.

    Reads the storage package's private query builders, so it degrades to a
    note rather than failing when they change.
    """
    try:
        from dashfrog._models import StatsFilter
        from dashfrog.storage import _queries

        params: dict[str, Any] = {}
        sql = _queries._stats_sql(
            StatsFilter.parse(name=FLOW_NAMES[0]), params, _queries._stalled_before(300.0, None)
        )
        parts = {
            "runs/status/duration percentiles": sql.stats,
            "failures by step": sql.failures,
            "per-flow merge of flow_runs alone (count)": f"SELECT count() FROM ({sql.runs})",
        }
        timed = {
            what: percentile(_time(lambda sql=sql: store._query(sql, params), reps), 0.5)
            for what, sql in parts.items()
        }
    except Exception as exc:
        return f"stats breakdown unavailable: {exc!r}"
    return "stats(name) breakdown, p50: " + "; ".join(f"{w} {fmt_ms(t)}" for w, t in timed.items())


def run(quick: bool) -> list[Row]:
    from dashfrog import query
    from dashfrog.storage import open_store

    quiet_logs()
    n_flows = 5_000 if quick else 1_000_000
    reps = 5 if quick else 40
    tmp = os.environ.get("DASHFROG_BENCH_TMP") or os.getcwd()
    store = open_store(f"chdb://{os.path.join(tmp, 'chdb')}")
    try:
        store.migrate()
        load_s, sample = load(store, n_flows)
        counts = store.select(
            "SELECT (SELECT count() FROM events) AS events, (SELECT uniqExact(flow_id) FROM flows) AS flows"
        )[0]
        merge_wait = time.perf_counter()
        wait_until(
            lambda: int(store.select("SELECT count() AS n FROM system.merges")[0]["n"]) == 0,
            300,
            "background merges",
            poll=0.5,
        )
        merge_wait = time.perf_counter() - merge_wait
        parts = store.select(
            "SELECT table, count() AS parts FROM system.parts WHERE active AND database = currentDatabase() "
            "GROUP BY table ORDER BY table"
        )
        query.use_store(store)
        rng = random.Random(5)
        tenants = [f"tenant-{rng.randrange(N_TENANTS):04d}" for _ in range(reps)]

        def flow_list() -> None:
            found = query.flows(
                tenant=tenants[rng.randrange(reps)], labels={"env": "production"}, limit=50
            )
            if not found.flows:
                raise RuntimeError("flow list returned nothing")

        def detail() -> None:
            flow_id, _ = sample[rng.randrange(len(sample))]
            if query.flow(flow_id) is None:
                raise RuntimeError(f"flow {flow_id} not found")

        def detail_with_tenant() -> None:
            flow_id, tenant = sample[rng.randrange(len(sample))]
            if query.flow(flow_id, tenant=tenant) is None:
                raise RuntimeError(f"flow {flow_id} not found")

        def stats() -> None:
            if not query.stats(name=FLOW_NAMES[rng.randrange(len(FLOW_NAMES))]).runs:
                raise RuntimeError("stats saw no runs")

        def stats_tenant() -> None:
            query.stats(tenant=tenants[rng.randrange(reps)], name=FLOW_NAMES[0])

        def trivial() -> None:
            query.sql("SELECT 1")

        measured: dict[str, list[float]] = {}
        for name, fn in [
            ("trivial", trivial),
            ("list", flow_list),
            ("detail", detail),
            ("detail_tenant", detail_with_tenant),
            ("stats", stats),
            ("stats_tenant", stats_tenant),
        ]:
            _time(fn, 2)  # warm caches: the first query of a kind reads marks and indexes
            measured[name] = _time(fn, reps)
        breakdown = _stats_breakdown(store, 3 if quick else 5)
    finally:
        query.use_store(None)
        store.close()

    p50 = {k: percentile(v, 0.5) for k, v in measured.items()}
    p99 = {k: percentile(v, 0.99) for k, v in measured.items()}
    base = p50["trivial"]
    size = (
        f"{int(counts['flows']):,} flows / {int(counts['events']):,} events, {N_TENANTS:,} tenants"
    )
    parts_text = ", ".join(f"{p['table']} {p['parts']}" for p in parts)
    common = [
        f"{size}; loaded column-wise through the store's insert in {load_s:.0f}s "
        f"({int(counts['events']) / load_s:,.0f} events/s incl. generation), merges settled after {merge_wait:.0f}s; "
        f"active parts: {parts_text}",
        f"p50 of {reps} calls each (random tenant / flow / name) after 2 warm-up calls; baseline "
        f"query.sql('SELECT 1') p50 {fmt_ms(base)}",
    ]
    rows = []
    specs = [
        (
            "list",
            "query latency: flow list (tenant + label)",
            "query.flows(tenant, labels={'env': 'production'}, limit=50)",
        ),
        ("detail", "query latency: flow detail", "query.flow(flow_id) by id alone"),
        ("stats", "query latency: stats (one flow name)", "query.stats(name) across all tenants"),
    ]
    for key, title, what in specs:
        notes = [f"{what}: p50 {fmt_ms(p50[key])}, p99 {fmt_ms(p99[key])}"]
        if key == "detail":
            notes.append(
                f"with tenant given, query.flow(flow_id, tenant): p50 {fmt_ms(p50['detail_tenant'])}"
            )
        if key == "stats":
            notes.append(
                f"one tenant and name, query.stats(tenant, name): p50 {fmt_ms(p50['stats_tenant'])}"
            )
            notes.append(breakdown)
        if key == "list":
            notes = common + notes
        rows.append(
            Row(
                title,
                f"p50 {fmt_ms(p50[key])}",
                f"SELECT 1 p50 {fmt_ms(base)}",
                p50[key] / base,
                TARGET,
                p50[key] <= 0.1,
                notes,
            )
        )
    return rows
