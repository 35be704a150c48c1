"""A data-import service that reports its work to DashFrog.

Every few hundred milliseconds a customer uploads a file; the service reads,
validates and processes it. Some files are malformed and some processing
fails, so the flows show every outcome. Run it next to `dashfrog up`:

    python examples/demo-app/app/main.py            # forever
    python examples/demo-app/app/main.py --count 20 # twenty imports, then exit
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Iterator

import dashfrog
from dashfrog import flow, metrics, step

TENANTS = ("acme-corp", "globex", "initech", "umbrella", "hooli")
SOURCES = ("csv", "api", "sftp")

# Per-customer metrics: aggregated in the process, sent every
# DASHFROG_METRICS_INTERVAL_S through the same pipeline as the flows.
imports_total = metrics.Counter("imports_total", labels=["source", "outcome"], pretty_name="Imports", unit="count")
import_rows = metrics.Histogram("import_rows", labels=["source"], pretty_name="Rows per import", unit="rows")
import_duration = metrics.Histogram(
    "import_duration_seconds", labels=["source"], pretty_name="Import duration", unit="seconds"
)
QUOTA = 50_000  # rows a customer may import per month
rows_used: dict[str, int] = {}


def quota_left(timeout_seconds: int) -> Iterator[metrics.GaugeValue]:
    """Sampled every 10 s: each customer's rows left this month."""
    for tenant in TENANTS:
        yield metrics.GaugeValue(value=QUOTA - rows_used.get(tenant, 0), tenant=tenant, labels={"plan": "standard"})


monthly_quota = metrics.Gauge("monthly_quota", labels=["plan"], pretty_name="Monthly quota left", unit="rows")


class InvalidFile(ValueError):
    pass


async def pause(rng: random.Random, fast: bool, low: float, high: float) -> None:
    await asyncio.sleep(0 if fast else rng.uniform(low, high))


async def run_import(rng: random.Random, n: int, fast: bool) -> str:
    tenant = rng.choice(TENANTS)
    source = rng.choice(SOURCES)
    outcome = "success"
    started = time.perf_counter()
    async with flow.start(name="data_import", tenant=tenant, source=source, env="demo", batch=n):
        rows = rng.randint(10, 5000)
        async with step.start("read", rows=rows):
            await pause(rng, fast, 0.05, 0.3)
        try:
            async with step.start("validate"):
                await pause(rng, fast, 0.05, 0.2)
                if rng.random() < 0.12:
                    raise InvalidFile(f"row {rng.randint(1, rows)}: missing customer_id column")
        except InvalidFile:
            outcome = "invalid"
        else:
            try:
                async with step.start("process", rows=rows):
                    await pause(rng, fast, 0.1, 0.6)
                    if rng.random() < 0.06:
                        raise TimeoutError("warehouse did not answer within 30s")
            except TimeoutError:
                outcome = "failed"
    imports_total.add(1, tenant=tenant, source=source, outcome=outcome)
    import_rows.record(rows, tenant=tenant, source=source)
    import_duration.record(time.perf_counter() - started, tenant=tenant, source=source)
    if outcome == "success":
        rows_used[tenant] = rows_used.get(tenant, 0) + rows
    return outcome


async def main(count: int | None, concurrency: int, fast: bool, seed: int | None) -> dict[str, int]:
    rng = random.Random(seed)
    monthly_quota.set_periodically(10, quota_left)
    try:
        return await imports(rng, count, concurrency, fast)
    finally:
        monthly_quota.stop_periodically()


async def imports(rng: random.Random, count: int | None, concurrency: int, fast: bool) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    n = 0
    running: set[asyncio.Task[str]] = set()
    while count is None or n < count:
        while len(running) >= concurrency:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                outcomes[task.result()] = outcomes.get(task.result(), 0) + 1
        running.add(asyncio.create_task(run_import(rng, n, fast)))
        n += 1
        await pause(rng, fast, 0.1, 0.4)
    for result in await asyncio.gather(*running):
        outcomes[result] = outcomes.get(result, 0) + 1
    return outcomes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, help="imports to run (default: forever)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--fast", action="store_true", help="no pauses (tests)")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    dashfrog.setup(service_name="demo-app")
    try:
        print(asyncio.run(main(args.count, args.concurrency, args.fast, args.seed)))
    except KeyboardInterrupt:
        pass
    finally:
        dashfrog.flush(5)
