"""Forward hooks that read a frozen teacher's BatchNorm layers during synthesis.

A trained teacher's BN running statistics are the only summary of its training data that a
data-free method can see; matching them is the "bn" loss term
(docs/methods/framework.md#batchnorm-hooks).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _tracks_running_stats(module: nn.Module) -> bool:
    return isinstance(module, _BATCHNORMS) and module.running_mean is not None


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer with running statistics: without one the BN loss is
    empty, and a method that relies on it should say so instead of silently doing less."""
    return any(_tracks_running_stats(m) for m in model.modules())


class BNStatsHook:
    """Distance between a BN layer's running statistics and those of the batch it sees.

    After each forward, ``loss`` holds r = ‖running_var − σ²‖₂ + ‖running_mean − μ‖₂, with μ and
    σ² (biased) taken over every dimension of the input except the channel one. The norms are
    plain L2 norms, not squared (docs/methods/framework.md#batchnorm-hooks).

    With ``momentum`` m (Fast-DFKD, docs/methods/framework.md#momentum-statistics) the batch
    statistics are first blended with an EMA (μ̄, σ̄²) of earlier synthesis batches:
    μ ↦ (1−m)·μ + m·μ̄, likewise σ². Call ``update_ema()`` once after each synthesis, before the
    next synthesis forward, since it folds in the statistics of the hook's last forward with
    gradients (forwards without them are skipped, below): μ̄ ← m·μ̄ + (1−m)·μ (the first call just
    stores μ). Until then the plain loss is used. The EMA is part of ``state_dict`` so that a
    resumed run continues the same sequence.

    The statistics are computed in float32 whatever the input dtype, so that mixed precision does
    not turn small variance differences into noise. A forward with gradients disabled (the
    student's steps and evaluation, where the teacher also runs) is not synthesis: the hook
    skips it, saving the work, and ``loss`` is None until the next synthesis forward.
    """

    def __init__(self, module: nn.Module, momentum: float | None = None) -> None:
        if not _tracks_running_stats(module):
            raise ValueError(f"{type(module).__name__} has no BatchNorm running statistics")
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.module = module
        self.momentum = momentum
        self.loss: Tensor | None = None
        self.ema_mean: Tensor | None = None
        self.ema_var: Tensor | None = None
        self._last: tuple[Tensor, Tensor] | None = None
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Any) -> None:
        if not torch.is_grad_enabled():
            self.loss = None
            return
        x = inputs[0].float()
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        self._last = (mean.detach(), var.detach())
        if self.momentum is not None and self.ema_mean is not None:
            m = self.momentum
            mean = (1 - m) * mean + m * self.ema_mean
            var = (1 - m) * var + m * self.ema_var
        self.loss = torch.linalg.vector_norm(module.running_var - var) + torch.linalg.vector_norm(
            module.running_mean - mean
        )

    def update_ema(self) -> None:
        """Fold the statistics of the last forward into the EMA (momentum variant only)."""
        if self.momentum is None:
            raise RuntimeError("update_ema() needs a hook created with a momentum")
        if self._last is None:
            raise RuntimeError("update_ema() called before the hooked layer ran")
        mean, var = self._last
        if self.ema_mean is None:
            self.ema_mean, self.ema_var = mean, var
        else:
            m = self.momentum
            self.ema_mean = m * self.ema_mean + (1 - m) * mean
            self.ema_var = m * self.ema_var + (1 - m) * var

    def state_dict(self) -> dict[str, Tensor]:
        """The EMA as plain tensors (empty before the first ``update_ema``), safetensors-ready."""
        if self.ema_mean is None:
            return {}
        return {"ema_mean": self.ema_mean.clone(), "ema_var": self.ema_var.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        device = self.module.running_mean.device
        if state:
            self.ema_mean = state["ema_mean"].to(device=device, dtype=torch.float32)
            self.ema_var = state["ema_var"].to(device=device, dtype=torch.float32)
        else:
            self.ema_mean = self.ema_var = None

    def remove(self) -> None:
        self._handle.remove()


def attach_bn_hooks(model: nn.Module, momentum: float | None = None) -> list[BNStatsHook]:
    """A ``BNStatsHook`` on every BatchNorm layer with running statistics, in ``modules()`` order
    (the order the first-layer multiplier of ``bn_statistics`` refers to)."""
    return [BNStatsHook(m, momentum) for m in model.modules() if _tracks_running_stats(m)]


class InstanceMeanHook:
    """Per-instance channel means of a module's input, shape (N, C), kept in the graph.

    CMI concatenates these over the teacher's BN layers (a ResNet's: its stages) as the features
    of its contrastive loss (docs/methods/cmi.md#objective), so gradients must flow back through
    them to the generator.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.features: Tensor | None = None
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Any) -> None:
        x = inputs[0]
        # (N, C, ...) -> (N, C); a 2-D input (BatchNorm1d) already is one value per channel
        self.features = x if x.dim() == 2 else x.mean(dim=tuple(range(2, x.dim())))

    def remove(self) -> None:
        self._handle.remove()
