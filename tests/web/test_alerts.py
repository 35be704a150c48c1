"""Alerts: rule files, the four conditions against a real chDB store, signed webhook notices
to a real HTTP server on loopback with retries, the CLI, GET /api/alerts, and two
`dashfrog api` processes sharing one ClickHouse server that notify each incident once."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from dashfrog._exceptions import ConfigurationError
from dashfrog._settings import Settings
from dashfrog.web import create_app
from dashfrog.web._alerts import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Evaluator,
    parse_rules,
    send_notice,
)
from tests.storage.test_store_contract import Flow

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec-test-Qx7"
MIN_US = 60 * 1_000_000


# -- a webhook receiver -------------------------------------------------------------


class Receiver:
    """A real HTTP server on loopback recording every POST; fails the first ``fail`` with 503."""

    def __init__(self, fail: int = 0, status: int = 503) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail, self.status = fail, status
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    if receiver.fail > 0:
                        receiver.fail -= 1
                        self.send_response(receiver.status)
                        self.end_headers()
                        return
                    receiver.received.append({"headers": dict(self.headers), "raw": body,
                                              "json": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/s3cr3t-path"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(r["json"]["event"], r["json"]["rule"]) for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def verify(record: dict[str, Any], secret: str = SECRET) -> bool:
    """What a receiver does: recompute the HMAC over timestamp.body."""
    headers = {k.lower(): v for k, v in record["headers"].items()}
    timestamp = headers[TIMESTAMP_HEADER.lower()]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + record["raw"], hashlib.sha256)
    return hmac.compare_digest(headers[SIGNATURE_HEADER.lower()], "sha256=" + expected.hexdigest())


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)  # polling interval of a condition wait


# -- rule files ---------------------------------------------------------------------


def _readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Alerts", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match, "README's Alerts section has no ```yaml rule file example"
    return match.group(1)


def test_readme_rule_file_example_parses() -> None:
    rules = parse_rules(_readme_example(), "README.md")
    assert {r.when for r in rules.rules} == {"failed", "stalled", "failure_rate", "p95_duration"}
    assert rules.webhook is not None
    by_name = {r.name: r for r in rules.rules}
    assert any(r.labels for r in rules.rules) and any(r.tenant for r in rules.rules)
    assert all(r.describe() for r in by_name.values())


def test_json_rule_files_parse_too() -> None:
    rules = parse_rules(json.dumps({"rules": [{"name": "slow", "when": "p95_duration", "duration": "2s",
                                               "window": 900, "flow": "checkout"}]}), "rules.json")
    (rule,) = rules.rules
    assert (rule.duration_s, rule.window.total_seconds(), rule.flow) == (2.0, 900.0, "checkout")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rules:\n  - {name: a, when: exploded}", "rules.0.when"),
        ("rules:\n  - {name: a, when: stalled}", "a 'stalled' rule needs 'for'"),
        ("rules:\n  - {name: a, when: failure_rate, rate: 1.5}", "rate"),
        ("rules:\n  - {name: a, when: stalled, for: soon}", "'soon' is not a duration"),
        ("rules:\n  - {name: a, when: failed}\n  - {name: a, when: failed}", "rule names must be unique: a"),
        ("rules:\n  - {name: a, when: failed, colour: red}", "colour"),
        ("rules:\n  - {name: a, when: failed, webhook: 'file:///etc/passwd'}", "http(s) URL"),
        ("rules: [unclosed", "not valid"),
    ],
)
def test_bad_rule_files_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(needle)):
        parse_rules(text, "rules.yaml")


# -- conditions and notices against chDB --------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    from dashfrog.storage import open_store

    s = open_store(f"chdb://{tmp_path / 'db'}")
    s.migrate()
    try:
        yield s
    finally:
        s.close()


def _insert(store: Any, *flows: Flow) -> None:
    for f in flows:
        store.insert_events(f.events, uuid.uuid4().hex)


def _run(tenant: str, name: str, start_us: int, *, fail: bool = False, ms: int = 3,
         end: bool = True, **labels: str) -> Flow:
    f = Flow(tenant=tenant, name=name, start_us=start_us, labels=labels).start()
    f.run_step("charge", error="card declined" if fail else None)
    f.t = start_us + ms * 1000  # flow_started is at start_us + 1 ms: the end lands ms after it
    if end:
        f.end()
    return f


RULES = """
webhook: {url}
rules:
  - name: checkout-failed
    when: failed
    flow: checkout
    labels: {{env: prod}}
  - name: stuck
    when: stalled
    for: 30m
  - name: error-rate
    when: failure_rate
    flow: import
    rate: 0.5
    window: 1h
    min_runs: 4
  - name: slow
    when: p95_duration
    flow: report
    duration: 1s
    window: 1h
    min_runs: 3
"""


def _evaluator(store: Any, url: str) -> Evaluator:
    settings = Settings(alert_webhook_secret=SECRET, alert_send_attempts=2)  # type: ignore[call-arg]
    ev = Evaluator(store, parse_rules(RULES.format(url=url)), settings)
    ev.check()
    return ev


def test_each_condition_opens_once_and_resolves_once(store: Any, receiver: Receiver) -> None:
    now = time.time_ns() // 1000
    ev = _evaluator(store, receiver.url)
    _insert(
        store,
        _run("acme", "checkout", now - 20 * MIN_US, env="prod"),
        _run("acme", "checkout", now - 10 * MIN_US, fail=True, env="prod"),
        _run("globex", "checkout", now - 10 * MIN_US, fail=True, env="staging"),  # out of scope
        _run("acme", "nightly", now - 120 * MIN_US, end=False),  # quiet for 2 h: stalled
        _run("acme", "nightly", now - 5 * MIN_US, end=False),  # running, recently active
        *[_run("initech", "import", now - (30 - i) * MIN_US, fail=i % 2 == 0) for i in range(4)],
        *[_run("acme", "import", now - (30 - i) * MIN_US, fail=i == 0) for i in range(4)],  # 25 %
        *[_run("acme", "report", now - (40 - i) * MIN_US, ms=1500 if i else 10) for i in range(3)],
    )
    sent = ev.run_once()
    assert sorted((e, n["rule"], n["tenant"]) for e, n in sent) == [
        ("opened", "checkout-failed", "acme"), ("opened", "error-rate", "initech"),
        ("opened", "slow", "acme"), ("opened", "stuck", "acme"),
    ]
    assert sorted(receiver.events()) == sorted((e, n["rule"]) for e, n in sent)
    assert all(verify(r) for r in receiver.received)
    failed = next(r["json"] for r in receiver.received if r["json"]["rule"] == "checkout-failed")
    assert failed["details"]["error"] == "builtins.ValueError: card declined"
    assert failed["details"]["failed_step"] == "charge" and failed["subject"] == "checkout"
    rate = next(r["json"] for r in receiver.received if r["json"]["rule"] == "error-rate")
    assert (rate["details"]["failed"], rate["details"]["finished"]) == (2, 4)
    slow = next(r["json"] for r in receiver.received if r["json"]["rule"] == "slow")
    assert slow["details"]["p95_ms"] == 1500.0

    # Still firing: nothing new, however often it is evaluated.
    assert ev.run_once() == [] and ev.run_once() == []
    assert len(receiver.received) == 4

    # A later checkout succeeds; the stalled flow moves: both resolve, once.
    stuck = _run("acme", "nightly", 0, end=False)
    _insert(store, _run("acme", "checkout", now - 1 * MIN_US, env="prod"))
    stalled_flow = next(r["json"]["subject"] for r in receiver.received if r["json"]["rule"] == "stuck")
    stuck.flow_id, stuck.events, stuck.t = stalled_flow, [], now
    stuck.end()
    _insert(store, stuck)
    sent = ev.run_once()
    assert sorted((e, n["rule"]) for e, n in sent) == [("resolved", "checkout-failed"), ("resolved", "stuck")]
    assert ev.run_once() == []
    assert len(receiver.received) == 6 and all(verify(r) for r in receiver.received)

    # It fails again: a new incident (next number), notified again.
    _insert(store, _run("acme", "checkout", now - 30 * 1_000_000, fail=True, env="prod"))
    ((event, body),) = ev.run_once()
    assert (event, body["rule"], body["seq"]) == ("opened", "checkout-failed", 1)


def test_notices_retry_with_backoff_then_give_up() -> None:
    flaky = Receiver(fail=2)
    delays: list[float] = []
    try:
        assert send_notice(flaky.url, {"event": "opened", "rule": "r"}, SECRET, attempts=5, sleep=delays.append)
        assert delays == [0.5, 1.0] and flaky.events() == [("opened", "r")] and verify(flaky.received[0])
    finally:
        flaky.close()
    down = Receiver(fail=10)
    delays.clear()
    try:
        assert not send_notice(down.url, {"event": "opened", "rule": "r"}, SECRET, attempts=4, sleep=delays.append)
        assert delays == [0.5, 1.0, 2.0] and down.events() == []
    finally:
        down.close()
    refused = Receiver(fail=1, status=400)
    delays.clear()
    try:  # a 4xx is the receiver saying no: not retried
        assert not send_notice(refused.url, {"event": "opened", "rule": "r"}, SECRET, attempts=4, sleep=delays.append)
        assert delays == [] and refused.events() == []
    finally:
        refused.close()


def test_secret_and_webhook_path_never_logged(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    down = Receiver(fail=10)
    down.close()  # nothing listens there any more
    with caplog.at_level("DEBUG", logger="dashfrog.alerts"):
        send_notice(down.url, {"event": "opened", "rule": "r"}, SECRET, attempts=2, sleep=lambda s: None)
    assert caplog.records and "given up" in caplog.text
    assert SECRET not in caplog.text and "s3cr3t-path" not in caplog.text


def test_rules_without_a_secret_or_webhook_refuse_to_start(store: Any, receiver: Receiver, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: a, when: failed}\n")
    with pytest.raises(ConfigurationError, match="no webhook"):
        create_app(store, Settings(alert_rules=str(rules), alert_webhook_secret=SECRET))  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="DASHFROG_ALERT_WEBHOOK_SECRET"):
        create_app(store, Settings(alert_rules=str(rules), alert_webhook_url=receiver.url))  # type: ignore[call-arg]


def test_api_lists_open_incidents_per_tenant_and_runs_the_evaluator(
    store: Any, receiver: Receiver, tmp_path: Path
) -> None:
    now = time.time_ns() // 1000
    _insert(store, _run("acme", "checkout", now - MIN_US, fail=True, env="prod"),
            _run("umbrella", "nightly", now - 300 * MIN_US, end=False))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=receiver.url))
    settings = Settings(alert_rules=str(rules), alert_webhook_secret=SECRET, alert_interval_s=0.1,  # type: ignore[call-arg]
                        admin_token="root", tenant_tokens="umbrella:tok-u")
    with TestClient(create_app(store, settings)) as api:  # the lifespan starts the evaluator
        wait_until(lambda: len(receiver.received) == 2, 20, "two notices from the API's evaluator")
        admin = api.get("/api/alerts", headers={"Authorization": "Bearer root"}).json()
        assert sorted(i["rule"] for i in admin["incidents"]) == ["checkout-failed", "stuck"]
        assert all(i["open"] and i["opened_at"] for i in admin["incidents"])
        assert admin["evaluator"]["rounds"] >= 1 and admin["evaluator"]["last_error"] is None
        mine = api.get("/api/alerts", headers={"Authorization": "Bearer tok-u"}).json()
        assert [(i["rule"], i["tenant"]) for i in mine["incidents"]] == [("stuck", "umbrella")]
        assert api.get("/api/alerts").status_code == 401
    assert SECRET not in json.dumps(admin)


def test_cli_lists_and_tests_rules(store: Any, tmp_path: Path, receiver: Receiver) -> None:
    from dashfrog import query
    from dashfrog._settings import _env_settings, set_settings
    from dashfrog.runtime._cli import main

    now = time.time_ns() // 1000
    _insert(store, _run("acme", "checkout", now - MIN_US, fail=True, env="prod"))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=receiver.url))
    env = {"DASHFROG_ALERT_RULES": str(rules), "DASHFROG_ALERT_WEBHOOK_SECRET": SECRET}
    set_settings(None)
    _env_settings.cache_clear()  # the CLI reads the environment given below
    query.use_store(store)  # `alerts test` reads flows through dashfrog.query, as `dashfrog flows` does
    runner = CliRunner()
    try:
        listed = runner.invoke(main, ["alerts", "list"], env=env)
        assert listed.exit_code == 0, listed.output
        assert "checkout-failed  [failed]" in listed.output and "4 rule(s)" in listed.output
        assert "s3cr3t-path" not in listed.output  # the webhook shows as scheme://host only
        tested = runner.invoke(main, ["alerts", "test", "--send"], env=env)
        assert tested.exit_code == 0, tested.output
        assert "FIRING checkout-failed tenant=acme checkout" in tested.output
        assert "1 firing, 3 rule(s) quiet" in tested.output
        assert receiver.events() == [("test", "checkout-failed")] and verify(receiver.received[0])
        _env_settings.cache_clear()
        bad = runner.invoke(main, ["alerts", "list"], env={**env, "DASHFROG_ALERT_RULES": str(tmp_path / "nope.yaml")})
        assert bad.exit_code == 1 and "cannot read it" in bad.output
    finally:
        query.use_store(None)
        _env_settings.cache_clear()


# -- two `dashfrog api` processes, one ClickHouse server ----------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ClickHouse server: DASHFROG_TEST_CLICKHOUSE_URL's, else the clickhouse-http
    stand-in beside the repository (../shared/tools), else skip."""
    url = os.environ.get("DASHFROG_TEST_CLICKHOUSE_URL")
    if url:
        yield url
        return
    shim = ROOT.parent / "shared" / "tools" / "clickhouse-http" / "server.py"
    if not shim.exists():
        pytest.skip("no ClickHouse server: set DASHFROG_TEST_CLICKHOUSE_URL (the two-process alert test "
                    "needs one store that both processes share)")
    port = _free_port()
    data = tmp_path_factory.mktemp("clickhouse-http")
    proc = subprocess.Popen([sys.executable, str(shim), "--port", str(port), "--path", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up() -> bool:
            assert proc.poll() is None, f"the clickhouse-http stand-in exited with {proc.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False
        wait_until(up, 60, "the clickhouse-http stand-in")
        yield f"clickhouse://default:x@127.0.0.1:{port}/default"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_two_api_processes_notify_each_incident_once(
    clickhouse_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    from dashfrog.storage import open_store

    parts = urlsplit(clickhouse_url)
    database = f"dashfrog_alerts_{uuid.uuid4().hex[:10]}"
    url = urlunsplit(parts._replace(path="/" + database))
    store = open_store(url)
    store.migrate()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=receiver.url))
    procs: list[subprocess.Popen[bytes]] = []
    ports = [_free_port(), _free_port()]
    try:
        now = time.time_ns() // 1000
        _insert(store, _run("acme", "checkout", now - MIN_US, fail=True, env="prod"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DASHFROG_")}
        env.update(DASHFROG_CLICKHOUSE_URL=url, DASHFROG_ALERT_RULES=str(rules),
                   DASHFROG_ALERT_WEBHOOK_SECRET=SECRET, DASHFROG_ALERT_INTERVAL_S="0.2",
                   DASHFROG_API_HOST="127.0.0.1", PYTHONPATH=str(ROOT))
        dashfrog = str(Path(sys.executable).parent / "dashfrog")
        for port in ports:
            procs.append(subprocess.Popen([dashfrog, "api"], env={**env, "DASHFROG_API_PORT": str(port)},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

        def rounds(port: int) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/alerts", timeout=5) as r:
                    return int(json.loads(r.read())["evaluator"]["rounds"])
            except OSError:
                for p in procs:
                    assert p.poll() is None, p.stderr.read().decode() if p.stderr else p.returncode
                return -1

        def both_past(mark: list[int], more: int) -> bool:
            return all(rounds(p) >= m + more for p, m in zip(ports, mark, strict=True))

        wait_until(lambda: receiver.events(), 60, "the first notice")
        # Both processes have evaluated several times since: still exactly one notice.
        mark = [rounds(p) for p in ports]
        wait_until(lambda: both_past(mark, 5), 60, "five more rounds in each process")
        assert receiver.events() == [("opened", "checkout-failed")]

        _insert(store, _run("acme", "checkout", now, env="prod"))
        wait_until(lambda: len(receiver.events()) == 2, 60, "the resolved notice")
        mark = [rounds(p) for p in ports]
        wait_until(lambda: both_past(mark, 5), 60, "five more rounds in each process")
        assert receiver.events() == [("opened", "checkout-failed"), ("resolved", "checkout-failed")]
        assert all(verify(r) for r in receiver.received)
        opened, resolved = (r["json"] for r in receiver.received)
        assert opened["incident"] == resolved["incident"] and opened["seq"] == resolved["seq"] == 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        store._execute(f"DROP DATABASE IF EXISTS `{database}`")
        store.close()
