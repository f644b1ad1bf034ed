"""Options of `PooledInversion`, the base FastDFKD and NAYER share (their reference scripts'
values). Torch-free, like every options module: `dfkd list-methods --options` reads it."""

from __future__ import annotations

from dataclasses import dataclass

from dfkd.options import option
from dfkd.synthesis.options import DataFreeOptions


@dataclass
class PooledInversionOptions(DataFreeOptions):
    warmup: int = option(20, "Epochs of synthesis only (no KD, no adversarial term) first.")
    batch_size: int = option(256, "Student batch size, drawn from the image pool.")
    lr: float = option(0.2, "Student SGD learning rate (cosine after warm-up).")
    T: float = option(20.0, "Temperature of the student's KD loss.")
    bn: float = option(10.0, "Weight of the momentum BN-statistics term.", ge=0)
    oh: float = option(0.5, "Weight of the teacher's cross-entropy on the round's targets.", ge=0)
    adv: float = option(
        1.33,
        "Weight of the decision-adversarial term −KL(t‖s) on samples the student agrees on "
        "(after warm-up).",
        ge=0,
    )
    bn_mmt: float = option(
        0.9,
        "Momentum m of the BN statistics: batch statistics blend with an EMA of earlier ones.",
        ge=0,
        lt=1,
    )
    pad: int = option(4, "Padding of the random crops (synthesis views and student batches).", ge=0)
    flip: bool = option(True, "Random horizontal flips (synthesis views and student batches).")
