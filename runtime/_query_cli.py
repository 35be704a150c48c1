"""``dashfrog flows``, ``flow``, ``stats``, ``sql`` and ``rebuild``: the read side on the command line.

They go through ``dashfrog.query``, so they read the store directly when it
is a ClickHouse server and ask the running ``dashfrog up`` / ``dashfrog api``
over HTTP otherwise (a chDB store belongs to the process that opened it).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

from dashfrog._exceptions import DashfrogError, QueryError
from dashfrog._models import parse_label_pairs
from dashfrog._timeexpr import parse_time
from dashfrog.runtime._timeline import span, text_timeline, when

T = TypeVar("T")


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a query; turn DashFrog errors into a one-line message and exit code 1."""
    try:
        return fn(*args, **kwargs)
    except DashfrogError as exc:
        raise click.ClickException(str(exc)) from exc


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def render_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    width: int = 48,
    min_widths: list[int] | None = None,
) -> str:
    """A plain aligned text table; long cells are cut to ``width`` characters.

    ``min_widths`` (updated in place) carries column widths from one page of
    a streamed table to the next, so its columns stay aligned.
    """
    cells = [[_text(v) for v in row] for row in rows]
    cells = [[c if len(c) <= width else c[: width - 1] + "…" for c in row] for row in cells]
    widths = [max([len(col), *(len(row[i]) for row in cells)]) for i, col in enumerate(columns)]
    if min_widths is not None:
        widths = [max([w, *min_widths[i : i + 1]]) for i, w in enumerate(widths)]
        min_widths[:] = widths
    lines = ["  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _pairs(pairs: Sequence[str], option: str, shape: str) -> dict[str, str] | None:
    """``NAME=VALUE`` options as a dict (None when none were given)."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected {shape}", param_hint=option)
        parsed[key] = value
    return parsed or None


class _TimeType(click.ParamType):
    """A ``--since``/``--until`` value in the one time grammar (see ``dashfrog._timeexpr``)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = _TimeType()
TIME_HELP = "2026-11-25T10:00:00Z, 2026-11-25, 15m, 2h, 7d, today, yesterday (UTC)"


def _labels(pairs: Sequence[str]) -> dict[str, str] | None:
    """``--label KEY=VALUE`` options (``KEY:VALUE`` too, as over HTTP)."""
    try:
        return parse_label_pairs(pairs) or None
    except QueryError as exc:
        raise click.BadParameter(str(exc), param_hint="--label") from None


def _dump(model: Any) -> str:
    return json.dumps(model.model_dump(mode="json"), indent=2, sort_keys=True)


@click.command("flows")
@click.option("--tenant", help="Only this customer's flows.")
@click.option(
    "--status",
    type=click.Choice(["running", "success", "failed", "stalled"]),
    help="Only flows in this state.",
)
@click.option("--name", help="Only flows with this name.")
@click.option(
    "--label",
    "label_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Label that must match (repeatable).",
)
@click.option("--since", type=TIME, help=f"Started at or after: {TIME_HELP}.")
@click.option("--until", type=TIME, help="Started before: same forms as --since.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="At most this many flows (default: every matching flow).",
)
@click.option("--cursor", help="Start after this flow id (a previous listing's `more: --cursor`).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "ndjson", "csv"]),
    default="table",
    show_default=True,
    help="table; json (one array); ndjson (one object per line); csv (columns as the API's).",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format ndjson.")
@click.option("--page-size", type=click.IntRange(1, 10_000), default=1000, hidden=True)
def flows_command(
    tenant: str | None,
    status: str | None,
    name: str | None,
    label_pairs: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    cursor: str | None,
    fmt: str,
    as_json: bool,
    page_size: int,
) -> None:
    """List flows, newest first: every matching flow (or --limit), read a page at a time."""
    from dashfrog import query

    if as_json:
        fmt = "ndjson"
    labels = _labels(label_pairs)
    remaining = limit
    widths: list[int] = []
    count = 0
    if fmt == "json":
        click.echo("[", nl=False)
    while True:
        size = page_size if remaining is None else min(page_size, remaining)
        found = _call(
            query.flows,
            tenant=tenant,
            status=status,
            name=name,
            labels=labels,
            since=since,
            until=until,
            limit=size,
            cursor=cursor,
        )
        _emit_flows(fmt, list(found), first=count == 0, widths=widths)
        count += len(found)
        if remaining is not None:
            remaining -= len(found)
        cursor = found.next_cursor
        if cursor is None or remaining == 0:
            break
    if fmt == "json":
        click.echo("\n]" if count else "]")
    elif fmt == "table" and cursor is not None:
        click.echo(f"\nmore: --cursor {cursor}")


def _emit_flows(fmt: str, flows: list[Any], *, first: bool, widths: list[int]) -> None:
    """One page of flows in ``fmt``; a table keeps the widths of the pages before it."""
    if fmt == "ndjson":
        for summary in flows:
            click.echo(json.dumps(summary.model_dump(mode="json"), sort_keys=True))
        return
    if fmt == "json":
        for i, summary in enumerate(flows):
            sep = "\n" if first and i == 0 else ",\n"
            click.echo(sep + json.dumps(summary.model_dump(mode="json"), sort_keys=True), nl=False)
        return
    if fmt == "csv":
        from dashfrog._export import flows_csv

        click.echo(flows_csv(flows, header=first), nl=False)
        return
    if not flows and not first:
        return
    columns = ("flow_id", "tenant", "name", "status", "step", "started", "ms", "labels", "error")
    found = flows
    rows = [
        (
            f.flow_id,
            f.tenant,
            f.name,
            "stalled" if f.stalled else f.status,
            f.current_step,
            f.started_at,
            f.duration_ms,
            f.labels,
            f"{f.error.type}: {f.error.message}" if f.error else None,
        )
        for f in found
    ]
    lines = render_table(columns, rows, min_widths=widths).split("\n")
    click.echo("\n".join(lines if first else lines[1:]))


@click.command("flow")
@click.argument("flow_id")
@click.option("--tenant", help="Fail unless the flow belongs to this tenant.")
@click.option("--json", "as_json", is_flag=True, help="The whole flow as JSON.")
def flow_command(flow_id: str, tenant: str | None, as_json: bool) -> None:
    """One flow: its steps (nested), errors and custom events."""
    from dashfrog import query

    detail = _call(query.flow, flow_id, tenant=tenant)
    if detail is None:
        raise click.ClickException(
            f"no flow {flow_id!r}" + (f" for tenant {tenant!r}" if tenant else "")
        )
    if as_json:
        click.echo(_dump(detail))
        return
    status = "stalled" if detail.stalled else detail.status
    click.echo(f"{detail.name} [{status}]  tenant={detail.tenant}  id={detail.flow_id}")
    click.echo(
        f"started {when(detail.started_at)}  ended {when(detail.ended_at)}  {span(detail.duration_ms)}"
    )
    if detail.labels:
        click.echo(f"labels  {_text(detail.labels)}")
    click.echo(f"services {_text(detail.services)}")
    click.echo("")
    for line in text_timeline(detail, ascii_only=not _utf8_out()):
        click.echo(line)
    for root in detail.steps:
        for step, _depth in _walk(root, 0):
            if step.attributes:
                click.echo(f"  {step.name}: {_text(step.attributes)}")
    for event in detail.events:
        click.echo(f"  * event {event.name} {_text(event.attributes)} at {when(event.timestamp)}")
    flow_errors = [e for e in detail.errors if e.step_name is None]
    for error in flow_errors:
        click.echo(f"  flow error {error.type}: {error.message}")


def _utf8_out() -> bool:
    # The terminal's own encoding: click would re-encode an ASCII stream as UTF-8.
    encoding = getattr(sys.stdout, "encoding", None) or ""
    return encoding.lower().replace("-", "") in ("utf8", "utf8sig")


def _walk(step: Any, depth: int) -> Iterable[tuple[Any, int]]:
    yield step, depth
    for child in step.children:
        yield from _walk(child, depth + 1)


@click.command("stats")
@click.option("--tenant", help="Only this customer's flows.")
@click.option("--name", help="Only flows with this name.")
@click.option("--since", type=TIME, help=f"Started at or after: {TIME_HELP}.")
@click.option("--until", type=TIME, help="Started before: same forms as --since.")
@click.option("--json", "as_json", is_flag=True)
def stats_command(
    tenant: str | None,
    name: str | None,
    since: datetime | None,
    until: datetime | None,
    as_json: bool,
) -> None:
    """Runs, success rate, duration percentiles and failures per step."""
    from dashfrog import query

    result = _call(query.stats, tenant=tenant, name=name, since=since, until=until)
    if as_json:
        click.echo(_dump(result))
        return
    rate = "-" if result.success_rate is None else f"{result.success_rate:.1%}"
    click.echo(
        f"runs {result.runs}  running {result.running}  stalled {result.stalled}  "
        f"succeeded {result.succeeded}  failed {result.failed}  success rate {rate}"
    )
    click.echo(
        f"duration p50 {_text(result.duration_p50_ms)} ms  p95 {_text(result.duration_p95_ms)} ms  "
        f"p99 {_text(result.duration_p99_ms)} ms"
    )
    if result.failures_by_step:
        click.echo(
            render_table(
                ("step", "failures"), ((f.step_name, f.failures) for f in result.failures_by_step)
            )
        )


@click.command("sql")
@click.argument("statement")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Bind {NAME:Type} (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
def sql_command(statement: str, params: tuple[str, ...], as_json: bool) -> None:
    """Run one read-only statement (SELECT, WITH, SHOW, DESCRIBE)."""
    from dashfrog import query

    result = _call(query.sql, statement, _pairs(params, "--param", "NAME=VALUE"))
    if as_json:
        for row in result:
            click.echo(json.dumps(row, sort_keys=True, default=str))
        return
    click.echo(
        render_table(result.columns, ([row.get(c) for c in result.columns] for row in result))
    )


@click.command("rebuild")
@click.confirmation_option(prompt="Re-project flows and steps from the raw events?")
def rebuild_command() -> None:
    """Re-project flows and steps from the raw events table.

    With the embedded chDB store, stop `dashfrog up` first: its store belongs
    to one process. Against a ClickHouse server it can run any time.
    """
    from dashfrog._settings import get_settings
    from dashfrog.runtime import terminal_progress
    from dashfrog.storage import open_store

    settings = get_settings()
    store = _call(open_store, settings.clickhouse_url)
    try:
        with terminal_progress("dashfrog migrate") as progress:
            _call(store.migrate, progress)
        # Progress on a terminal only: piped, the command prints its summary alone.
        with terminal_progress("dashfrog rebuild") as progress:
            _call(store.rebuild, progress)
        counts = store.select(
            "SELECT (SELECT uniqExact(flow_id) FROM flows) AS flows, (SELECT count() FROM events) AS events"
        )
    finally:
        store.close()
    row = counts[0]
    click.echo(f"rebuilt {row['flows']} flows from {row['events']} events")
