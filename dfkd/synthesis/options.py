"""Options every data-free method shares: the loop's budget and the student's optimiser.

Method plugins subclass `DataFreeOptions` and add their own coefficients; this module must
stay torch-free because `dfkd list-methods --options` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfkd.options import option

Schedule = Literal["cosine", "multistep", "constant"]
Optimizer = Literal["sgd", "adam"]


@dataclass
class DataFreeOptions:
    epochs: int = option(200, "Training epochs; test accuracy is measured after each.")
    ep_steps: int = option(400, "Student steps per epoch.")
    kd_steps: int = option(400, "Student steps after each synthesis round.")
    g_steps: int = option(1, "Generator or pixel optimisation steps per synthesis round.")
    batch_size: int = option(256, "Student batch size (per process).")
    synthesis_batch_size: int = option(0, "Images per synthesis round (0: same as batch_size).")
    optimizer: Optimizer = option(
        "sgd", "Student optimiser: sgd (with momentum; DataFree) or adam (the original ZSKT code)."
    )
    lr: float = option(0.1, "Student learning rate (see schedule).")
    schedule: Schedule = option(
        "cosine",
        "Student learning-rate schedule over the epochs after warm-up: cosine to zero, "
        "multistep (×0.1 at each milestone) or constant.",
    )
    milestones: tuple[int, ...] = option(
        (),
        "Epochs of multistep's ×0.1 drops, e.g. 100,200, counted after warm-up "
        "(empty: 60/75/90 % of the epochs).",
    )
    momentum: float = option(0.9, "Student SGD momentum.")
    weight_decay: float = option(1e-4, "Student weight decay.")
    grad_clip: float = option(
        0.0,
        "Largest gradient norm of a student (and generator) step; 0: no clipping "
        "(the original ZSKT code clips at 5).",
    )
    T: float = option(1.0, "Temperature of the student's KD loss.")
    warmup: int = option(0, "Epochs of synthesis only, before the student trains.")

    @property
    def syn_batch(self) -> int:
        return self.synthesis_batch_size or self.batch_size
