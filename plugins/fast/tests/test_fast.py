"""FastDFKD plugin: the meta updates against hand-computed values, their wiring in a round, the
warm-up switch, reset_l0, the state round trip, the per-teacher presets' check of the teacher,
and learning (the rest of the method contract: tests/test_method_contract.py)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import dfkd_plugin_fast
import pytest
import torch
from dfkd_plugin_fast import PRESETS
from dfkd_plugin_fast import synthesizer as fast_module
from dfkd_plugin_fast.options import FastOptions
from dfkd_plugin_fast.synthesizer import (
    FastSynthesizer,
    accumulate_gradients,
    reptile_gradients,
    reset_first_layers,
)
from torch import nn
from typer.testing import CliRunner

from dfkd.cli import make_app
from dfkd.errors import UsageError
from dfkd.models.lenet import lenet5_bn, lenet5_half
from dfkd.options import build_options
from dfkd.synthesis.generators import Generator
from dfkd.testing import LearningContract, cpu_context, make_plugins

DIST = "dfkd-plugin-fast"
TINY = [
    "warmup=1",
    "ep_steps=4",
    "kd_steps=2",
    "g_steps=2",
    "batch_size=16",
    "synthesis_batch_size=8",
    "nz=16",
    "ngf=8",
]


class TestLearning(LearningContract):
    method = "fast"
    module = dfkd_plugin_fast
    distribution = DIST
    teacher = "lenet5_bn"
    learn_options = [
        "epochs=4",
        "ep_steps=60",
        "kd_steps=20",
        "g_steps=5",
        "synthesis_batch_size=32",
        "batch_size=32",
        "lr_g=0.01",
        "lr_z=0.05",
        "lr=0.05",
    ]
    learn_top1 = 50.0


def options(*extra: str, preset: str | None = None) -> FastOptions:
    return build_options(FastOptions, PRESETS[preset] if preset else {}, [*TINY, *extra])


def synthesizer(
    *extra: str,
    seed: int = 0,
    run_dir: Path | None = None,
    preset: str | None = None,
    teacher_name: str = "lenet5_bn",
) -> FastSynthesizer:
    """A synthesizer around an untrained 1-channel, 32 px LeNet-5-BN teacher (named
    ``teacher_name`` to the synthesizer); its pool is in memory, or in ``run_dir``/images."""
    torch.manual_seed(0)  # the same teacher and student whatever the synthesizer's seed
    teacher = lenet5_bn(10, 1).eval().requires_grad_(False)
    student = lenet5_half(10, 1)
    torch.manual_seed(seed)
    ctx = cpu_context(
        teacher,
        student,
        mean=(0.2,),
        std=(0.3,),
        run_dir=run_dir,
        run_info={"teacher": teacher_name},
    )
    return FastSynthesizer(ctx, options(*extra, preset=preset))


class RecordingOptimizer:
    """Stands in for the meta-Adam: records the meta-gradient at the step, moves nothing."""

    def __init__(self, params) -> None:
        self.params = list(params)
        self.grads = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.grads = [p.grad.clone() for p in self.params]


# --- the meta updates by hand ----------------------------------------------------------------


def test_first_order_meta_gradient_is_the_sum_of_inner_gradients():
    meta = nn.Linear(2, 1)
    fast = copy.deepcopy(meta)
    fast.weight.grad = torch.tensor([[1.0, -2.0]])
    fast.bias.grad = None  # a parameter without a gradient contributes nothing
    accumulate_gradients(meta, fast)
    fast.weight.grad = torch.tensor([[0.5, 4.0]])
    fast.bias.grad = torch.tensor([3.0])
    accumulate_gradients(meta, fast)
    torch.testing.assert_close(meta.weight.grad, torch.tensor([[1.5, 2.0]]))
    torch.testing.assert_close(meta.bias.grad, torch.tensor([3.0]))
    fast.weight.grad += 100  # the meta-gradient is a copy, not the clone's storage
    torch.testing.assert_close(meta.weight.grad, torch.tensor([[1.5, 2.0]]))


def test_reptile_moves_the_meta_generator_towards_the_clone():
    meta = nn.Linear(2, 1)
    with torch.no_grad():
        meta.weight.copy_(torch.tensor([[1.0, 2.0]]))
        meta.bias.fill_(0.0)
    fast = copy.deepcopy(meta)
    with torch.no_grad():
        fast.weight.copy_(torch.tensor([[0.5, 3.0]]))
        fast.bias.fill_(1.0)
    reptile_gradients(meta, fast, scale=67.0)
    torch.testing.assert_close(meta.weight.grad, torch.tensor([[33.5, -67.0]]))
    torch.testing.assert_close(meta.bias.grad, torch.tensor([-67.0]))
    torch.optim.SGD(meta.parameters(), lr=0.01).step()
    # θ − 0.01·67·(θ − θ_fast) = θ + 0.67·(θ_fast − θ)
    torch.testing.assert_close(meta.weight, torch.tensor([[0.665, 2.67]]))
    torch.testing.assert_close(meta.bias, torch.tensor([0.67]))


def test_a_maml_round_steps_the_meta_generator_once_on_the_summed_inner_gradients(monkeypatch):
    synth = synthesizer("g_steps=3")
    inner = []

    def recording(meta, fast):
        inner.append([p.grad.clone() for p in fast.parameters()])
        accumulate_gradients(meta, fast)

    monkeypatch.setattr(fast_module, "accumulate_gradients", recording)
    before = copy.deepcopy(synth.generator.state_dict())
    synth.meta_optimizer = RecordingOptimizer(synth.generator.parameters())
    synth.synthesize()
    assert len(inner) == 3
    for got, *steps in zip(synth.meta_optimizer.grads, *inner, strict=True):
        torch.testing.assert_close(got, sum(steps))
    for name, value in synth.generator.state_dict().items():  # only the meta step moves it
        torch.testing.assert_close(value, before[name], msg=name)


def test_a_reptile_round_uses_the_distance_to_the_adapted_clone(monkeypatch):
    synth = synthesizer("meta=reptile", "reptile_scale=2")
    clones = []

    def recording(meta, fast, scale):
        clones.append([p.detach().clone() for p in fast.parameters()])
        reptile_gradients(meta, fast, scale)

    monkeypatch.setattr(fast_module, "reptile_gradients", recording)
    synth.meta_optimizer = RecordingOptimizer(synth.generator.parameters())
    synth.synthesize()
    (clone,) = clones
    for got, meta, adapted in zip(
        synth.meta_optimizer.grads, synth.generator.parameters(), clone, strict=True
    ):
        torch.testing.assert_close(got, 2 * (meta.detach() - adapted))
    assert any(g.abs().sum() > 0 for g in synth.meta_optimizer.grads)


def test_the_meta_adam_rate_is_lr_g_times_g_steps():
    synth = synthesizer("g_steps=5", "lr_g=0.003")
    assert synth.meta_optimizer.param_groups[0]["lr"] == pytest.approx(0.015)


# --- the round ---------------------------------------------------------------------------------


def test_warm_up_rounds_have_no_adversarial_term_and_the_bn_ema_follows_the_rounds():
    synth = synthesizer()
    result = synth.synthesize()
    assert "loss_adv" not in result.logs and {"loss_bn", "loss_oh", "loss_g"} <= result.logs.keys()
    assert result.images.shape == (8, 1, 32, 32) and len(synth.pool) == 8
    first = synth.bn_stats.hooks[0]
    assert first.ema_mean is not None  # the first update stores the last step's statistics
    stored = first.ema_mean.clone()
    synth.end_epoch(0)  # warm-up (1 epoch) over
    result = synth.synthesize()
    assert "loss_adv" in result.logs
    assert not torch.equal(first.ema_mean, stored)


def test_reset_l0_happens_once_after_warmup_plus_its_epoch():
    synth = synthesizer("reset_l0_epoch=1")
    weight = synth.generator.l1[0].weight
    synth.epoch = 1  # warm-up over, but not yet warmup + 1
    synth.synthesize()
    assert not synth.l0_was_reset
    synth.epoch = 2
    synth.meta_optimizer = RecordingOptimizer(synth.generator.parameters())
    synth.synthesize()
    assert synth.l0_was_reset
    assert weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(synth.generator.conv_blocks[0].bias, torch.zeros(16))
    kept = weight.detach().clone()
    synth.synthesize()
    assert torch.equal(weight, kept)  # not again (the recording optimiser moves nothing)


def test_reset_first_layers_is_seeded():
    one, two = Generator(8, 4, 32, 1), Generator(8, 4, 32, 1)
    reset_first_layers(one, torch.Generator().manual_seed(3))
    reset_first_layers(two, torch.Generator().manual_seed(3))
    torch.testing.assert_close(one.l1[0].weight, two.l1[0].weight)
    torch.testing.assert_close(one.conv_blocks[0].weight, two.conv_blocks[0].weight)


def test_state_round_trip_restores_the_meta_generator_its_adam_and_the_bn_ema(tmp_path):
    synth = synthesizer(run_dir=tmp_path / "one")
    synth.synthesize()
    synth.end_epoch(0)
    synth.synthesize()
    state = copy.deepcopy(synth.state_dict())
    shutil.copytree(tmp_path / "one" / "images", tmp_path / "two" / "images")
    # a different meta-generator and different streams until restored
    other = synthesizer(seed=5, run_dir=tmp_path / "two")
    other.load_state_dict(state)
    assert len(other.pool) == len(synth.pool) == 16
    for name, value in synth.generator.state_dict().items():
        torch.testing.assert_close(other.generator.state_dict()[name], value, msg=name)
    for a, b in zip(synth.bn_stats.hooks, other.bn_stats.hooks, strict=True):
        torch.testing.assert_close(a.ema_mean, b.ema_mean)
        torch.testing.assert_close(a.ema_var, b.ema_var)
    assert other.epoch == 1 and other.adversarial
    one, two = synth.synthesize(), other.synthesize()
    torch.testing.assert_close(one.images, two.images)
    assert one.logs == two.logs


def test_presets_carry_the_script_values():
    assert len(PRESETS) == 2 + 2 * 3 * 3 + 3  # and fashion-mnist, default, smoke
    r34 = build_options(FastOptions, PRESETS["cifar100-resnet34-fast2"])
    assert (r34.adv, r34.oh, r34.g_steps, r34.lr_g, r34.lr_z) == (1.33, 0.5, 2, 5e-3, 0.015)
    wrn = build_options(FastOptions, PRESETS["cifar10"])
    assert (wrn.adv, wrn.oh, wrn.g_steps, wrn.lr_g, wrn.epochs, wrn.warmup) == (
        1.1,
        0.4,
        10,
        2e-3,
        220,
        20,
    )
    assert build_options(FastOptions, PRESETS["cifar100-vgg11-fast5"]).adv == 1.0


@pytest.mark.parametrize("bad", ["g_steps=0", "bn_mmt=1", "pad=-1", "lr_g=0"])
def test_bad_options_are_refused(bad):
    with pytest.raises(UsageError, match=bad.split("=")[0]):
        synthesizer(bad)


@pytest.mark.parametrize(
    ("preset", "teacher", "says"),
    [
        ("cifar10-resnet34", "resnet34", None),
        (
            "cifar100-resnet34-fast2",
            "wrn40_2",
            "a resnet34 teacher, not wrn40_2; the wrn40_2 presets",
        ),
        ("cifar10-vgg11-fast5", "lenet5_bn", "a vgg11 teacher, not lenet5_bn; tune them"),
        ("cifar10", "resnet34", "a wrn40_2 teacher, not resnet34; the resnet34 presets"),
        ("cifar100", "wrn40_2", None),
        ("fashion-mnist", "resnet34", None),  # a preset of a dataset, not of a teacher
    ],
)
def test_a_per_teacher_preset_says_in_one_line_when_the_teacher_is_another(
    preset, teacher, says, capsys
):
    synthesizer(preset=preset, teacher_name=teacher)
    lines = capsys.readouterr().err.splitlines()
    if says is None:
        assert lines == []
    else:
        (line,) = lines
        assert says in line and "adv and oh" in line


def test_a_preset_teacher_of_none_silences_the_check(capsys):
    synthesizer("preset_teacher=none", preset="cifar10-resnet34", teacher_name="vgg11")
    assert capsys.readouterr().err == ""
    assert build_options(FastOptions, PRESETS["cifar10-vgg11"]).preset_teacher == "vgg11"


def test_the_teacher_of_the_command_line_reaches_the_check(tiny_teacher_weights, workdir):
    args = ["run", "fast", "--preset", "cifar10-resnet34", "--teacher", "lenet5_bn"]
    args += ["--teacher-weights", str(tiny_teacher_weights["lenet5_bn"]), "--dataset", "tiny"]
    args += ["--student", "lenet5_half", "--mixed-precision", "no", "--out", str(workdir / "r")]
    args += ["--val-size", "8", "--val-steps", "1"]
    for value in [*TINY, "warmup=0", "epochs=1"]:
        args += ["-o", value]
    done = CliRunner().invoke(make_app(make_plugins((dfkd_plugin_fast, DIST))), args)
    assert done.exit_code == 0, done.output
    said = [line for line in done.stderr.splitlines() if "published for" in line]
    assert said == [
        "Warning: fast: the preset's adv and oh were published for a resnet34 teacher, not "
        "lenet5_bn; tune them with -o adv=... -o oh=..., or silence this with "
        "-o preset_teacher=none."
    ]
