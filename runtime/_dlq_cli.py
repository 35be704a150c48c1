"""``dashfrog dlq``: the messages the processor dead-lettered, from the
``dead_letters`` table.

It reads where ``dashfrog.query`` reads: a store registered in this process,
the ClickHouse server of ``DASHFROG_CLICKHOUSE_URL``, or else the running
API's ``GET /api/dead-letters`` (which needs the admin token).
"""

from __future__ import annotations

import json
from typing import Any

import click

from dashfrog._exceptions import DashfrogError, QueryError


def read_dead_letters(
    limit: int, topic: str | None, partition: int | None, reason: str | None, since: str | None
) -> list[dict[str, Any]]:
    """Dead letters, newest first, from wherever ``dashfrog.query`` reads."""
    from dashfrog import query
    from dashfrog._timeexpr import parse_time

    backend: Any = query._backend()
    store = getattr(backend, "store", None)
    if store is not None:
        when = None
        if since:
            try:
                when = parse_time(since)
            except ValueError as exc:
                raise QueryError(f"--since: {exc}") from None
        return store.dead_letters(limit, topic, partition, reason, when)  # type: ignore[no-any-return]
    params = {"limit": str(limit)}
    for name, value in (("topic", topic), ("partition", partition), ("reason", reason), ("since", since)):
        if value is not None and value != "":
            params[name] = str(value)
    answer = backend._request("/api/dead-letters", params)
    return list(answer["dead_letters"])


@click.command("dlq")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Most rows, newest first.")
@click.option("--topic", help="Only messages from this topic.")
@click.option("--partition", type=click.IntRange(0), help="Only messages from this partition.")
@click.option("--reason", help="Only reasons containing this text (any case).")
@click.option("--since", help="Dead-lettered at or after: ISO 8601, 15m, 2h, 7d, epoch seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter (first bytes as base64).")
def dlq_command(
    limit: int, topic: str | None, partition: int | None, reason: str | None, since: str | None, as_json: bool
) -> None:
    """Show messages the processor could not write (the dead_letters table).

    Each row says where the message came from (topic, partition, offset), its
    size, why, whether the DLQ topic holds it whole or only a reference, and
    its first bytes.
    """
    from dashfrog.runtime._query_cli import render_table

    try:
        rows = read_dead_letters(limit, topic, partition, reason, since)
    except DashfrogError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    if not rows:
        click.echo("no dead letters")
        return
    columns = ("at", "topic", "partition", "offset", "size", "in_dlq", "reason", "first bytes")
    click.echo(
        render_table(
            columns,
            (
                (
                    r["dead_lettered_at"], r["topic"], r["partition"], r["offset"], r["size"],
                    r["in_dlq"], r["reason"], r["head_text"],
                )
                for r in rows
            ),
            width=60,
        )
    )
