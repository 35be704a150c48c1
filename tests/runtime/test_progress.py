"""``dashfrog rebuild`` shows progress on a terminal and nothing when piped."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dashfrog.runtime import progress_line
from dashfrog.storage import open_store
from tests.streams._helpers import flow_events

DASHFROG = str(Path(sys.executable).parent / "dashfrog")


def test_progress_line_says_rows_rate_and_eta() -> None:
    assert progress_line("rebuild", 0, 10, 0.0) == "rebuild: 0 / 10 events (0 %)"
    assert progress_line("rebuild", 2_500_000, 10_000_000, 2.0) == (
        "rebuild: 2,500,000 / 10,000,000 events (25 %), 1,250,000 events/s, ETA 6 s"
    )
    assert progress_line("rebuild", 1_000, 301_000, 1.0).endswith("ETA 5 min 00 s")


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"chdb://{tmp_path / 'chdb'}"
    store = open_store(url)
    try:
        store.migrate()
        store.insert_events(flow_events(20, tenants=2, steps=2, run="progress"), "p1")
    finally:
        store.close()
    return url


def _rebuild(url: str, cwd: Path, *, terminal: bool) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHFROG_")}
    env["DASHFROG_CLICKHOUSE_URL"] = url
    if not terminal:
        done = subprocess.run(
            [DASHFROG, "rebuild", "--yes"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [DASHFROG, "rebuild", "--yes"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave, text=True
        )
        os.close(slave)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return out, b"".join(chunks).decode()


def test_rebuild_shows_progress_on_a_terminal_only(store_url: str, tmp_path: Path) -> None:
    out, err = _rebuild(store_url, tmp_path, terminal=True)
    assert "rebuilt 20 flows from" in out
    final = err.replace("\r\n", "\n").split("\r")[-1]
    assert re.search(r"dashfrog rebuild: (\d+) / \1 events \(100 %\), [\d,]+ events/s, ETA 0 s", final), err
    out, err = _rebuild(store_url, tmp_path, terminal=False)
    assert "rebuilt 20 flows from" in out
    assert err == ""
