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
    LogWith,
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
from dfkd.training.recipes import recipes_help

PANEL = "Training"
EXPORTED_SUFFIXES = (".onnx", ".torchscript.pt")
FROM_RECIPE = " Default: the recipe's."


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command(rich_help_panel=PANEL)
    @guarded
    def scratch(
        model: Annotated[str, typer.Option("--model", "-m", help="Architecture to train.")] = None,
        dataset: Dataset = None,
        recipe: Annotated[
            str,
            typer.Option(
                help="Named values for the training options below that are not given (config.json "
                f"records the recipe and the values used). {recipes_help()}."
            ),
        ] = "default",
        epochs: Annotated[int, typer.Option(help="Training epochs." + FROM_RECIPE)] = None,
        batch_size: Annotated[
            int, typer.Option(help="Minibatch size (per process)." + FROM_RECIPE)
        ] = None,
        lr: Annotated[
            float, typer.Option(help="Initial learning rate (SGD)." + FROM_RECIPE)
        ] = None,
        weight_decay: Annotated[float, typer.Option(help="SGD weight decay." + FROM_RECIPE)] = None,
        schedule: Annotated[
            str,
            typer.Option(
                help="cosine, multistep (x0.1 at 60/75/90% of the epochs) or constant."
                + FROM_RECIPE
            ),
        ] = None,
        label_smoothing: Annotated[
            float,
            typer.Option(
                help="Cross-entropy label smoothing in [0, 1): the label gets 1 - s, the classes "
                "share s."
            ),
        ] = 0.0,
        augment: Augment = "auto",
        seed: Seed = 0,
        mixed_precision: Precision = "no",
        cpu: Cpu = False,
        data_root: DataRoot = None,
        download: Download = False,
        out: Out = None,
        overwrite: Overwrite = False,
        resume: Resume = None,
        log_with: LogWith = None,
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
            cfg = load_config(
                ScratchConfig, resume, "scratch", {"model": model, "dataset": dataset}
            )
        else:
            require_options(model=model, dataset=dataset)
            cfg = from_arguments(ScratchConfig, locals())
        outcome = train_scratch(cfg, resume=resume, reporter=progress(quiet), plugins=plugins)
        if not outcome.main_process:
            return  # process 0 reports the run
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
        teacher_weights: Annotated[
            str,
            typer.Option(help="Teacher weights file (its sidecar names --teacher if not given)."),
        ] = None,
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
        log_with: LogWith = None,
        quiet: Quiet = False,
    ) -> None:
        """Vanilla KD: alpha*KL(t||s;T)*T^2 + beta*CE on a transfer set (default: the dataset)."""
        from dfkd.training.setup import teacher_from_weights
        from dfkd.training.supervised import KDConfig, load_config, train_kd

        if resume:
            given = {"teacher": teacher, "student": student, "dataset": dataset}
            cfg = load_config(KDConfig, resume, "kd", given)
        else:
            teacher = teacher_from_weights(teacher, teacher_weights)
            require_options(teacher=teacher, student=student, dataset=dataset)
            cfg = from_arguments(KDConfig, locals())
        outcome = train_kd(cfg, resume=resume, reporter=progress(quiet), plugins=plugins)
        if not outcome.main_process:
            return  # process 0 reports the run
        _summary(outcome, f"{cfg.teacher} -> {cfg.student} on {cfg.dataset}")

    @app.command("eval", rich_help_panel=PANEL)
    @guarded
    def evaluate_command(
        model: Annotated[str, typer.Option("--model", "-m", help="Architecture.")] = None,
        dataset: Dataset = None,
        weights: Annotated[
            str,
            typer.Option(
                help="Weights file (default: checkpoints/<dataset>-<model>), or a student "
                "exported by 'dfkd export' (.onnx, .torchscript.pt), scored as a runtime runs it."
            ),
        ] = None,
        batch_size: Annotated[
            int,
            typer.Option(
                help="Images per forward \\[default: 1000; 16 for segmentation].",
                show_default=False,
            ),
        ] = None,
        mixed_precision: Precision = "no",
        cpu: Cpu = False,
        data_root: DataRoot = None,
        download: Download = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Top-1 (and top-5 past ten classes) accuracy on the test split; mIoU and pixel
        accuracy for a segmentation network."""
        from dfkd.data import open_dataset
        from dfkd.data.pipeline import InputFormat
        from dfkd.options import check_range
        from dfkd.training.setup import (
            check_task,
            load_teacher,
            make_accelerator,
            teacher_from_weights,
        )
        from dfkd.training.tasks import task_of

        exported = weights is not None and weights.endswith(EXPORTED_SUFFIXES)
        if not exported:
            model = teacher_from_weights(model, weights)  # the weights' sidecar names it
        require_options(model=model or exported or None, dataset=dataset)
        source = open_dataset(dataset, data_root, download, plugins=plugins)
        task = task_of(source.task)
        if batch_size is not None:
            check_range("--batch-size", batch_size, ge=1)
        if exported:
            from dfkd.export import ExportedModel

            net, path = ExportedModel(weights), weights
            model = net.meta.get("model", model)
            check_task(model, source, plugins)
            pixels = (0.0,) * source.channels, (1.0,) * source.channels
            mean, std = pixels if net.takes_pixels else (source.mean, source.std)
            fmt = InputFormat(tuple(mean), tuple(std), net.meta.get("input_size"))
        else:
            net, spec, path = load_teacher(model, source, weights, plugins)
            fmt = InputFormat.of(source, spec.size)
        images, labels = source.load("test")
        if exported:
            net.check_fits(source, images.shape[-2:])
        accelerator = make_accelerator(mixed_precision, cpu)
        net.to(accelerator.device)
        scorer = task.scorer(source, (images, labels), fmt, accelerator, batch_size)
        scores = scorer(net)
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

        title = f"Test-split {task.score_title}"
        table = Table("", "", show_header=False, title=title)
        for key, value in result.items():
            label = SCORE_NAMES.get(key, key)
            label = f"{label} %" if key in SCORE_NAMES else label
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


#: how the commands name the scores a run records
SCORE_NAMES = {
    "top1": "top-1",
    "top5": "top-5",
    "miou": "mIoU",
    "pixel_acc": "pixel accuracy",
    "agree": "agreement",
}


#: what a newcomer needs to read `agree` right: it is no accuracy, and far below one
AGREEMENT_MEANS = (
    "agreement: how often the student's top class is the teacher's on images inverted from the "
    "teacher (unnatural inputs), not accuracy: it runs below real-data accuracy (a Fashion-MNIST "
    "student at 74 % agreement scores 82 %). It tracks training; it does not pick epochs."
)


def _summary(outcome, what: str) -> None:
    last = outcome.last
    scores = ", ".join(
        f"last {name} {last[key]:.2f}%"
        for key, name in SCORE_NAMES.items()
        if key in last and key != "top5"
    )
    if outcome.best_by is None:
        chosen = "the result is the last epoch (no test split to choose another by)"
    else:
        chosen = f"best {outcome.best_by} {outcome.best_score:.2f}%"
    epochs = last.get("epoch", 0)
    err_console.print(
        f"[bold]{what}[/]: {scores}; {chosen} after {epochs} epoch{'s' * (epochs != 1)}",
        highlight=False,
    )
    if "agree" in last:
        err_console.print(AGREEMENT_MEANS, highlight=False)
    for event in outcome.guard_events + outcome.guard_notes:
        err_console.print(f"[yellow]collapse guard[/]: {event}", highlight=False)
    if "weak_student" in outcome.extras:
        weak = outcome.extras["weak_student"]
        err_console.print(f"[bold red]weak student[/]: {weak}", highlight=False)
    console.print(f"run: {outcome.extras.get('run')}", highlight=False)
