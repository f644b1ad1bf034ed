"""Commands that describe what is installed: methods, models, datasets, plugins (no torch)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape

from dfkd.cli.console import console, err_console, guarded, show_traceback
from dfkd.options import describe
from dfkd.plugins import Plugins
from dfkd.tasks import CLASSIFICATION


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command("list-methods", rich_help_panel="Catalog")
    @guarded
    def list_methods(
        pattern: str = typer.Argument(None, help="Only names matching this (glob or substring)."),
        options: str = typer.Option(
            None, "--options", metavar="METHOD", help="List a method's options."
        ),
    ) -> None:
        """List the data-free methods that installed plugins provide."""
        if options:
            print_options(plugins, options)
            return
        entries = plugins.methods.match(pattern)
        if not entries:
            matching = f" matching '{pattern}'" if pattern else ""
            if plugins.not_loaded:
                console.print(
                    f"No methods loaded{matching}: DFKD_LOAD_PLUGINS leaves out the installed "
                    f"plugins {', '.join(plugins.not_loaded)}. Name them in it (comma-separated), "
                    "or unset it to load every plugin.",
                    highlight=False,
                )
            else:
                console.print(
                    f"No methods installed{matching}. Install one, e.g. pip install "
                    "dfkd-plugin-dafl",
                    highlight=False,
                )
            return
        for e in entries:  # a block per method: papers and summaries are too long for columns
            console.print(f"[bold]{e.name}[/]  {e.summary}", highlight=False)
            console.print(f"  paper:   {e.info.get('paper', '-')}", highlight=False)
            console.print(f"  plugin:  {e.provider} {e.version}", highlight=False)
            presets = ", ".join(e.info.get("presets", {})) or "-"
            console.print(f"  presets: {presets}", highlight=False)
            tasks = ", ".join(e.info.get("tasks", (CLASSIFICATION,)))
            console.print(f"  tasks:   {tasks}", highlight=False)

    @app.command("models", rich_help_panel="Catalog")
    @guarded
    def models(pattern: str = typer.Argument(None, help="Only names matching this.")) -> None:
        """List the architectures that --model, --teacher and --student accept."""
        table = _table("model", "summary", "input", "task", "plugin")
        for e in plugins.models.match(pattern):
            size = e.info.get("input_size")
            table.add_row(
                e.name + ("<name>" if e.name.endswith(":") else ""),
                e.summary,
                f"{size} px" if size else "any",
                e.info.get("task", CLASSIFICATION),
                e.provider,
            )
        console.print(table)

    @app.command("datasets", rich_help_panel="Catalog")
    @guarded
    def datasets() -> None:
        """List the datasets that --dataset accepts."""
        table = _table("dataset", "classes", "channels", "size", "task", "summary", "plugin")
        for e in plugins.datasets:
            info = e.info
            table.add_row(
                e.name + ("PATH" if e.name.endswith(":") else ""),
                str(info.get("num_classes", "auto")),
                str(info.get("channels", "auto")),
                f"{info['image_size']} px" if "image_size" in info else "auto",
                info.get("task", "auto" if e.name.endswith(":") else CLASSIFICATION),
                e.summary,
                e.provider,
            )
        console.print(table)

    @app.command("plugins", rich_help_panel="Catalog")
    @guarded
    def plugins_command(
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        check: bool = typer.Option(
            False,
            "--check",
            help="Import every registered factory and build every method's presets; print one "
            "line per problem and exit 1 if there is any.",
        ),
    ) -> None:
        """List loaded plugins, the hooks each implements, and any that failed to load."""
        if check:
            check_plugins(plugins)
            return
        rows = plugins.describe()
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = _table("plugin", "distribution", "version", "hooks / error")
        for r in rows:
            detail = f"[red]{escape(r['error'])}[/]" if "error" in r else ", ".join(r["hooks"])
            for clash in r.get("conflicts", []):
                detail += f"\n[yellow]{escape(clash)}[/]"
            table.add_row(r["name"], r.get("distribution", r["name"]), r.get("version", ""), detail)
        console.print(table)


def check_plugins(plugins: Plugins) -> None:
    """`dfkd plugins --check`: what `dfkd run` would otherwise meet only once a run has started,
    for every plugin at once (a plugin's CI runs it under DFKD_STRICT_PLUGINS=1)."""
    problems = plugins.check()
    for problem in problems:
        show_traceback(problem.__cause__)
        console.print(escape(str(problem)), highlight=False)
    if problems:
        err_console.print(f"{len(problems)} problem(s) in the installed plugins.", highlight=False)
        raise typer.Exit(1)
    names = len(plugins.pm.list_name_plugin())
    entries = sum(len(r) for r in plugins.registries.values())
    console.print(
        f"No problems: {names} plugins, {entries} entries (every factory imports, every preset "
        "builds)."
    )


def print_options(plugins: Plugins, method: str) -> None:
    entry = plugins.methods.get(method)
    table = _table("option", "type", "default", "help", title=f"Options of {entry.name}")
    for row in describe(entry.info["options"]):
        table.add_row(row["name"], row["type"], row["default"], row["help"])
    console.print(table)
    presets = entry.info.get("presets", {})
    for name, values in presets.items():
        pairs = " ".join(f"{k}={v}" for k, v in values.items())
        console.print(f"[bold]--preset {name}[/]: {pairs}", highlight=False)


def _table(*columns: str, title: str | None = None) -> Any:
    """A table whose first column (the name a user types) never wraps."""
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(columns):
        table.add_column(name, no_wrap=i == 0)
    return table
