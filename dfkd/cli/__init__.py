"""The `dfkd` command line: a typer app assembled after the plugins load."""

from __future__ import annotations

import sys
import warnings

import typer
from rich.markup import escape
from typer.core import TyperGroup

from dfkd import __version__
from dfkd.cli import bench, catalog, export, plot, run, scenes, training, weights
from dfkd.cli.console import err_console, fail, show_traceback
from dfkd.errors import DfkdError
from dfkd.plugins import Plugins, get_plugins
from dfkd.training.process_group import run_then_leave


def make_app(plugins: Plugins | None = None) -> typer.Typer:
    """Build the root app; plugins add their own commands through `register_commands`."""
    plugins = plugins or get_plugins()

    class Root(TyperGroup):
        """The root command, whose own help also says what went wrong with the plugins: click
        shows it (for `dfkd --help` or a bare `dfkd`) before the callback below would."""

        def format_help(self, ctx: typer.Context, formatter: object) -> None:
            warn_about(plugins)
            super().format_help(ctx, formatter)

    app = typer.Typer(
        cls=Root,
        name="dfkd",
        help="Data-free knowledge distillation: shrink a trained network without its data.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False,
            "--version",
            help="Print the version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ) -> None:
        warnings.showwarning = _show_warning
        warn_about(plugins)

    catalog.add_commands(app, plugins)
    training.add_commands(app, plugins)
    run.add_commands(app, plugins)
    weights.add_commands(app, plugins)
    scenes.add_commands(app, plugins)
    export.add_commands(app, plugins)
    bench.add_commands(app, plugins)
    plot.add_commands(app, plugins)
    plugins.add_commands(app)
    return app


def warn_about(plugins: Plugins) -> None:
    """One warning line per plugin that failed to load and per clash, on stderr (with each
    failure's traceback under DFKD_TRACEBACK). Runs the register hooks, which only register
    import strings: no plugin module is imported, so `dfkd --help` stays fast."""
    try:
        plugins.entries  # noqa: B018 - run the register hooks, so their failures show here
    except DfkdError as exc:
        fail(exc)
    for who, error in plugins.errors.items():
        for exc in plugins.raised.get(who, []):
            show_traceback(exc)
        err_console.print(
            f"[yellow]Warning:[/] could not load plugin {who} ({escape(error)}). Disable it "
            f"with DFKD_DISABLE_PLUGINS={who} or uninstall it: pip uninstall {who}",
            highlight=False,
        )
    for warning in plugins.warnings:
        err_console.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning as one `Warning:` line, like dfkd's own, instead of its source file,
    line number and the line of code that raised it."""
    err_console.print(f"[yellow]Warning:[/] {escape(str(message))}", highlight=False)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dfkd {__version__}")
        raise typer.Exit()


def main() -> None:
    try:
        app = make_app()
    except DfkdError as exc:
        try:
            fail(exc)
        except typer.Exit as done:
            sys.exit(done.exit_code)
    run_then_leave(app)
