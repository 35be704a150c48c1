"""The README's promise, end to end: `dashfrog up`, the demo app, then the read CLI.

Real processes throughout: `dashfrog up` (processor + chDB + API) on the test
broker, the demo app as a separate program, and the `dashfrog` command line
reading over HTTP as a user in another terminal would.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashfrog.query import FlowFilter
from dashfrog.runtime._broker import ensure_topics_sync, free_port

ROOT = Path(__file__).resolve().parents[2]
DASHFROG = str(Path(sys.executable).parent / "dashfrog")


@pytest.fixture
def running_up(broker: str, topic_prefix: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "DASHFROG_KAFKA_BOOTSTRAP": broker,
        "DASHFROG_TOPIC_PREFIX": topic_prefix,
        "DASHFROG_TOPIC_PARTITIONS": "2",
        "DASHFROG_PROCESSOR_GROUP": f"{topic_prefix}up",
        "DASHFROG_REBALANCE_TIMEOUT_S": "2",
        "DASHFROG_CLICKHOUSE_URL": f"chdb://{tmp_path / 'db'}",
        "DASHFROG_API_PORT": str(free_port()),
        "DASHFROG_LINGER_MS": "5",
    }
    ensure_topics_sync(broker, {topic_prefix + "dashfrog.events": 2})
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen([DASHFROG, "up"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield {**env, "UP_LOG": str(log)}
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DASHFROG, *args], capture_output=True, text=True, env=env, timeout=60)


def test_demo_flows_show_up_in_the_cli(running_up: dict[str, str]) -> None:
    env = running_up
    demo = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/demo-app/app/main.py"),
            "--count",
            "40",
            "--fast",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert demo.returncode == 0, demo.stderr
    outcomes = ast.literal_eval(demo.stdout.strip().splitlines()[-1])  # its outcome counts
    assert sum(outcomes.values()) == 40

    # `dashfrog flows` answers once the API is up and the processor caught up.
    deadline = time.monotonic() + 90
    flows: list[dict] = []
    while time.monotonic() < deadline:
        result = cli(env, "flows", "--json", "--limit", "1000")
        if result.returncode == 0:
            flows = [json.loads(line) for line in result.stdout.splitlines()]
            if len(flows) == 40 and all(f["status"] != "running" for f in flows):
                break
        time.sleep(0.3)
    assert len(flows) == 40, Path(env["UP_LOG"]).read_text()[-3000:]
    assert sum(f["status"] == "success" for f in flows) == outcomes.get("success", 0)

    acme = cli(env, "flows", "--tenant", "acme-corp")
    assert acme.returncode == 0, acme.stderr
    lines = acme.stdout.splitlines()
    expected = [f for f in flows if f["tenant"] == "acme-corp"]
    assert lines[0].split()[:4] == ["FLOW_ID", "TENANT", "NAME", "STATUS"]
    assert len(lines) == 1 + len(expected) and all("acme-corp" in line for line in lines[1:])

    failed = next(f for f in flows if f["status"] == "failed")
    detail = cli(env, "flow", failed["flow_id"])
    assert detail.returncode == 0, detail.stderr
    assert f"data_import [failed]  tenant={failed['tenant']}" in detail.stdout
    assert (
        "[failed]" in detail.stdout.split("\n", 2)[2]
        and failed["error"]["message"] in detail.stdout
    )

    stats = cli(env, "stats", "--name", "data_import", "--json")
    assert json.loads(stats.stdout)["runs"] == 40

    sql = cli(
        env,
        "sql",
        "SELECT uniqExact(flow_id) AS n FROM flows WHERE tenant = {t:String}",
        "-p",
        "t=acme-corp",
        "--json",
    )
    assert sql.returncode == 0, sql.stderr
    assert json.loads(sql.stdout)["n"] == len(expected)
    refused = cli(env, "sql", "DROP TABLE flows")
    assert refused.returncode == 1 and "only read queries are allowed" in refused.stderr.lower()

    bad = cli(env, "flows", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "'--since'" in bad.stderr and "15m" in bad.stderr
    unknown = cli(env, "flow", "0" * 32)
    assert unknown.returncode == 1 and "no flow" in unknown.stderr


def test_rebuild_reprojects_from_raw_events(tmp_path: Path) -> None:
    from dashfrog.storage import open_store
    from tests.streams._helpers import flow_events

    url = f"chdb://{tmp_path / 'db'}"
    store = open_store(url)
    store.migrate()
    store.insert_events(flow_events(12, tenants=3, steps=2, fail_every=4, run="rebuild"), "r1")
    before = store.find_flows(FlowFilter.parse(limit=1000))
    store.close()
    env = {**os.environ, "DASHFROG_CLICKHOUSE_URL": url}
    result = cli(env, "rebuild", "--yes")
    assert result.returncode == 0, result.stderr
    assert "rebuilt 12 flows from" in result.stdout
    again = open_store(url)
    try:
        assert again.find_flows(FlowFilter.parse(limit=1000)).model_dump() == before.model_dump()
    finally:
        again.close()
