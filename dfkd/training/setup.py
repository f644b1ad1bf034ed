"""What every training command does before its loop: accelerator, seeds, data, teacher."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dfkd.errors import UsageError
from dfkd.fileio import held_lock, sha256_of
from dfkd.options import fits_type, type_name
from dfkd.plugins import Plugins, get_plugins
from dfkd.tasks import CLASSIFICATION
from dfkd.weights import load_weights, read_meta, save_weights


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
    """Seed Python's, numpy's and torch's generators (every device's) through accelerate; each
    process gets its own stream so shards differ."""
    from accelerate.utils import set_seed

    set_seed(seed + rank)


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, epoch): data order survives a resume unchanged."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + salt)


def checkpoints_dir() -> Path:
    return Path(os.environ.get("DFKD_CHECKPOINTS", "checkpoints"))


def default_weights_path(dataset: str, model: str) -> Path:
    """Where `dfkd scratch` leaves the best weights and `--teacher M` looks for them."""
    safe = model.replace(":", "_").replace("/", "_")
    return checkpoints_dir() / f"{dataset.replace(':', '_').replace('/', '_')}-{safe}.safetensors"


def default_teacher_lock(target: Path) -> contextlib.AbstractContextManager[None]:
    """Held while a command decides whether to write the default teacher ``target`` and writes
    it (``<dataset>-<model>.lock`` beside it): two commands that both find no default cannot
    both make theirs the default, the last to finish winning."""
    return held_lock(target.with_suffix(".lock"))


def publish_teacher(
    model: torch.nn.Module, target: Path, meta: dict[str, Any], replace: bool
) -> None:
    """Write ``model`` as the default teacher ``target`` when there is none, when ``replace``
    (--set-default) says so, or when the default is this run's own earlier best (its sidecar
    names ``meta["run"]``). Decided under the lock at the moment of writing, not when the run
    started: a resumed run, or one of two started together, must not replace a default that
    another made meanwhile."""
    with default_teacher_lock(target):
        if target.exists() and not replace and not published_by(target, meta["run"]):
            return
        save_weights(model, target, meta)


def published_by(target: Path, run: str) -> bool:
    """Whether the default teacher ``target`` holds the weights run ``run`` published."""
    try:
        return target.exists() and read_meta(target).get("run") == run
    except UsageError:  # a damaged sidecar names no run
        return False


def teacher_from_weights(teacher: str | None, weights: str | None) -> str | None:
    """``--teacher``, or where it is absent the model the weights' sidecar names (a ``--teacher``
    that contradicts the sidecar is `check_meta`'s to refuse, naming both)."""
    if teacher or not weights or not Path(weights).is_file():
        return teacher  # a missing file is load_teacher's to report
    return read_meta(weights).get("model")


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
    from dfkd.models import check_model_name

    check_model_name(name, plugins)  # a misspelt name, not missing weights
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


def resume_options(
    run_path: str | Path, command: str, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The options a run was started with, so `--resume` continues exactly that run. ``given``
    holds what the command line names beside --resume (method, models, dataset): one that is
    not what the run recorded is refused rather than ignored, since the run goes on with its
    own."""
    from dfkd.training.runs import RunDir

    run = RunDir(Path(run_path))
    config = run.read_config()
    if config.get("command") != command:
        raise UsageError(
            f"{run_path} is a '{config.get('command')}' run; resume it with "
            f"'dfkd {config.get('command')} --resume {run_path}'."
        )
    options = config["options"]
    for name, value in (given or {}).items():
        recorded = options.get(name)
        if value is not None and recorded is not None and value != recorded:
            what = "method" if name == "method" else f"--{name.replace('_', '-')}"
            raise UsageError(
                f"{run_path} was started with {what} {recorded}, not {value}; leave {what} out "
                "to resume it, or start a new run."
            )
    return options


def check_recorded(
    cls: type, options: dict[str, Any], run_path: str | Path, required: Iterable[str] = ()
) -> None:
    """Refuse, as one line, the options a run recorded for config class ``cls`` where
    config.json names a setting this dfkd does not know, lacks one the run cannot go on without
    (``required``, and every field without a default) or holds a value of another type than its
    field (``"lr": "abc"``): an edited or damaged file must stop the resume before it starts, not
    end it in a traceback, nor let a default stand in for the run's teacher."""
    from dfkd.training.runs import CONFIG, START_OVER

    where = Path(run_path) / CONFIG
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise UsageError(
            f"{where} records settings this dfkd does not know ({', '.join(unknown)}); resume it "
            "with the dfkd version that started it."
        )
    no_default = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = sorted({*required, *no_default} - set(options))
    if missing:
        raise UsageError(f"{where} records no {', '.join(missing)}. {START_OVER}")
    hints = typing.get_type_hints(cls)
    for name, value in options.items():
        if not fits_type(value, hints[name]):
            raise UsageError(
                f"{where} records {name} = {json.dumps(value)}, not {type_name(hints[name])}; "
                f"correct it to resume the run. {START_OVER}"
            )


def check_resumed_teacher(run_path: str | Path, weights: Path) -> None:
    """Refuse to resume a run from another teacher file than it started with (a default teacher
    retrained since, a file replaced): its next epochs would distil another network, silently.
    Runs from before the teacher's sha256 was recorded are not checked."""
    from dfkd.training.runs import RunDir

    recorded = RunDir(Path(run_path)).read_config().get("teacher_sha256")
    if recorded is not None and sha256_of(weights) != recorded:
        raise UsageError(
            f"{weights} is not the teacher {run_path} was started with (its sha256 differs); put "
            "that teacher back to resume the run, or start a new one."
        )
