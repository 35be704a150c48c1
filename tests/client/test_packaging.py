"""The SDK stands on its own dependencies and leaves OpenTelemetry's global setup alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dashfrog._settings import Settings

_BLOCK_OPTIONAL = textwrap.dedent(
    """
    import sys
    BLOCKED = ("faust", "mode", "chdb", "clickhouse_connect", "pyarrow", "pandas",
               "fastapi", "flask", "starlette", "celery", "requests", "httpx", "opentelemetry.sdk")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED or name.startswith("opentelemetry.sdk"):
                raise ImportError(f"blocked optional dependency {name}")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def test_sdk_imports_and_runs_without_optional_dependencies() -> None:
    code = _BLOCK_OPTIONAL + textwrap.dedent(
        """
        import dashfrog
        from dashfrog import flow, step
        import dashfrog.query  # the read side's client stays importable too
        dashfrog.setup(disabled=True)
        with flow.start(name="n", tenant="t") as flow_id, step.start("s"):
            assert flow.current_id() == flow_id
        from opentelemetry import trace
        # The SDK never installs a TracerProvider of its own.
        assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_kafka_security_settings_pass_through_to_aiokafka() -> None:
    s = Settings(
        kafka_bootstrap="k1:9093,k2:9093",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="s3cret",  # type: ignore[arg-type]
    )
    options = s.kafka_options()
    assert options == {
        "bootstrap_servers": "k1:9093,k2:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
    }
    # Secrets stay out of reprs, and so out of logs.
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump())


# -- the wheel, installed without extras into a fresh virtualenv ------------------

ROOT = Path(__file__).resolve().parents[2]
# What setuptools says when pyproject.toml's packaging config is off.
_PACKAGING_WARNINGS = ("BuildBackendWarning", "SetuptoolsDeprecationWarning", "SetuptoolsWarning")


@pytest.fixture(scope="module")
def sdk_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh virtualenv with the wheel built from this tree and its base
    dependencies only (no extras); yields its bin folder and the build output."""
    work = tmp_path_factory.mktemp("sdk-only")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(work / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (work / "dist").glob("dashfrog-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv / "bin", build.stdout + build.stderr + install.stdout + install.stderr


def test_building_and_installing_prints_no_packaging_warning(sdk_only: tuple[Path, str]) -> None:
    _, output = sdk_only
    assert not [w for w in _PACKAGING_WARNINGS if w in output], output


def test_help_works_with_the_sdk_alone(sdk_only: tuple[Path, str]) -> None:
    bin_dir, _ = sdk_only
    extras = subprocess.run(
        [str(bin_dir / "python"), "-c", "import importlib.util as u; print([m for m in "
         "('fastapi', 'faust', 'chdb', 'clickhouse_connect', 'pyarrow') if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=60,
    )
    assert extras.stdout.strip() == "[]", "the fresh virtualenv must hold no extra"
    result = subprocess.run([str(bin_dir / "dashfrog"), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("api", "events", "flows", "settings", "up", "worker"):
        assert f"\n  {command} " in result.stdout, command
    # Commands that need an extra say which, in one line, when run.
    api = subprocess.run([str(bin_dir / "dashfrog"), "api", "--help"], capture_output=True, text=True, timeout=60)
    assert api.returncode == 1
    assert api.stderr.strip().count("\n") == 0 and "pip install 'dashfrog[" in api.stderr, api.stderr
