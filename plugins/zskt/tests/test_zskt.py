"""ZSKT plugin: short runs (with and without attention transfer), its loss pieces by hand,
the feature maps it pairs, and learning (the rest of the method contract:
tests/test_method_contract.py)."""

from __future__ import annotations

import math
from pathlib import Path

import dfkd_plugin_zskt
import pytest
import torch
from dfkd_plugin_zskt import CIFAR10
from dfkd_plugin_zskt.attention import attention_loss, attention_map, resolution_group_ends
from dfkd_plugin_zskt.options import ZSKTOptions
from dfkd_plugin_zskt.synthesizer import ZSKTSynthesizer
from torch import nn

from dfkd.models.lenet import lenet5, lenet5_half
from dfkd.models.wrn import wrn16_1
from dfkd.plugins import Plugins
from dfkd.testing import (
    LearningContract,
    assert_complete_run,
    cpu_context,
    make_plugins,
    tiny_run_config,
)
from dfkd.training.datafree import RunConfig, run_datafree


class TestLearning(LearningContract):
    method = "zskt"
    module = dfkd_plugin_zskt
    distribution = "dfkd-plugin-zskt"
    learn_options = ["epochs=3", "ep_steps=40", "batch_size=64", "lr=0.05", "nz=32", "ngf=8"]


def zskt_plugins() -> Plugins:
    return make_plugins((dfkd_plugin_zskt, "dfkd-plugin-zskt"))


def config(weights: Path, out: Path, overrides: list[str]) -> RunConfig:
    return tiny_run_config("zskt", "lenet5", weights, out, overrides, preset="smoke")


@pytest.mark.parametrize("at_beta", [0.0, 2.0])
def test_short_run_writes_a_complete_run_directory(tiny_teacher_weights, workdir, at_beta):
    out = workdir / "run"
    outcome = run_datafree(
        config(tiny_teacher_weights["lenet5"], out, [f"at_beta={at_beta}"]),
        plugins=zskt_plugins(),
    )
    rows = assert_complete_run(out, epochs=2)
    assert all(math.isfinite(r["g_adv"]) for r in rows)
    # the attention term is logged (and positive: teacher and student attend differently) only
    # when it is switched on
    assert ("at" in rows[0]) == bool(at_beta)
    if at_beta:
        assert rows[0]["at"] > 0
    assert outcome.best_top1 >= 0


class Fixed(nn.Module):
    """Fixed logits whatever the input (``0·x`` keeps the input in the graph); records the
    mode it was called in."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)
        self.modes: list[bool] = []

    def forward(self, x, return_features=False):
        self.modes.append(self.training)
        out = self.logits + 0 * x.sum()
        return (out, out) if return_features else out


def test_generator_loss_is_minus_kl_with_the_student_in_eval_mode():
    student = Fixed([[0.0, 0.0], [0.0, 0.0]]).train()
    ctx = cpu_context(
        Fixed([[math.log(3), 0.0], [0.0, math.log(3)]]),
        student,
        num_classes=2,
        image_size=8,
    )
    synth = ZSKTSynthesizer(ctx, ZSKTOptions(batch_size=2, nz=4, ngf=2))
    assert synth.weights == {"adv": 1.0}
    shown = synth.synthesize()
    # teacher (3/4, 1/4) against student (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2) per row
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert shown.logs["loss_g"] == pytest.approx(-kl)
    assert student.modes == [False]


def test_attention_map_and_loss_by_hand():
    # channels (1, 2) and (3, 0) → squares averaged over channels (5, 2) → (5, 2)/√29
    student = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    torch.testing.assert_close(attention_map(student), torch.tensor([[5.0, 2.0]]) / math.sqrt(29))
    # a one-channel teacher map (2, 0) normalises to (1, 0); the distance is √(2 − 10/√29)
    teacher = torch.tensor([[[[2.0, 0.0]]]])
    expected = math.sqrt(2 - 10 / math.sqrt(29))
    loss = attention_loss([student, student], [teacher, student])
    assert loss.item() == pytest.approx(expected, rel=1e-5)  # the identical pair adds 0
    # the batch is averaged: a second, identical sample leaves the value unchanged
    pair = attention_loss([student.repeat(2, 1, 1, 1)], [teacher.repeat(2, 1, 1, 1)])
    assert pair.item() == pytest.approx(expected, rel=1e-5)


def test_resolution_groups_of_lenet_and_wrn():
    lenet = lenet5(10, 1).train()
    names = {module: name for name, module in lenet.named_modules()}
    ends = resolution_group_ends(lenet, 1, 32)
    # ReLU after conv1, pool 1, ReLU after conv2, pool 2; the 1×1 map after conv3 carries no
    # spatial attention
    assert {r: names[m] for r, m in ends.items()} == {
        (28, 28): "features.1",
        (14, 14): "features.2",
        (10, 10): "features.4",
        (5, 5): "features.5",
    }
    assert lenet.training  # the probe restored the mode
    wrn = wrn16_1(10, 3)
    names = {module: name for name, module in wrn.named_modules()}
    ends = resolution_group_ends(wrn, 3, 32)
    # each group's output after BN-ReLU: the next group's pre-activation, then the final one
    assert {r: names[m] for r, m in ends.items()} == {
        (32, 32): "block2.layer.0.relu1",
        (16, 16): "block3.layer.0.relu1",
        (8, 8): "relu",
    }


def test_attention_term_reaches_the_students_gradients():
    torch.manual_seed(0)
    teacher, student = lenet5(10, 1).eval().requires_grad_(False), lenet5_half(10, 1)
    ctx = cpu_context(
        teacher,
        student,
    )
    synth = ZSKTSynthesizer(ctx, ZSKTOptions(batch_size=4, nz=4, ngf=2, at_beta=3.0))
    assert synth.attention.resolutions == [(28, 28), (14, 14), (10, 10), (5, 5)]
    x = torch.randn(4, 1, 32, 32)
    t, s = teacher(x), student(x)
    loss, logs = synth.student_loss(s, t, step=0)
    assert loss.item() == pytest.approx(logs["kd"] + 3.0 * logs["at"], rel=1e-5)
    assert logs["at"] > 0
    # the term alone, without the logits, trains the student's first convolution
    synth.attention.loss().backward()
    assert student.features[0].weight.grad.abs().sum() > 0


def test_cifar10_preset_is_the_reference_script():
    options = ZSKTOptions(**CIFAR10)
    assert (options.adv, options.oh, options.act, options.balance, options.bn) == (1, 0, 0, 0, 0)
    assert (options.nz, options.ngf, options.generator, options.lr_g) == (256, 64, "large", 1e-3)
    assert (options.epochs, options.ep_steps, options.kd_steps, options.g_steps) == (200, 400, 5, 1)
    assert (options.batch_size, options.lr, options.T, options.at_beta) == (256, 0.1, 1.0, 0.0)
    assert ZSKTOptions() == options
