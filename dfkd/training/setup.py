"""What every training command does before its loop: accelerator, seeds, data, teacher."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dfkd.errors import UsageError
from dfkd.plugins import Plugins, get_plugins
from dfkd.tasks import CLASSIFICATION
from dfkd.weights import load_weights, read_meta


def make_accelerator(
    mixed_precision: str = "no",
    cpu: bool = False,
    log_with: str | None = None,
    project_dir: str | Path | None = None,
) -> Any:
    """The accelerator. ``auto`` precision is resolved here on a probe workload (see
    `dfkd.training.precision`); a caller with a workload of its own, or one that records the
    choice, resolves it first with `resolve_precision` and passes the result. ``log_with``
    (``--log-with``) names trackers writing under ``project_dir``, the run directory."""
    from accelerate import Accelerator

    from dfkd.training.precision import resolve_precision
    from dfkd.training.tracking import tracker_names

    trackers = tracker_names(log_with)
    mixed_precision, _ = resolve_precision(mixed_precision, cpu=cpu)
    # Without cpu=True, accelerate only forms a CPU process group when asked to: under torchrun
    # on a machine without CUDA every process would run alone and write the same run directory.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        cpu = True
    return Accelerator(
        mixed_precision=mixed_precision,
        cpu=cpu,
        log_with=trackers or None,
        project_dir=str(project_dir) if trackers else None,
    )


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed the global generators; each process gets its own stream so shards differ."""
    random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, epoch): data order survives a resume unchanged."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + salt)


def checkpoints_dir() -> Path:
    return Path(os.environ.get("DFKD_CHECKPOINTS", "checkpoints"))


def default_weights_path(dataset: str, model: str) -> Path:
    """Where `dfkd scratch` leaves the best weights and `--teacher M` looks for them."""
    safe = model.replace(":", "_").replace("/", "_")
    return checkpoints_dir() / f"{dataset.replace(':', '_').replace('/', '_')}-{safe}.safetensors"


@dataclass
class ModelSpec:
    """A model's name and what its inputs must look like."""

    name: str
    size: int | None  # pixels it expects; None when any size works
    channels: int


def build(
    name: str, source: Any, plugins: Plugins | None = None
) -> tuple[torch.nn.Module, ModelSpec]:
    """Build model ``name`` for a dataset: its classes, its channels, its image size."""
    from dfkd.models import build_model, model_input_size

    plugins = plugins or get_plugins()
    if not source.num_classes:
        why = f": {source.unlabelled_because}" if source.unlabelled_because else "."
        raise UsageError(f"Dataset {source.name} has no labels to size a classifier{why}")
    if source.num_classes < 2:
        raise UsageError(
            f"Dataset {source.name} has one class ({source.classes[0]}); a classifier needs at "
            "least two."
        )
    check_task(name, source, plugins)
    model = build_model(name, source.num_classes, source.channels, plugins=plugins)
    size = model_input_size(name, plugins=plugins)
    return model, ModelSpec(name, size, source.channels)


def model_task(name: str, plugins: Plugins | None = None) -> str:
    """What model ``name`` predicts, as its registration says (classification by default)."""
    return (plugins or get_plugins()).models.get(name).info.get("task", CLASSIFICATION)


def check_task(name: str, source: Any, plugins: Plugins | None = None) -> None:
    """Refuse a model whose task is not its dataset's: a segmentation network cannot learn
    from image labels, nor a classifier from masks."""
    task = model_task(name, plugins)
    if task != source.task:
        raise UsageError(
            f"{name} is a {task} network and {source.name} a {source.task} dataset; use a "
            f"{source.task} model (see dfkd models) or a {task} dataset (see dfkd datasets)."
        )


def load_teacher(
    name: str,
    source: Any,
    weights: str | Path | None = None,
    plugins: Plugins | None = None,
) -> tuple[torch.nn.Module, ModelSpec, Path]:
    """The frozen teacher; a missing checkpoint says where it looked and how to make one."""
    (plugins or get_plugins()).models.get(name)  # a misspelt name, not missing weights
    path = Path(weights) if weights else default_weights_path(source.name, name)
    if not path.exists():
        how = f"dfkd scratch --model {name} --dataset {source.name}"
        raise UsageError(
            f"No weights for teacher {name} on {source.name}: looked for {path}. "
            f"Train one with '{how}' or pass --teacher-weights FILE."
        )
    check_meta(path, name, source)
    teacher, spec = build(name, source, plugins)
    load_weights(teacher, path)
    teacher.eval().requires_grad_(False)
    return teacher, spec, path


def check_meta(path: Path, model: str, source: Any) -> None:
    """Refuse weights whose sidecar says they were made for other classes or channels."""
    meta = read_meta(path)
    if meta.get("num_classes") not in (None, source.num_classes):
        raise UsageError(
            f"{path} was trained for {meta['num_classes']} classes; {source.name} has "
            f"{source.num_classes}."
        )
    if meta.get("channels") not in (None, source.channels):
        raise UsageError(
            f"{path} expects {meta['channels']}-channel images; "
            f"{source.name} has {source.channels}."
        )
    if meta.get("model") not in (None, model):
        raise UsageError(f"{path} holds weights of {meta['model']}, not {model}.")


def weights_meta(spec: ModelSpec, source: Any, **extra: Any) -> dict[str, Any]:
    return {
        "model": spec.name,
        "dataset": source.name,
        "num_classes": source.num_classes,
        "channels": source.channels,
        "input_size": spec.size,
        "image_size": source.image_size,
        "mean": list(source.mean),
        "std": list(source.std),
        "classes": list(source.classes),
        "task": source.task,
        **extra,
    }


def run_path(command: str, model: str, dataset: str, out: str | None) -> Path:
    """Where a new run goes: ``--out``, or a fresh ``runs/<date>-...`` (known before the
    accelerator is made, since trackers write there)."""
    from dfkd.training.runs import default_run_path

    return Path(out) if out else default_run_path(command, model, dataset)


def open_run(
    accelerator: Any,
    command: str,
    options: dict[str, Any],
    *,
    model: str,
    dataset: str,
    out: str | None,
    overwrite: bool,
    plugin_versions: dict[str, str] | None = None,
) -> Any:
    """Create the run directory (main process) and record everything needed to reproduce it."""
    from dfkd.training.runs import create_run, versions

    path = run_path(command, model, dataset, out)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run = create_run(path, overwrite=overwrite)
        run.write_config(
            {"command": command, "options": options, "versions": versions(plugin_versions)}
        )
    accelerator.wait_for_everyone()
    from dfkd.training.runs import RunDir

    return RunDir(path)


def resume_options(run_path: str | Path, command: str) -> dict[str, Any]:
    """The options a run was started with, so `--resume` continues exactly that run."""
    from dfkd.training.runs import RunDir

    run = RunDir(Path(run_path))
    config = run.read_config()
    if config.get("command") != command:
        raise UsageError(
            f"{run_path} is a '{config.get('command')}' run; resume it with "
            f"'dfkd {config.get('command')} --resume {run_path}'."
        )
    return config["options"]
