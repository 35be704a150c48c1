"""One settings object for every DashFrog process, read from ``DASHFROG_*``.

Each field's description feeds ``dashfrog settings`` and the README's
configuration table; a test checks that every field is documented there.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class Settings(BaseSettings):
    """DashFrog configuration. Environment variables are ``DASHFROG_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="DASHFROG_", env_file=".env", extra="ignore", frozen=True
    )

    # -- SDK ---------------------------------------------------------------
    disabled: bool = Field(False, description="Turn the SDK into a no-op: no events, no threads.")
    service_name: str = Field(
        default_factory=lambda: os.environ.get("OTEL_SERVICE_NAME")
        or os.path.basename(sys.argv[0] or "python")
        or "python",
        description="Service name on every event (defaults to OTEL_SERVICE_NAME, then the program name).",
    )
    kafka_bootstrap: str | None = Field(
        None,
        description=f"Kafka bootstrap servers. Unset: SDKs send to {DEFAULT_BOOTSTRAP} and `dashfrog up` starts a local broker there.",
    )
    topic_prefix: str = Field("", description="Prefix put before both topic names (e.g. `staging.`).")
    events_topic: str = Field("dashfrog.events", description="Topic the SDK writes events to.")
    dlq_topic: str = Field(
        "dashfrog.events.dlq", description="Topic the processor sends unprocessable messages to."
    )
    topic_partitions: int = Field(
        6, ge=1, description="Partitions when DashFrog creates the events topic itself."
    )
    client_id: str = Field("dashfrog", description="Kafka client id of the SDK's producer.")
    queue_size: int = Field(
        50_000, ge=1, description="Events the SDK buffers in memory before it drops new ones."
    )
    queue_max_bytes: int = Field(
        32 * 1024 * 1024,
        ge=64 * 1024,
        description="Memory the SDK's event queue may hold, in bytes: each queued event "
        "counts its Avro encoding, its flow id and a fixed 192 bytes for the Python objects "
        "around them. Past it new events are dropped, as past DASHFROG_QUEUE_SIZE.",
    )
    queue_block_ms: float = Field(
        0.0,
        ge=0,
        description="How long a flow or step call may wait for queue space before dropping (0: never wait).",
    )
    linger_ms: float = Field(
        20.0, ge=0, description="How long the sender waits to fill a message before sending."
    )
    batch_max_events: int = Field(
        1000, ge=1, description="Most events packed into one Kafka message."
    )
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "zstd",
        description="Kafka compression of the SDK's messages. zstd (through cramjam, a "
        "dependency) compresses smaller than gzip at a quarter of its CPU, which the "
        "sender spends under the application's GIL.",
    )
    exit_flush_timeout_s: float = Field(
        5.0, ge=0, description="How long interpreter exit waits to send what is queued."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol (passed to aiokafka)."
    )
    sasl_mechanism: str | None = Field(
        None, description="SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL connections to Kafka.")
    ssl_certfile: str | None = Field(None, description="Client certificate for SSL.")
    ssl_keyfile: str | None = Field(None, description="Client key for SSL.")
    max_labels: int = Field(32, ge=0, description="Most labels on a flow, or attributes on a step.")
    max_label_key_length: int = Field(64, ge=1, description="Longest label or attribute key.")
    max_label_value_length: int = Field(
        512, ge=1, description="Longest label or attribute value."
    )
    on_missing_flow: Literal["warn", "raise", "ignore"] = Field(
        "warn",
        description="What step.start(), flow.event() and flow.end() do with no current flow.",
    )
    error_stack_limit: int = Field(
        4096, ge=0, description="Characters of a traceback kept on a failed step or flow."
    )

    metrics_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often the SDK sends what its metrics (dashfrog.metrics) aggregated: "
        "one batch of points per interval, and one at exit.",
    )
    metrics_max_series: int = Field(
        2000,
        ge=1,
        description="Most series (tenant and label values) one metric keeps per interval; "
        "values for more go to one overflow series (tenant `_overflow`), counted in "
        "dashfrog.stats() as metrics_overflowed.",
    )

    # -- Context propagation -------------------------------------------------
    context_secret: SecretStr | None = Field(
        None,
        description="Shared secret signing propagated flow context (HMAC-SHA256). Services must share it.",
    )
    trusted_networks: str = Field(
        "",
        description="Comma-separated CIDRs whose unsigned flow context is honoured; `none` trusts no network. Empty: loopback when no context secret is set, else none.",
    )
    max_baggage_bytes: int = Field(
        4096,
        ge=256,
        description="An incoming baggage header larger than this (and any over 8 KB, W3C's limit) is ignored, measured before it is parsed.",
    )
    context_max_age_s: float = Field(
        604800,
        gt=0,
        description="Signed flow context older than this is ignored (default 7 days, so Celery ETAs fit).",
    )

    # -- Processor and storage ----------------------------------------------
    clickhouse_url: str = Field(
        "chdb://.dashfrog/chdb",
        description="Store: `chdb://PATH` (embedded) or `clickhouse://user:pass@host:8123/db`.",
    )
    retention_days: int = Field(90, ge=1, description="Days raw events and their projections (flows, steps, flow_runs) are kept.")
    stalled_after_s: float = Field(
        300.0, gt=0, description="A running flow with no activity for this long shows as stalled."
    )
    processor_group: str = Field("dashfrog-processor", description="Consumer group of workers.")
    processor_batch_size: int = Field(
        500, ge=1, description="Most Kafka messages one processor write covers."
    )
    processor_batch_wait_s: float = Field(
        0.05, gt=0, description="Longest wait to fill a processor batch (under load batches fill sooner)."
    )
    processor_fetch_wait_ms: float = Field(
        100.0,
        ge=1,
        description="Longest a processor fetch waits on the broker for new events (Faust's own default is 1500).",
    )
    rebalance_timeout_s: float = Field(
        6.0, gt=0, description="Consumer group rebalance timeout of the processor."
    )
    processor_stall_s: float = Field(
        60.0,
        ge=0,
        description=(
            "A worker with messages waiting on its partitions that reads none of them, with no write under way,"
            " for this long exits with code 3 so that its supervisor restarts it (a Faust consumer can stop"
            " fetching after a rebalance: faust-streaming issue #629). 0: never."
        ),
    )
    session_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "A worker that stops heartbeating (killed, frozen) loses its partitions to the others after this long;"
            " it heartbeats every tenth of it. Apache Kafka refuses values under its group.min.session.timeout.ms (6 s by default)."
        ),
    )

    # -- API ------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the API and UI listen on.")
    api_port: int = Field(8000, ge=0, le=65535, description="Port the API and UI listen on.")
    api_url: str | None = Field(
        None,
        description="Where `dashfrog.query` and the CLI reach a running API (default: http://api_host:api_port).",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token reading every tenant and running SQL. With no token at all (this or "
        "tenant tokens) the API is open, on loopback only.",
    )
    tenant_tokens: str = Field(
        "",
        description="Comma-separated `tenant:token` pairs; such a token reads only its tenant.",
    )
    api_allow_open: bool = Field(
        False,
        description="Serve the API without any token on a non-loopback address "
        "(DASHFROG_API_HOST); without it such a start is refused.",
    )
    sql_max_execution_s: float = Field(
        30.0, ge=0, description="Longest a user SQL query may run, in seconds (0: no limit)."
    )
    sql_max_result_rows: int = Field(
        100_000, ge=0, description="Most rows a user SQL query may return (0: no limit)."
    )
    sql_max_result_bytes: int = Field(
        100_000_000,
        ge=0,
        description="Largest result a user SQL query may return, in bytes as the engine counts them (0: no limit).",
    )
    sql_max_memory_bytes: int = Field(
        2_000_000_000, ge=0, description="Most memory one user SQL query may use, in bytes (0: no limit)."
    )
    sql_max_threads: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2),
        ge=1,
        description="Threads one user SQL query may run on (default: half the cores, at least 1), "
        "so that ingestion keeps the other cores while it runs.",
    )

    # -- alerts ---------------------------------------------------------------
    alert_rules: str | None = Field(
        None,
        description="Path of the alert rule file (YAML or JSON, see Alerts); unset: no alerts. "
        "`dashfrog api` and `dashfrog up` evaluate it.",
    )
    alert_webhook_url: str | None = Field(
        None, description="Webhook that alert notices are POSTed to, for rules that name none."
    )
    alert_webhook_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key signing every alert notice (X-DashFrog-Signature); "
        "required to send any.",
    )
    alert_interval_s: float = Field(
        30.0, gt=0, description="Seconds between two evaluations of the alert rules."
    )
    alert_send_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Tries per alert notice (backoff 0.5 s doubling, at most 30 s apart) before it is given up.",
    )

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or DEFAULT_BOOTSTRAP

    @property
    def topic(self) -> str:
        return self.topic_prefix + self.events_topic

    @property
    def dlq(self) -> str:
        return self.topic_prefix + self.dlq_topic

    def kafka_options(self) -> dict[str, Any]:
        """Connection options for aiokafka clients (security included)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        return options


@cache
def _env_settings() -> Settings:
    return Settings()


_override: Settings | None = None


def get_settings() -> Settings:
    """The active settings: those given to ``setup()``, else the environment's."""
    return _override if _override is not None else _env_settings()


def set_settings(settings: Settings | None) -> None:
    global _override
    _override = settings


def effective_settings(env_file: str = ".env") -> list[tuple[str, str, str]]:
    """(environment variable, value in effect, where it came from) for every
    setting, as this process reads them: ``env``, ``.env`` or ``default``.
    Secrets show as ``********`` when set."""
    from dotenv import dotenv_values

    environ = {k.upper() for k in os.environ}
    in_file = {k.upper() for k, v in dotenv_values(env_file).items() if v is not None}
    current = Settings(_env_file=env_file)  # type: ignore[call-arg]
    rows = []
    for name in Settings.model_fields:
        env = f"DASHFROG_{name.upper()}"
        source = "env" if env in environ else ".env" if env in in_file else "default"
        value = getattr(current, name)
        if isinstance(value, SecretStr):
            shown = "********"
        elif value is None:
            shown = ""
        else:
            shown = str(value)
        rows.append((env, shown, source))
    return rows


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting."""
    rows = []
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "(computed)"
        elif field.default is None:
            default = ""
        else:
            default = str(field.default)
        rows.append((f"DASHFROG_{name.upper()}", default, field.description or ""))
    return rows
