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
        teacher: Annotated[
            str,
            typer.Option(
                help="Teacher architecture (default: what --teacher-weights' sidecar names)."
            ),
        ] = None,
        student: Annotated[str, typer.Option(help="Student architecture.")] = None,
        dataset: opts.Dataset = None,
        preset: Annotated[str, typer.Option(help="Named option set of the method.")] = None,
        option: Annotated[
            list[str], typer.Option("--option", "-o", help="Method option as key=value.")
        ] = None,
        epochs: Annotated[int, typer.Option(help="Shortcut for -o epochs=N.")] = None,
        teacher_weights: Annotated[
            str,
            typer.Option(
                help="Teacher weights file (default: checkpoints/<dataset>-<teacher>, or the one "
                "checkpoints/*-<teacher> without --dataset)."
            ),
        ] = None,
        classes: Annotated[
            int, typer.Option(help="Teacher's class count, when its sidecar does not say.")
        ] = None,
        channels: Annotated[
            int, typer.Option(help="Teacher's input channels, when its sidecar does not say.")
        ] = None,
        image_size: Annotated[
            int, typer.Option(help="Teacher's input size in pixels, when its sidecar does not say.")
        ] = None,
        mean: Annotated[
            str, typer.Option(help="Teacher's normalisation mean per channel, e.g. 0.5,0.5,0.5.")
        ] = None,
        std: Annotated[
            str, typer.Option(help="Teacher's normalisation std per channel, e.g. 0.25,0.25,0.25.")
        ] = None,
        class_names: Annotated[
            str, typer.Option(help="File with the teacher's class names, one per line.")
        ] = None,
        val_size: Annotated[
            int,
            typer.Option(
                help="Images of the synthetic validation set (inverted from the teacher once, "
                "kept beside its weights) that scores agreement \\[default: 500; 64 for a "
                "segmentation teacher; fewer where the teacher would take over a minute to "
                "invert them here].",
                min=1,
                show_default=False,
            ),
        ] = None,
        val_steps: Annotated[
            int,
            typer.Option(
                help="Inversion steps of the validation set \\[default: 200; 60 for a "
                "segmentation teacher; fewer where the teacher would take over a minute].",
                min=0,
                show_default=False,
            ),
        ] = None,
        eval_data: Annotated[
            str,
            typer.Option(
                help="Your own images to score on (folder:PATH): accuracy if labelled by class "
                "folders, agreement with the teacher if not."
            ),
        ] = None,
        keep_images: Annotated[
            bool, typer.Option("--keep-images", help="Keep synthesized images in RUN/images.")
        ] = False,
        quantize: Annotated[
            str,
            typer.Option(
                help="Train the student fake-quantised: w8a8 or w4a4 (weights per channel, "
                "inputs per layer); dfkd quantize then writes its INT8 file."
            ),
        ] = None,
        seed: opts.Seed = 0,
        mixed_precision: opts.Precision = "no",
        cpu: opts.Cpu = False,
        data_root: opts.DataRoot = None,
        download: opts.Download = False,
        out: opts.Out = None,
        overwrite: opts.Overwrite = False,
        resume: opts.Resume = None,
        log_with: opts.LogWith = None,
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
        from dfkd.training.setup import teacher_from_weights

        cfg, given, choice = None, None, None
        if resume:  # the run goes on with what it recorded; what is named here must match it
            given = {"method": method, "teacher": teacher, "student": student, "dataset": dataset}
        else:
            teacher = teacher_from_weights(teacher, teacher_weights)
            require_options(method=method, teacher=teacher, student=student)
            plugins.check_method(method, preset)  # a broken plugin: one line, before any work
            overrides = list(option or []) + ([f"epochs={epochs}"] if epochs is not None else [])
            mean, std = _floats("mean", mean), _floats("std", std)
            cfg = from_arguments(RunConfig, locals())
            choice = method_options(plugins, cfg)  # a bad name or option: before any work
            if choice.moved is not None:
                err_console.print(choice.moved, highlight=False)
            if not dataset and not teacher_weights:
                cfg.teacher_weights = str(_found_teacher(teacher, plugins))
        outcome = run_datafree(
            cfg,
            resume=resume,
            given=given,
            method=choice,
            reporter=progress(quiet),
            plugins=plugins,
        )
        if not outcome.main_process:
            return  # process 0 reports the run
        _summary(outcome, "student")
        console.print(f"samples: {outcome.extras['samples']}", highlight=False)
        if "images" in outcome.extras:
            err_console.print(
                f"synthesized images: {outcome.extras['images']} "
                f"(reuse: dfkd kd --transfer-set folder:{outcome.extras['images']})",
                highlight=False,
            )


def _floats(flag: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        from dfkd.errors import UsageError

        raise UsageError(f"--{flag} takes numbers separated by commas, not '{text}'.") from None


def _found_teacher(teacher: str, plugins: Plugins) -> str:
    """Without --dataset and --teacher-weights: the one checkpoints/*-TEACHER, said aloud."""
    from dfkd.models import check_model_name
    from dfkd.training.setup import checkpoints_dir
    from dfkd.training.teacher_inputs import find_teacher_weights

    check_model_name(teacher, plugins)  # a misspelt name, not a missing checkpoint
    path = find_teacher_weights(teacher, checkpoints_dir())
    err_console.print(f"teacher weights: {path} (the only {teacher} in {path.parent})")
    return str(path)
