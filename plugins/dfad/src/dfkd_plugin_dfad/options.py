"""DFAD's options; the defaults are VainF's CIFAR-10 script (ResNet-34 → ResNet-18,
docs/methods/dfad.md) in the shared loop's terms. Torch-free: `dfkd list-methods --options` reads
it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfkd.api import GenerativeOptions, GeneratorKind, Schedule, option


@dataclass
class DFADOptions(GenerativeOptions):
    epochs: int = option(500, "Training epochs; test accuracy is measured after each.")
    ep_steps: int = option(
        250, "Student steps per epoch (the reference's 50 iterations × 5 student steps)."
    )
    kd_steps: int = option(5, "Student steps per generator step.")
    weight_decay: float = option(5e-4, "Student SGD weight decay.")
    schedule: Schedule = option(
        "multistep", "Student learning-rate schedule (the reference's MultiStepLR)."
    )
    milestones: tuple[int, ...] = option(
        (100, 200), "Epochs at which multistep divides the rates by 10 (the reference's)."
    )
    schedule_g: bool = option(
        True, "The generator's rate follows the student's schedule, as in the reference."
    )
    generator: GeneratorKind = option(
        "a", "Generator kind; DFAD's GeneratorA feeds the networks its standardised output."
    )
    beta1: float = option(0.9, "Adam's first-moment decay for the generator (Adam's default).")
    adv: float = option(1.0, "Weight of the generator's loss −mean|s − t| (L1 on logits).")
    adv_loss: Literal["auto", "l1", "log_l1"] = option(
        "auto",
        "The generator's loss: l1 is −mean|s − t| (the classification scripts), log_l1 is "
        "−log(1 + mean|s − t|) (the segmentation scripts); auto picks by the teacher's task.",
    )
