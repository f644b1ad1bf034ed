"""DFQ plugin: its generator loss by hand, the BatchNorm warning, the reference preset, and
learning (the rest of the method contract: tests/test_method_contract.py)."""

from __future__ import annotations

import math

import dfkd_plugin_dfq
import pytest
import torch
from dfkd_plugin_dfq import CIFAR10
from dfkd_plugin_dfq.options import DFQOptions
from dfkd_plugin_dfq.synthesizer import DFQSynthesizer
from torch import nn

from dfkd.models.lenet import lenet5, lenet5_half
from dfkd.testing import LearningContract, cpu_context


class TestLearning(LearningContract):
    method = "dfq"
    module = dfkd_plugin_dfq
    distribution = "dfkd-plugin-dfq"
    # The plain LeNet-5 teacher (so without the BN term, which a warning says): the tiny
    # LeNet-5-BN teacher answers generator images with near-uniform logits, and matching its
    # statistics of one bright bar on faint noise takes far more generator steps than a test
    # can afford. The BN term itself is checked by hand below.
    teacher = "lenet5"
    learn_options = [
        "epochs=3",
        "ep_steps=40",
        "batch_size=64",
        "lr=0.05",
        "nz=32",
        "ngf=8",
        "balance=5",
    ]
    learn_top1 = 35.0


class FixedBNTeacher(nn.Module):
    """Logits (ln 3, 0) and (0, ln 3) whatever the input; its one BatchNorm layer always sees a
    batch with channel means (4, 2) and biased variances (5, 0) against running statistics
    (1, 6) and (11, 8). ``0·x`` keeps the input in the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(2).eval()
        self.bn.running_mean.copy_(torch.tensor([1.0, 6.0]))
        self.bn.running_var.copy_(torch.tensor([11.0, 8.0]))
        self.batch = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]], [[[5.0, 7.0]], [[2.0, 2.0]]]])

    def forward(self, x, return_features=False):
        zero = 0 * x.sum()
        h = self.bn(self.batch + zero)
        logits = torch.tensor([[math.log(3), 0.0], [0.0, math.log(3)]]) + 0 * h.sum()
        return (logits, logits) if return_features else logits


class ZeroStudent(nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 2) + 0 * x.sum()


def test_generator_loss_matches_hand_computed_value():
    ctx = cpu_context(
        FixedBNTeacher().requires_grad_(False),
        ZeroStudent(),
        num_classes=2,
        image_size=8,
    )
    synth = DFQSynthesizer(ctx, DFQOptions(batch_size=2, nz=4, ngf=2))
    assert synth.weights == {"oh": 1.0, "balance": 20.0, "bn": 1.0, "adv": 1.0}
    shown = synth.synthesize()
    # bn: ‖(11, 8) − (5, 0)‖ + ‖(1, 6) − (4, 2)‖ = 10 + 5; oh: −ln(3/4) per row;
    # adv: −KL((3/4, 1/4) ‖ (1/2, 1/2)) per row; balance: p̄ = (1/2, 1/2), so −ln 2
    bn, oh = 15.0, -math.log(0.75)
    adv = -(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    balance = -math.log(2)
    for name, value in (("bn", bn), ("oh", oh), ("adv", adv), ("balance", balance)):
        assert shown.logs[f"g_{name}"] == pytest.approx(value, rel=1e-5), name
    assert shown.logs["loss_g"] == pytest.approx(bn + oh + adv + 20 * balance, rel=1e-5)


def test_teacher_without_batchnorm_warns_and_keeps_the_other_terms():
    ctx = cpu_context(
        lenet5(10, 1).eval().requires_grad_(False),
        lenet5_half(10, 1),
    )
    with pytest.warns(UserWarning, match="DFQ: the teacher has no BatchNorm"):
        synth = DFQSynthesizer(ctx, DFQOptions(batch_size=4, nz=4, ngf=2))
    assert set(synth.weights) == {"oh", "balance", "adv"}
    assert math.isfinite(synth.synthesize().logs["loss_g"])


def test_defaults_and_cifar10_preset_are_the_reference_script():
    options = DFQOptions(**CIFAR10)
    assert (options.bn, options.oh, options.adv, options.balance, options.act) == (1, 1, 1, 20, 0)
    assert (options.nz, options.ngf, options.generator, options.lr_g) == (256, 64, "large", 1e-3)
    assert (options.epochs, options.ep_steps, options.kd_steps, options.g_steps) == (
        200,
        400,
        10,
        1,
    )
    assert (options.batch_size, options.lr, options.T) == (256, 0.1, 1.0)
    assert DFQOptions() == options
