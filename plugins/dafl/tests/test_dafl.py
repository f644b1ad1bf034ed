"""DAFL plugin: a short run, its generator loss by hand, resume, discovery, and learning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dfkd_plugin_dafl
import pytest
import torch
from dfkd_plugin_dafl import CIFAR10
from dfkd_plugin_dafl.options import DAFLOptions
from dfkd_plugin_dafl.synthesizer import DAFLSynthesizer
from safetensors.torch import load_file
from torch import nn

from dfkd.plugins import Plugins
from dfkd.synthesis.base import SynthesisContext
from dfkd.testing import KillAfterEpoch, assert_complete_run, make_plugins, tiny_run_config
from dfkd.training.datafree import RunConfig, run_datafree

DIST = "dfkd-plugin-dafl"
TINY_BUDGET = ["epochs=2", "ep_steps=4", "kd_steps=2", "batch_size=8", "nz=8", "ngf=4"]


def dafl_plugins():
    return make_plugins((dfkd_plugin_dafl, DIST))


def config(weights: Path, out: Path, overrides: list[str]) -> RunConfig:
    return tiny_run_config("dafl", "lenet5", weights, out, overrides)


def test_short_run_writes_a_complete_run_directory(tiny_teacher_weights, workdir):
    out = workdir / "run"
    outcome = run_datafree(
        config(tiny_teacher_weights["lenet5"], out, TINY_BUDGET),
        plugins=dafl_plugins(),
    )
    rows = assert_complete_run(out, epochs=2)
    assert all(math.isfinite(r["loss_g"]) for r in rows)
    recorded = json.loads((out / "config.json").read_text())["options"]
    resolved = recorded["resolved_options"]
    assert resolved["oh"] == 1.0 and resolved["balance"] == 20.0 and resolved["nz"] == 8
    assert len(outcome.metrics) == 2


class FixedTeacher(nn.Module):
    """Logits (ln 3, 0) and (0, ln 3), features (1, −2) and (3, 0), whatever the input; the
    ``0·x`` keeps the input in the graph so the generator can be stepped."""

    def forward(self, x, return_features=False):
        zero = 0 * x.sum()
        logits = torch.tensor([[math.log(3), 0.0], [0.0, math.log(3)]]) + zero
        features = torch.tensor([[1.0, -2.0], [3.0, 0.0]]) + zero
        return (logits, features) if return_features else logits


def test_generator_loss_matches_hand_computed_value():
    ctx = SynthesisContext(
        teacher=FixedTeacher(),
        student=nn.Linear(1, 2),
        num_classes=2,
        channels=1,
        image_size=8,
        mean=(0.5,),
        std=(0.5,),
        device=torch.device("cpu"),
    )
    synth = DAFLSynthesizer(ctx, DAFLOptions(batch_size=2, nz=4, ngf=2))
    assert synth.weights == {"oh": 1.0, "act": 0.001, "balance": 20.0}
    shown = synth.synthesize()
    # softmax rows (3/4, 1/4) and (1/4, 3/4): CE against the argmax is −ln(3/4) for both rows;
    # mean |f| = 6/4; the batch-mean prediction is (1/2, 1/2), so Σ p̄ log p̄ = −ln 2.
    oh, act, balance = -math.log(0.75), -1.5, -math.log(2)
    assert shown["g_oh"] == pytest.approx(oh)
    assert shown["g_act"] == pytest.approx(act)
    assert shown["g_balance"] == pytest.approx(balance)
    assert shown["loss_g"] == pytest.approx(oh + 0.001 * act + 20 * balance)


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


def test_resume_restores_the_generator_and_continues_identically(tiny_teacher_weights, workdir):
    weights = tiny_teacher_weights["lenet5"]
    whole = run_datafree(config(weights, workdir / "whole", TINY_BUDGET), plugins=dafl_plugins())
    with pytest.raises(KeyboardInterrupt):
        run_datafree(
            config(weights, workdir / "cut", TINY_BUDGET),
            reporter=KillAfterEpoch(1),
            plugins=dafl_plugins(),
        )
    resumed = run_datafree(None, resume=str(workdir / "cut"), plugins=dafl_plugins())
    a, b = load_file(whole.weights), load_file(resumed.weights)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    assert [r["top1"] for r in whole.metrics] == [r["top1"] for r in resumed.metrics]


def test_plugin_is_discovered_through_its_entry_point(monkeypatch):
    monkeypatch.delenv("DFKD_LOAD_PLUGINS", raising=False)
    assert "dafl" in Plugins(strict=False).methods
    monkeypatch.setenv("DFKD_LOAD_PLUGINS", "")
    assert "dafl" not in Plugins(strict=False).methods


@pytest.mark.slow
def test_student_learns_from_the_tiny_teacher(tiny_teacher_weights, workdir):
    budget = [
        "epochs=3",
        "ep_steps=40",
        "kd_steps=2",
        "batch_size=64",
        "lr=0.05",
        "nz=32",
        "ngf=8",
        "act=0.1",
        "balance=5",
    ]
    outcome = run_datafree(
        config(tiny_teacher_weights["lenet5"], workdir / "learn", budget),
        plugins=dafl_plugins(),
    )
    assert outcome.best_top1 >= 40.0  # chance is 10 %; this budget reaches 60 %
