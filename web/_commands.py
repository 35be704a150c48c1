"""``dashfrog up`` (everything in one process) and ``dashfrog api`` (the API alone).

``up`` lives here rather than in ``streams`` because it composes the
processor with the API, and nothing may depend on ``web``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from dashfrog._exceptions import ConfigurationError, StorageError
from dashfrog._settings import Settings, get_settings
from dashfrog.runtime import redact, run_with_store, start_broker
from dashfrog.storage import SchemaOutdatedError, Store, chdb_owner
from dashfrog.web._app import create_app
from dashfrog.web._auth import auth_mode, check_bind


def api_server(app: Any, settings: Settings, *, log_level: str = "warning") -> Any:
    """A uvicorn server that leaves signal handling to us; refuses an open
    API on a non-loopback address (ConfigurationError)."""
    import uvicorn

    check_bind(settings)

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Our loop's handlers stop the processor and the API together.
            yield

    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=log_level,
        # The app's lifespan runs the alert evaluator (web._alerts_api) while the API serves.
        lifespan="on",
        # Live streams never finish by themselves: don't wait on them for long.
        timeout_graceful_shutdown=3,
    )
    return _Server(config)


async def serve_api_until(
    stop: asyncio.Event, store: Store, settings: Settings, *, log_level: str = "warning"
) -> None:
    app = create_app(store, settings)
    server = api_server(app, settings, log_level=log_level)
    task = asyncio.create_task(server.serve())
    try:
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stopped.cancel()
            task.result()  # a failed bind raises here
            raise click.ClickException(f"the API on {settings.api_host}:{settings.api_port} stopped")
    finally:
        server.should_exit = True
        await app.state.live.close()  # ends open UI streams so the server can stop now
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 10)


@click.command("api")
@click.option("--loglevel", default="warning", show_default=True, help="Log level of the HTTP server.")
def api_command(loglevel: str) -> None:
    """Serve the HTTP API against DASHFROG_CLICKHOUSE_URL (no processor in this process)."""
    settings = get_settings()
    _check_bind(settings)

    async def main(stop: asyncio.Event, store: Store) -> int:
        try:
            store.ensure_schema()  # reads only on a server: the API needs no DDL rights
        except SchemaOutdatedError as exc:
            click.echo(f"dashfrog api: {exc}", err=True)
            return 2
        click.echo(f"dashfrog api: http://{settings.api_host}:{settings.api_port} ({auth_mode(settings)})")
        await serve_api_until(stop, store, settings, log_level=loglevel)
        return 0

    sys.exit(run_with_store(settings, loglevel, main))


@click.command("up")
@click.option("--status-every", type=float, default=5.0, show_default=True, help="Seconds between status lines (0: none).")
@click.option("--loglevel", default="warning", show_default=True, help="Log level (debug, info, warning, error).")
def up_command(status_every: float, loglevel: str) -> None:
    """Run everything in one process: a local broker (unless DASHFROG_KAFKA_BOOTSTRAP is
    set), the processor, chDB storage and the API. Ctrl-C stops it cleanly."""
    from dashfrog.streams import run_processor

    settings = get_settings()
    _check_bind(settings)
    _check_store_free(settings)
    broker = None
    if not settings.kafka_bootstrap:
        _host, _, port = settings.bootstrap.rpartition(":")
        try:
            broker = start_broker(int(port))
        except Exception as exc:
            raise click.ClickException(
                f"cannot start the local broker on {settings.bootstrap}: {exc} "
                "(is another `dashfrog up` running? or set DASHFROG_KAFKA_BOOTSTRAP)"
            ) from exc
        click.echo(f"dashfrog up: local broker on {broker.bootstrap} (memory storage)")
        if "session_timeout_s" not in settings.model_fields_set:
            # tansu holds every group join for half the session timeout, and one
            # local worker has no partner to hand partitions to: join fast.
            settings = settings.model_copy(update={"session_timeout_s": 2.0})

    async def main(stop: asyncio.Event, store: Store) -> int:
        store.migrate()
        # In-process dashfrog.query calls read this store directly.
        from dashfrog import query

        query.use_store(store)
        api = asyncio.create_task(
            # The store gives reads and writes their own connections: the
            # API's reads never wait behind the processor's writes, nor these behind them.
            serve_api_until(stop, store, settings, log_level=loglevel)
        )
        click.echo(
            f"dashfrog up: {settings.topic} on {settings.bootstrap} → {redact(settings.clickhouse_url)}; "
            f"API on http://{settings.api_host}:{settings.api_port} ({auth_mode(settings)}). Ctrl-C stops."
        )
        try:
            code = await run_processor(settings, store, stop, status_every=status_every or None)
        finally:
            stop.set()
            try:
                await api
            except click.ClickException as exc:
                click.echo(f"dashfrog up: {exc.message}", err=True)
                code = 1
        return code

    try:
        code = run_with_store(settings, loglevel, main)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if broker is not None:
            broker.stop()
    click.echo("dashfrog up: stopped")
    sys.exit(code)


def _check_store_free(settings: Settings) -> None:
    # A chDB database has one owning process: say so before starting a broker.
    url = settings.clickhouse_url
    owner = chdb_owner(url) if url.startswith("chdb://") else None
    if owner is not None:
        raise click.ClickException(
            f"{redact(url)} is in use by process {owner}: is another `dashfrog up` running? "
            "Stop it, or set DASHFROG_CLICKHOUSE_URL to another chdb:// path"
        )


def _check_bind(settings: Settings) -> None:
    # Before anything starts: one clear line, no broker or store left behind.
    try:
        check_bind(settings)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
