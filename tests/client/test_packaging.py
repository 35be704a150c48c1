"""The SDK stands on its own dependencies and leaves OpenTelemetry's global setup alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
