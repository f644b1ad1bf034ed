"""DFAD plugin: a short run, its L1 losses by hand, its train-mode and unnormalised sampling,
segmentation, and learning (the rest of the method contract: tests/test_method_contract.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dfkd_plugin_dfad
import pytest
import torch
from dfkd_plugin_dfad import CAMVID, CIFAR10, MNIST, NYUV2
from dfkd_plugin_dfad.options import DFADOptions
from dfkd_plugin_dfad.synthesizer import DFADSynthesizer
from torch import nn

from dfkd.models.lenet import lenet5, lenet5_half
from dfkd.plugins import Plugins
from dfkd.synthesis.base import SynthesisContext
from dfkd.synthesis.generators import GeneratorB
from dfkd.testing import (
    KillAfterEpoch,
    LearningContract,
    assert_complete_run,
    cpu_context,
    make_plugins,
    tiny_run_config,
)
from dfkd.training.datafree import RunConfig, run_datafree


class TestLearning(LearningContract):
    method = "dfad"
    module = dfkd_plugin_dfad
    distribution = "dfkd-plugin-dfad"
    # constant: multistep at 60/75/90 % of three epochs would cut the rate tenfold after the first
    learn_options = ["epochs=3", "ep_steps=40", "batch_size=64", "lr=0.01", "nz=32", "ngf=8"]
    learn_options += ["schedule=constant"]
    learn_top1 = 35.0


def dfad_plugins() -> Plugins:
    return make_plugins((dfkd_plugin_dfad, "dfkd-plugin-dfad"))


def config(weights: Path, out: Path) -> RunConfig:
    """The smoke preset's two epochs from ``weights``, the tiny LeNet-5."""
    return tiny_run_config("dfad", "lenet5", weights, out, [], preset="smoke")


def test_short_run_writes_a_complete_run_directory(tiny_teacher_weights, workdir):
    out = workdir / "run"
    run_datafree(config(tiny_teacher_weights["lenet5"], out), plugins=dfad_plugins())
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
    run_datafree(config(tiny_teacher_weights["lenet5"], out), plugins=dfad_plugins())
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
    return cpu_context(
        Fixed(T_LOGITS),
        student,
        num_classes=2,
        image_size=8,
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
    ctx = cpu_context(
        lenet5(10, 1).eval().requires_grad_(False),
        lenet5_half(10, 1),
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


def test_the_segmentation_game_is_log_one_plus_l1():
    student = Fixed(S_LOGITS).eval()
    ctx = fixed_ctx(student)
    ctx.task = "segmentation"
    synth = DFADSynthesizer(ctx, DFADOptions(batch_size=2, nz=4, ngf=2))
    assert synth.synthesize().logs["loss_g"] == pytest.approx(-math.log1p(L1))
    # the student's side is the plain L1 whatever the task
    loss, _ = synth.student_loss(torch.tensor(S_LOGITS), torch.tensor(T_LOGITS), step=0)
    assert loss.item() == pytest.approx(L1)
    options = DFADOptions(nz=4, ngf=2, adv_loss="log_l1")
    forced = DFADSynthesizer(fixed_ctx(Fixed(S_LOGITS)), options)
    assert forced.synthesize().logs["loss_g"] == pytest.approx(-math.log1p(L1))


def test_generator_b_is_the_references_dcgan_stack():
    generator = GeneratorB(nz=256, ngf=64, img_size=128, channels=3)
    # the reference's GeneratorB(nz 256, ngf 64, 128 px): 11,243,203 parameters
    assert sum(p.numel() for p in generator.parameters()) == 11_243_203
    generator = GeneratorB(nz=8, ngf=4, img_size=32, channels=1)
    x = generator(torch.randn(5, 8))
    assert x.shape == (5, 1, 32, 32) and x.abs().max() <= 1.0
    with pytest.raises(ValueError, match="divisible by 16"):
        GeneratorB(img_size=40)


def test_segmentation_presets_are_the_reference_scripts():
    camvid, nyu = DFADOptions(**CAMVID), DFADOptions(**NYUV2)
    assert (camvid.generator, camvid.nz, camvid.ngf, camvid.adv_loss) == ("b", 256, 64, "log_l1")
    # 300 epochs of 50 iterations of (5 student steps, 1 generator step), batch 64
    assert (camvid.epochs, camvid.ep_steps, camvid.kd_steps, camvid.batch_size) == (300, 250, 5, 64)
    assert (camvid.lr, camvid.lr_g, camvid.beta1) == (0.1, 1e-3, 0.9)
    # StepLR(100) on both players: γ 0.1 and wd 5e-4 for CamVid, γ 0.3 and wd 5e-5 for NYUv2
    assert (camvid.schedule, camvid.milestones) == ("multistep", (100, 200))
    assert camvid.schedule_g
    assert (camvid.gamma, camvid.weight_decay) == (0.1, 5e-4)
    assert (nyu.gamma, nyu.weight_decay) == (0.3, 5e-5)


# the camvid preset at toy scale: GeneratorB at 32 px, the log(1 + L1) game, a few steps
DFAD_TOY = ["epochs=2", "ep_steps=6", "kd_steps=3", "batch_size=8", "nz=16", "ngf=4", "milestones="]


def seg_config(weights: Path, out: str, dataset: str | None = "tiny-seg") -> RunConfig:
    """The toy camvid run from the tiny segmentation teacher; no dataset: the teacher alone."""
    return RunConfig(
        method="dfad",
        teacher="segnet_small",
        student="segnet_small_half",
        dataset=dataset,
        preset="camvid",
        overrides=DFAD_TOY,
        teacher_weights=str(weights),
        out=out,
        val_size=8,
        val_steps=2,
    )


def test_dfad_distils_a_segmentation_teacher_and_resumes_exactly(tiny_seg_teacher_weights, workdir):
    plugins = dfad_plugins()
    whole = run_datafree(seg_config(tiny_seg_teacher_weights, "whole"), plugins=plugins)
    rows = assert_complete_run(workdir / "whole", 2)
    assert whole.best_by == "miou"
    assert {"miou", "pixel_acc", "agree", "val_kl"} <= set(rows[-1])
    assert all(r["g_adv"] < 0 for r in rows)

    killed = seg_config(tiny_seg_teacher_weights, "killed")
    with pytest.raises(KeyboardInterrupt):
        run_datafree(killed, reporter=KillAfterEpoch(1), plugins=plugins)
    run_datafree(None, resume=str(workdir / "killed"), plugins=plugins)
    again = assert_complete_run(workdir / "killed", 2)
    for a, b in zip(rows, again, strict=True):
        assert a["miou"] == b["miou"] and a["loss"] == b["loss"]


def test_a_segmentation_run_needs_no_dataset(tiny_seg_teacher_weights, workdir):
    config = seg_config(tiny_seg_teacher_weights, "alone", dataset=None)
    outcome = run_datafree(config, plugins=dfad_plugins())
    assert outcome.best_by is None
    assert "miou" not in outcome.last and 0 <= outcome.last["agree"] <= 100


@pytest.mark.slow
def test_the_camvid_preset_runs_dfads_own_pair_on_a_layout_true_camvid(workdir):
    """The reference's pair as its checkpoints arrive: a DeepLabV3-ResNet-50 state dict through
    import-weights, then the camvid preset, cut to two generator steps."""
    from typer.testing import CliRunner

    from dfkd.cli import make_app
    from dfkd.models import build_model
    from dfkd.testing import write_tiny_camvid

    data = write_tiny_camvid(workdir / "data")
    torch.save(build_model("deeplabv3_resnet50", 11, 3).state_dict(), workdir / "teacher.pth")
    app, runner = make_app(dfad_plugins()), CliRunner()
    camvid = ["--dataset", "camvid", "--data-root", str(data)]
    done = runner.invoke(
        app, ["import-weights", "teacher.pth", "--model", "deeplabv3_resnet50", *camvid]
    )
    assert done.exit_code == 0, done.output
    done = runner.invoke(
        app,
        ["run", "dfad", "--teacher", "deeplabv3_resnet50", "--student", "deeplabv3_mobilenetv2",
         *camvid, "--preset", "camvid", "--val-size", "2", "--val-steps", "1", "--out", "run",
         *(f"-o{o}" for o in ("epochs=1", "ep_steps=2", "kd_steps=1", "batch_size=2", "nz=8",
                               "ngf=4", "milestones="))],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    (row,) = assert_complete_run(workdir / "run", 1)
    assert 0 <= row["miou"] <= 100 and row["g_adv"] < 0


@pytest.mark.slow
def test_a_segmentation_student_learns_the_toy_scenes(tiny_seg_teacher_weights, workdir):
    """The camvid game on scenes whose classes differ by brightness: the student gets most of
    the teacher's mIoU (about 58 % against 61 %)."""
    config = seg_config(tiny_seg_teacher_weights, "learn")
    config.overrides = ["epochs=6", "ep_steps=50", "kd_steps=5", "batch_size=32", "nz=64"]
    config.overrides += ["ngf=16", "milestones="]
    outcome = run_datafree(config, plugins=dfad_plugins())
    teacher = json.loads(tiny_seg_teacher_weights.with_suffix(".json").read_text())
    assert outcome.last["miou"] > 45.0 and outcome.last["miou"] > teacher["miou"] - 15
