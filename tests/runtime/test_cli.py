"""The command line: events tail and the settings table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dashfrog
from dashfrog import flow, step
from dashfrog._settings import settings_table

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "dashfrog"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_events_tail_prints_decoded_events(sdk: dict) -> None:
    with flow.start(name="data_import", tenant="acme-corp", env="prod"):
        with step.start("validate"):
            pass
    with flow.start(name="other", tenant="globex"):
        pass
    assert dashfrog.flush(10)
    env = {"DASHFROG_KAFKA_BOOTSTRAP": sdk["bootstrap"], "DASHFROG_TOPIC_PREFIX": sdk["prefix"]}

    as_json = run_cli("events", "tail", "--from-beginning", "--json", "--tenant", "acme-corp", "-n", "4", env=env)
    assert as_json.returncode == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["kind"] for e in events] == ["flow_started", "step_started", "step_ended", "flow_ended"]
    assert events[0]["labels"] == {"env": "prod"} and {e["tenant"] for e in events} == {"acme-corp"}

    human = run_cli("events", "tail", "--from-beginning", "--idle-timeout", "2", env=env)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert len(lines) == 6
    assert any("acme-corp data_import" in line and "step_ended validate [success]" in line for line in lines)
    assert any("globex other" in line and "flow_ended [success]" in line for line in lines)


def test_events_tail_explains_an_unreachable_broker() -> None:
    result = run_cli(
        "events", "tail", env={"DASHFROG_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, timeout=120
    )
    assert result.returncode != 0
    assert "cannot read dashfrog.events from 127.0.0.1:1" in result.stderr


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [env for env, _, _ in settings_table() if f"`{env}`" not in readme]
    assert not missing, f"add these to README.md (dashfrog settings --markdown): {missing}"
    assert all(doc for _, _, doc in settings_table())


def test_settings_command_lists_every_variable() -> None:
    result = run_cli("settings", "--markdown")
    assert result.returncode == 0, result.stderr
    for env, _, _ in settings_table():
        assert f"`{env}`" in result.stdout
