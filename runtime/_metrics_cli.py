"""``dashfrog metrics`` and ``dashfrog metric NAME``: metrics on the command line.

They go through ``dashfrog.query`` like ``dashfrog flows`` (the ClickHouse
server directly, or the running API).
"""

from __future__ import annotations

import json
from datetime import datetime

import click

from dashfrog import query
from dashfrog.runtime._query_cli import TIME, TIME_HELP, _call, _dump, _labels, render_table

_COLUMNS = {
    "counter": ("total", "rate"),
    "histogram": ("count", "avg", "p50", "p95", "p99", "min", "max"),
    "gauge": ("last", "min", "max"),
}


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


@click.command("metrics")
@click.option("--tenant", help="Only metrics with points for this customer.")
@click.option("--json", "as_json", is_flag=True, help="The list as JSON.")
def metrics_command(tenant: str | None, as_json: bool) -> None:
    """List declared metrics: kind, pretty name, unit and labels."""
    found = _call(query.metrics, tenant)
    if as_json:
        click.echo(_dump(found))
        return
    if not found.metrics:
        click.echo("no metrics yet: record some with dashfrog.metrics (Counter, Histogram, Gauge)")
        return
    rows = [
        (m.name, m.kind, m.pretty_name, m.unit, ",".join(m.labels), m.tenants, m.last_seen)
        for m in found
    ]
    click.echo(
        render_table(
            ("name", "kind", "pretty name", "unit", "labels", "tenants", "last seen"), rows
        )
    )


@click.command("metric")
@click.argument("name")
@click.option("--tenant", help="Only this customer's points.")
@click.option(
    "--label", "labels", multiple=True, help="KEY=VALUE, repeatable: only points with these labels."
)
@click.option("--since", type=TIME, default="1h", show_default=True, help=f"From: {TIME_HELP}.")
@click.option("--until", type=TIME, help="Until (default now): same forms as --since.")
@click.option(
    "--step", default="1m", show_default=True, help="Bucket width in whole minutes: 1m, 5m, 1h, 1d."
)
@click.option(
    "--group-by",
    "group_by",
    multiple=True,
    help="Split rows by this label (or tenant); repeatable.",
)
@click.option(
    "--where",
    "where",
    multiple=True,
    help="KEY=VALUE: show the share of points with these labels instead.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
def metric_command(
    name: str,
    tenant: str | None,
    labels: tuple[str, ...],
    since: datetime,
    until: datetime | None,
    step: str,
    group_by: tuple[str, ...],
    where: tuple[str, ...],
    as_json: bool,
) -> None:
    """One metric over time: counter total and rate per second; histogram count,
    avg and p50/p95/p99; gauge last, min and max."""
    common = {
        "tenant": tenant,
        "labels": _labels(labels),
        "since": since,
        "until": until,
        "step": step,
        "group_by": list(group_by) or None,
    }
    if where:
        ratio = _call(query.metric_ratio, name, where=_labels(where) or {}, **common)
        if as_json:
            for r in ratio:
                click.echo(json.dumps(r.model_dump(mode="json"), sort_keys=True))
            return
        click.echo(
            render_table(
                ("time", *group_by, "matching", "total", "ratio"),
                [
                    (
                        r.time,
                        *(r.group.get(g, "") for g in group_by),
                        _number(r.matching),
                        _number(r.total),
                        "" if r.ratio is None else f"{r.ratio:.2%}",
                    )
                    for r in ratio
                ],
            )
        )
        return
    found = _call(query.metric, name, **common)
    if as_json:
        for row in found:
            click.echo(json.dumps(row.model_dump(mode="json"), sort_keys=True))
        return
    unit = f" ({found.unit})" if found.unit else ""
    click.echo(f"{found.pretty_name}{unit}: {found.kind}, step {found.step_s // 60} min")
    if found.error_bound is not None:
        click.echo(f"percentiles within {found.error_bound:.1%} of the recorded values")
    columns = _COLUMNS[found.kind]
    rows = [
        (
            row.time,
            *(row.group.get(g, "") for g in group_by),
            *(_number(getattr(row, c)) for c in columns),
        )
        for row in found
    ]
    click.echo(
        render_table(("time", *group_by, *columns), rows) if rows else "no points in this range"
    )
