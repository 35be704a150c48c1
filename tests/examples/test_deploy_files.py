"""Compose and Docker files cannot run here (no Docker engine): check them statically."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from dashfrog._settings import Settings
from dashfrog.runtime._cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_demo_compose_runs_real_commands_with_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "examples/demo-app/docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "clickhouse", "dashfrog-worker", "dashfrog-api", "demo-app"} <= set(services)
    commands = set(main.list_commands(None))  # type: ignore[arg-type]
    known = {f"DASHFROG_{name.upper()}" for name in Settings.model_fields}
    for name, service in services.items():
        if service.get("build"):
            assert (ROOT / "examples/demo-app" / service["build"] / "Dockerfile").exists()
            if "command" in service:
                assert service["command"][0] in commands, f"{name}: unknown dashfrog command"
        for variable in service.get("environment") or {}:
            if variable.startswith("DASHFROG_"):
                assert variable in known, f"{name}: {variable} is not a setting"
    assert services["dashfrog-api"]["ports"] == ["8000:8000"]


def test_dockerfile_copies_existing_paths() -> None:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_cli_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("events", "settings"):
        assert command in result.output


def test_kubernetes_manifest_uses_real_commands_and_settings() -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/dashfrog.yaml").read_text()))
    commands = set(main.list_commands(None))  # type: ignore[arg-type]
    known = {f"DASHFROG_{name.upper()}" for name in Settings.model_fields}
    config = next(d for d in documents if d["kind"] == "ConfigMap")
    assert set(config["data"]) <= known
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"dashfrog-worker", "dashfrog-api"}
    for deployment in deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"][0] in commands
        assert {e["name"] for e in container.get("env", [])} <= known
