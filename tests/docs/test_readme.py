"""The README's examples run (as datasette does with its docs).

Every ```python and ```bash block runs against demo-like data (flows shaped
like ``examples/demo-app``'s: data_import runs for five tenants, env=demo,
steps read / validate / process, some failing) unless an HTML comment on the
line before it says ``<!-- illustrative: REASON -->``; such a block is
reported as skipped with its reason. Python blocks get a prelude defining the
application functions the snippets call (``validate_data``...) and a store
registered with ``dashfrog.query``; shell blocks run line by line against a
``dashfrog api`` serving another copy of that data. Every ``dashfrog``
command the README names must answer ``--help``, and the configuration table
must be exactly what ``dashfrog settings --markdown`` prints.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dashfrog.runtime._broker import free_port
from dashfrog.schemas import Event, make_event
from dashfrog.storage import open_store

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DASHFROG = str(Path(sys.executable).parent / "dashfrog")
SHELLS = ("bash", "sh", "shell", "console")
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_ILLUSTRATIVE = re.compile(r"<!--\s*illustrative:\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int
    illustrative: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.lang}-line{self.line}"


def readme_blocks(text: str) -> list[Block]:
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marked = _ILLUSTRATIVE.search(before)
        if marked is not None and not marked.group(1):
            raise AssertionError(f"README line {text.count(chr(10), 0, match.start())}: illustrative without a reason")
        found.append(
            Block(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1,
                  marked.group(1) if marked else None)
        )
    return found


BLOCKS = readme_blocks(README.read_text())
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang in SHELLS]


# -- demo-like data ----------------------------------------------------------------

TENANTS = ("acme-corp", "globex", "initech", "umbrella", "hooli")


def demo_like_events(now_us: int, n: int = 240, seed: int = 11) -> list[Event]:
    """``n`` data_import flows over the last six hours, as the demo app runs them."""
    rnd = random.Random(seed)
    events: list[Event] = []
    for i in range(n):
        start = now_us - int((n - i) * 6 * 3600e6 / n)
        tenant = TENANTS[i % len(TENANTS)]
        flow_id = f"{start:016x}{rnd.getrandbits(64):016x}"
        common = {
            "flow_id": flow_id, "tenant": tenant, "flow_name": "data_import", "service": "demo-app",
            "labels": {"source": rnd.choice(("sftp", "s3", "upload")), "env": "demo", "batch": str(i)},
        }
        events.append(make_event("flow_started", timestamp=start, **common))
        t = start
        failed: dict[str, str] | None = None
        for n_step, name in enumerate(("read", "validate", "process")):
            step = {"step_id": f"{flow_id[:16]}{n_step:016x}", "step_name": name}
            events.append(make_event("step_started", timestamp=t, **common, **step))
            t += rnd.randint(50_000, 400_000)
            if name == "validate" and i % 8 == 3:
                failed = {"type": "InvalidFile", "message": "row 17: missing customer_id column", "stack": ""}
            if name == "process" and i % 16 == 5:
                failed = {"type": "TimeoutError", "message": "warehouse did not answer within 30s", "stack": ""}
            events.append(make_event("step_ended", timestamp=t, **common, **step,
                                     status="failed" if failed else "success", error=failed))
            if failed:
                break
        events.append(make_event("flow_ended", timestamp=t + 1000, **common,
                                 status="failed" if failed else "success", error=failed))
    return events


def demo_like_metrics() -> list[Event]:
    """The README's metrics (api_calls, request_duration_seconds, monthly_quota)
    for every tenant, one point every 5 minutes over the last hour."""
    from datetime import UTC, datetime, timedelta

    from tests.storage.test_metrics_store import counter_point, event, gauge_point, histogram_point

    rnd = random.Random(5)
    now = datetime.now(UTC) - timedelta(seconds=30)
    times = [now - timedelta(minutes=5 * k) for k in range(12)]
    calls, durations, quotas = [], [], []
    for tenant in TENANTS:
        for at in times:
            calls.append(counter_point(tenant, rnd.randint(50, 100), at, method="POST", status="200"))
            calls.append(counter_point(tenant, rnd.randint(0, 5), at, method="POST", status="500"))
            durations.append(histogram_point(tenant, [rnd.lognormvariate(-1.5, 0.5) for _ in range(20)], at,
                                             endpoint="/api/users"))
        quotas.append(gauge_point(tenant, 420, 400, 450, times[0], env="prod"))
    return [
        event("api_calls", "counter", calls, ["method", "status"], pretty_name="API Calls", unit="count"),
        event("request_duration_seconds", "histogram", durations, ["endpoint"], pretty_name="Request Duration",
              unit="seconds"),
        event("monthly_quota", "gauge", quotas, ["env"], pretty_name="Monthly Quota", unit="requests"),
    ]


def seeded_store(path: Path) -> str:
    url = f"chdb://{path}"
    store = open_store(url)
    try:
        store.migrate()
        store.insert_events(demo_like_events(int(time.time() * 1e6)), "readme-demo")
        store.insert_events(demo_like_metrics(), "readme-demo-metrics")
    finally:
        store.close()
    return url


@pytest.fixture(scope="module")
def python_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return seeded_store(tmp_path_factory.mktemp("readme-python") / "chdb")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``dashfrog api`` over demo-like data; yields the environment to reach it."""
    work = tmp_path_factory.mktemp("readme-shell")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHFROG_")}
    env |= {
        "DASHFROG_CLICKHOUSE_URL": seeded_store(work / "chdb"),
        "DASHFROG_API_PORT": str(port),
        "DASHFROG_API_URL": f"http://127.0.0.1:{port}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    server = subprocess.Popen([DASHFROG, "api"], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"dashfrog api did not start: {server.stderr and server.stderr.read()!r}") from None
                time.sleep(0.1)
        yield env | {"_cwd": str(work)}
    finally:
        server.terminate()
        server.wait(30)


# -- the blocks ------------------------------------------------------------------------

# What the snippets call that an application would define.
_PRELUDE = textwrap.dedent(
    """
    import sys
    from dashfrog import flow, query, step  # as the Quickstart's first example imports them
    from dashfrog.storage import open_store

    query.use_store(open_store(sys.argv[1]))

    def validate_data(): pass
    def process_data(): pass
    def store_results(): pass
    data = {"rows": []}
    def is_valid(data): return False
    customer_id = "acme-corp"
    """
)


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_example_runs(block: Block, python_store: str, broker: str, tmp_path: Path) -> None:
    if block.illustrative:
        pytest.skip(f"illustrative: {block.illustrative}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHFROG_")}
    env["DASHFROG_KAFKA_BOOTSTRAP"] = broker
    result = subprocess.run(
        [sys.executable, "-c", _PRELUDE + block.code, python_store],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"README line {block.line}:\n{block.code}\n{result.stderr[-3000:]}"


# Placeholders the shell examples use, replaced by a flow of the demo data.
_PLACEHOLDERS = ("FLOW_ID", "019ac3f2e4b1")


def _commands(code: str) -> list[str]:
    lines = []
    for raw in code.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line.replace(".venv/bin/dashfrog", "dashfrog"))
    return lines


@pytest.mark.parametrize("block", SHELL, ids=[b.id for b in SHELL])
def test_shell_example_runs(block: Block, api: dict[str, str]) -> None:
    if block.illustrative:
        pytest.skip(f"illustrative: {block.illustrative}")
    env = dict(api)
    cwd = env.pop("_cwd")
    some_flow = subprocess.run(
        [DASHFROG, "flows", "--limit", "1", "--format", "ndjson"], env=env, capture_output=True, text=True, timeout=60
    )
    flow_id = re.search(r'"flow_id":\s*"([0-9a-f]+)"', some_flow.stdout)
    assert flow_id, some_flow.stdout + some_flow.stderr
    for command in _commands(block.code):
        for placeholder in _PLACEHOLDERS:
            command = command.replace(placeholder, flow_id.group(1)[: max(12, len(placeholder))])
        result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"README line {block.line}: {command}\n{result.stdout[-1500:]}{result.stderr[-1500:]}"


# -- the CLI and the settings table -------------------------------------------------------

_NAMED = re.compile(r"(?:^|[\s`(])(?:\.venv/bin/)?dashfrog ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")


def test_every_cli_command_the_readme_names_exists() -> None:
    text = README.read_text()
    spans = [b.code for b in BLOCKS if b.lang in SHELLS] + re.findall(r"`([^`\n]+)`", text)
    named = {(m.group(1), m.group(2)) for span in spans for m in _NAMED.finditer(span)}
    assert named, "no dashfrog command found in the README"
    checked = set()
    for command, sub in sorted(named, key=lambda c: (c[0], c[1] or "")):
        top = subprocess.run([DASHFROG, command, "--help"], capture_output=True, text=True, timeout=60)
        assert top.returncode == 0, f"README names `dashfrog {command}`: {top.stderr}"
        checked.add(command)
        if sub and "Commands:" in top.stdout:
            assert re.search(rf"^\s+{sub}\b", top.stdout.split("Commands:", 1)[1], re.MULTILINE), (
                f"README names `dashfrog {command} {sub}`, which `dashfrog {command}` lacks"
            )
            inner = subprocess.run([DASHFROG, command, sub, "--help"], capture_output=True, text=True, timeout=60)
            assert inner.returncode == 0, inner.stderr
    assert {"up", "flows", "settings"} <= checked


def test_settings_table_is_what_the_cli_prints() -> None:
    printed = subprocess.run([DASHFROG, "settings", "--markdown"], capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    expected = [line for line in printed.stdout.splitlines() if line.startswith("| `DASHFROG_")]
    lines = README.read_text().splitlines()
    start = lines.index("| variable | default | meaning |") + 2  # after the header and |---|
    documented = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        documented.append(line)
    assert documented == expected, "regenerate the README's table with `dashfrog settings --markdown`"
