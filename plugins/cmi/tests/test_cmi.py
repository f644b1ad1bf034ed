"""CMI plugin: its own loss pieces by hand, the memory bank, whole runs, resume, init_images,
and learning (the rest of the method contract: tests/test_method_contract.py)."""

from __future__ import annotations

import math
from pathlib import Path

import dfkd_plugin_cmi
import pytest
import torch
from dfkd_plugin_cmi import SMOKE
from dfkd_plugin_cmi.contrastive import MLPHead, contrastive_loss
from dfkd_plugin_cmi.memory import MemoryBank
from dfkd_plugin_cmi.options import CMIOptions
from dfkd_plugin_cmi.synthesizer import CMISynthesizer
from safetensors.torch import load_file, save_file
from torch import nn

from dfkd.errors import UsageError
from dfkd.options import build_options
from dfkd.plugins import Plugins
from dfkd.synthesis.base import SynthesisContext
from dfkd.synthesis.bn_hooks import InstanceMeanHook
from dfkd.testing import (
    KillAfterEpoch,
    LearningContract,
    assert_complete_run,
    assert_same_student,
    assert_same_tensors,
    checkpoint_objects,
    cpu_context,
    make_plugins,
    tiny_run_config,
)
from dfkd.training.datafree import RunConfig, run_datafree

DIST = "dfkd-plugin-cmi"


class TestLearning(LearningContract):
    method = "cmi"
    module = dfkd_plugin_cmi
    distribution = DIST
    teacher = "lenet5_bn"
    learn_options = [
        "epochs=3",
        "ep_steps=60",
        "kd_steps=20",
        "g_steps=20",
        "synthesis_batch_size=32",
        "batch_size=32",
        "lr_g=0.05",
        "lr=0.05",
    ]
    learn_top1 = 50.0  # chance is 10 %; this setting reaches 100 %


def cmi_plugins() -> Plugins:
    return make_plugins((dfkd_plugin_cmi, DIST))


def config(weights: dict[str, Path], out: Path, *extra: str) -> RunConfig:
    """One epoch of the smoke preset from the tiny LeNet-5-BN teacher, then ``extra``."""
    teacher = weights["lenet5_bn"]
    return tiny_run_config("cmi", "lenet5_bn", teacher, out, ["epochs=1", *extra], preset="smoke")


def run(weights: dict[str, Path], out: Path, *extra: str):
    return run_datafree(config(weights, out, *extra), plugins=cmi_plugins())


def context(teacher: nn.Module) -> SynthesisContext:
    """A synthesis context around an untrained 1-channel, 32 px teacher, with no run folder."""
    from dfkd.models.lenet import lenet5_half

    return cpu_context(
        teacher.eval(),
        lenet5_half(10, 1),
        mean=(0.2,),
        std=(0.3,),
    )


class _Identity(nn.Module):
    """A head that only L2-normalises, so the logits can be worked out by hand."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(h, dim=1)


# --- the contrastive loss --------------------------------------------------------------------


def test_contrastive_loss_without_negatives_is_the_plain_mean():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = [[1, 0], [0, 1]] / 0.5 = [[2, 0], [0, 2]]; each row's CE is log(1 + e^-2).
    loss = contrastive_loss(_Identity(), h, h, T=0.5)
    torch.testing.assert_close(loss, torch.tensor(math.log(1 + math.exp(-2))))


def test_contrastive_loss_adds_the_batch_mean_and_the_cached_mean():
    h_l = torch.tensor([[1.0, 0.0]])
    h_g = torch.tensor([[1.0, 0.0]])
    neg_l = torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    neg_g = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # u = [[1, 0], [0, 1], [.6, .8]], v = [[1, 0], [0, 1], [0, 1]], T = 1:
    # logits rows [1, 0, 0], [0, 1, 1], [.6, .8, .8]; labels 0, 1, 2.
    row0 = -1 + math.log(math.e + 2)
    row1 = -1 + math.log(1 + 2 * math.e)
    row2 = -0.8 + math.log(math.exp(0.6) + 2 * math.exp(0.8))
    loss = contrastive_loss(_Identity(), h_l, h_g, neg_l, neg_g, T=1.0)
    torch.testing.assert_close(loss, torch.tensor(row0 + (row1 + row2) / 2))
    # a plain mean over the three rows would weigh the one current row by a third only
    assert not math.isclose(loss.item(), (row0 + row1 + row2) / 3, rel_tol=1e-3)


def test_contrastive_gradient_reaches_the_local_view_only():
    h_l = torch.randn(4, 3, requires_grad=True)
    h_g = torch.randn(4, 3, requires_grad=True)
    contrastive_loss(_Identity(), h_l, h_g, T=0.1).backward()
    assert h_l.grad.abs().sum() > 0
    assert h_g.grad is None  # v = stopgrad(head(h_g))


def test_mlp_head_projects_to_unit_rows():
    torch.manual_seed(0)
    head = MLPHead(5, 3)
    assert [type(m) for m in head.net] == [nn.Linear, nn.ReLU, nn.Linear]
    assert head.net[0].weight.shape == (5, 5) and head.net[2].weight.shape == (3, 5)
    out = head(torch.randn(7, 5))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(7))


# --- the memory bank -------------------------------------------------------------------------


def test_memory_bank_draws_only_written_rows_until_it_wraps():
    bank = MemoryBank(4, 2, generator=torch.Generator().manual_seed(0))
    assert bank.filled == 0
    bank.add(torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    assert (bank.ptr, bank.filled) == (2, 2)
    for seed in range(20):
        rows = bank.get_data(2, generator=torch.Generator().manual_seed(seed))
        assert sorted(rows[:, 0].tolist()) == [1.0, 2.0]  # distinct, never the randn rows
    with pytest.raises(ValueError, match="holds 2"):
        bank.get_data(3)
    bank.add(torch.tensor([[3.0, 3.0], [4.0, 4.0], [5.0, 5.0]]))  # 4 % 3 != 0: wraps around
    assert bank.data[:, 0].tolist() == [5.0, 2.0, 3.0, 4.0]
    assert (bank.ptr, bank.filled) == (1, 4)
    # more rows than the bank holds: as if written one by one from row 1 (0 2 4 6 | 8 10)
    bank.add(torch.arange(12.0).view(6, 2))
    assert bank.data[:, 0].tolist() == [6.0, 8.0, 10.0, 4.0]
    assert bank.ptr == 3


def test_memory_bank_state_round_trip_keeps_written_rows_only():
    bank = MemoryBank(6, 3)
    bank.add(torch.ones(4, 3))
    state = bank.state_dict()
    assert state["data"].shape == (4, 3) and (state["ptr"], state["filled"]) == (4, 4)
    other = MemoryBank(6, 3)
    other.load_state_dict(state)
    torch.testing.assert_close(other.data[:4], torch.ones(4, 3))
    assert (other.ptr, other.filled) == (4, 4)
    with pytest.raises(ValueError, match="bank_size"):
        MemoryBank(3, 3).load_state_dict(state)
    with pytest.raises(ValueError, match="shape"):
        bank.add(torch.ones(2, 4))


# --- whole runs ------------------------------------------------------------------------------


def test_one_epoch_writes_a_complete_run(tiny_teacher_weights, workdir):
    outcome = run(tiny_teacher_weights, workdir / "run")
    run_dir = workdir / "run"
    assert_complete_run(run_dir)
    state = checkpoint_objects(run_dir)["synthesizer"]
    # two rounds of 8 images: two pool chunks, 16 bank rows of [h_l, h_g] (6 + 16 + 120 channels)
    assert sorted(p.name for p in (run_dir / "images").iterdir()) == [
        "images-00000.safetensors",
        "images-00001.safetensors",
    ]
    assert state["pool"] == {"chunks": 2, "size": 16}
    assert state["bank"]["data"].shape == (16, 2 * 142)
    row = outcome.last
    assert math.isfinite(row["loss"]) and "top1" in row
    assert {"loss_g", "loss_bn", "loss_oh", "loss_adv", "loss_cr"} <= set(row)


def test_teacher_without_batchnorm_warns_and_uses_conv_inputs():
    from dfkd.models.lenet import lenet5

    with pytest.warns(UserWarning, match="no BatchNorm"):
        synthesizer = CMISynthesizer(context(lenet5(10, 1)), build_options(CMIOptions, SMOKE))
    assert synthesizer.dim == 1 + 6 + 16  # the input channels of the three Conv2d layers
    images = synthesizer.synthesize().images
    assert images.shape == (8, 1, 32, 32)
    assert synthesizer.bank.filled == 8 and len(synthesizer.pool) == 8


@pytest.mark.parametrize("name", ["resnet34", "resnet18"])
def test_a_resnet_teacher_gives_the_inputs_of_its_four_stages(name):
    """The reference's ResNet-34 rule: 64 + 64 + 128 + 256 = 512 dims, not the 8,512 (resnet34)
    or 4,800 (resnet18) of every BatchNorm2d's input."""
    from dfkd.models import build_model

    teacher = build_model(name, num_classes=10, in_channels=1)
    synthesizer = CMISynthesizer(context(teacher), build_options(CMIOptions, SMOKE))
    stages = [teacher.layer1, teacher.layer2, teacher.layer3, teacher.layer4]
    assert synthesizer.layers == stages
    assert synthesizer.dim == 512
    assert synthesizer.head.net[0].weight.shape == (512, 512)
    assert synthesizer.bank.data.shape == (64, 2 * 512)
    hooks = [InstanceMeanHook(m) for m in synthesizer.layers]
    with torch.no_grad():
        teacher(torch.randn(2, 1, 32, 32))
    assert [h.features.shape[1] for h in hooks] == [64, 64, 128, 256]


@pytest.mark.parametrize(
    "name, dim",
    [("wrn40_2", 2704), ("vgg11", 2752), ("lenet5_bn", 6 + 16 + 120)],  # wrn40_2: the reference's D
)
def test_other_teachers_give_the_inputs_of_every_batchnorm(name, dim):
    from dfkd.models import build_model

    teacher = build_model(name, num_classes=10, in_channels=1)
    synthesizer = CMISynthesizer(context(teacher), build_options(CMIOptions, SMOKE))
    assert synthesizer.layers == [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    assert synthesizer.dim == dim


def test_a_teacher_without_convolutions_is_refused():
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    with pytest.raises(UsageError, match="convolutional teacher"):
        CMISynthesizer(context(teacher), build_options(CMIOptions, SMOKE))


@pytest.mark.parametrize(
    "option, message",
    [
        ("local_scale=0.5,0.2", "local_scale"),
        ("synthesis_batch_size=1", "at least 2"),
        ("cr_T=0", "cr_T"),
        ("g_steps=0", "g_steps"),
    ],
)
def test_bad_options_are_rejected_before_any_work(option, message):
    with pytest.raises(UsageError, match=message):
        build_options(CMIOptions, SMOKE, [option])


def test_resume_restores_head_optimiser_bank_and_pool(tiny_teacher_weights, workdir):
    run(tiny_teacher_weights, workdir / "straight", "epochs=2")
    cfg = config(tiny_teacher_weights, workdir / "resumed", "epochs=2")
    with pytest.raises(KeyboardInterrupt):
        run_datafree(cfg, reporter=KillAfterEpoch(1), plugins=cmi_plugins())
    # what a run killed during epoch 2 leaves behind: a pool chunk the checkpoint does not cover
    save_file(
        {"images": torch.zeros(8, 1, 32, 32, dtype=torch.uint8)},
        str(workdir / "resumed" / "images" / "images-00002.safetensors"),
    )
    run_datafree(None, resume=str(workdir / "resumed"), plugins=cmi_plugins())

    assert_same_student(workdir / "straight", workdir / "resumed")
    sa, sb = (checkpoint_objects(workdir / d)["synthesizer"] for d in ("straight", "resumed"))
    assert_same_tensors(sa["head"], sb["head"], "projection head")
    assert sa["head_optimizer"]["state"][0]["step"] == sb["head_optimizer"]["state"][0]["step"]
    torch.testing.assert_close(
        sa["head_optimizer"]["state"][0]["exp_avg"], sb["head_optimizer"]["state"][0]["exp_avg"]
    )
    torch.testing.assert_close(sa["bank"]["data"], sb["bank"]["data"], rtol=0, atol=0)
    assert sa["pool"] == sb["pool"] == {"chunks": 4, "size": 32}


def test_init_images_seed_the_pool_without_copying_them(tiny_teacher_weights, workdir):
    seed = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)  # resized to LeNet's 32 px
    folder = workdir / "preinverted"
    folder.mkdir()
    save_file({"images": seed}, str(folder / "images.safetensors"))
    run(tiny_teacher_weights, workdir / "run", f"init_images=folder:{folder}")
    state = checkpoint_objects(workdir / "run")["synthesizer"]
    assert state["pool"] == {"chunks": 2, "size": 5 + 16}
    written = [load_file(str(p))["images"] for p in sorted((workdir / "run/images").iterdir())]
    assert sum(len(images) for images in written) == 16  # only synthesized images reach disk
    # a resume rebuilds the same pool: seed from the folder, then the chunks
    run_datafree(None, resume=str(workdir / "run"), plugins=cmi_plugins())


def test_the_mission_example_runs_from_a_teacher_in_checkpoints(workdir, monkeypatch):
    """`dfkd run cmi --teacher wrn40_2 --student wrn16_1`, typed as is, once a wrn40_2 teacher
    was trained or imported: no dataset named, its inputs from the teacher's sidecar."""
    from typer.testing import CliRunner

    from dfkd.cli import make_app
    from dfkd.models import build_model
    from dfkd.weights import save_weights

    monkeypatch.setenv("DFKD_CHECKPOINTS", str(workdir / "checkpoints"))
    meta = {"model": "wrn40_2", "dataset": "cifar10", "num_classes": 10, "channels": 3}
    meta |= {"input_size": 32, "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.243, 0.261]}
    teacher = build_model("wrn40_2", 10, 3)
    save_weights(teacher, workdir / "checkpoints" / "cifar10-wrn40_2.safetensors", meta)
    budget = ["epochs=1", "ep_steps=2", "kd_steps=2", "g_steps=1", "batch_size=4", "ngf=8"]
    budget += ["synthesis_batch_size=4", "nz=8", "head_dim=8", "bank_size=8", "n_negatives=4"]
    app = make_app(cmi_plugins())
    done = CliRunner().invoke(
        app,
        ["run", "cmi", "--teacher", "wrn40_2", "--student", "wrn16_1", "--val-size", "10"]
        + ["--val-steps", "1", "-q", "--out", "mission"]
        + [arg for option in budget for arg in ("-o", option)],
    )
    assert done.exit_code == 0, done.output
    assert "checkpoints/cifar10-wrn40_2.safetensors" in done.output
    assert (workdir / "mission" / "student.safetensors").is_file()
