"""`dfkd invert`: the three settings, each loss term, the kept iterate, weights, the outputs."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import dfkd_plugin_deepinv
import dfkd_plugin_deepinv.invert as invert_module
import pytest
import torch
from dfkd_plugin_deepinv.invert import (
    IMAGENET,
    Inverter,
    data_format,
    learning_rate,
    make_targets,
    run_inversion,
)
from dfkd_plugin_deepinv.invert_options import InvertConfig, build_config
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from dfkd import hookimpl
from dfkd.cli import make_app
from dfkd.errors import UsageError
from dfkd.testing import make_plugins
from dfkd.weights import save_weights

PLUGIN = (dfkd_plugin_deepinv, "dfkd-plugin-deepinv")


@pytest.fixture(scope="module")
def teacher_bn(tiny_teacher_weights: dict[str, Path]) -> Path:
    """The tiny LeNet-5-BN teacher's last, confident epoch (the fixture's file is its first)."""
    best = tiny_teacher_weights["lenet5_bn"]
    last = best.with_name("model.safetensors")
    return last if last.exists() else best


def tiny_config(out: Path, weights: Path, **values: object) -> InvertConfig:
    base = {"batch_size": 4, "iterations": 6, "log_every": 1, "jitter": 2, "cpu": True}
    return InvertConfig(
        model="lenet5_bn", dataset="tiny", weights=str(weights), out=str(out), **(base | values)
    )


def log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


class RecordingAdam(torch.optim.Adam):
    """Adam that remembers the betas of every instance, to check each setting's optimiser."""

    betas: list[tuple[float, float]] = []

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        RecordingAdam.betas.append(tuple(kwargs["betas"]))


@pytest.mark.parametrize(
    ("setting", "resolutions", "betas"),
    [
        (0, [16] * 4 + [32] * 2, [(0.5, 0.9), (0.5, 0.9)]),
        (1, [32] * 6, [(0.5, 0.9)]),
        (2, [32] * 6, [(0.9, 0.999)]),
    ],
)
def test_each_setting_inverts_and_writes_a_transfer_set(
    workdir, teacher_bn, monkeypatch, setting, resolutions, betas
):
    RecordingAdam.betas = []
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    out = workdir / "inv"
    result = run_inversion(tiny_config(out, teacher_bn, setting=setting), plugins=make_plugins())
    rows = log_rows(out)
    # The multi-resolution switch: 2/3 of the iterations see 2x2-average-pooled images.
    assert [r["resolution"] for r in rows if "resolution" in r] == resolutions
    assert RecordingAdam.betas == betas
    assert rows[-1]["final"] and rows[-1]["loss"] == result.loss
    tensors = load_file(str(out / "images.safetensors"))
    assert tensors["images"].shape == (4, 1, 32, 32) and tensors["images"].dtype == torch.uint8
    assert tensors["labels"].tolist() == [0, 1, 2, 3]
    for k in range(4):
        assert (out / str(k) / f"{k:05d}.png").is_file()
    assert (out / "grid.png").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["teacher_sha256"] == hashlib.sha256(Path(teacher_bn).read_bytes()).hexdigest()


TINY_CONV_SIZES: list[int] = []


class TinyConv(nn.Module):
    """A fully convolutional BN classifier that takes any image size and records the sizes it
    is fed, to see the low-resolution stage reach the network itself."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        TINY_CONV_SIZES.append(x.shape[-1])
        return self.body(x)


class TinyConvPlugin:
    @hookimpl
    def register_models(self, register):
        register("tinyconv", TinyConv, "test model of any input size", input_size=None)


def test_a_size_agnostic_network_sees_half_resolution_images_first(workdir):
    weights = workdir / "tinyconv.safetensors"
    save_weights(TinyConv(), weights, {})
    TINY_CONV_SIZES.clear()
    cfg = InvertConfig(
        model="tinyconv",
        dataset="tiny",
        weights=str(weights),
        batch_size=4,
        iterations=6,
        setting=0,
        out=str(workdir / "inv"),
        cpu=True,
    )
    run_inversion(cfg, plugins=make_plugins((TinyConvPlugin(), "tinyconv")))
    # tiny is 28 px: four steps at 14 px, two at 28 px, then the kept batch's accuracy.
    assert TINY_CONV_SIZES == [14] * 4 + [28] * 2 + [28]


def test_clipping_follows_the_setting_unless_overridden(workdir, teacher_bn, monkeypatch):
    seen: list[torch.Tensor] = []
    jitter = invert_module.jitter_flip

    def spy(x, *args, **kwargs):
        seen.append(x.detach().clone())
        return jitter(x, *args, **kwargs)

    monkeypatch.setattr(invert_module, "jitter_flip", spy)
    low, high = -0.2 / 0.3, 0.8 / 0.3  # tiny's mean 0.2 and std 0.3
    for setting, clip, clipped in ((1, None, True), (2, None, False), (2, True, True)):
        seen.clear()
        cfg = tiny_config(
            workdir / f"inv{setting}{clip}",
            teacher_bn,
            setting=setting,
            clip=clip,
            lr=3.0,
            iterations=4,
        )
        run_inversion(cfg, plugins=make_plugins())
        inside = all(x.min() >= low - 1e-6 and x.max() <= high + 1e-6 for x in seen[1:])
        assert inside == clipped, (setting, clip)


def test_each_loss_term_matches_a_hand_computation():
    torch.manual_seed(0)
    conv1, bn1 = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)
    conv2, bn2 = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)
    bn1.running_mean.copy_(torch.tensor([0.5, -1.0]))
    bn1.running_var.copy_(torch.tensor([2.0, 0.25]))
    bn2.running_mean.copy_(torch.tensor([0.1, 0.2]))
    bn2.running_var.copy_(torch.tensor([1.5, 0.5]))
    teacher = nn.Sequential(conv1, bn1, conv2, bn2, nn.Flatten(), nn.Linear(2 * 9, 3))
    teacher.eval().requires_grad_(False)
    verifier = nn.Sequential(nn.Flatten(), nn.Linear(9, 3)).eval().requires_grad_(False)
    weights = {
        "main_loss_multiplier": 2.0,
        "r_feature": 3.0,
        "tv_l2": 5.0,
        "tv_l1": 7.0,
        "l2": 11.0,
        "adi_scale": 13.0,
    }
    cfg = InvertConfig(model="m", dataset="d", first_bn_multiplier=10.0, verifier="v", **weights)
    inverter = Inverter(teacher, cfg, verifier=verifier)
    x = torch.randn(2, 1, 3, 3)
    y = torch.tensor([1, 2])
    terms, logits = inverter.losses(x, y)

    def r(h: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        mean = h.mean(dim=(0, 2, 3))
        var = ((h - mean.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))
        return (bn.running_var - var).norm() + (bn.running_mean - mean).norm()

    h1 = conv1(x)
    h2 = conv2(bn1(h1))
    t, v = teacher(x), verifier(x)
    img = x[:, 0]
    diffs = [
        img[:, :, :-1] - img[:, :, 1:],
        img[:, :-1, :] - img[:, 1:, :],
        img[:, 1:, :-1] - img[:, :-1, 1:],
        img[:, :-1, :-1] - img[:, 1:, 1:],
    ]
    p, q = (v / 3).softmax(1), (t / 3).softmax(1)
    m = ((p + q) / 2).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    js = ((m * (m.log() - p.log())).sum() + (m * (m.log() - q.log())).sum()) / 2 / 2
    expected = {
        "main": -(t.log_softmax(1)[[0, 1], [1, 2]]).mean(),
        "r_feature": 10 * r(h1, bn1) + r(h2, bn2),  # the first BN layer weighs 10 times
        "tv_l1": sum(d.abs().mean() for d in diffs),
        "tv_l2": sum((d**2).sum().sqrt() for d in diffs),
        "l2": x.flatten(1).norm(dim=1).mean(),
        "adi": 1 - js.clamp(0, 1),
    }
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, rtol=1e-5, atol=1e-6, msg=name)
    total = (
        2 * expected["main"]
        + 3 * expected["r_feature"]
        + 5 * expected["tv_l2"]
        + 7 * expected["tv_l1"]
        + 11 * expected["l2"]
        + 13 * expected["adi"]
    )
    torch.testing.assert_close(terms["total"], total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, t)


def test_the_learning_rate_warms_up_then_follows_a_cosine():
    assert learning_rate(1.0, 0, 1000, "cosine") == pytest.approx(0.01)
    assert learning_rate(1.0, 49, 1000, "cosine") == pytest.approx(0.5)
    assert learning_rate(1.0, 99, 1000, "cosine") == pytest.approx(1.0)
    assert learning_rate(1.0, 100, 1000, "cosine") == pytest.approx(1.0)
    assert learning_rate(1.0, 550, 1000, "cosine") == pytest.approx(0.5)
    assert learning_rate(1.0, 999, 1000, "cosine") == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 899 / 900))
    )
    # A 30-iteration stage warms up over 3 iterations, not the reference's 100.
    assert [learning_rate(0.3, i, 30, "cosine") for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert learning_rate(0.3, 3, 30, "cosine") == pytest.approx(0.3)
    assert learning_rate(0.3, 7, 30, "constant") == 0.3


def test_the_kept_batch_is_the_lowest_loss_iterate(workdir, teacher_bn, monkeypatch):
    seen: list[tuple[float, torch.Tensor]] = []
    jitter, losses = invert_module.jitter_flip, Inverter.losses
    current: list[torch.Tensor] = []

    def spy_jitter(x, *args, **kwargs):
        current[:] = [x.detach().clone()]
        return jitter(x, *args, **kwargs)

    def spy_losses(self, x_jit, targets):
        terms, logits = losses(self, x_jit, targets)
        seen.append((terms["total"].item(), current[0]))
        return terms, logits

    monkeypatch.setattr(invert_module, "jitter_flip", spy_jitter)
    monkeypatch.setattr(Inverter, "losses", spy_losses)
    out = workdir / "inv"
    # A large step makes the loss jump about, so that the best iterate is not the last one.
    result = run_inversion(
        tiny_config(out, teacher_bn, setting=1, iterations=12, lr=3.0, schedule="constant"),
        plugins=make_plugins(),
    )
    best = min(range(len(seen)), key=lambda i: seen[i][0])
    assert best != len(seen) - 1, "choose a setting whose last iterate is not its best"
    assert result.loss == seen[best][0]
    expected = (seen[best][1] * 0.3 + 0.2).clamp(0, 1).mul(255).add(0.5).clamp(0, 255)
    kept = load_file(str(out / "images.safetensors"))["images"]
    assert torch.equal(kept, expected.to(torch.uint8))
    last = (seen[-1][1] * 0.3 + 0.2).clamp(0, 1).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    assert not torch.equal(kept, last)


@pytest.fixture
def invert_cli():
    """The CLI with this plugin, whose `invert` resolves names in the same test plugin set."""
    app = make_app(make_plugins(PLUGIN))
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def test_the_command_reports_verifier_accuracy(
    workdir, teacher_bn, tiny_teacher_weights, invert_cli
):
    result = invert_cli(
        "invert",
        "--model",
        "lenet5_bn",
        "--dataset",
        "tiny",
        "--weights",
        teacher_bn,
        "--verifier",
        "lenet5",
        "--verifier-weights",
        tiny_teacher_weights["lenet5"],
        "--batch-size",
        4,
        "--iterations",
        4,
        "--log-every",
        2,
        "--jitter",
        2,
        "--cpu",
        "--out",
        workdir / "inv",
    )
    assert result.exit_code == 0, result.output
    progress = [line for line in result.output.splitlines() if line.startswith("it ")]
    assert len(progress) == 2
    assert all("Verifier accuracy" in line for line in progress)
    summary = [line for line in result.output.splitlines() if line.startswith("kept batch")]
    assert len(summary) == 1 and "Verifier accuracy" in summary[0]
    rows = log_rows(workdir / "inv")
    assert all(0 <= r["verifier_acc"] <= 100 for r in rows)


def test_a_library_model_without_weights_says_how_to_get_them(workdir, invert_cli):
    result = invert_cli("invert", "--model", "torchvision:resnet18", "--dataset", "imagenet")
    assert result.exit_code == 2
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert "--weights FILE" in message and "--pretrained" in message


def test_pretrained_weights_offline_fail_with_one_clear_line(workdir, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch-home"))  # an empty cache
    monkeypatch.setattr(socket.socket, "connect", no_network)
    cfg = InvertConfig(
        model="torchvision:mobilenet_v3_small", dataset="imagenet", pretrained=True, cpu=True
    )
    with pytest.raises(UsageError, match=r"Could not fetch .*--weights FILE") as caught:
        run_inversion(cfg, plugins=make_plugins())
    assert "\n" not in str(caught.value)
    assert not any((workdir / "torch-home").rglob("*.pth"))


def test_a_zoo_model_without_a_checkpoint_points_to_dfkd_scratch(workdir):
    cfg = InvertConfig(model="lenet5_bn", dataset="tiny", cpu=True)
    with pytest.raises(UsageError, match="dfkd scratch --model lenet5_bn --dataset tiny"):
        run_inversion(cfg, plugins=make_plugins())


def test_the_output_folder_is_a_transfer_set_for_kd(workdir, teacher_bn, cli):
    out = workdir / "inv"
    run_inversion(tiny_config(out, teacher_bn, setting=1, batch_size=8), plugins=make_plugins())
    result = cli(
        "kd",
        "--teacher",
        "lenet5_bn",
        "--teacher-weights",
        teacher_bn,
        "--student",
        "lenet5_half",
        "--dataset",
        "tiny",
        "--transfer-set",
        f"folder:{out}",
        "--epochs",
        1,
        "--batch-size",
        4,
        "--out",
        workdir / "kd",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    config = json.loads((workdir / "kd" / "config.json").read_text())
    assert config["options"]["transfer_set"] == f"folder:{out}"
    metrics = (workdir / "kd" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1 and "top1" in json.loads(metrics[0])


def test_targets_cycle_the_classes_or_the_given_labels():
    generator = torch.Generator().manual_seed(0)
    cfg = InvertConfig(model="m", dataset="d", batch_size=7)
    assert make_targets(cfg, 3, generator).tolist() == [0, 1, 2, 0, 1, 2, 0]
    cfg = InvertConfig(model="m", dataset="d", batch_size=5, labels=(4, 1))
    assert make_targets(cfg, 10, generator).tolist() == [4, 1, 4, 1, 4]
    cfg = InvertConfig(model="m", dataset="d", batch_size=200, random_labels=True)
    drawn = make_targets(cfg, 10, generator)
    assert drawn.min() >= 0 and drawn.max() <= 9 and len(drawn.unique()) == 10
    with pytest.raises(UsageError, match="outside"):
        make_targets(InvertConfig(model="m", dataset="d", labels=(10,)), 10, generator)


def test_a_known_dataset_needs_no_files_and_imagenet_is_built_in(monkeypatch, tmp_path):
    def missing(*args, **kwargs):
        raise UsageError("CIFAR-10 not found")

    monkeypatch.setattr(invert_module, "open_dataset", missing)
    fmt = data_format("cifar10", None, make_plugins())
    assert (fmt.channels, fmt.image_size, fmt.num_classes) == (3, 32, 10)
    assert fmt.mean == (0.4914, 0.4822, 0.4465) and fmt.classes[0] == "airplane"
    assert data_format("imagenet", None, make_plugins()) is IMAGENET
    with pytest.raises(UsageError):
        data_format("tiny", None, make_plugins())  # a factory function: nothing to fall back on


def test_presets_then_explicit_values():
    cfg = build_config("cifar10", {"model": "resnet34", "dataset": "cifar10", "lr": 0.05})
    assert cfg.lr == 0.05  # explicit beats the preset
    assert (cfg.batch_size, cfg.r_feature, cfg.tv_l2, cfg.jitter) == (256, 10.0, 1e-3, 2)
    assert cfg.adam_betas == (0.9, 0.999) and not cfg.clipping and not cfg.flip
    assert cfg.stages() == [(1, 2000)] and cfg.schedule == "constant"
    plain = build_config(None, {"model": "m", "dataset": "d", "iterations": 30})
    assert plain.stages() == [(2, 20), (1, 10)] and plain.adam_betas == (0.5, 0.9)
    with pytest.raises(UsageError, match="no preset"):
        build_config("imagenet-huge", {"model": "m", "dataset": "d"})
    with pytest.raises(UsageError, match="--verifier"):
        build_config(None, {"model": "m", "dataset": "d", "adi_scale": 0.2})
    with pytest.raises(UsageError, match="--model"):
        build_config(None, {"dataset": "d"})


def test_building_the_cli_imports_no_torch():
    code = (
        "import sys, dfkd_plugin_deepinv\n"
        "from dfkd.plugins import Plugins\n"
        "from dfkd.cli import make_app\n"
        "plugins = Plugins(autoload=False)\n"
        "plugins.register(dfkd_plugin_deepinv, 'deepinv', dist='dfkd-plugin-deepinv')\n"
        "make_app(plugins)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_an_existing_output_folder_is_replaced_only_when_asked(workdir, teacher_bn):
    out = workdir / "inv"
    run_inversion(tiny_config(out, teacher_bn, setting=1, iterations=2), plugins=make_plugins())
    with pytest.raises(UsageError, match="--overwrite"):
        run_inversion(tiny_config(out, teacher_bn, setting=1, iterations=2), plugins=make_plugins())
    cfg = tiny_config(out, teacher_bn, setting=1, iterations=3, overwrite=True)
    run_inversion(cfg, plugins=make_plugins())
    assert log_rows(out)[-1]["iterations"] == 3


def test_an_inversion_holds_its_run_directory(workdir, teacher_bn):
    """An --overwrite of the folder an inversion is writing is refused while it runs."""
    from dfkd.training.runs import create_run

    out = workdir / "inv"
    refused = []

    def overwrite_meanwhile(row: dict) -> None:
        if not refused:
            with pytest.raises(UsageError, match="is in use by process") as caught:
                create_run(out, overwrite=True)
            refused.append(str(caught.value))

    run_inversion(tiny_config(out, teacher_bn), plugins=make_plugins(), report=overwrite_meanwhile)
    assert refused and json.loads((out / "config.json").read_text())["command"] == "invert"


def test_the_help_names_the_defaults_it_writes_in_brackets(invert_cli):
    shown = " ".join(invert_cli("invert", "--help").output.split())
    assert "[the setting's]" in shown and "[cosine]" in shown and "[84]" in shown
