"""The students' optimisers and the per-epoch learning-rate schedules, one factory each for every
command: `scratch`, `kd` and `run` train students with them, and a generator's Adam follows the
student's schedule where its method decays both (DFAD's reference, the original ZSKT code)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dfkd.errors import UsageError

SCHEDULES = ("cosine", "multistep", "constant")
OPTIMIZERS = ("sgd", "adam")

#: where `multistep` multiplies the rate by 0.1 when no milestones are given, as fractions of
#: the epochs: the torchvision/CIFAR recipe of three drops late in training
DEFAULT_MILESTONE_FRACTIONS = (0.6, 0.75, 0.9)


def make_optimizer(
    params: Any, kind: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD with momentum (the DataFree recipe), or Adam with its default betas (``momentum`` is
    then unused), both with L2 weight decay."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise UsageError(f"optimizer must be {' or '.join(OPTIMIZERS)}, not '{kind}'.")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    epochs: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> Any:
    """A scheduler stepped once per epoch over ``epochs``: cosine to zero, ×``gamma`` at each
    milestone epoch (by default at 60/75/90 % of the epochs), or constant."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if schedule == "multistep":
        steps = sorted(milestones) or default_milestones(epochs)
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, steps, gamma=gamma)
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise UsageError(f"schedule must be {', '.join(SCHEDULES)}, not '{schedule}'.")


def default_milestones(epochs: int) -> list[int]:
    """The epochs at which `multistep` without milestones drops the rate: 60/75/90 % of
    ``epochs``, which for 200 epochs are the DataFree recipe's 120/150/180."""
    return sorted({max(1, int(epochs * f)) for f in DEFAULT_MILESTONE_FRACTIONS})
