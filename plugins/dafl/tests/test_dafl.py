"""DAFL plugin: learning, its generator loss by hand, and the reference presets (the rest of the
method contract: tests/test_method_contract.py)."""

from __future__ import annotations

import math

import dfkd_plugin_dafl
import pytest
import torch
from dfkd_plugin_dafl import CIFAR10
from dfkd_plugin_dafl.options import DAFLOptions
from dfkd_plugin_dafl.synthesizer import DAFLSynthesizer
from torch import nn

from dfkd.testing import LearningContract, cpu_context


class TestLearning(LearningContract):
    method = "dafl"
    module = dfkd_plugin_dafl
    distribution = "dfkd-plugin-dafl"
    learn_options = [
        "epochs=3",
        "ep_steps=40",
        "batch_size=64",
        "lr=0.05",
        "nz=32",
        "ngf=8",
        "act=0.1",
        "balance=5",
    ]


class FixedTeacher(nn.Module):
    """Logits (ln 3, 0) and (0, ln 3), features (1, −2) and (3, 0), whatever the input; the
    ``0·x`` keeps the input in the graph so the generator can be stepped."""

    def forward(self, x, return_features=False):
        zero = 0 * x.sum()
        logits = torch.tensor([[math.log(3), 0.0], [0.0, math.log(3)]]) + zero
        features = torch.tensor([[1.0, -2.0], [3.0, 0.0]]) + zero
        return (logits, features) if return_features else logits


def test_generator_loss_matches_hand_computed_value():
    ctx = cpu_context(
        FixedTeacher(),
        nn.Linear(1, 2),
        num_classes=2,
        image_size=8,
    )
    synth = DAFLSynthesizer(ctx, DAFLOptions(batch_size=2, nz=4, ngf=2))
    assert synth.weights == {"oh": 1.0, "act": 0.001, "balance": 20.0}
    shown = synth.synthesize()
    # softmax rows (3/4, 1/4) and (1/4, 3/4): CE against the argmax is −ln(3/4) for both rows;
    # mean |f| = 6/4; the batch-mean prediction is (1/2, 1/2), so Σ p̄ log p̄ = −ln 2.
    oh, act, balance = -math.log(0.75), -1.5, -math.log(2)
    assert shown.logs["g_oh"] == pytest.approx(oh)
    assert shown.logs["g_act"] == pytest.approx(act)
    assert shown.logs["g_balance"] == pytest.approx(balance)
    assert shown.logs["loss_g"] == pytest.approx(oh + 0.001 * act + 20 * balance)


def test_defaults_and_cifar10_preset_are_the_reference_script():
    options = DAFLOptions(**CIFAR10)
    assert (options.oh, options.act, options.balance, options.bn, options.adv) == (
        1.0,
        0.001,
        20.0,
        0.0,
        0.0,
    )
    assert (options.nz, options.ngf, options.generator, options.lr_g) == (512, 64, "large", 1e-3)
    assert (options.beta1, options.beta2) == (0.5, 0.999)
    assert (options.epochs, options.ep_steps, options.kd_steps, options.g_steps) == (200, 400, 5, 1)
    assert (options.batch_size, options.lr, options.T) == (256, 0.1, 1.0)
    assert DAFLOptions() == options  # the defaults are the reference too
