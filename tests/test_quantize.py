"""`dfkd quantize`: an INT8 ONNX file that onnxruntime runs with integer kernels, calibrated on the
teacher's synthetic images, scoring what the float model scores; bad input is one line and
writes nothing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dfkd import hookimpl
from dfkd.fileio import sha256_of
from dfkd.testing import make_plugins
from dfkd.weights import read_meta, save_weights

pytest.importorskip("onnxruntime")


class RowGRU(nn.Module):
    """Reads an 8 px image row by row with a GRU: an operator onnxruntime has no integer kernel
    for in the QDQ format."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.gru = nn.GRU(8 * in_channels, 16, batch_first=True)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.permute(0, 2, 1, 3).flatten(2)
        return self.fc(self.gru(rows)[0][:, -1])


class RecurrentModels:
    @hookimpl
    def register_models(self, register):
        register("rowgru", RowGRU, "a recurrent classifier", input_size=8)


@pytest.fixture
def quantize_cli(workdir):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    app = make_app(with_dafl((RecurrentModels(), "dfkd-plugin-recurrent")))
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def with_dafl(*extra: tuple[object, str]):
    """The test plugins, and DAFL to distil quantisation-aware students with."""
    dafl = pytest.importorskip("dfkd_plugin_dafl")
    return make_plugins((dafl, "dfkd-plugin-dafl"), *extra)


def copy_weights(source: Path, target: Path) -> Path:
    shutil.copy(source, target)
    shutil.copy(source.with_suffix(".json"), target.with_suffix(".json"))
    return target


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_line_refusal(done) -> str:
    assert done.exit_code == 2, done.output
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert len(lines) == 1, done.output
    return lines[0]


def optimized_ops(path: Path, tmp: Path) -> set[str]:
    """The operators onnxruntime runs the file with, after its load-time graph rewrites."""
    import onnx
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp / "optimized.onnx")
    options.log_severity_level = 3
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {node.op_type for node in onnx.load(str(tmp / "optimized.onnx")).graph.node}


def distilled_run(workdir: Path, teachers: dict[str, Path]) -> Path:
    """A finished run's folder as a data-free run leaves it: a BN-free student distilled from
    the tiny LeNet-5-BN teacher, whose file and fingerprint config.json records."""
    run = workdir / "run"
    run.mkdir()
    copy_weights(teachers["lenet5"], run / "student.safetensors")
    teacher = teachers["lenet5_bn"]
    config = {
        "command": "run",
        "options": {"teacher": "lenet5_bn", "teacher_weights": str(teacher), "dataset": "tiny"},
        "teacher_sha256": sha256_of(teacher),
    }
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_the_int8_file_runs_integer_kernels_and_scores_as_the_float_model(
    quantize_cli, tiny_teacher_weights, workdir, tmp_path
):
    weights = tiny_teacher_weights["lenet5_bn"]
    int8 = workdir / "t.int8.onnx"
    done = quantize_cli("quantize", weights, "-O", int8)
    assert done.exit_code == 0, done.output
    meta = json.loads((workdir / "t.int8.onnx.json").read_text())
    calibration = meta["quantization"]["calibration"]
    assert calibration["source"].startswith("synthetic")
    assert calibration["teacher_sha256"] == sha256_of(weights)
    assert meta["verification"]["top1_agreement"] >= 90
    # the QDQ pairs became integer kernels, BatchNorm folded away: the fast path is in effect
    ops = optimized_ops(int8, tmp_path)
    assert {"QLinearConv", "QGemm"} <= ops and "BatchNormalization" not in ops
    # LeNet's pooling exports as one MaxPool (integer kernels take it), not four strided slices
    assert any("MaxPool" in op for op in ops) and "Slice" not in ops
    assert meta["quantization"]["int8_bytes"] < meta["quantization"]["float_bytes"]
    scores = {}
    for scored, model in ((weights, ["--model", "lenet5_bn"]), (int8, [])):
        done = quantize_cli("eval", "--weights", scored, *model, "--dataset", "tiny", "--json")
        assert done.exit_code == 0, done.output
        scores[scored.suffix] = json.loads(done.output)["top1"]
    assert scores[".safetensors"] > 50
    assert abs(scores[".onnx"] - scores[".safetensors"]) <= 10


def test_a_distilled_student_calibrates_on_its_runs_teacher(
    quantize_cli, tiny_teacher_weights, workdir
):
    run = distilled_run(workdir, tiny_teacher_weights)
    done = quantize_cli("quantize", run)
    assert done.exit_code == 0, done.output
    meta = json.loads((run / "student.int8.onnx.json").read_text())
    assert meta["quantization"]["calibration"]["teacher"] == str(tiny_teacher_weights["lenet5_bn"])
    assert meta["exported_from"] == str(run / "student.safetensors")


def test_a_teacher_replaced_since_the_run_is_refused(quantize_cli, tiny_teacher_weights, workdir):
    teachers = dict(tiny_teacher_weights)
    teachers["lenet5_bn"] = copy_weights(teachers["lenet5_bn"], workdir / "teacher.safetensors")
    run = distilled_run(workdir, teachers)
    copy_weights(tiny_teacher_weights["lenet5"], workdir / "teacher.safetensors")
    before = files_under(workdir)
    assert "sha256 differs" in one_line_refusal(quantize_cli("quantize", run))
    assert files_under(workdir) == before


def test_real_calibration_is_labelled_as_not_data_free(quantize_cli, tiny_teacher_weights, workdir):
    weights = tiny_teacher_weights["lenet5_bn"]
    done = quantize_cli("quantize", weights, "--calibration-dataset", "tiny", "-O", "real.onnx")
    assert done.exit_code == 0, done.output
    calibration = json.loads((workdir / "real.onnx.json").read_text())["quantization"][
        "calibration"
    ]
    assert calibration["source"].startswith("real") and calibration["dataset"] == "tiny"


def rowgru_weights(workdir: Path, teacher: Path) -> Path:
    path = workdir / "rowgru.safetensors"
    meta = {**read_meta(teacher), "model": "rowgru", "input_size": 8}
    save_weights(RowGRU(), path, meta)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheme", "w4a4"], "8-bit weights and activations"),
        (["--calibrate-method", "median"], "--calibrate-method must be one of"),
    ],
)
def test_bad_choices_are_one_line(quantize_cli, tiny_teacher_weights, workdir, args, message):
    weights = copy_weights(tiny_teacher_weights["lenet5_bn"], workdir / "t.safetensors")
    before = files_under(workdir)
    assert message in one_line_refusal(quantize_cli("quantize", weights, *args))
    assert files_under(workdir) == before


def test_a_teacher_without_batchnorm_is_refused(quantize_cli, tiny_teacher_weights, workdir):
    weights = copy_weights(tiny_teacher_weights["lenet5"], workdir / "t.safetensors")
    before = files_under(workdir)
    line = one_line_refusal(quantize_cli("quantize", weights))
    assert "no BatchNorm" in line and "--teacher-weights" in line
    assert files_under(workdir) == before


def test_an_operator_without_an_integer_kernel_is_refused(
    quantize_cli, tiny_teacher_weights, workdir
):
    teacher = tiny_teacher_weights["lenet5_bn"]
    weights = rowgru_weights(workdir, teacher)
    before = files_under(workdir)
    line = one_line_refusal(quantize_cli("quantize", weights, "--teacher-weights", teacher))
    assert "no integer kernel" in line and "GRU" in line
    assert files_under(workdir) == before


def test_a_missing_onnxruntime_names_the_extra(
    quantize_cli, tiny_teacher_weights, workdir, monkeypatch
):
    weights = copy_weights(tiny_teacher_weights["lenet5_bn"], workdir / "t.safetensors")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert "pip install 'dfkd[onnx]'" in one_line_refusal(quantize_cli("quantize", weights))
    assert not (workdir / "t.int8.onnx").exists()


def test_an_existing_output_needs_overwrite(quantize_cli, tiny_teacher_weights, workdir):
    weights = copy_weights(tiny_teacher_weights["lenet5_bn"], workdir / "t.safetensors")
    (workdir / "t.int8.onnx").write_text("mine")
    assert "--overwrite" in one_line_refusal(quantize_cli("quantize", weights))
    assert (workdir / "t.int8.onnx").read_text() == "mine"


def test_an_int8_model_that_drifts_from_the_float_one_is_not_written(
    quantize_cli, tiny_teacher_weights, workdir, monkeypatch
):
    import dfkd.quantize

    monkeypatch.setattr(dfkd.quantize, "MIN_AGREEMENT", 100.1)
    done = quantize_cli("quantize", tiny_teacher_weights["lenet5_bn"], "-O", "t.int8.onnx")
    assert done.exit_code == 1 and "Nothing was written" in done.output
    assert not (workdir / "t.int8.onnx").exists()


def test_a_fake_quantised_student_rounds_to_its_widths_and_learns_through_them():
    from dfkd.models import build_model
    from dfkd.models.fake_quant import dequantize, fake_quantize, quantize_weight

    model = build_model("lenet5_half", 10, 1, plugins=make_plugins())
    x = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    float_logits = model(x)
    fake_quantize(model, "w4a4")
    conv = model.features[0]
    levels = quantize_weight(conv.weight, 4)[0].unique()
    assert len(levels) <= 15  # -7..7 steps of one channel's scale
    rounded = model(x)
    assert not torch.equal(rounded, float_logits)
    rounded.square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert torch.equal(dequantize(model)(x), float_logits)  # the master weights were untouched


def test_fake_quantised_weights_load_as_they_were_trained(workdir):
    from dfkd.models import build_model
    from dfkd.models.fake_quant import fake_quantize, is_fake_quantized
    from dfkd.weights import load_weights

    trained = fake_quantize(build_model("lenet5_half", 10, 1, plugins=make_plugins()), "w8a8")
    trained(torch.randn(8, 1, 32, 32))  # input ranges seen in training mode
    trained.eval()
    save_weights(trained, workdir / "s.safetensors", {"model": "lenet5_half", "quantized": "w8a8"})
    loaded = load_weights(
        build_model("lenet5_half", 10, 1, plugins=make_plugins()), workdir / "s.safetensors"
    )
    assert is_fake_quantized(loaded)
    x = torch.randn(4, 1, 32, 32)
    assert torch.equal(loaded.eval()(x), trained(x))


DAFL_TINY = ["ep_steps=4", "kd_steps=2", "batch_size=8", "nz=8", "ngf=4", "epochs=2"]


def qat_config(teachers: dict[str, Path], out: str, scheme: str = "w4a4"):
    from dfkd.testing import tiny_run_config

    cfg = tiny_run_config("dafl", "lenet5_bn", teachers["lenet5_bn"], out, DAFL_TINY)
    cfg.quantize = scheme
    return cfg


def test_a_quantisation_aware_run_resumes_bit_identical(workdir, tiny_teacher_weights):
    from safetensors.torch import load_file

    from dfkd.testing import KillAfterEpoch, checkpoint_objects
    from dfkd.training.datafree import run_datafree

    plugins = with_dafl()
    whole = run_datafree(qat_config(tiny_teacher_weights, "runs/whole"), plugins=plugins)
    with pytest.raises(KeyboardInterrupt):
        run_datafree(
            qat_config(tiny_teacher_weights, "runs/cut"), plugins=plugins, reporter=KillAfterEpoch()
        )
    ranges = {k: v for k, v in checkpoint_objects(workdir / "runs/cut")["student"].items()}
    assert any(k.endswith("input_range.high") for k in ranges)  # checkpointed with the weights
    resumed = run_datafree(None, resume="runs/cut", plugins=plugins)
    a, b = load_file(whole.weights), load_file(resumed.weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_meta(resumed.weights)["quantized"] == "w4a4"
    assert [r["top1"] for r in whole.metrics] == [r["top1"] for r in resumed.metrics]


@pytest.mark.parametrize(
    ("scheme", "against"),
    [
        ("w8a8", "fake-quantised at w8a8 as trained"),
        ("w4a4", "the float weights of a student trained at w4a4"),
    ],
)
def test_the_integer_file_scores_what_the_fake_quantised_student_scores(
    quantize_cli, workdir, tiny_teacher_weights, scheme, against
):
    """A w8a8 student's file computes what it trained as; a w4a4 one's rounds less than it was
    trained to, so it is checked against (and scores near) the student's float weights."""
    from dfkd.training.datafree import run_datafree

    outcome = run_datafree(qat_config(tiny_teacher_weights, "runs/q", scheme), plugins=with_dafl())
    done = quantize_cli("quantize", "runs/q")
    assert done.exit_code == 0, done.output
    sidecar = json.loads((workdir / "runs/q/student.int8.onnx.json").read_text())
    assert against in sidecar["verification"]["against"]
    scores = {}
    for scored in (outcome.weights, workdir / "runs/q/student.int8.onnx"):
        model = ["--model", "lenet5_half"] if scored.suffix == ".safetensors" else []
        done = quantize_cli("eval", "--weights", scored, *model, "--dataset", "tiny", "--json")
        assert done.exit_code == 0, done.output
        scores[scored.suffix] = json.loads(done.output)["top1"]
    assert scores[".safetensors"] == outcome.metrics[-1]["top1"]  # eval rounds as training did
    assert abs(scores[".onnx"] - scores[".safetensors"]) <= 5
    # a float export would drop the rounding the student learned with
    assert "dfkd quantize" in one_line_refusal(quantize_cli("export", "runs/q"))


def test_a_bad_quantize_scheme_is_one_line_before_the_run_exists(
    quantize_cli, workdir, tiny_teacher_weights
):
    done = quantize_cli(
        "run",
        "dafl",
        "--teacher",
        "lenet5_bn",
        "--teacher-weights",
        tiny_teacher_weights["lenet5_bn"],
        "--student",
        "lenet5_half",
        "--dataset",
        "tiny",
        "--quantize",
        "w2a2",
        "--out",
        "runs/x",
    )
    assert "--quantize must be one of w8a8, w4a4" in one_line_refusal(done)
    assert not (workdir / "runs/x").exists()
