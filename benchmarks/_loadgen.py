"""An application process emitting flows through the SDK at a steady rate.

``python -m benchmarks._loadgen BOOTSTRAP PREFIX EVENTS_PER_S SECONDS PROBE_TENANT PROBE_EVERY``

Each flow is ten events (four steps). Every ``PROBE_EVERY``-th flow belongs to
``PROBE_TENANT``: the freshness benchmark times its last step. Pacing follows
a schedule (flow k is due at k / flows_per_s), so a slow iteration is caught
up rather than lost. Prints one JSON line of counters when done.
"""

from __future__ import annotations

import json
import sys
import time

import dashfrog
from benchmarks._events import EVENTS_PER_FLOW, STEPS
from dashfrog import flow, step


def main(argv: list[str]) -> int:
    bootstrap, prefix = argv[0], argv[1]
    events_per_s, seconds = float(argv[2]), float(argv[3])
    probe_tenant, probe_every = argv[4], int(argv[5])
    dashfrog.setup(kafka_bootstrap=bootstrap, topic_prefix=prefix, service_name="bench-loadgen")
    flows_per_s = events_per_s / EVENTS_PER_FLOW
    total = int(flows_per_s * seconds)
    probes = 0
    started = time.monotonic()
    for k in range(total):
        due = started + k / flows_per_s
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        probe = k % probe_every == 0
        probes += probe
        tenant = probe_tenant if probe else f"tenant-{k % 1000:04d}"
        with flow.start(name="bench_fresh", tenant=tenant, env="production", k=k):
            for name in STEPS:
                with step.start(name, rows=k % 900):
                    pass
    elapsed = time.monotonic() - started
    dashfrog.flush(30)
    stats = dashfrog.stats()
    print(
        json.dumps(
            {
                "flows": total,
                "events": total * EVENTS_PER_FLOW,
                "seconds": elapsed,
                "probes": probes,
                "sent": stats["sent"],
                "dropped": stats["dropped"],
                "messages": stats["messages"],
            }
        ),
        flush=True,
    )
    dashfrog.shutdown(10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
