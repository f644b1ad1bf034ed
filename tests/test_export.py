"""`dfkd export`: the exported file computes what the PyTorch student does, and nothing is
written for bad input or a file that fails verification."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dfkd import hookimpl
from dfkd.data.pipeline import to_float
from dfkd.export import FORMATS, TRACE_BATCH
from dfkd.models import build_model
from dfkd.testing import make_plugins, make_tiny_images, run_held_elsewhere
from dfkd.weights import load_weights, save_weights

MEAN, STD = (0.2,), (0.3,)  # the tiny dataset's


class Batchy(nn.Module):
    """Negates its logits unless the batch is the traced one: a trace keeps that branch, and so
    does torch.export, by fixing the batch size."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels * 8 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(1))
        return y if x.shape[0] == TRACE_BATCH else -y


class DataDependent(Batchy):
    """Branches on the pixels' values, which torch.export refuses to guess."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(1))
        return y if x.sum() > 0 else -y


class TrickyModels:
    @hookimpl
    def register_models(self, register):
        register("batchy", Batchy, "batch-size dependent", input_size=8)
        register("datadep", DataDependent, "value dependent", input_size=8)


@pytest.fixture
def export_cli(workdir):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    app = make_app(make_plugins((TrickyModels(), "dfkd-plugin-tricky")))
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def run_dir(workdir, tiny_teacher_weights) -> Path:
    """A copy of the tiny LeNet-5 teacher's scratch run (model.safetensors and its best)."""
    source = tiny_teacher_weights["lenet5"].parent
    return Path(shutil.copytree(source, workdir / "run", ignore=shutil.ignore_patterns("state")))


def lenet5_from(weights: Path) -> nn.Module:
    return load_weights(build_model("lenet5", 10, 1, plugins=make_plugins()), weights).eval()


def tiny_pixels(n: int = 6) -> torch.Tensor:
    """Tiny's test images as [0, 1] pixels at LeNet's 32 px, resized as training resizes them."""
    images, _ = make_tiny_images(n, seed=1)
    return to_float(images, (0.0,), (1.0,), size=32)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run_exported(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        return torch.jit.load(str(path))(x)


@pytest.mark.parametrize("normalized", [False, True], ids=["plain", "with-normalization"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_student_gives_the_pytorch_logits(export_cli, run_dir, fmt, normalized):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    flags = ["--include-normalization"] if normalized else []
    shown = export_cli("export", run_dir, "--format", fmt, *flags)
    assert shown.exit_code == 0, shown.output
    suffix = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}[fmt]
    path = run_dir / f"model{suffix}"
    assert f"{fmt}: {path}" in shown.output
    assert f"sidecar: {path}.json" in shown.output
    assert "max abs difference" in shown.output

    pixels = tiny_pixels(6)  # a batch size the export was neither traced nor verified with
    normalised = (pixels - MEAN[0]) / STD[0]
    got = run_exported(path, fmt, pixels if normalized else normalised)
    with torch.no_grad():
        expected = lenet5_from(run_dir / "model.safetensors")(normalised)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    side = json.loads((run_dir / f"model{suffix}.json").read_text())
    assert side["format"] == fmt and side["model"] == "lenet5"
    assert side["includes_normalization"] is normalized
    assert side["input_shape"] == ["batch", 1, 32, 32]
    assert (side["mean"], side["std"]) == (list(MEAN), list(STD))
    assert side["exported_from"] == str(run_dir / "model.safetensors")
    assert side["verification"]["max_abs_diff"] <= 1e-4
    assert ("opset" in side) == (fmt == "onnx")


def test_which_best_and_out_choose_the_weights_and_the_file(export_cli, run_dir, workdir):
    other = build_model("lenet5", 10, 1, plugins=make_plugins())
    meta = json.loads((run_dir / "model-best.json").read_text())
    save_weights(other, run_dir / "model-best.safetensors", meta)
    out = workdir / "deploy" / "lenet.pt"
    shown = export_cli("export", run_dir, "-f", "torchscript", "--which", "best", "--out", out)
    assert shown.exit_code == 0, shown.output
    x = (tiny_pixels(3) - MEAN[0]) / STD[0]
    with torch.no_grad():
        expected = lenet5_from(run_dir / "model-best.safetensors")(x)
    torch.testing.assert_close(run_exported(out, "torchscript", x), expected)
    assert json.loads((workdir / "deploy" / "lenet.pt.json").read_text())["exported_from"] == str(
        run_dir / "model-best.safetensors"
    )


def test_a_weights_file_exports_beside_itself(export_cli, run_dir):
    weights = run_dir / "model.safetensors"
    shown = export_cli("export", weights, "-f", "torchscript")
    assert shown.exit_code == 0, shown.output
    assert (run_dir / "model.torchscript.pt").is_file()
    assert (run_dir / "model.torchscript.pt.json").is_file()


def one_error_line(shown, exit_code: int) -> str:
    assert shown.exit_code == exit_code, shown.output
    lines = shown.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), shown.output
    return lines[0]


def test_a_run_directory_without_a_student_is_refused(export_cli, workdir):
    (workdir / "empty").mkdir()
    (workdir / "empty" / "config.json").write_text("{}")
    before = files_under(workdir)
    line = one_error_line(export_cli("export", workdir / "empty", "-f", "torchscript"), 2)
    assert "has no student.safetensors or model.safetensors" in line
    assert files_under(workdir) == before


def test_weights_without_a_sidecar_are_refused(export_cli, run_dir, workdir):
    bare = workdir / "bare.safetensors"
    shutil.copy(run_dir / "model.safetensors", bare)
    before = files_under(workdir)
    line = one_error_line(export_cli("export", bare, "-f", "torchscript"), 2)
    assert f"{bare} has no sidecar {workdir / 'bare.json'}" in line
    assert files_under(workdir) == before


def test_an_existing_output_needs_overwrite(export_cli, run_dir):
    target = run_dir / "model.torchscript.pt"
    target.write_bytes(b"old")
    line = one_error_line(export_cli("export", run_dir, "-f", "torchscript"), 2)
    assert f"{target} exists; pass --overwrite" in line
    assert target.read_bytes() == b"old"
    assert not (run_dir / "model.torchscript.pt.json").exists()
    assert export_cli("export", run_dir, "-f", "torchscript", "--overwrite").exit_code == 0
    assert target.read_bytes() != b"old"


def test_a_run_still_going_is_not_exported(export_cli, run_dir, workdir):
    with run_held_elsewhere(run_dir, workdir) as holder:
        before = files_under(workdir)
        for source in (run_dir, run_dir / "model.safetensors"):
            line = one_error_line(export_cli("export", source, "-f", "torchscript"), 2)
            assert f"Run {run_dir} is in use by process {holder}" in line
        assert files_under(workdir) == before
    assert export_cli("export", run_dir, "-f", "torchscript").exit_code == 0


def test_an_export_never_writes_over_a_runs_own_files(export_cli, run_dir):
    config = (run_dir / "config.json").read_bytes()
    shown = export_cli(
        "export", run_dir, "-f", "torchscript", "--out", run_dir / "config.json", "--overwrite"
    )
    line = one_error_line(shown, 2)
    assert f"{run_dir / 'config.json'} is one of run {run_dir}'s own files" in line
    assert (run_dir / "config.json").read_bytes() == config


def test_onnx_without_its_packages_names_the_extra(export_cli, run_dir, workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    before = files_under(workdir)
    line = one_error_line(export_cli("export", run_dir), 2)
    assert "onnxruntime" in line and "pip install 'dfkd[onnx]'" in line
    assert files_under(workdir) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite"], "--format must be onnx or torchscript, not 'tflite'."),
        (["--which", "first"], "--which must be last or best, not 'first'."),
    ],
)
def test_bad_choices_are_usage_errors(export_cli, run_dir, args, message):
    assert one_error_line(export_cli("export", run_dir, *args), 2) == f"Error: {message}"


def tricky_weights(workdir: Path, name: str) -> Path:
    model = {"batchy": Batchy, "datadep": DataDependent}[name]()
    path = workdir / f"{name}.safetensors"
    meta = {"model": name, "num_classes": 10, "channels": 1, "input_size": 8}
    save_weights(model, path, {**meta, "mean": [0.5], "std": [0.5]})
    return path


def test_a_model_the_exporter_cannot_take_is_one_line(export_cli, workdir):
    pytest.importorskip("onnxruntime")
    weights = tricky_weights(workdir, "datadep")
    before = files_under(workdir)
    line = one_error_line(export_cli("export", weights), 2)
    assert line.startswith("Error: Cannot export datadep to onnx: GuardOnDataDependentSymNode")
    assert files_under(workdir) == before


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("torchscript", "disagrees with PyTorch on a batch of 1"),  # the trace kept one branch
        ("onnx", "fails on a batch of 1"),  # the graph fixed its batch size
    ],
)
def test_a_file_that_fails_verification_is_not_written(export_cli, workdir, fmt, message):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    weights = tricky_weights(workdir, "batchy")
    before = files_under(workdir)
    line = one_error_line(export_cli("export", weights, "--format", fmt), 1)
    assert message in line and line.endswith("Nothing was written.")
    assert files_under(workdir) == before


@pytest.mark.parametrize(("fmt", "suffix"), [("onnx", ".onnx"), ("torchscript", ".torchscript.pt")])
@pytest.mark.parametrize("baked", [False, True])
def test_eval_scores_the_exported_file_as_pytorch_scores_the_weights(
    export_cli, tiny_teacher_weights, workdir, fmt, suffix, baked
):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    weights = workdir / "t.safetensors"
    shutil.copy(tiny_teacher_weights["lenet5"], weights)
    shutil.copy(tiny_teacher_weights["lenet5"].with_suffix(".json"), weights.with_suffix(".json"))
    extra = ["--include-normalization"] if baked else []
    assert export_cli("export", weights, "-f", fmt, *extra).exit_code == 0
    scored = {}
    for scored_file, model in ((weights, ["--model", "lenet5"]), (workdir / f"t{suffix}", [])):
        done = export_cli("eval", "--weights", scored_file, *model, "--dataset", "tiny", "--json")
        assert done.exit_code == 0, done.output
        scored[scored_file.suffix] = json.loads(done.output)["top1"]
    assert len(set(scored.values())) == 1 and scored[".safetensors"] > 50


def image_folder(root: Path, mode: str, classes: int) -> str:
    """``folder:ROOT``: two 16 px images per class in train/ and test/, grey (L) or RGB."""
    from PIL import Image

    for split in ("train", "test"):
        for k in range(classes):
            (root / split / f"c{k}").mkdir(parents=True)
            for i in range(2):
                Image.new(mode, (16, 16), 40 * i).save(root / split / f"c{k}" / f"{i}.png")
    return f"folder:{root.name}"


def exported_teacher(export_cli, tiny_teacher_weights, workdir: Path, fmt: str) -> Path:
    """The tiny LeNet-5 teacher (1 channel, 10 classes), exported beside a copy of it."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    weights = workdir / "t.safetensors"
    shutil.copy(tiny_teacher_weights["lenet5"], weights)
    shutil.copy(tiny_teacher_weights["lenet5"].with_suffix(".json"), weights.with_suffix(".json"))
    assert export_cli("export", weights, "-f", fmt).exit_code == 0
    return workdir / f"t{FORMATS[fmt]}"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_eval_refuses_an_exported_file_on_data_of_another_shape(
    export_cli, tiny_teacher_weights, workdir, fmt
):
    exported = exported_teacher(export_cli, tiny_teacher_weights, workdir, fmt)
    rgb = image_folder(workdir / "rgb", "RGB", 10)
    grey = image_folder(workdir / "grey", "L", 3)
    line = one_error_line(export_cli("eval", "--weights", exported, "--dataset", rgb), 2)
    assert line == f"Error: {exported} takes 1-channel images; {rgb} has 3."
    line = one_error_line(export_cli("eval", "--weights", exported, "--dataset", grey), 2)
    assert line == f"Error: {exported} was exported for 10 classes; {grey} has 3."


def test_eval_refuses_a_segmentation_export_of_another_size(
    export_cli, tiny_seg_teacher_weights, workdir
):
    weights = workdir / "seg.safetensors"
    shutil.copy(tiny_seg_teacher_weights, weights)
    shutil.copy(tiny_seg_teacher_weights.with_suffix(".json"), weights.with_suffix(".json"))
    args = ("-f", "torchscript", "--input-size", "16")
    assert export_cli("export", weights, *args).exit_code == 0
    exported = workdir / "seg.torchscript.pt"
    line = one_error_line(export_cli("eval", "--weights", exported, "--dataset", "tiny-seg"), 2)
    assert "tiny-seg's test images are 32x32 px: export it again with --input-size 32." in line


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_eval_of_a_truncated_export_is_one_line(export_cli, tiny_teacher_weights, workdir, fmt):
    exported = exported_teacher(export_cli, tiny_teacher_weights, workdir, fmt)
    exported.write_bytes(exported.read_bytes()[:300])
    line = one_error_line(export_cli("eval", "--weights", exported, "--dataset", "tiny"), 2)
    assert line.startswith(f"Error: Cannot load {exported} as an exported {fmt} model (")
    assert line.endswith("); export the student again.")


def test_eval_of_a_weights_file_takes_the_model_its_sidecar_names(
    export_cli, tiny_teacher_weights, workdir
):
    weights = tiny_teacher_weights["lenet5"]
    named = export_cli("eval", "--weights", weights, "--model", "lenet5", "-d", "tiny", "--json")
    alone = export_cli("eval", "--weights", weights, "-d", "tiny", "--json")
    assert alone.exit_code == 0, alone.output
    assert json.loads(alone.output)["top1"] == json.loads(named.output)["top1"]
    assert "Missing --model" in export_cli("eval", "-d", "tiny").output  # no file, no sidecar
