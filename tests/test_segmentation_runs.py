"""Segmentation through the core's commands: scratch, kd and eval on tiny scenes, and the
one-line errors when tasks do not match (DFAD's segmentation runs: plugins/dfad/tests)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dfkd import hookimpl
from dfkd.cli import make_app
from dfkd.synthesis.options import DataFreeOptions
from dfkd.testing import make_plugins, write_tiny_camvid
from dfkd.training.supervised import KDConfig, train_kd
from dfkd.weights import read_meta


@pytest.fixture
def seg_teacher(tiny_seg_teacher_weights: Path) -> Path:
    return tiny_seg_teacher_weights


def test_scratch_trains_a_segmentation_teacher_scored_by_miou(seg_teacher):
    rows = [json.loads(line) for line in (seg_teacher.parent / "metrics.jsonl").open()]
    assert {"miou", "pixel_acc"} <= set(rows[-1]) and "top1" not in rows[-1]
    # three classes and a 1/4-resolution network learn the squares and bars quickly
    assert rows[-1]["miou"] > 50.0 and rows[-1]["miou"] > rows[0]["miou"] - 5
    meta = read_meta(seg_teacher)
    assert meta["task"] == "segmentation" and meta["image_size"] == 32


def test_kd_distils_per_pixel(seg_teacher, workdir):
    cfg = KDConfig(
        dataset="tiny-seg",
        teacher="segnet_small",
        student="segnet_small_half",
        teacher_weights=str(seg_teacher),
        epochs=2,
        batch_size=16,
        lr=0.05,
        temperature=4.0,
        out="kd",
    )
    outcome = train_kd(cfg, plugins=make_plugins())
    assert outcome.best_by == "miou" and outcome.last["miou"] > 0
    assert outcome.last["kl"] >= 0


def test_eval_scores_miou(seg_teacher, cli):
    done = cli(
        "eval", "--model", "segnet_small", "--dataset", "tiny-seg", "--weights", seg_teacher,
        "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    scores = json.loads(done.output)
    assert scores["miou"] > 50 and scores["pixel_acc"] > scores["miou"] - 50
    table = cli(
        "eval", "--model", "segnet_small", "--dataset", "tiny-seg", "--weights", seg_teacher
    )
    assert table.exit_code == 0 and "Test-split mIoU" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["scratch", "--model", "lenet5", "--dataset", "tiny-seg"],
            "lenet5 is a classification network and tiny-seg a segmentation dataset",
        ),
        (
            ["scratch", "--model", "segnet_small", "--dataset", "tiny"],
            "segnet_small is a segmentation network and tiny a classification dataset",
        ),
    ],
)
def test_a_model_of_another_task_is_one_line(cli, workdir, args, message):
    done = cli(*args, "--epochs", "1")
    assert done.exit_code == 2
    assert message in done.output and len(done.output.strip().splitlines()) == 1
    assert not (workdir / "runs").exists() and not (workdir / "checkpoints").exists()


class _ClassifierMethod:
    """A method registered without tasks=: it distils classifiers only."""

    @hookimpl
    def register_methods(self, register):
        register("cls-only", "dfkd.synthesis.base:Synthesizer", "", options=DataFreeOptions)


def test_a_classification_method_refuses_a_segmentation_teacher(seg_teacher, workdir):
    plugins = make_plugins((_ClassifierMethod(), "cls-only"))
    app = make_app(plugins)
    done = CliRunner().invoke(
        app,
        ["run", "cls-only", "--teacher", "segnet_small", "--student", "segnet_small_half",
         "--dataset", "tiny-seg", "--teacher-weights", str(seg_teacher)],
    )  # fmt: skip
    assert done.exit_code == 2
    assert "cls-only distils classification networks" in done.output
    assert "segmentation network" in done.output
    assert not (workdir / "runs").exists()


def test_an_exported_segmentation_network_scores_as_pytorch_does(seg_teacher, cli, workdir):
    pytest.importorskip("onnxruntime")
    done = cli("export", seg_teacher, "--out", workdir / "seg.onnx")
    assert done.exit_code == 0, done.output
    meta = json.loads((workdir / "seg.onnx.json").read_text())
    assert meta["output_shape"] == ["batch", 3, 32, 32] and meta["input_size"] == 32
    scores = []
    for weights in (seg_teacher, workdir / "seg.onnx"):
        done = cli(
            "eval", "--model", "segnet_small", "--dataset", "tiny-seg", "--weights", weights,
            "--json",
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        scores.append(json.loads(done.output)["miou"])
    assert scores[0] == pytest.approx(scores[1], abs=0.01)


def test_quantize_refuses_a_segmentation_network_in_one_line(seg_teacher, cli, workdir):
    done = cli("quantize", seg_teacher, "--out", workdir / "seg-int8.onnx")
    assert done.exit_code == 2
    assert f"{seg_teacher} is a segmentation network; dfkd quantize takes classifiers" in (
        done.output.replace("\n", "")
    )
    assert not (workdir / "seg-int8.onnx").exists()


@pytest.mark.slow
def test_scratch_trains_dfads_student_on_a_layout_true_camvid(cli, workdir):
    data = write_tiny_camvid(workdir / "data")
    done = cli(
        "scratch", "--model", "deeplabv3_mobilenetv2", "--dataset", "camvid",
        "--data-root", data, "--epochs", "1", "--batch-size", "2", "--out", "mnv2",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    row = json.loads((workdir / "mnv2" / "metrics.jsonl").read_text())
    assert 0 <= row["miou"] <= 100 and 0 <= row["pixel_acc"] <= 100
    meta = read_meta(workdir / "checkpoints" / "camvid-deeplabv3_mobilenetv2.safetensors")
    assert (meta["num_classes"], meta["image_size"], meta["task"]) == (11, 128, "segmentation")


def test_dfad_bn_adds_the_teachers_batchnorm_statistics_to_dfads_game(seg_teacher, workdir):
    """dfkd's variant logs (and so trains on) the BN term beside the adversarial one; the
    paper's DFAD does not."""
    dfad = pytest.importorskip("dfkd_plugin_dfad")
    from dfkd.testing import tiny_run_config
    from dfkd.training.datafree import run_datafree

    logged = {}
    for method in ("dfad", "dfad-bn"):
        cfg = tiny_run_config(method, "segnet_small", seg_teacher, f"runs/{method}", [])
        cfg.student, cfg.dataset, cfg.preset = "segnet_small_half", "tiny-seg", "smoke"
        rows = run_datafree(cfg, plugins=make_plugins((dfad, "dfkd-plugin-dfad"))).metrics
        logged[method] = {k for row in rows for k in row if k.startswith("g_")}
    assert "g_bn" in logged["dfad-bn"] and "g_adv" in logged["dfad-bn"]
    assert "g_bn" not in logged["dfad"]


def test_deepinversion_inverts_a_segmentation_teacher_towards_class_layouts(seg_teacher, workdir):
    """Pixels optimised so the teacher predicts a grid of classes per image, with its BatchNorm
    statistics matched; the student learns per pixel from them and is scored by mIoU."""
    deepinv = pytest.importorskip("dfkd_plugin_deepinv")
    from dfkd.testing import checkpoint_objects, tiny_run_config
    from dfkd.training.datafree import run_datafree

    cfg = tiny_run_config("deepinv", "segnet_small", seg_teacher, "runs/inv", ["g_steps=20"])
    cfg.student, cfg.dataset, cfg.preset = "segnet_small_half", "tiny-seg", "smoke"
    rows = run_datafree(cfg, plugins=make_plugins((deepinv, "dfkd-plugin-deepinv"))).metrics
    assert all("miou" in row and math.isfinite(row["loss_oh"]) for row in rows)
    assert checkpoint_objects(workdir / "runs/inv")["synthesizer"]["pool"]["size"] > 0


def test_the_default_preset_of_a_segmentation_teacher_is_the_methods_segmentation_one(
    seg_teacher, workdir
):
    """`--preset default` runs DeepInversion's `default-segmentation` values (T 4) for a
    segmentation teacher, where a classifier gets the classification ones (T 20)."""
    deepinv = pytest.importorskip("dfkd_plugin_deepinv")
    from dfkd.testing import tiny_run_config
    from dfkd.training.datafree import method_options, run_datafree

    plugins = make_plugins((deepinv, "dfkd-plugin-deepinv"))
    quick = ["epochs=1", "ep_steps=2", "kd_steps=2", "g_steps=2", "batch_size=8"]
    cfg = tiny_run_config("deepinv", "segnet_small", seg_teacher, "runs/inv", quick)
    cfg.student, cfg.dataset, cfg.preset = "segnet_small_half", "tiny-seg", "default"
    assert method_options(plugins, cfg).options.T == 20.0  # a classifier's default
    run_datafree(cfg, plugins=plugins)
    resolved = json.loads((workdir / "runs/inv/config.json").read_text())["options"]
    assert resolved["preset"] == "default"
    assert resolved["resolved_options"]["T"] == 4.0
    assert resolved["resolved_options"]["batch_size"] == 8  # the user's values still win


def test_class_layouts_ask_for_several_classes_per_image():
    from dfkd.api import class_layouts

    masks = class_layouts(64, 5, 16, generator=torch.Generator().manual_seed(0))
    again = class_layouts(64, 5, 16, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (64, 16, 16) and torch.equal(masks, again)
    assert masks.unique().tolist() == [0, 1, 2, 3, 4]
    assert (torch.tensor([m.unique().numel() for m in masks]) > 1).float().mean() > 0.8


def test_eval_data_of_a_segmentation_teacher_is_scored_by_miou_or_refused(seg_teacher, workdir):
    dfad = pytest.importorskip("dfkd_plugin_dfad")
    from dfkd.errors import UsageError
    from dfkd.testing import tiny_run_config
    from dfkd.training.datafree import run_datafree

    plugins = make_plugins((dfad, "dfkd-plugin-dfad"))
    cfg = tiny_run_config("dfad-bn", "segnet_small", seg_teacher, "runs/own", [])
    cfg.student, cfg.dataset, cfg.preset = "segnet_small_half", "tiny-seg", "smoke"
    cfg.eval_data = "tiny"  # labelled images, no masks
    with pytest.raises(UsageError, match="^--eval-data tiny needs image/mask pairs of the"):
        run_datafree(cfg, plugins=plugins)
    assert not (workdir / "runs").exists()
    cfg.eval_data = "tiny-seg"
    rows = run_datafree(cfg, plugins=plugins).metrics
    assert all(0 <= row["eval_miou"] <= 100 and "eval_top1" not in row for row in rows)
