"""FastDFKD's options; the defaults are the reference's `fast_cifar.sh` for a ResNet-34 teacher at
Fast-10 (docs/methods/fast.md#loop-and-hyperparameters). Torch-free: `dfkd list-methods --options`
reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfkd.api import PooledInversionOptions, option

MetaRule = Literal["maml", "reptile"]


@dataclass
class FastOptions(PooledInversionOptions):
    epochs: int = option(220, "Training epochs, warm-up included.")
    ep_steps: int = option(400, "Student steps per epoch.")
    kd_steps: int = option(400, "Student steps after each synthesis round.")
    g_steps: int = option(
        10, "Inner steps per synthesis round: the k of Fast-k (2, 5 or 10 in the paper)."
    )
    synthesis_batch_size: int = option(256, "Images per synthesis round (0: batch_size).")
    lr_g: float = option(
        2e-3, "Inner Adam rate of the cloned generator; the meta-Adam uses lr_g × g_steps.", gt=0
    )
    lr_z: float = option(0.01, "Inner Adam rate of the latent codes.", ge=0)
    nz: int = option(256, "Latent size of the generator.")
    ngf: int = option(64, "Generator width (its projection has 2*ngf channels).")
    meta: MetaRule = option(
        "maml",
        "Meta update: maml (first order: the inner gradients summed, one meta-Adam step; the "
        "reference's is_maml 1) or reptile (the meta-gradient is reptile_scale·(θ_meta − θ_fast)).",
    )
    reptile_scale: float = option(67.0, "REPTILE's factor on θ_meta − θ_fast (the reference's 67).")
    reset_l0: bool = option(
        True,
        "Re-initialise the meta-generator's first Linear and first BatchNorm, N(0, 0.02) weights "
        "and zero bias, once, at epoch warmup + reset_l0_epoch.",
    )
    reset_l0_epoch: int = option(120, "Epochs after warm-up at which reset_l0 happens.")
    preset_teacher: str | None = option(
        None,
        "The teacher architecture whose published adv and oh these are (the per-teacher presets "
        "set it); a run with another --teacher says so in one line. none: no check.",
    )
