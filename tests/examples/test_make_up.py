"""`make up` as a newcomer runs it: the launcher, `dashfrog up` with its own
local broker, and the demo app, until SIGTERM.

The local broker listens on the default 127.0.0.1:9092, so the test skips
when something else holds that port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashfrog.runtime._broker import free_port

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "examples" / "demo-app" / "run_with_dashfrog.py"

pytestmark = pytest.mark.slow


def _port_taken(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _flows(api: str) -> list[dict]:
    try:
        with urllib.request.urlopen(f"{api}/api/flows?limit=100", timeout=5) as response:
            return list(json.load(response)["flows"])
    except OSError:
        return []


@pytest.fixture
def up_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    if _port_taken(9092):
        pytest.skip("127.0.0.1:9092 is taken: `make up`'s local broker needs it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHFROG_")}
    env.update(
        DASHFROG_API_PORT=str(free_port()),
        DASHFROG_CLICKHOUSE_URL=f"chdb://{tmp_path / 'db'}",
    )
    yield env


def test_make_up_runs_the_demo_and_stops_cleanly(up_env: dict[str, str], tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{up_env['DASHFROG_API_PORT']}"
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, str(LAUNCHER)], stdout=out, stderr=subprocess.STDOUT, env=up_env
        )
    try:
        deadline = time.monotonic() + 90
        flows: list[dict] = []
        while time.monotonic() < deadline and launcher.poll() is None:
            flows = _flows(api)
            if flows:
                break
            time.sleep(0.3)  # polling interval of a condition wait
        assert flows, log.read_text()[-3000:]
        assert {f["tenant"] for f in flows} <= {"acme-corp", "globex", "initech", "umbrella", "hooli"}

        # A second `make up` against the same store says why in one line and starts nothing.
        second = subprocess.run(
            [sys.executable, str(LAUNCHER)], capture_output=True, text=True, env=up_env, timeout=60
        )
        assert second.returncode != 0
        said = [line for line in (second.stdout + second.stderr).splitlines() if line.strip()]
        assert len(said) == 1, said
        assert "Error:" in said[0], said
    finally:
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(60)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
    text = log.read_text()
    assert launcher.returncode == 0, text[-3000:]
    assert "dashfrog up: stopped" in text
    # The demo waits for the broker: its SDK never starts with an outage warning.
    assert "cannot reach Kafka" not in text, text[-3000:]
