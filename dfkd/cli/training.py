"""Training commands: `scratch`, `kd`, `eval` (torch is imported only when one runs)."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer

from dfkd.cli.console import console, err_console, guarded, require_options
from dfkd.cli.options import (
    Augment,
    BatchSize,
    Cpu,
    DataRoot,
    Dataset,
    Download,
    Epochs,
    Lr,
    Out,
    Overwrite,
    Precision,
    Quiet,
    Resume,
    Schedule,
    Seed,
    WeightDecay,
)
from dfkd.plugins import Plugins

PANEL = "Training"


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command(rich_help_panel=PANEL)
    @guarded
    def scratch(
        model: Annotated[str, typer.Option("--model", "-m", help="Architecture to train.")] = None,
        dataset: Dataset = None,
        epochs: Epochs = 200,
        batch_size: BatchSize = 256,
        lr: Lr = 0.1,
        weight_decay: WeightDecay = 5e-4,
        schedule: Schedule = "cosine",
        augment: Augment = "auto",
        seed: Seed = 0,
        mixed_precision: Precision = "no",
        cpu: Cpu = False,
        data_root: DataRoot = None,
        download: Download = False,
        out: Out = None,
        overwrite: Overwrite = False,
        resume: Resume = None,
        quiet: Quiet = False,
        set_default: Annotated[
            bool,
            typer.Option(
                "--set-default",
                help="Make the best weights the default teacher even if there is one already.",
            ),
        ] = False,
    ) -> None:
        """Train a model from scratch; the first of its kind becomes the default teacher."""
        from dfkd.training.supervised import ScratchConfig, load_config, train_scratch

        if resume:
            cfg = load_config(ScratchConfig, resume, "scratch")
        else:
            require_options(model=model, dataset=dataset)
            cfg = from_arguments(ScratchConfig, locals())
        outcome = train_scratch(cfg, resume=resume, reporter=progress(quiet), plugins=plugins)
        _summary(outcome, f"{cfg.model} on {cfg.dataset}")
        best, default = outcome.extras["checkpoint"], outcome.extras["default"]
        console.print(f"teacher checkpoint: {best}", highlight=False)
        if best != default:
            err_console.print(
                f"The default teacher {default} is unchanged. Use these weights with "
                f"--teacher-weights {best}, or make them the default with 'dfkd import-weights "
                f"{best} --model {cfg.model} --dataset {cfg.dataset} --set-default'.",
                highlight=False,
            )

    @app.command(rich_help_panel=PANEL)
    @guarded
    def kd(
        teacher: Annotated[str, typer.Option(help="Teacher architecture.")] = None,
        student: Annotated[str, typer.Option(help="Student architecture.")] = None,
        dataset: Dataset = None,
        transfer_set: Annotated[
            str, typer.Option(help="Images to distil on: a dataset name or folder:PATH.")
        ] = None,
        teacher_weights: Annotated[str, typer.Option(help="Teacher weights file.")] = None,
        alpha: Annotated[float, typer.Option(help="Weight of the KL term.")] = 1.0,
        beta: Annotated[float, typer.Option(help="Weight of cross-entropy on labels.")] = 0.0,
        temperature: Annotated[
            float, typer.Option("--temperature", "-T", help="KD temperature T.")
        ] = 1.0,
        epochs: Epochs = 200,
        batch_size: BatchSize = 256,
        lr: Lr = 0.1,
        weight_decay: WeightDecay = 1e-4,
        schedule: Schedule = "cosine",
        augment: Augment = "auto",
        seed: Seed = 0,
        mixed_precision: Precision = "no",
        cpu: Cpu = False,
        data_root: DataRoot = None,
        download: Download = False,
        out: Out = None,
        overwrite: Overwrite = False,
        resume: Resume = None,
        quiet: Quiet = False,
    ) -> None:
        """Vanilla KD: alpha*KL(t||s;T)*T^2 + beta*CE on a transfer set (default: the dataset)."""
        from dfkd.training.supervised import KDConfig, load_config, train_kd

        if resume:
            cfg = load_config(KDConfig, resume, "kd")
        else:
            require_options(teacher=teacher, student=student, dataset=dataset)
            cfg = from_arguments(KDConfig, locals())
        outcome = train_kd(cfg, resume=resume, reporter=progress(quiet), plugins=plugins)
        _summary(outcome, f"{cfg.teacher} -> {cfg.student} on {cfg.dataset}")

    @app.command("eval", rich_help_panel=PANEL)
    @guarded
    def evaluate_command(
        model: Annotated[str, typer.Option("--model", "-m", help="Architecture.")] = None,
        dataset: Dataset = None,
        weights: Annotated[
            str, typer.Option(help="Weights file (default: checkpoints/<dataset>-<model>).")
        ] = None,
        batch_size: BatchSize = 1000,
        mixed_precision: Precision = "no",
        cpu: Cpu = False,
        data_root: DataRoot = None,
        download: Download = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Top-1 (and top-5 past ten classes) accuracy on the test split."""
        from dfkd.data import open_dataset
        from dfkd.options import check_range
        from dfkd.training.inputs import InputFormat, evaluate
        from dfkd.training.setup import load_teacher, make_accelerator

        require_options(model=model, dataset=dataset)
        check_range("--batch-size", batch_size, ge=1)
        source = open_dataset(dataset, data_root, download, plugins=plugins)
        net, spec, path = load_teacher(model, source, weights, plugins)
        accelerator = make_accelerator(mixed_precision, cpu)
        net.to(accelerator.device)
        images, labels = source.load("test")
        scores = evaluate(
            net, images, labels, InputFormat.of(source, spec.size), accelerator, batch_size
        )
        result = {
            "model": model,
            "dataset": source.name,
            "weights": str(path),
            "samples": len(labels),
            **scores,
        }
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        from rich.table import Table

        table = Table("", "", show_header=False, title="Test-split accuracy")
        for key, value in result.items():
            label = {"top1": "top-1 %", "top5": "top-5 %"}.get(key, key)
            table.add_row(label, f"{value:.2f}" if isinstance(value, float) else str(value))
        console.print(table)


def progress(quiet: bool) -> Any:
    """The progress reporter (imported late: rich.progress is not needed for --help)."""
    from dfkd.cli.progress import ProgressReporter

    return ProgressReporter(not quiet)


def from_arguments(config_cls: type, arguments: dict[str, Any]) -> Any:
    """The config dataclass filled from a command's arguments of the same names."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in arguments.items() if k in names})


def _summary(outcome, what: str) -> None:
    last = outcome.last
    err_console.print(
        f"[bold]{what}[/]: last top-1 {last.get('top1', 0.0):.2f}%, best "
        f"{outcome.best_top1:.2f}% after {last.get('epoch', 0)} epochs",
        highlight=False,
    )
    console.print(f"run: {outcome.extras.get('run')}", highlight=False)
