"""The shared pieces of re-initialised-generator rounds (dfkd.synthesis.rounds) against
hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import dfkd.api
from dfkd.errors import DfkdError
from dfkd.synthesis.rounds import BestIterate, MomentumBNStatistics, balanced_labels


def close(actual: torch.Tensor, expected: float | list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def teacher() -> nn.Sequential:
    """Two BN layers, the second after ×2: running stats (1, 6) / (11, 8) and (0, 0) / (1, 1)."""
    first = nn.BatchNorm2d(2, affine=False)
    first.running_mean.copy_(torch.tensor([1.0, 6.0]))
    first.running_var.copy_(torch.tensor([11.0, 8.0]))
    second = nn.BatchNorm2d(2, affine=False)
    model = nn.Sequential(nn.Identity(), first, nn.Identity(), second)
    model.eval()  # a frozen teacher: running stats normalise; the hooks read the inputs
    return model


# Channel 0 holds 1, 3, 5, 7 (μ 4, σ² 5); channel 1 holds 2 (μ 2, σ² 0).
FIRST = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]], [[[5.0, 7.0]], [[2.0, 2.0]]]])
# μ = (14, 2), σ² = (0, 0)
SECOND = torch.tensor([[[[14.0, 14.0]], [[2.0, 2.0]]], [[[14.0, 14.0]], [[2.0, 2.0]]]])


def test_momentum_bn_loss_sums_the_layers_and_keeps_an_ema():
    model = teacher()
    stats = MomentumBNStatistics(model, momentum=0.9)
    assert len(stats) == 2
    model(FIRST.clone().requires_grad_())
    # Layer 1: ‖(11, 8) − (5, 0)‖ + ‖(1, 6) − (4, 2)‖ = 10 + 5. Layer 2 sees the normalised
    # input: channel 0 (x − 1)/√11 → μ 3/√11, σ² 5/11; channel 1 (2 − 6)/√8 → μ −√2, σ² 0.
    m2, v2 = (3 / math.sqrt(11), -math.sqrt(2)), (5 / 11, 0.0)
    second = math.hypot(1 - v2[0], 1 - v2[1]) + math.hypot(m2[0], m2[1])
    close(stats.loss(), 15.0 + second)
    stats.update()
    close(stats.hooks[0].ema_mean, [4.0, 2.0])
    model(SECOND.clone().requires_grad_())
    # Layer 1 blends: μ = 0.1·(14, 2) + 0.9·(4, 2) = (5, 2), σ² = 0.9·(5, 0) = (4.5, 0).
    first = math.hypot(11 - 4.5, 8) + math.hypot(1 - 5, 6 - 2)
    close(stats.hooks[0].loss, first)
    stats.update()
    close(stats.hooks[0].ema_mean, [5.0, 2.0])
    close(stats.hooks[0].ema_var, [4.5, 0.0])

    again = teacher()
    resumed = MomentumBNStatistics(again, momentum=0.9)
    resumed.load_state_dict(stats.state_dict())
    model(FIRST.clone().requires_grad_())
    again(FIRST.clone().requires_grad_())
    torch.testing.assert_close(resumed.loss(), stats.loss())
    with pytest.raises(ValueError, match="layers"):
        MomentumBNStatistics(nn.Sequential(nn.BatchNorm2d(2))).load_state_dict(stats.state_dict())
    before = stats.loss().clone()
    stats.remove()
    model(SECOND.clone().requires_grad_())
    torch.testing.assert_close(stats.loss(), before)  # removed hooks no longer update


def test_momentum_bn_loss_without_batchnorm_is_zero():
    stats = MomentumBNStatistics(nn.Linear(2, 2))
    assert len(stats) == 0
    close(stats.loss(torch.ones(3)), 0.0)
    stats.update()
    assert stats.state_dict() == {"layers": []}


def test_balanced_labels_cycle_over_the_classes():
    labels = balanced_labels(23, 10, torch.Generator().manual_seed(0))
    assert labels.dtype == torch.int64 and labels.shape == (23,)
    assert labels[:20].tolist() == list(range(10)) * 2
    extras = labels[20:].tolist()
    assert len(set(extras)) == 3 and all(0 <= c < 10 for c in extras)
    counts = torch.bincount(labels, minlength=10)
    assert counts.min() == 2 and counts.max() == 3
    same = balanced_labels(23, 10, torch.Generator().manual_seed(0))
    assert torch.equal(labels, same)
    assert balanced_labels(4, 10, torch.Generator().manual_seed(1)).unique().numel() == 4
    assert balanced_labels(30, 10).tolist() == list(range(10)) * 3  # no extras, no draw
    with pytest.raises(ValueError):
        balanced_labels(3, 0)


def test_best_iterate_keeps_clones_of_the_lowest_loss():
    best = BestIterate()
    assert not best.found
    x = torch.zeros(2)
    assert not best.offer(float("nan"), x=x)
    assert best.offer(3.0, x=x)
    x += 1  # later in-place steps must not reach the kept copy
    assert not best.offer(3.0, x=x)  # ties keep the earlier iterate
    assert best.offer(torch.tensor(2.0), x=x, y=x * 2)
    x += 1
    assert not best.offer(float("nan"), x=x)
    assert best.loss == 2.0
    close(best["x"], [1.0, 1.0])
    close(best["y"], [2.0, 2.0])


def test_a_round_of_nan_losses_is_one_clear_error():
    best = BestIterate()
    for _ in range(3):
        best.offer(float("nan"), x=torch.zeros(2))
    with pytest.raises(DfkdError, match="NaN.*lower the generator's learning rate"):
        best["x"]


def test_the_pieces_are_in_the_api():
    assert dfkd.api.MomentumBNStatistics is MomentumBNStatistics
    assert dfkd.api.balanced_labels is balanced_labels
    assert dfkd.api.BestIterate is BestIterate
