"""`dfkd run METHOD`: data-free distillation with any installed method."""

from __future__ import annotations

from typing import Annotated

import typer

from dfkd.cli import options as opts
from dfkd.cli.catalog import print_options
from dfkd.cli.console import console, err_console, guarded, require_options
from dfkd.plugins import Plugins


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command(rich_help_panel="Distillation", add_help_option=False)
    @guarded
    def run(
        ctx: typer.Context,
        method: Annotated[str, typer.Argument(help="Method name (see dfkd list-methods).")] = None,
        teacher: Annotated[str, typer.Option(help="Teacher architecture.")] = None,
        student: Annotated[str, typer.Option(help="Student architecture.")] = None,
        dataset: opts.Dataset = None,
        preset: Annotated[str, typer.Option(help="Named option set of the method.")] = None,
        option: Annotated[
            list[str], typer.Option("--option", "-o", help="Method option as key=value.")
        ] = None,
        epochs: Annotated[int, typer.Option(help="Shortcut for -o epochs=N.")] = None,
        teacher_weights: Annotated[str, typer.Option(help="Teacher weights file.")] = None,
        keep_images: Annotated[
            bool, typer.Option("--keep-images", help="Keep synthesized images in RUN/images.")
        ] = False,
        seed: opts.Seed = 0,
        mixed_precision: opts.Precision = "no",
        cpu: opts.Cpu = False,
        data_root: opts.DataRoot = None,
        download: opts.Download = False,
        out: opts.Out = None,
        overwrite: opts.Overwrite = False,
        resume: opts.Resume = None,
        quiet: opts.Quiet = False,
        show_help: Annotated[
            bool, typer.Option("--help", "-h", help="Show this and the method's options.")
        ] = False,
    ) -> None:
        """Distil a teacher into a student with a data-free METHOD (real data only to test)."""
        from dfkd.cli.training import _summary, from_arguments, progress

        if show_help:
            typer.echo(ctx.get_help())
            if method:
                print_options(plugins, method)
            raise typer.Exit()
        from dfkd.training.datafree import RunConfig, method_options, run_datafree

        if resume:
            cfg = None
        else:
            require_options(method=method, teacher=teacher, student=student, dataset=dataset)
            overrides = list(option or []) + ([f"epochs={epochs}"] if epochs is not None else [])
            cfg = from_arguments(RunConfig, locals())
            method_options(plugins, cfg)  # fail on a bad name or option before any work
        outcome = run_datafree(cfg, resume=resume, reporter=progress(quiet), plugins=plugins)
        _summary(outcome, "student")
        console.print(f"samples: {outcome.extras['samples']}", highlight=False)
        if "images" in outcome.extras:
            err_console.print(
                f"synthesized images: {outcome.extras['images']} "
                f"(reuse: dfkd kd --transfer-set folder:{outcome.extras['images']})",
                highlight=False,
            )
