"""What `dfkd invert` can be asked: its options, the reference's three settings and the presets.

Torch-free, so that building the CLI (and `dfkd --help`) stays cheap. The defaults are the
NVlabs ImageNet README command (docs/methods/deepinv.md#nvlabs-imagenet-script); a preset replaces
some of them and explicit command-line values replace the preset's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dfkd.api import UsageError


@dataclass(frozen=True)
class Setting:
    """One of the reference's ``setting_id`` recipes."""

    #: (downsampling factor, iterations) per resolution stage, in order
    stages: tuple[tuple[int, int], ...]
    betas: tuple[float, float]
    clip: bool


SETTINGS = {
    0: Setting(((2, 2000), (1, 1000)), (0.5, 0.9), True),  # multi-resolution
    1: Setting(((1, 2000),), (0.5, 0.9), True),
    2: Setting(((1, 20000),), (0.9, 0.999), False),
}
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("no", "bf16")


@dataclass
class InvertConfig:
    """Everything one inversion needs; recorded in the output folder's config.json."""

    model: str
    dataset: str
    weights: str | None = None
    pretrained: bool = False
    batch_size: int = 84
    setting: int = 0
    iterations: int | None = None  # None: the setting's count
    lr: float = 0.25
    betas: tuple[float, float] | None = None  # None: the setting's
    clip: bool | None = None  # None: the setting's
    schedule: str = "cosine"
    r_feature: float = 0.01
    first_bn_multiplier: float = 10.0
    tv_l1: float = 0.0
    tv_l2: float = 1e-4
    l2: float = 1e-5
    main_loss_multiplier: float = 1.0
    adi_scale: float = 0.0
    verifier: str | None = None
    verifier_weights: str | None = None
    random_labels: bool = False
    labels: tuple[int, ...] | None = None
    jitter: int = 30
    flip: bool = True
    mixed_precision: str = "no"
    cpu: bool = False
    data_root: str | None = None
    out: str | None = None
    overwrite: bool = False
    log_every: int = 100
    seed: int = 0
    preset: str | None = None

    def stages(self) -> list[tuple[int, int]]:
        """(downsampling factor, iterations) per stage. ``iterations`` replaces the setting's
        total; the multi-resolution setting then keeps its 2:1 split between the stages."""
        stages = list(SETTINGS[self.setting].stages)
        if self.iterations is None:
            return stages
        if len(stages) == 1:
            return [(stages[0][0], self.iterations)]
        full = max(1, round(self.iterations / 3))
        return [(stages[0][0], self.iterations - full), (stages[1][0], full)]

    @property
    def adam_betas(self) -> tuple[float, float]:
        return self.betas if self.betas is not None else SETTINGS[self.setting].betas

    @property
    def clipping(self) -> bool:
        return self.clip if self.clip is not None else SETTINGS[self.setting].clip

    def check(self) -> None:
        """Refuse values that cannot work, before any model is built."""
        if self.setting not in SETTINGS:
            raise UsageError(f"--setting must be 0, 1 or 2, not {self.setting}.")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"--schedule must be cosine or constant, not '{self.schedule}'.")
        if self.mixed_precision not in PRECISIONS:
            raise UsageError(
                f"--mixed-precision must be no or bf16, not '{self.mixed_precision}' (fp16 pixel "
                "gradients would need loss scaling)."
            )
        minimum = len(SETTINGS[self.setting].stages)
        if self.iterations is not None and self.iterations < minimum:
            raise UsageError(f"--setting {self.setting} needs --iterations >= {minimum}.")
        for flag, value in (("--batch-size", self.batch_size), ("--log-every", self.log_every)):
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, not {value}.")
        if self.jitter < 0:
            raise UsageError(f"--jitter must not be negative, not {self.jitter}.")
        if self.random_labels and self.labels:
            raise UsageError("Give --random-labels or --labels, not both.")
        if self.adi_scale and not self.verifier:
            raise UsageError("--adi-scale needs a competing network: add --verifier MODEL.")


PRESETS: dict[str, dict[str, Any]] = {
    # NVlabs' CIFAR-10 script with the README's "better" command
    # (docs/methods/deepinv.md#nvlabs-cifar-10-script): one stage of
    # 2000 iterations, Adam's default betas, constant LR, no clipping, jitter ±2, no flip, no
    # first-layer multiplier, TV_2 1e-3 (di_var_scale), no L2.
    "cifar10": {
        "batch_size": 256,
        "setting": 1,
        "iterations": 2000,
        "betas": (0.9, 0.999),
        "clip": False,
        "schedule": "constant",
        "lr": 0.1,
        "r_feature": 10.0,
        "first_bn_multiplier": 1.0,
        "tv_l1": 0.0,
        "tv_l2": 1e-3,
        "l2": 0.0,
        "main_loss_multiplier": 1.0,
        "adi_scale": 0.0,
        "jitter": 2,
        "flip": False,
    },
}


def build_config(preset: str | None, given: Mapping[str, Any]) -> InvertConfig:
    """Defaults, then the preset, then every value in ``given`` that is not None."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise UsageError(
                f"dfkd invert has no preset '{preset}'. Presets: {', '.join(PRESETS)}."
            )
        values.update(PRESETS[preset])
    values.update({k: v for k, v in given.items() if v is not None})
    missing = [k for k in ("model", "dataset") if not values.get(k)]
    if missing:
        raise UsageError(f"Missing {', '.join('--' + k for k in missing)}. See dfkd invert --help.")
    known = {f.name for f in dataclasses.fields(InvertConfig)}
    unknown = set(values) - known
    if unknown:
        raise UsageError(f"Unknown invert options: {', '.join(sorted(unknown))}.")
    config = InvertConfig(**values, preset=preset)
    config.check()
    return config
