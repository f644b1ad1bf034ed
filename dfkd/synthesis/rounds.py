"""Pieces that synthesis rounds of the re-initialised-generator methods share (Fast-DFKD, NAYER):
the momentum BN-statistics loss over a whole teacher, balanced targets, and the lowest-loss
iterate of a round, which CMI and DeepInversion keep too
(docs/methods/framework.md#momentum-statistics, docs/methods/fast.md, docs/methods/nayer.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.data.pipeline import random_crop_flip
from dfkd.errors import DfkdError
from dfkd.synthesis.base import SynthesisContext, Synthesizer, warn_without_batchnorm
from dfkd.synthesis.bn_hooks import BNStatsHook, attach_bn_hooks
from dfkd.synthesis.losses import adversarial_kl, agreement_mask, bn_statistics, one_hot_ce


class MomentumBNStatistics:
    """The momentum BN-statistics loss over every BatchNorm layer of ``model``: one
    ``BNStatsHook(momentum=m)`` per layer, kept for the whole run because the EMA (μ̄, σ̄²) of
    earlier synthesis batches lives in them.

    ``loss()`` is Σ_l ‖σ²_run − [(1−m)σ² + m·σ̄²]‖₂ + ‖μ_run − [(1−m)μ + m·μ̄]‖₂ after a teacher
    forward with gradients (the plain form until the first ``update()``); ``update()`` folds the
    last such forward's statistics into the EMA, once per synthesis (Fast-DFKD's
    ``DeepInversionHook(module, mmt_rate)``). ``state_dict`` holds every layer's EMA, so a
    resumed run continues the same averages. A model without BatchNorm gives no hooks: ``loss()``
    is then 0 and ``update()`` does nothing, and the method should have warned
    (``warn_without_batchnorm``).
    """

    def __init__(self, model: nn.Module, momentum: float = 0.9) -> None:
        self.momentum = momentum
        self.hooks: list[BNStatsHook] = attach_bn_hooks(model, momentum)

    def __len__(self) -> int:
        return len(self.hooks)

    def loss(self, like: Tensor | None = None) -> Tensor:
        """The summed term from the model's last forward (a zero like ``like`` without hooks)."""
        if not self.hooks:
            return like.new_zeros(()) if like is not None else torch.zeros(())
        return bn_statistics(self.hooks)

    def update(self) -> None:
        """μ̄ ← m·μ̄ + (1−m)·μ_last for every layer (the first call stores μ_last); likewise σ̄²."""
        for hook in self.hooks:
            hook.update_ema()

    def state_dict(self) -> dict[str, Any]:
        return {"layers": [hook.state_dict() for hook in self.hooks]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        layers = state["layers"]
        if len(layers) != len(self.hooks):
            raise ValueError(
                f"a BN-statistics state for {len(layers)} layers does not fit a teacher with "
                f"{len(self.hooks)}; was the teacher changed?"
            )
        for hook, layer in zip(self.hooks, layers, strict=True):
            hook.load_state_dict(layer)

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


def class_layouts(
    n: int,
    num_classes: int,
    image_size: int,
    blocks: int = 2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``n`` int64 (H, W) masks to invert a segmentation teacher towards: each image a
    ``blocks`` × ``blocks`` grid of classes drawn from ``generator``, so every image asks for
    several classes in several places (the per-pixel counterpart of sampled class targets)."""
    cells = torch.randint(num_classes, (n, 1, blocks, blocks), generator=generator).float()
    return F.interpolate(cells, size=(image_size, image_size), mode="nearest")[:, 0].long()


def balanced_labels(
    n: int,
    num_classes: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` int64 targets cycling over the classes: 0, 1, …, K−1 repeated ⌊n/K⌋ times, then
    n mod K extra classes drawn without replacement from ``generator``, so every class appears
    ⌊n/K⌋ or ⌊n/K⌋+1 times (NAYER's balanced targets, docs/methods/nayer.md). Consecutive rows of K
    hold every class once, which NAYER's per-chunk noisy layers rely on."""
    if n < 0 or num_classes < 1:
        raise ValueError(f"need n >= 0 and num_classes >= 1, got {n}, {num_classes}")
    full, extra = divmod(n, num_classes)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    extras = torch.randperm(num_classes, generator=generator, device=gen_device)[:extra]
    labels = torch.cat([torch.arange(num_classes).repeat(full), extras.cpu()])
    return labels.to(device) if device is not None else labels


class BestIterate:
    """The lowest-loss iterate of an optimisation round: ``offer(loss, **tensors)`` keeps detached
    clones of the tensors when ``loss`` is lower than every earlier offer (a NaN loss is never
    kept). Cloning matters: DeepInversion's reference keeps a view of
    storage that later steps overwrite, and so ends up with the last iterate
    (docs/methods/deepinv.md#reference-quirks)."""

    def __init__(self) -> None:
        self.loss = math.inf
        self.tensors: dict[str, Tensor] = {}

    @property
    def found(self) -> bool:
        return bool(self.tensors)

    def offer(self, loss: float | Tensor, **tensors: Tensor) -> bool:
        """Keep ``tensors`` if ``loss`` is the lowest so far; return whether they were kept."""
        value = float(loss)
        if self.found and not value < self.loss:
            return False
        if not self.found and math.isnan(value):
            return False
        self.loss = value
        self.tensors = {name: t.detach().clone() for name, t in tensors.items()}
        return True

    def __getitem__(self, name: str) -> Tensor:
        if not self.found:
            raise DfkdError(
                "Every synthesis step's loss was NaN, so there is no batch to keep; lower the "
                "generator's learning rate (-o lr_g=...) or use --mixed-precision no."
            )
        return self.tensors[name]


class PooledInversion(Synthesizer):
    """What FastDFKD and NAYER share around their generators: each round inverts a batch against
    the teacher's momentum BatchNorm statistics and one-hot targets, and, once ``adversarial``,
    the student's masked disagreement; the lowest-loss batch joins a pool that the student samples
    with crop-and-flip. Private random streams (drawn from the run's seed) and the epoch count are
    kept for an exact resume. Subclasses make the batches (``synthesize``), say when the
    adversarial term starts, and extend ``state_dict``/``load_state_dict`` with their generator's
    state, restoring it before calling this class's ``load_state_dict``."""

    uses_pool = True

    def __init__(self, ctx: SynthesisContext, options: Any, method: str) -> None:
        super().__init__(ctx, options)
        warn_without_batchnorm(ctx.teacher, method, options.bn)
        seeds = torch.randint(2**62, (2,)).tolist()
        self._rng = torch.Generator(device=ctx.device).manual_seed(seeds[0])
        self._cpu_rng = torch.Generator().manual_seed(seeds[1])
        self.bn_stats = MomentumBNStatistics(ctx.teacher, options.bn_mmt)
        self.pool = ctx.image_pool()
        self.epoch = 0  # epochs finished, from end_epoch

    @property
    def adversarial(self) -> bool:
        return False

    def losses(self, x: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """The terms on the augmented batch: bn (momentum statistics), oh, and adv once on."""
        o, ctx = self.options, self.ctx
        view = ctx.normalize(random_crop_flip(x, o.pad, o.flip, generator=self._rng))
        t = self.teacher_logits(view).float()
        terms = {"bn": self.bn_stats.loss(t), "oh": one_hot_ce(t, targets)}
        if self.adversarial:
            s = ctx.student_logits(view)
            terms["adv"] = adversarial_kl(s, t, T=1.0, mask=agreement_mask(s, t))
        return terms

    def sample(self) -> Tensor:
        """A pool batch with the dataset's train augmentation (padded crop, flip), normalised."""
        images, _ = self.pool.sample(self.options.batch_size, generator=self._cpu_rng)
        x = images.to(self.ctx.device).float().div_(255)
        x = random_crop_flip(x, self.options.pad, self.options.flip, generator=self._rng)
        return self.ctx.normalize(x)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        self.epoch = epoch + 1
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "bn_stats": self.bn_stats.state_dict(),
            "pool": self.pool.state_dict(),
            "rng": self._rng.get_state(),
            "cpu_rng": self._cpu_rng.get_state(),
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bn_stats.load_state_dict(state["bn_stats"])
        self.pool.load_state_dict(state["pool"])
        self._rng.set_state(state["rng"])
        self._cpu_rng.set_state(state["cpu_rng"])
        self.epoch = int(state["epoch"])
