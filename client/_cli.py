"""The ``dashfrog`` command line.

Commands live beside what they drive and are imported only when run, so
``dashfrog events tail`` works with just the SDK installed.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# command name -> "module:attribute" of a click command, imported on use
_LAZY_COMMANDS: dict[str, str] = {
    "api": "dashfrog.web._commands:api_command",
    "events": "dashfrog._tail:events",
    "flow": "dashfrog._query_cli:flow_command",
    "flows": "dashfrog._query_cli:flows_command",
    "rebuild": "dashfrog._query_cli:rebuild_command",
    "settings": "dashfrog._cli:settings_command",
    "sql": "dashfrog._query_cli:sql_command",
    "stats": "dashfrog._query_cli:stats_command",
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


@click.group(cls=_LazyGroup)
@click.version_option(package_name="dashfrog")
def main() -> None:
    """DashFrog: business workflows per customer."""


@click.command("settings")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (as in the README).")
def settings_command(markdown: bool) -> None:
    """List every DASHFROG_* setting with its default and meaning."""
    from dashfrog._settings import settings_table

    rows = settings_table()
    if markdown:
        click.echo("| variable | default | meaning |")
        click.echo("|---|---|---|")
        for env, default, doc in rows:
            click.echo(f"| `{env}` | `{default}` | {doc} |" if default else f"| `{env}` | | {doc} |")
    else:
        for env, default, doc in rows:
            click.echo(f"{env}={default}\n    {doc}")
