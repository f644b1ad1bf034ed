"""The loss terms that data-free methods combine, as pure functions of tensors.

Notation (docs/methods/framework.md#notation): t = teacher logits, s = student logits, both
(B, K); p^T(z) = softmax(z / T); KL_i(t‖s; T) = Σ_c p^T_c(t_i)·[log p^T_c(t_i) − log p^T_c(s_i)]·T².
Every function returns a scalar unless its docstring says otherwise. Terms a generator minimises
to fight the student (the "adversarial" ones) carry their minus sign here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class _HasLoss(Protocol):
    loss: Tensor | None


def bn_statistics(hooks: Sequence[_HasLoss], first_multiplier: float = 1.0) -> Tensor:
    """L_bn = Σ_l s_l·r_l over the BN hooks, with s_1 = ``first_multiplier`` and s_l = 1 after it.

    r_l is ``BNStatsHook.loss`` from the last teacher forward. NVlabs' DeepInversion weights the
    first layer by 10; the DataFree benchmark by 1 (docs/methods/framework.md#batchnorm-hooks).
    """
    if not hooks:
        raise ValueError("bn_statistics needs at least one BN hook; the teacher has no BatchNorm")
    losses = [h.loss for h in hooks]
    if any(r is None for r in losses):
        raise RuntimeError(
            "a BN hook has no statistics: run the teacher on the synthesis batch, with gradients "
            "enabled, first"
        )
    return torch.stack(losses).sum() + (first_multiplier - 1.0) * losses[0]


def one_hot_ce(t_logits: Tensor, targets: Tensor | None = None) -> Tensor:
    """L_oh = CE(t, y), with y = argmax t (the teacher's own pseudo-label) when no targets are
    given (DAFL, DFQ: docs/methods/dafl.md#objective) and sampled targets otherwise
    (DeepInversion, CMI: docs/methods/deepinv.md#objective)."""
    if targets is None:
        targets = t_logits.argmax(dim=1)
    return F.cross_entropy(t_logits, targets)


def entropy(p: Tensor) -> Tensor:
    """H(p) = −Σ_c p_c log p_c over the last dimension (one value per row).

    log p is taken of p clamped to the smallest positive float, so a zero probability contributes
    0 to the value and a finite gradient instead of NaN.
    """
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(dim=-1)


def class_balance(t_logits: Tensor, T: float = 1.0) -> Tensor:
    """L_bal = Σ_c p̄_c log p̄_c = −H(p̄), with p̄ = mean_i p^T(t_i) (DAFL, DFQ:
    docs/methods/dafl.md#objective).

    Minimising the negative entropy of the batch-mean prediction spreads the batch over the classes.
    CuDFKD's "−20·H(p̄)" at its KD temperature is ``20 * class_balance(t, T)``
    (docs/methods/cudfkd.md#objective). For a segmentation teacher's (N, K, H, W) logits p̄ is
    the mean over every pixel of the batch: the batch's pixels spread over the classes.
    """
    p = F.softmax(t_logits / T, dim=1)
    return -entropy(p.transpose(0, 1).reshape(p.shape[1], -1).mean(dim=1))


def activation_l1(features: Tensor) -> Tensor:
    """L_act = −mean|f|, f the teacher's penultimate features (DAFL:
    docs/methods/dafl.md#objective): rewards inputs that excite the teacher's features strongly."""
    return -features.abs().mean()


def agreement_mask(s: Tensor, t: Tensor) -> Tensor:
    """m_i = 1[argmax s_i = argmax t_i] as floats (CMI's "decision adversarial" mask,
    docs/methods/cmi.md#objective): only samples the student still classifies like the teacher
    push the adversarial term."""
    return (s.argmax(dim=1) == t.argmax(dim=1)).to(s.dtype)


def kd_kl(s: Tensor, t: Tensor, T: float = 1.0, reduction: str = "batchmean") -> Tensor:
    """The KD loss KL(t‖s; T) = (1/B) Σ_i KL_i(t‖s; T), T² included
    (docs/methods/framework.md#notation).

    ``reduction="none"`` returns the per-sample vector KL_i (B,) instead, which CuDFKD's
    curriculum weights per sample (docs/methods/cudfkd.md#objective).
    """
    if reduction not in ("batchmean", "none"):
        raise ValueError(f"reduction must be 'batchmean' or 'none', got {reduction!r}")
    log_p_s = F.log_softmax(s / T, dim=1)
    log_p_t = F.log_softmax(t / T, dim=1)
    per_sample = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1) * T * T
    return per_sample.mean() if reduction == "batchmean" else per_sample


def adversarial_kl(s: Tensor, t: Tensor, T: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """L_adv = −(1/B) Σ_i m_i·KL_i(t‖s; T), T² included; m_i = 1 when ``mask`` is None.

    ZSKT and DFQ use it unmasked at T = 1 (docs/methods/zskt.md, dfq.md); CMI and Fast-DFKD with
    ``agreement_mask`` at T = 1 (cmi.md); CuDFKD with the mask at T = 3 (cudfkd.md).
    """
    per_sample = kd_kl(s, t, T, reduction="none")
    if mask is not None:
        per_sample = per_sample * mask
    return -per_sample.mean()


def js_divergence(s: Tensor, t: Tensor, T: float = 3.0) -> Tensor:
    """JS(s, t; T) = ½·KL(M‖P) + ½·KL(M‖Q), batch-mean, as DeepInversion computes it
    (docs/methods/deepinv.md#the-datafree-benchmark).

    P = p^T(s), Q = p^T(t), M = (P + Q)/2 from the unclamped P and Q; then P, Q and M are all
    clamped to [0.01, 0.99] and KL(M‖P) = kl_div(log P, M, "batchmean"). The clamp keeps the
    logarithms finite. It is returned positive; the adversarial term is −JS or 1 − clamp(JS, 0, 1).
    Per-pixel logits (B, K, H, W) make every pixel a row, so the mean is over pixels, as the
    per-pixel KD loss's is: a batch mean would sum H·W pixels and outweigh every other term.
    """
    if s.dim() > 2:  # synthesis may not import training (dfkd.training.segmentation.pixel_rows)
        s, t = (z.movedim(1, -1).reshape(-1, z.shape[1]) for z in (s, t))
    p = F.softmax(s / T, dim=1)
    q = F.softmax(t / T, dim=1)
    m = ((p + q) / 2).clamp(0.01, 0.99)
    p = p.clamp(0.01, 0.99)
    q = q.clamp(0.01, 0.99)
    return 0.5 * F.kl_div(p.log(), m, reduction="batchmean") + 0.5 * F.kl_div(
        q.log(), m, reduction="batchmean"
    )


def adversarial_l1(s: Tensor, t: Tensor) -> Tensor:
    """L_adv = −mean|s − t| over batch and classes (DFAD's generator loss,
    docs/methods/dfad.md#objective)."""
    return -(s - t).abs().mean()


def _neighbour_differences(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Differences between each pixel and its right, lower, and two diagonal neighbours."""
    return (
        x[..., :, :-1] - x[..., :, 1:],
        x[..., :-1, :] - x[..., 1:, :],
        x[..., 1:, :-1] - x[..., :-1, 1:],
        x[..., :-1, :-1] - x[..., 1:, 1:],
    )


def tv_l1(x: Tensor) -> Tensor:
    """TV₁(x) = Σ over the four neighbour directions (horizontal, vertical, two diagonals) of
    mean|Δ| (docs/methods/deepinv.md#the-datafree-benchmark): a smoothness prior for pixel
    optimisation."""
    return torch.stack([d.abs().mean() for d in _neighbour_differences(x)]).sum()


def tv_l2(x: Tensor) -> Tensor:
    """TV₂(x) = Σ over the four neighbour directions of ‖Δ‖₂, the Frobenius norm over the whole
    batch, not squared (NVlabs DeepInversion, docs/methods/deepinv.md#nvlabs-imagenet-script)."""
    return torch.stack([torch.linalg.vector_norm(d) for d in _neighbour_differences(x)]).sum()


def l2_prior(x: Tensor) -> Tensor:
    """mean_i ‖x_i‖₂, the per-image L2 norm averaged over the batch
    (docs/methods/deepinv.md#nvlabs-imagenet-script)."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1).mean()
