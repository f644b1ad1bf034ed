"""What a teacher's inputs look like when no dataset is named: the teacher-only flow.

A data-free run needs the class count, channels, image size and normalisation the teacher was
trained with. They come, in this order, from the weights' sidecar (dfkd writes one beside every
weights file), from the model's own pretrained configuration (timm models carry mean, std, input
size and classes), and from the user's flags; a flag that contradicts the sidecar is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfkd.data.source import DataSource, Split
from dfkd.errors import UsageError
from dfkd.plugins import Plugins
from dfkd.tasks import CLASSIFICATION
from dfkd.weights import read_meta

NO_DATASET = "none"


@dataclass
class InputFlags:
    """The user's description of the teacher's inputs (`dfkd run --classes ... --std ...`)."""

    classes: int | None = None
    channels: int | None = None
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: str | None = None  # a file with one class name per line

    def given(self) -> dict[str, Any]:
        names = ("classes", "channels", "image_size", "mean", "std")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


class TeacherInputs(DataSource):
    """A dataset source with the format of the teacher's inputs and no images at all."""

    def __init__(
        self,
        classes: list[str],
        channels: int,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        trained_on: str | None = None,
        task: str = CLASSIFICATION,
    ) -> None:
        self.name = NO_DATASET
        self.location = Path(NO_DATASET)
        self.classes = classes
        self.channels = channels
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.trained_on = trained_on  # the dataset the sidecar names, for the record only
        self.task = task

    def _read(self, split: Split) -> Any:
        raise UsageError("No dataset was named, so there are no images to read; add --dataset.")


@dataclass
class _Found:
    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def offer(self, key: str, value: Any, origin: str) -> None:
        if value is not None and key not in self.values:
            self.values[key] = value
            self.origin[key] = origin


def describe_inputs(
    model: str, weights: Path, flags: InputFlags, plugins: Plugins
) -> TeacherInputs:
    """The teacher's input format from its sidecar, its model's configuration and ``flags``."""
    meta = read_meta(weights)
    found = _Found()
    for key, meta_key in (
        ("classes", "num_classes"),
        ("channels", "channels"),
        ("image_size", "input_size"),
        ("image_size", "image_size"),  # a segmentation teacher's training crop
        ("mean", "mean"),
        ("std", "std"),
    ):
        value = meta.get(meta_key)
        found.offer(key, tuple(value) if isinstance(value, list) else value, "sidecar")
    if meta.get("dataset") and "image_size" not in found.values:
        known = plugins.datasets.match(meta["dataset"])
        entry = next((e for e in known if e.name == meta["dataset"]), None)
        found.offer("image_size", entry and entry.info.get("image_size"), "sidecar's dataset")
    for key, value in _model_config(model).items():
        found.offer(key, value, f"{model}'s pretrained configuration")
    for key, value in flags.given().items():
        if key in found.values and found.values[key] != value:
            raise UsageError(
                f"--{key.replace('_', '-')} {_show(value)} contradicts the teacher's "
                f"{found.origin[key]} ({_show(found.values[key])}); drop the flag."
            )
        found.offer(key, value, "flags")
    missing = [
        k for k in ("classes", "channels", "image_size", "mean", "std") if k not in found.values
    ]
    if missing:
        flags_needed = " ".join(f"--{k.replace('_', '-')}" for k in missing)
        raise UsageError(
            f"{weights} does not say what its inputs are (its sidecar "
            f"{weights.with_suffix('.json').name} is missing or incomplete); give "
            f"{flags_needed}, or --dataset."
        )
    values = found.values
    for key in ("mean", "std"):
        if len(values[key]) != values["channels"]:
            raise UsageError(
                f"--{key} has {len(values[key])} values; the teacher takes {values['channels']} "
                "channels."
            )
    names = _class_names(flags.class_names, meta.get("classes"), values["classes"])
    return TeacherInputs(
        names,
        int(values["channels"]),
        int(values["image_size"]),
        tuple(values["mean"]),
        tuple(values["std"]),
        trained_on=meta.get("dataset"),
        task=plugins.models.get(model).info.get("task", CLASSIFICATION),
    )


def _class_names(path: str | None, recorded: list[str] | None, count: int) -> list[str]:
    if path:
        try:
            names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise UsageError(f"Cannot read --class-names {path}: {exc.strerror or exc}.") from None
        if len(names) != count:
            raise UsageError(
                f"--class-names {path} lists {len(names)} classes; the teacher has {count}."
            )
        return names
    if recorded and len(recorded) == count:
        return list(recorded)
    return [str(i) for i in range(count)]


def _model_config(model: str) -> dict[str, Any]:
    """What a timm model's pretrained configuration says of its inputs (nothing for others)."""
    if not model.startswith("timm:"):
        return {}
    try:
        import timm
    except ImportError:
        return {}
    try:
        config = timm.models.get_pretrained_cfg(model.partition(":")[2])
    except Exception:  # noqa: BLE001 - an unknown name is reported when the model is built
        return {}
    if config is None:
        return {}
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    channels, height, _ = config.get("input_size", (None, None, None))
    return {
        "classes": config.get("num_classes"),
        "channels": channels,
        "image_size": height,
        "mean": tuple(config["mean"]) if config.get("mean") else None,
        "std": tuple(config["std"]) if config.get("std") else None,
    }


def find_teacher_weights(model: str, checkpoints: Path) -> Path:
    """``checkpoints/*-MODEL.safetensors`` when exactly one matches; else an error that says
    what to do."""
    safe = model.replace(":", "_").replace("/", "_")
    found = sorted(checkpoints.glob(f"*-{safe}.safetensors"))
    if len(found) == 1:
        return found[0]
    if found:
        listed = ", ".join(str(p) for p in found)
        raise UsageError(
            f"Several teachers {model} in {checkpoints}: {listed}. Choose one with "
            "--teacher-weights FILE or name its dataset with --dataset."
        )
    raise UsageError(
        f"No {model} teacher in {checkpoints}. Train one with 'dfkd scratch --model {model} "
        f"--dataset D', convert one with 'dfkd import-weights FILE --model {model} --dataset D', "
        "or pass --teacher-weights FILE."
    )


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)
