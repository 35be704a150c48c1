"""Run the processor in an asyncio loop we own, and the ``dashfrog worker`` command.

Faust's own CLI and ``mode.Worker`` install signal handlers, logging and a
spinner of their own; ``dashfrog up`` also runs the broker and the API in the
same process, so we start and stop the Faust app ourselves instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import click

from dashfrog import DashfrogError
from dashfrog._models import StatsFilter
from dashfrog._settings import Settings, get_settings
from dashfrog.runtime import ensure_topics, redact, run_with_store, terminal_progress
from dashfrog.storage import SchemaOutdatedError, Store, open_store
from dashfrog.streams._processor import Processor

log = logging.getLogger("dashfrog.streams")


async def ensure_event_topics(settings: Settings) -> None:
    """Create the events and DLQ topics unless they exist (idempotent)."""
    options = {k: v for k, v in settings.kafka_options().items() if k != "bootstrap_servers"}
    await ensure_topics(
        settings.bootstrap,
        {settings.topic: settings.topic_partitions, settings.dlq: settings.topic_partitions},
        **options,
    )


class StatusLine:
    """Formats events/s since the last call, the lag and the number of flows."""

    def __init__(self, processor: Processor, count_flows: Callable[[], Awaitable[int | None]] | None = None) -> None:
        self.processor = processor
        self.count_flows = count_flows
        self._last_events = processor.stats.events
        self._last_at = time.monotonic()

    async def line(self) -> str:
        now = time.monotonic()
        stats = self.processor.stats
        rate = (stats.events - self._last_events) / max(now - self._last_at, 1e-6)
        self._last_events, self._last_at = stats.events, now
        lag = self.processor.lag()
        flows: int | None = None
        if self.count_flows is not None:
            with contextlib.suppress(Exception):
                flows = await self.count_flows()
        down_since = self.processor.broker.down_since
        # While the broker is away the consumer's high-water marks are stale: no lag figure.
        backlog = (
            f"broker unreachable for {time.time() - down_since:,.0f} s"
            if down_since is not None
            else f"lag {'?' if lag is None else f'{lag:,}'} msgs"
        )
        parts = [
            f"{rate:,.0f} events/s",
            backlog,
            f"flows {'?' if flows is None else f'{flows:,}'}",
            f"events {stats.events:,}",
        ]
        if stats.dead_lettered:
            parts.append(f"dead-lettered {stats.dead_lettered:,}")
        if stats.write_failures:
            parts.append(f"write retries {stats.write_failures:,} (last: {stats.last_error})")
        return "dashfrog: " + " · ".join(parts)


def flow_counter(processor: Processor) -> Callable[[], Awaitable[int | None]]:
    """Count flows through the storage read queries, in the store thread."""

    async def count() -> int | None:
        stats = await asyncio.to_thread(processor.store.find_stats, StatsFilter.parse())
        return int(stats.runs)

    return count


async def run_processor(
    settings: Settings,
    store: Store,
    stop: asyncio.Event,
    *,
    status_every: float | None = None,
    echo: Callable[[str], Any] = click.echo,
    started: Callable[[Processor], Any] | None = None,
    **processor_options: Any,
) -> int:
    """Run until ``stop`` is set or the Faust app crashes; returns an exit code."""
    await ensure_event_topics(settings)
    processor = Processor(settings, store, **processor_options)
    await processor.start()
    if started is not None:
        started(processor)
    status = StatusLine(processor, flow_counter(processor)) if status_every else None
    next_status = time.monotonic() + (status_every or 0)
    stats = processor.stats
    progress, idle_since = (stats.messages, stats.write_failures), time.monotonic()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
            if processor.crashed:
                echo(f"dashfrog: processor crashed: {processor.crash_reason!r}")
                return 1
            # A consumer can hold partitions and stop fetching after a rebalance
            # (faust-streaming #629); nothing inside the process undoes it, a restart does.
            now, lag = time.monotonic(), processor.lag()
            mark = (stats.messages, stats.write_failures)
            if mark != progress or not lag or processor.writing or processor.broker.down_since is not None:
                progress, idle_since = mark, now
            elif settings.processor_stall_s and now - idle_since >= settings.processor_stall_s:
                echo(
                    f"dashfrog: {lag:,} messages wait on this worker's partitions and it has read none for "
                    f"{settings.processor_stall_s:g} s; exiting with code 3 so that its supervisor restarts it "
                    "(a Faust consumer can stop fetching after a rebalance: faust-streaming issue #629; "
                    "DASHFROG_PROCESSOR_STALL_S sets the wait, 0 turns this off)"
                )
                return 3
            if status is not None and time.monotonic() >= next_status:
                echo(await status.line())
                next_status = time.monotonic() + (status_every or 0)
        return 0
    finally:
        await processor.stop()


@click.command("worker")
@click.option("--status-every", type=float, default=5.0, show_default=True, help="Seconds between status lines (0: none).")
@click.option("--loglevel", default="warning", show_default=True, help="Log level (debug, info, warning, error).")
def worker_command(status_every: float, loglevel: str) -> None:
    """Run the processor: consume the events topic and write to the store.

    Several workers with the same DASHFROG_PROCESSOR_GROUP share the partitions.
    """
    settings = get_settings()

    async def main(stop: asyncio.Event, store: Store) -> int:
        try:
            store.ensure_schema()
        except SchemaOutdatedError as exc:
            click.echo(f"dashfrog worker: {exc}", err=True)
            return 2
        click.echo(
            f"dashfrog worker: {settings.topic} on {settings.bootstrap} → {redact(settings.clickhouse_url)} "
            f"(group {settings.processor_group})"
        )
        return await run_processor(settings, store, stop, status_every=status_every or None)

    sys.exit(run_with_store(settings, loglevel, main))



@click.command("migrate")
def migrate_command() -> None:
    """Create or upgrade the schema at DASHFROG_CLICKHOUSE_URL, then exit.

    The one command that needs DDL rights (CREATE, ALTER, DROP VIEW): run it
    on install and before starting workers and API processes of a new
    version; they only check the schema version. Safe to run any number of
    times, even concurrently.
    """
    settings = get_settings()
    try:
        with open_store(settings.clickhouse_url) as store:
            before = store.pending_migrations()
            with terminal_progress("dashfrog migrate") as progress:
                store.migrate(progress)
            version = store.schema_version()
    except DashfrogError as exc:
        raise click.ClickException(str(exc)) from exc
    applied = f"applied {before}" if before else "nothing to apply"
    click.echo(f"dashfrog migrate: {redact(settings.clickhouse_url)} at schema version {version} ({applied})")
