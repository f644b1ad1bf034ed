"""CuDFKD's two curricula (docs/methods/cudfkd.md#objective): self-paced weights that let the
student learn from easy samples first, and the schedule of the generator's adversarial weight.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def pace(step: int, lambda_0: float, alpha: float) -> float:
    """λ(k) = λ₀ + α·k: the loss under which a sample counts as easy grows with the student step,
    so harder samples join the student's loss as training goes on."""
    return lambda_0 + alpha * step


@torch.no_grad()
def spl_weights(losses: Tensor, lam: float, curriculum: str) -> Tensor:
    """Self-paced weights v_i of per-sample losses ℓ_i at pace λ; no gradient flows through them.

    - "log" (logistic): v = (1 + e^−λ) / (1 + e^(ℓ−λ)), written with a sigmoid so that a loss far
      above λ gives 0 instead of an overflow; v = 1 at ℓ = 0 and falls smoothly past λ.
    - "hard": v = 1[ℓ < λ].
    - "soft": v = 1[ℓ < λ]·(1 − ℓ/λ), a linear fall to 0 at λ.
    """
    if curriculum == "log":
        return (1 + math.exp(-lam)) * torch.sigmoid(lam - losses)
    easy = (losses < lam).to(losses.dtype)
    if curriculum == "hard":
        return easy
    if curriculum == "soft":
        return easy * (1 - losses / lam)
    raise ValueError(f"unknown curriculum {curriculum!r}; known: log, hard, soft")


def adversarial_weight(
    epoch: int,
    epochs: int,
    adv_0: float,
    grad_adv: float,
    begin_fraction: float,
    end_fraction: float,
    schedule: str,
) -> float:
    """The generator's adversarial weight for the epochs after ``epoch`` (0-based, just finished).

    With e_b = ⌊begin·E⌋ and e_e = ⌊end·E⌋, "linear" gives adv₀ up to e_b, adv₀ + (epoch − e_b)·grad
    between them and adv₀ + (e_e − e_b)·grad from e_e on: the student first meets easy, merely
    plausible samples and only later ones chosen to fool it. "constant" keeps adv₀.
    """
    if schedule == "constant":
        return adv_0
    if schedule != "linear":
        raise ValueError(f"unknown adversarial schedule {schedule!r}; known: constant, linear")
    begin, end = math.floor(begin_fraction * epochs), math.floor(end_fraction * epochs)
    if epoch >= end:
        return adv_0 + (end - begin) * grad_adv
    if epoch > begin:
        return adv_0 + (epoch - begin) * grad_adv
    return adv_0
