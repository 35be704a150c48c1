"""`make up`'s metrics, end to end: `dashfrog up`, the demo app as its own
program, then `dashfrog metrics` / `dashfrog metric` over HTTP."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time

from tests.e2e.test_readme_promise import ROOT, cli, running_up  # noqa: F401 - the fixture


def test_demo_metrics_show_up_in_the_cli(running_up: dict[str, str]) -> None:  # noqa: F811
    env = running_up
    demo = subprocess.run(
        [sys.executable, str(ROOT / "examples/demo-app/app/main.py"), "--count", "30", "--fast", "--seed", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert demo.returncode == 0, demo.stderr
    outcomes = ast.literal_eval(demo.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 60
    totals: dict[str, float] = {}
    while time.monotonic() < deadline:
        shown = cli(env, "metric", "imports_total", "--since", "1h", "--step", "1h", "--group-by", "outcome", "--json")
        if shown.returncode == 0:
            totals = {}
            for line in shown.stdout.splitlines():
                row = json.loads(line)
                totals[row["group"]["outcome"]] = totals.get(row["group"]["outcome"], 0) + row["total"]
            if sum(totals.values()) == 30:
                break
        time.sleep(0.2)
    assert totals == outcomes, f"{totals} != {outcomes}; dashfrog up log:\n{open(env['UP_LOG']).read()[-3000:]}"
    listed = cli(env, "metrics", "--json")
    assert listed.returncode == 0, listed.stderr
    kinds = {m["name"]: m["kind"] for m in json.loads(listed.stdout)["metrics"]}
    assert kinds == {
        "imports_total": "counter",
        "import_rows": "histogram",
        "import_duration_seconds": "histogram",
        "monthly_quota": "gauge",
    }
    latency = cli(env, "metric", "import_duration_seconds", "--tenant", "acme-corp", "--since", "1h", "--step", "1h")
    assert latency.returncode == 0, latency.stderr
    assert "percentiles within" in latency.stdout and "P95" in latency.stdout
