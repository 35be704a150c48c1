"""Chart queries on chDB: what the list page adds on every load and live refresh.

Loads flows column-wise through the store's insert (as ``query_latency``
does), waits for merges, then times, with every tenant and then one tenant
with ``status=failed``:

- ``flow_overview`` (``GET /api/stats/overview``: cards, histogram, failures);
- ``flow_timeseries`` (``GET /api/stats/timeseries``: runs by status, p50/p95
  per bucket over the last 30 days).

Baseline: ``find_stats`` (``GET /api/stats``, what the page called before
the charts) with the same tenant / name scope, in the same run. Target: the
charts' two requests (two statements each, as stats has) together cost at
most 4x that one request, so a page that gained a histogram, a runs chart and
a duration chart does not get slower than that to refresh.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

from benchmarks._common import Row, fmt_ms, percentile, quiet_logs, wait_until
from benchmarks.query_latency import N_TENANTS, load

TARGET = "overview + timeseries ≤ 4x stats"


def _time(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run(quick: bool) -> list[Row]:
    from datetime import UTC, datetime, timedelta

    from dashfrog._models import FlowFilter, StatsFilter
    from dashfrog.storage import open_store

    quiet_logs()
    n_flows = 5_000 if quick else 200_000
    reps = 5 if quick else 20
    tmp = os.environ.get("DASHFROG_BENCH_TMP") or os.getcwd()
    store = open_store(f"chdb://{os.path.join(tmp, 'chdb-charts')}")
    try:
        store.migrate()
        load_s, _ = load(store, n_flows)
        wait_until(
            lambda: int(store.select("SELECT count() AS n FROM system.merges")[0]["n"]) == 0,
            300,
            "background merges",
            poll=0.5,
        )
        rng = random.Random(7)
        since = datetime.now(UTC) - timedelta(days=30)
        tenants = [f"tenant-{rng.randrange(N_TENANTS):04d}" for _ in range(reps)]
        scopes: dict[str, Callable[[], tuple[FlowFilter, StatsFilter]]] = {
            "all": lambda: (FlowFilter.parse(since=since), StatsFilter.parse(since=since)),
            "tenant": lambda: (
                FlowFilter.parse(tenant=(t := rng.choice(tenants)), status="failed", since=since),
                StatsFilter.parse(tenant=t, since=since),
            ),
        }
        measured: dict[str, list[float]] = {}
        for scope, make in scopes.items():
            calls = {
                "stats": lambda make=make: store.find_stats(make()[1]),
                "overview": lambda make=make: store.flow_overview(make()[0]),
                "timeseries": lambda make=make: store.flow_timeseries(make()[0]),
            }
            for name, fn in calls.items():
                _time(fn, 2)  # warm-up
                measured[f"{scope}/{name}"] = _time(fn, reps)
    finally:
        store.close()

    p50 = {k: percentile(v, 0.5) for k, v in measured.items()}
    rows = []
    for scope, title in (("all", "every tenant"), ("tenant", "one tenant, status=failed")):
        base = p50[f"{scope}/stats"]
        charts = p50[f"{scope}/overview"] + p50[f"{scope}/timeseries"]
        rows.append(
            Row(
                f"chart queries: overview + timeseries ({title})",
                f"p50 {fmt_ms(charts)}",
                f"stats p50 {fmt_ms(base)}",
                charts / base,
                TARGET,
                charts <= 3 * base,
                [
                    f"{n_flows:,} flows across {N_TENANTS:,} tenants, loaded in {load_s:.0f}s; "
                    f"p50 of {reps} calls after 2 warm-up calls",
                    f"overview p50 {fmt_ms(p50[f'{scope}/overview'])}, "
                    f"timeseries p50 {fmt_ms(p50[f'{scope}/timeseries'])}",
                ],
            )
        )
    return rows
