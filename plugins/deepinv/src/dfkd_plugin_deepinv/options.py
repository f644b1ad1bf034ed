"""DeepInversion's options (docs/methods/deepinv.md). Torch-free: `dfkd list-methods --options`
reads it.

The defaults are the DataFree benchmark's CIFAR-10 script (wrn40_2 -> wrn16_1), so the
`cifar10` preset only has to name them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfkd.api import DataFreeOptions, option


@dataclass
class DeepInvOptions(DataFreeOptions):
    g_steps: int = option(1000, "Pixel optimisation steps per synthesized batch.")
    lr_g: float = option(0.1, "Adam learning rate of the pixels (betas 0.5, 0.99).", gt=0)
    bn: float = option(10.0, "Weight of the BatchNorm-statistics term sum_l r_l.", ge=0)
    oh: float = option(1.0, "Weight of the cross-entropy of the teacher against the targets.", ge=0)
    adv: float = option(
        1.0, "Weight of the competition term -JS(student, teacher; T=3) (ADI).", ge=0
    )
    adv_T: float = option(3.0, "Temperature of the Jensen-Shannon competition term.", gt=0)
    tv: float = option(0.001, "Weight of the L1 total variation of the pixels.", ge=0)
    l2: float = option(0.0, "Weight of the L2 norm of the whole pixel batch.", ge=0)
    jitter: int | None = option(
        None, "Largest random roll in pixels (None: image size // 8).", ge=0
    )
    flip: bool = option(True, "Randomly mirror the batch at each pixel step.")
    keep_best: bool = option(
        True,
        "Keep the lowest-loss iterate; false keeps the last one, which is what the reference "
        "ends up doing.",
    )
    augment: bool = option(
        True, "Random crop (padding image size // 8) and flip on student batches."
    )
    T: float = option(20.0, "Temperature of the student's KD loss.")
