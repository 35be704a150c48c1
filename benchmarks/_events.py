"""Synthetic but realistic flows: what the benchmarks feed the pipeline and the store.

A flow is ten events (flow_started with labels, four steps started and ended,
flow_ended); one flow in twenty fails on its last step with an error and a
stack, like the demo app's imports.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from typing import Any

from dashfrog.schemas import Event, Kind, make_event

STEPS = ("validate", "process", "enrich", "store")
EVENTS_PER_FLOW = 2 + 2 * len(STEPS)
FLOW_NAMES = ("data_import", "webhook_processing", "report_export", "user_sync", "billing_run")
ENVS = ("production", "staging", "dev")
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1", "us-west-2")
SOURCES = ("s3", "sftp", "api", "upload", "email", "stripe", "salesforce", "hubspot")
FAIL_EVERY = 20
_STACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/imports.py", line 88, in store_results\n'
    "    db.bulk_insert(rows)\n"
    "ValueError: Invalid data format\n"
)
_HOST = socket.gethostname()


def tenant_name(i: int) -> str:
    return f"tenant-{i:04d}"


def _event(kind: Kind, flow_id: str, tenant: str, name: str, ts: int, **fields: Any) -> Event:
    return make_event(
        kind,
        flow_id=flow_id,
        tenant=tenant,
        flow_name=name,
        timestamp=ts,
        service="bench-service",
        host=_HOST,
        sdk_version="bench",
        **fields,
    )


def flow_events(i: int, rng: random.Random, start_us: int | None = None) -> list[Event]:
    """The ten events of flow number ``i`` (tenant, name and labels follow from ``i``)."""
    ts = start_us if start_us is not None else time.time_ns() // 1000
    flow_id = f"{ts // 1000:012x}{rng.getrandbits(80):020x}"
    tenant = tenant_name(i % 1000)
    name = FLOW_NAMES[i % len(FLOW_NAMES)]
    failed = i % FAIL_EVERY == FAIL_EVERY - 1
    labels = {
        "env": ENVS[i % len(ENVS)],
        "region": REGIONS[(i // 3) % len(REGIONS)],
        "source": SOURCES[(i // 7) % len(SOURCES)],
    }
    out = [_event("flow_started", flow_id, tenant, name, ts, labels=labels)]
    for n, step in enumerate(STEPS):
        step_id = f"{rng.getrandbits(64):016x}"
        ts += 1_000
        out.append(
            _event(
                "step_started",
                flow_id,
                tenant,
                name,
                ts,
                step_id=step_id,
                step_name=step,
                attributes={"rows": str(100 + i % 900)},
            )
        )
        ts += rng.randint(1_000, 50_000)
        fail = failed and n == len(STEPS) - 1
        out.append(
            _event(
                "step_ended",
                flow_id,
                tenant,
                name,
                ts,
                step_id=step_id,
                step_name=step,
                status="failed" if fail else "success",
                error={"type": "ValueError", "message": "Invalid data format", "stack": _STACK}
                if fail
                else None,
            )
        )
    ts += 500
    out.append(
        _event("flow_ended", flow_id, tenant, name, ts, status="failed" if failed else "success")
    )
    return out


def many_flows(n_flows: int, seed: int = 7) -> Iterator[Event]:
    rng = random.Random(seed)
    base = time.time_ns() // 1000 - n_flows * 1_000
    for i in range(n_flows):
        yield from flow_events(i, rng, base + i * 1_000)
