"""DFAD plugin: a short run, its L1 losses by hand, its train-mode and unnormalised sampling,
and the method contract."""

from __future__ import annotations

import math
from pathlib import Path

import dfkd_plugin_dfad
import pytest
import torch
from dfkd_plugin_dfad import CIFAR10, MNIST
from dfkd_plugin_dfad.options import DFADOptions
from dfkd_plugin_dfad.synthesizer import DFADSynthesizer
from torch import nn

from dfkd.models.lenet import lenet5, lenet5_half
from dfkd.plugins import Plugins
from dfkd.synthesis.base import SynthesisContext
from dfkd.testing import (
    MethodContract,
    assert_complete_run,
    make_plugins,
    tiny_run_config,
)
from dfkd.training.datafree import RunConfig, run_datafree


class TestContract(MethodContract):
    method = "dfad"
    module = dfkd_plugin_dfad
    distribution = "dfkd-plugin-dfad"
    # milestones= : 60/75/90 % of these few epochs; the defaults (100, 200) need 201 epochs
    options = ["ep_steps=4", "kd_steps=2", "batch_size=8", "nz=8", "ngf=4", "milestones="]
    # constant: multistep at 60/75/90 % of three epochs would cut the rate tenfold after the first
    learn_options = ["epochs=3", "ep_steps=40", "batch_size=64", "lr=0.01", "nz=32", "ngf=8"]
    learn_options += ["schedule=constant"]
    learn_top1 = 35.0
    persistent_generator = True


TINY_BUDGET = ["epochs=2", *TestContract.options]


def dfad_plugins() -> Plugins:
    return make_plugins((dfkd_plugin_dfad, "dfkd-plugin-dfad"))


def config(weights: Path, out: Path, overrides: list[str]) -> RunConfig:
    return tiny_run_config("dfad", "lenet5", weights, out, overrides)


def test_short_run_writes_a_complete_run_directory(tiny_teacher_weights, workdir):
    out = workdir / "run"
    run_datafree(config(tiny_teacher_weights["lenet5"], out, TINY_BUDGET), plugins=dfad_plugins())
    rows = assert_complete_run(out, epochs=2)
    assert all(r["g_adv"] < 0 and math.isfinite(r["loss"]) for r in rows)


def test_lenet_pools_without_max_pool2d_wherever_a_run_needs_no_gradient(
    tiny_teacher_weights, workdir, monkeypatch
):
    """The teacher's forwards in the student steps and every evaluation take MaxPool2x2's strided
    maximum; only forwards that backpropagate (the student, the generator step) pay for
    max_pool2d's indices. benchmarks/dfad_step.py times what that saves."""
    grad_enabled: list[bool] = []
    max_pool2d = torch.nn.functional.max_pool2d

    def recording(*args, **kwargs):
        grad_enabled.append(torch.is_grad_enabled())
        return max_pool2d(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "max_pool2d", recording)
    out = workdir / "run"
    run_datafree(config(tiny_teacher_weights["lenet5"], out, TINY_BUDGET), plugins=dfad_plugins())
    assert grad_enabled and all(grad_enabled)


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


S_LOGITS = [[1.0, 2.0], [3.0, 4.0]]
T_LOGITS = [[0.0, 0.0], [0.0, 8.0]]
L1 = (1 + 2 + 3 + 4) / 4  # mean |s − t| over batch and classes


def fixed_ctx(student: nn.Module) -> SynthesisContext:
    return SynthesisContext(
        teacher=Fixed(T_LOGITS),
        student=student,
        num_classes=2,
        channels=1,
        image_size=8,
        mean=(0.5,),
        std=(0.5,),
        device=torch.device("cpu"),
    )


def test_both_players_use_l1_on_logits_with_the_student_in_train_mode():
    student = Fixed(S_LOGITS).eval()
    synth = DFADSynthesizer(fixed_ctx(student), DFADOptions(batch_size=2, nz=4, ngf=2))
    shown = synth.synthesize()
    assert shown.logs["loss_g"] == pytest.approx(-L1)
    assert student.modes == [True]  # the reference never switches the student to eval
    loss, _ = synth.student_loss(torch.tensor(S_LOGITS), torch.tensor(T_LOGITS), step=0)
    assert loss.item() == pytest.approx(L1)


def test_samples_come_from_the_generator_in_train_mode_without_a_normaliser():
    torch.manual_seed(0)
    ctx = SynthesisContext(
        teacher=lenet5(10, 1).eval().requires_grad_(False),
        student=lenet5_half(10, 1),
        num_classes=10,
        channels=1,
        image_size=32,
        mean=(0.5,),
        std=(0.5,),
        device=torch.device("cpu"),
    )
    synth = DFADSynthesizer(ctx, DFADOptions(batch_size=32, nz=4, ngf=2))
    x = synth.sample()
    assert synth.generator.training
    # GeneratorA's last layer standardises over the batch; the dataset normaliser would have
    # moved the mean to −1.
    var, mean = torch.var_mean(x, correction=0)
    assert abs(mean.item()) < 1e-4 and abs(var.item() - 1) < 1e-2


def test_presets_are_the_reference_scripts():
    cifar = DFADOptions(**CIFAR10)
    assert (cifar.generator, cifar.nz, cifar.ngf, cifar.lr_g, cifar.beta1) == (
        "a",
        256,
        64,
        1e-3,
        0.9,
    )
    # 500 "epochs" of 50 iterations, each 5 student steps and 1 generator step
    assert (cifar.epochs, cifar.ep_steps, cifar.kd_steps, cifar.g_steps) == (500, 250, 5, 1)
    assert (cifar.batch_size, cifar.lr, cifar.weight_decay, cifar.adv) == (256, 0.1, 5e-4, 1.0)
    # --scheduler: MultiStepLR([100, 200], 0.1) for student and generator alike
    assert (cifar.schedule, cifar.milestones, cifar.schedule_g) == ("multistep", (100, 200), True)
    assert DFADOptions() == cifar
    mnist = DFADOptions(**MNIST)
    assert (mnist.nz, mnist.batch_size, mnist.epochs, mnist.ep_steps) == (100, 512, 40, 250)
    assert (mnist.lr, mnist.weight_decay, mnist.lr_g) == (0.01, 1e-4, 1e-3)
    assert mnist.schedule == "constant"  # run_mnist.sh passes no --scheduler
