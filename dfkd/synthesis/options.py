"""Options every data-free method shares: the loop's budget and the student's optimiser.

Method plugins subclass `DataFreeOptions` and add their own coefficients; this module must
stay torch-free because `dfkd list-methods --options` reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from dfkd.errors import UsageError
from dfkd.options import build_options, option

Schedule = Literal["cosine", "multistep", "constant"]
Optimizer = Literal["sgd", "adam"]


@dataclass
class DataFreeOptions:
    epochs: int = option(200, "Training epochs; test accuracy is measured after each.", ge=1)
    ep_steps: int = option(400, "Student steps per epoch; a multiple of kd_steps.", ge=1)
    kd_steps: int = option(400, "Student steps after each synthesis round.", ge=1)
    g_steps: int = option(1, "Generator or pixel optimisation steps per synthesis round.", ge=1)
    batch_size: int = option(256, "Student batch size (per process).", ge=1)
    synthesis_batch_size: int = option(
        0, "Images per synthesis round (0: same as batch_size).", ge=0
    )
    optimizer: Optimizer = option(
        "sgd", "Student optimiser: sgd (with momentum; DataFree) or adam (the original ZSKT code)."
    )
    lr: float = option(0.1, "Student learning rate (see schedule).", gt=0)
    schedule: Schedule = option(
        "cosine",
        "Student learning-rate schedule over the epochs after warm-up: cosine to zero, "
        "multistep (×gamma at each milestone) or constant.",
    )
    milestones: tuple[int, ...] = option(
        (),
        "Epochs of multistep's drops, e.g. 100,200, counted after warm-up "
        "(empty: 60/75/90 % of the epochs).",
        ge=1,
    )
    gamma: float = option(
        0.1, "Factor multistep multiplies the rate by at each milestone.", gt=0, le=1
    )
    momentum: float = option(0.9, "Student SGD momentum.", ge=0, lt=1)
    weight_decay: float = option(1e-4, "Student weight decay.", ge=0)
    grad_clip: float = option(
        0.0,
        "Largest gradient norm of a student step; 0: no clipping (the original ZSKT code clips "
        "at 5; the default presets at 5).",
        ge=0,
    )
    T: float = option(1.0, "Temperature of the student's KD loss.", gt=0)
    warmup: int = option(0, "Epochs of synthesis only, before the student trains.", ge=0)

    @property
    def syn_batch(self) -> int:
        return self.synthesis_batch_size or self.batch_size

    def check(self) -> None:
        """Rules between fields, checked by `build_options` before a run writes anything. An
        epoch is whole synthesis rounds, so ep_steps must be a multiple of kd_steps (it used to
        be rounded down without a word); the student's schedule spans the epochs after warm-up,
        so there must be some, and a multistep milestone must fall inside them to take effect."""
        if self.ep_steps % self.kd_steps:
            nearest = max(1, round(self.ep_steps / self.kd_steps)) * self.kd_steps
            raise UsageError(
                f"Option 'ep_steps' ({self.ep_steps}) must be a multiple of 'kd_steps' "
                f"({self.kd_steps}): an epoch is whole synthesis rounds; e.g. ep_steps={nearest}."
            )
        if self.warmup >= self.epochs:
            raise UsageError(
                f"Option 'warmup' ({self.warmup}) must be below 'epochs' ({self.epochs}): the "
                "student trains only after the warm-up epochs."
            )
        trained = self.epochs - self.warmup
        late = [m for m in self.milestones if m >= trained]
        if late and self.schedule == "multistep":  # other schedules ignore milestones
            raise UsageError(
                f"Option 'milestones' must be below {trained}, the epochs after warm-up "
                f"(epochs {self.epochs} - warmup {self.warmup}), not {late[0]}: a drop there "
                "never takes effect. Set them with -o milestones=A,B (empty: 60/75/90 % of "
                "the epochs)."
            )


def fit_milestones(
    options_cls: type, preset: dict[str, Any], overrides: Iterable[str]
) -> tuple[dict[str, Any], str | None]:
    """``preset`` with the multistep milestones the user did not set (the preset's, or the
    method's defaults) moved to the length ``overrides`` ask for with ``epochs``, at the same
    fractions of the epochs after warm-up, and a line that says so (None: nothing moved). A
    reference's drops at epochs 100 and 200 of 500 must not refuse a 20-epoch trial run, and
    must not be kept where they would fall after its end."""
    given = {item.partition("=")[0].strip().replace("-", "_") for item in overrides}
    if "epochs" not in given or "milestones" in given:
        return preset, None
    planned = build_options(options_cls, preset)  # the run the milestones were set for
    asked = build_options(options_cls, {**preset, "milestones": ()}, overrides)
    milestones = planned.milestones
    before, after = planned.epochs - planned.warmup, asked.epochs - asked.warmup
    if asked.schedule != "multistep" or not milestones or before == after:
        return preset, None
    moved = tuple(
        sorted({min(max(1, round(m * after / before)), after - 1) for m in milestones} - {0})
    )
    note = (
        f"milestones {_listed(milestones)} (of {before} epochs after warm-up) moved to "
        f"{_listed(moved) or 'none'} for {after}, at the same fractions; set them with "
        "-o milestones=A,B."
    )
    return {**preset, "milestones": moved}, note


def _listed(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


#: What every method's `default` preset adds to its values for small images. A student step's
#: gradient is T(p_s - p_t) under the KD loss's T^2 scale: an over-confident teacher keeps p_t
#: peaked even at T = 20, so that gradient grows with T and can drive a BatchNorm-free student
#: into one class in a few steps. On a well-calibrated teacher the clip does not bite: NAYER's
#: Fashion-MNIST run scored 82.96 % with and without it, to the digit (2026-12-07, f5fc464).
STABLE_STUDENT: dict[str, Any] = {"grad_clip": 5.0}


#: the preset for teachers no preset was tuned on; `default-TASK` (e.g. `default-segmentation`),
#: where a method ships one, stands in for it with a teacher of that task
DEFAULT_PRESET = "default"


def default_preset(small_images: dict[str, Any]) -> dict[str, Any]:
    """A method's `default` preset, for teachers no preset was tuned on: its values for small
    images (found by dfkd's CPU benchmarks) with the stable student step above."""
    return {**small_images, **STABLE_STUDENT}
