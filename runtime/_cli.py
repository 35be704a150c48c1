"""The ``dashfrog`` command line.

Commands live beside what they drive and are imported only when run, so
``dashfrog events tail`` works with just the SDK installed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path
from typing import Any

import click

# command name -> "module:attribute" of a click command, imported on use
_LAZY_COMMANDS: dict[str, str] = {
    "alerts": "dashfrog.web._alerts:alerts_group",
    "api": "dashfrog.web._commands:api_command",
    "dlq": "dashfrog.runtime._dlq_cli:dlq_command",
    "dlq-replay": "dashfrog.streams._replay:replay_command",
    "events": "dashfrog.runtime._tail:events",
    "flow": "dashfrog.runtime._query_cli:flow_command",
    "flows": "dashfrog.runtime._query_cli:flows_command",
    "metric": "dashfrog.runtime._metrics_cli:metric_command",
    "metrics": "dashfrog.runtime._metrics_cli:metrics_command",
    "migrate": "dashfrog.streams._worker:migrate_command",
    "rebuild": "dashfrog.runtime._query_cli:rebuild_command",
    "settings": "dashfrog.runtime._cli:settings_command",
    "sql": "dashfrog.runtime._query_cli:sql_command",
    "stats": "dashfrog.runtime._query_cli:stats_command",
    "up": "dashfrog.web._commands:up_command",
    "worker": "dashfrog.streams._worker:worker_command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        try:
            command: Any = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            raise click.ClickException(
                f"'dashfrog {cmd_name}' needs an optional dependency that is missing ({exc.name}); "
                "install the matching extra, e.g. pip install 'dashfrog[all]'"
            ) from exc
        return command  # type: ignore[no-any-return]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the commands' docstrings read in their source files:
        # importing the commands would need the extras (fastapi, faust, chdb)
        # and take seconds, for a listing.
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            target = _LAZY_COMMANDS.get(name)
            doc = _docstring(target) if target else None
            if doc is not None:
                rows.append((name, click.utils.make_default_short_help(doc, limit)))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _docstring(target: str) -> str | None:
    """The docstring of the function behind ``module:attribute``, read from the
    module's source without importing it; None when it cannot be found there."""
    module, _, attr = target.partition(":")
    parent, _, leaf = module.rpartition(".")
    try:
        spec = importlib.util.find_spec(parent)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            source = Path(folder) / f"{leaf}.py"
            if source.is_file():
                tree = ast.parse(source.read_text(encoding="utf-8"))
                break
        else:
            return None
    except (ImportError, OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == attr:
            return ast.get_docstring(node)
    return None


@click.group(cls=_LazyGroup)
@click.version_option(package_name="dashfrog")
def main() -> None:
    """DashFrog: business workflows per customer."""


@click.command("settings")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (as in the README).")
def settings_command(markdown: bool) -> None:
    """Every DASHFROG_* setting: the value in effect here, where it came from
    (env, .env or default), and its meaning."""
    from dashfrog._settings import effective_settings, settings_table

    rows = settings_table()
    if markdown:
        click.echo("| variable | default | meaning |")
        click.echo("|---|---|---|")
        for env, default, doc in rows:
            click.echo(f"| `{env}` | `{default}` | {doc} |" if default else f"| `{env}` | | {doc} |")
        return
    for (env, value, source), (_, _, doc) in zip(effective_settings(), rows, strict=True):
        click.echo(f"{env}={value}  (from {source})\n    {doc}")
