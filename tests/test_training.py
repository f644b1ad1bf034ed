"""scratch, kd and eval: run directories, resume, transfer sets, and every bad input."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dfkd.errors import DfkdError, UsageError
from dfkd.testing import run_two_processes
from dfkd.training.loop import SilentReporter, TrainingDiverged
from dfkd.training.supervised import KDConfig, ScratchConfig, train_kd, train_scratch


def scratch_config(**overrides) -> ScratchConfig:
    values = dict(
        dataset="tiny", model="lenet5_bn", epochs=2, batch_size=32, lr=0.05, out="runs/scratch"
    )
    return ScratchConfig(**(values | overrides))


class StopAfter(SilentReporter):
    """Simulates a killed process: interrupts the loop once `epochs` epochs are checkpointed."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def epoch_end(self, row):
        if row["epoch"] == self.epochs:
            raise KeyboardInterrupt


def test_scratch_writes_a_complete_run(plugins, workdir):
    outcome = train_scratch(scratch_config(), plugins=plugins)
    run = workdir / "runs/scratch"
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.jsonl", "model.safetensors", "model.json", "state"} <= names
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["seed"] == 0 and config["versions"]["torch"] == torch.__version__
    for library in ("torchvision", "accelerate", "timm", "numpy"):  # what moves the numbers
        assert config["versions"][library] == metadata.version(library)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all("top1" in r for r in rows)
    meta = json.loads((run / "model.json").read_text())
    assert meta["model"] == "lenet5_bn" and meta["num_classes"] == 10 and meta["channels"] == 1
    assert (workdir / "checkpoints/tiny-lenet5_bn.safetensors").exists()
    assert outcome.best_top1 >= 20  # twice the 10 % of chance after two tiny epochs
    assert not list(run.rglob("*.tmp"))


def test_resume_after_a_kill_matches_an_uninterrupted_run(plugins, workdir):
    whole = train_scratch(scratch_config(epochs=3, out="runs/whole"), plugins=plugins)
    with pytest.raises(KeyboardInterrupt):
        train_scratch(
            scratch_config(epochs=3, out="runs/killed"), plugins=plugins, reporter=StopAfter(1)
        )
    assert len((workdir / "runs/killed/metrics.jsonl").read_text().splitlines()) == 1
    resumed = train_scratch(
        scratch_config(epochs=3, out="runs/killed"), plugins=plugins, resume="runs/killed"
    )
    a, b = load_file(whole.weights), load_file(resumed.weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["top1"] for r in whole.metrics] == [r["top1"] for r in resumed.metrics]


def test_an_existing_run_is_never_overwritten_unasked(plugins, workdir):
    train_scratch(scratch_config(epochs=1), plugins=plugins)
    before = (workdir / "runs/scratch/metrics.jsonl").read_text()
    with pytest.raises(UsageError, match="already exists.*--resume.*--overwrite"):
        train_scratch(scratch_config(epochs=1), plugins=plugins)
    assert (workdir / "runs/scratch/metrics.jsonl").read_text() == before
    train_scratch(scratch_config(epochs=1, overwrite=True, seed=3), plugins=plugins)
    config = json.loads((workdir / "runs/scratch/config.json").read_text())
    assert config["options"]["seed"] == 3


def test_nan_stops_with_the_last_good_checkpoint(plugins, workdir, monkeypatch):
    train_scratch(scratch_config(epochs=1, out="runs/nan"), plugins=plugins)
    good = (workdir / "runs/nan/state/checkpoint.pt").read_bytes()
    monkeypatch.setattr(
        "torch.nn.functional.cross_entropy",
        lambda *a, **k: torch.tensor(float("nan"), requires_grad=True),
    )
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1.*epoch 1"):
        train_scratch(scratch_config(epochs=2, out="runs/nan"), plugins=plugins, resume="runs/nan")
    assert (workdir / "runs/nan/state/checkpoint.pt").read_bytes() == good


def test_unwritable_output_is_one_clear_error(plugins, workdir):
    blocker = workdir / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DfkdError, match="Cannot create run directory"):
        train_scratch(scratch_config(out=str(blocker / "run")), plugins=plugins)


def test_scratch_recipes_fill_the_options_that_are_not_given():
    default = ScratchConfig(dataset="tiny")
    assert (default.recipe, default.weight_decay, default.schedule) == ("default", 5e-4, "cosine")
    assert (default.epochs, default.batch_size, default.lr, default.momentum) == (
        200,
        256,
        0.1,
        0.9,
    )
    assert default.milestones == []
    reference = ScratchConfig(dataset="tiny", recipe="reference")
    assert (reference.weight_decay, reference.schedule) == (1e-4, "multistep")
    assert (reference.epochs, reference.batch_size, reference.lr, reference.momentum) == (
        200,
        256,
        0.1,
        0.9,
    )
    assert reference.milestones == [120, 150, 180]  # DataFree's train_scratch.py
    shorter = ScratchConfig(dataset="tiny", recipe="reference", epochs=20, weight_decay=5e-4)
    assert (shorter.epochs, shorter.weight_decay, shorter.milestones) == (20, 5e-4, [12, 15, 18])
    given = ScratchConfig(dataset="tiny", recipe="reference", milestones=[5])
    assert given.milestones == [5]
    with pytest.raises(
        UsageError, match="Unknown recipe 'fast'. Known recipes: default, reference"
    ):
        ScratchConfig(dataset="tiny", recipe="fast")


def test_cli_scratch_recipe_is_recorded_and_its_schedule_is_used(cli, workdir):
    done = cli(
        "scratch",
        "--model",
        "lenet5_half",
        "--dataset",
        "tiny",
        "--recipe",
        "reference",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--weight-decay",
        "3e-4",
        "--out",
        "runs/reference",
        "--quiet",
    )
    assert done.exit_code == 0, done.output
    run = workdir / "runs/reference"
    options = json.loads((run / "config.json").read_text())["options"]
    assert options["recipe"] == "reference"
    expected = dict(epochs=3, batch_size=32, lr=0.1, momentum=0.9, weight_decay=3e-4)
    assert {k: options[k] for k in expected} == expected
    assert (options["schedule"], options["milestones"]) == ("multistep", [1, 2])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.001, 0.001])


def test_cli_scratch_label_smoothing_is_recorded_and_changes_the_loss(cli, workdir):
    losses = {}
    for smoothing in ("0", "0.3"):
        out = f"runs/ls{smoothing}"
        done = cli(
            "scratch", "--model", "lenet5_bn", "--dataset", "tiny", "--epochs", "1",
            "--batch-size", "32", "--label-smoothing", smoothing, "--out", out, "--quiet",
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        options = json.loads((workdir / out / "config.json").read_text())["options"]
        assert options["label_smoothing"] == float(smoothing)
        losses[smoothing] = json.loads((workdir / out / "metrics.jsonl").read_text())["loss"]
    # the same seed, data and weights: only the targets differ, and smoothed ones cost more
    assert losses["0.3"] > losses["0"]


def test_kd_distils_on_each_kind_of_transfer_set(plugins, workdir, tiny_teacher_weights):
    teacher = str(tiny_teacher_weights["lenet5"])
    base = dict(
        dataset="tiny",
        teacher="lenet5",
        student="lenet5_half",
        teacher_weights=teacher,
        epochs=1,
        batch_size=32,
        lr=0.05,
    )
    own = train_kd(KDConfig(**base, beta=0.5, out="runs/own"), plugins=plugins)
    assert own.last["top1"] > 20 and "ce" in own.last
    images = workdir / "pngs"
    from PIL import Image

    from dfkd.testing import make_tiny_images

    images.mkdir()
    for i, img in enumerate(make_tiny_images(40, 5)[0]):
        Image.fromarray(img[0].numpy()).save(images / f"{i}.png")
    folder = train_kd(
        KDConfig(**base, transfer_set=f"folder:{images}", out="runs/folder"), plugins=plugins
    )
    assert "ce" not in folder.last and folder.last["epoch"] == 1
    with pytest.raises(UsageError, match="--beta needs labels"):
        train_kd(
            KDConfig(**base, transfer_set=f"folder:{images}", beta=1.0, out="runs/x"),
            plugins=plugins,
        )
    with pytest.raises(UsageError, match="3-channel images; the teacher takes 1"):
        train_kd(
            KDConfig(**base, transfer_set="folder:" + str(_rgb_folder(workdir)), out="runs/rgb"),
            plugins=plugins,
        )


def _rgb_folder(root: Path) -> Path:
    from PIL import Image

    folder = root / "rgb"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (28, 28), (i * 40, 10, 200)).save(folder / f"{i}.png")
    return folder


def test_missing_teacher_says_where_it_looked_and_how_to_make_it(plugins, workdir):
    cfg = KDConfig(dataset="tiny", teacher="lenet5", student="lenet5_half", epochs=1, out="runs/kd")
    with pytest.raises(UsageError) as err:
        train_kd(cfg, plugins=plugins)
    message = str(err.value)
    assert "checkpoints/tiny-lenet5.safetensors" in message
    assert "dfkd scratch --model lenet5 --dataset tiny" in message
    assert not (workdir / "runs/kd").exists()


def test_weights_of_another_architecture_name_the_keys(plugins, workdir, tiny_teacher_weights):
    cfg = KDConfig(
        dataset="tiny",
        teacher="lenet5_half",
        student="lenet5_half",
        epochs=1,
        teacher_weights=str(tiny_teacher_weights["lenet5_bn"]),
        out="runs/kd",
    )
    with pytest.raises(UsageError, match="holds weights of lenet5_bn, not lenet5_half"):
        train_kd(cfg, plugins=plugins)
    from dfkd.models import build_model
    from dfkd.weights import load_weights

    with pytest.raises(UsageError, match="missing keys: .*; unexpected keys: .*running_mean"):
        load_weights(
            build_model("lenet5", 10, 1, plugins=plugins), tiny_teacher_weights["lenet5_bn"]
        )


def test_dataset_that_does_not_fit_the_teacher(plugins, workdir, tiny_teacher_weights, tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / "two" / split / label).mkdir(parents=True)
            Image.new("L", (28, 28), 9).save(tmp_path / "two" / split / label / "0.png")
    cfg = KDConfig(
        dataset=f"folder:{tmp_path / 'two'}",
        teacher="lenet5",
        student="lenet5_half",
        teacher_weights=str(tiny_teacher_weights["lenet5"]),
        epochs=1,
        out="runs/kd",
    )
    with pytest.raises(UsageError, match="trained for 10 classes"):
        train_kd(cfg, plugins=plugins)


def test_cli_scratch_eval_and_kd(cli, workdir):
    done = cli(
        "scratch",
        "--model",
        "lenet5",
        "--dataset",
        "tiny",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--out",
        "runs/t",
    )
    assert done.exit_code == 0, done.output
    assert "teacher checkpoint: checkpoints/tiny-lenet5.safetensors" in done.output
    shown = cli("eval", "--model", "lenet5", "--dataset", "tiny", "--json")
    assert shown.exit_code == 0
    scores = json.loads(shown.stdout)
    assert scores["samples"] == 100 and 0 <= scores["top1"] <= 100
    table = cli("eval", "--model", "lenet5", "--dataset", "tiny")
    assert "top-1 %" in table.output
    distilled = cli(
        "kd",
        "--teacher",
        "lenet5",
        "--student",
        "lenet5_half",
        "--dataset",
        "tiny",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        "runs/kd",
    )
    assert distilled.exit_code == 0, distilled.output
    assert (workdir / "runs/kd/student.safetensors").exists()


def test_kd_takes_its_teacher_from_the_weights_and_keeps_it_on_resume(
    cli, workdir, tiny_teacher_weights
):
    weights = tiny_teacher_weights["lenet5"]
    args = ("--student", "lenet5_half", "--dataset", "tiny", "--batch-size", "32", "-q")
    done = cli("kd", "--teacher-weights", weights, *args, "--epochs", "1", "--out", "runs/kd")
    assert done.exit_code == 0, done.output
    assert json.loads((workdir / "runs/kd/config.json").read_text())["options"]["teacher"] == (
        "lenet5"
    )
    refused = cli("kd", "--teacher", "lenet5_bn", "--resume", "runs/kd")
    assert refused.exit_code == 2, refused.output
    assert refused.output.strip() == (
        "Error: runs/kd was started with --teacher lenet5, not lenet5_bn; leave --teacher out to "
        "resume it, or start a new run."
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["kd", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny"],
            "No weights for teacher lenet5",
        ),
        (["scratch", "--model", "lenet55", "--dataset", "tiny"], "Did you mean 'lenet5'"),
        (["scratch", "--model", "lenet5", "--dataset", "tinyy"], "Unknown dataset 'tinyy'"),
        (["scratch", "--dataset", "tiny"], "Missing --model"),
        (
            ["eval", "--model", "lenet5", "--dataset", "tiny", "--weights", "nope.safetensors"],
            "nope.safetensors",
        ),
        (
            ["scratch", "--model", "lenet5", "--dataset", "tiny", "--schedule", "zigzag"],
            "schedule must be",
        ),
        (
            ["scratch", "--model", "lenet5", "--dataset", "tiny", "--recipe", "fast"],
            "Unknown recipe 'fast'. Known recipes: default, reference.",
        ),
        (
            ["scratch", "--model", "lenet5", "--dataset", "tiny", "--label-smoothing", "1"],
            "--label-smoothing must be >= 0 and < 1, not 1.0.",
        ),
        (
            [
                "scratch",
                "--model",
                "segnet_small",
                "--dataset",
                "tiny-seg",
                "--label-smoothing",
                "0.1",
            ],
            "--label-smoothing is for classifiers; tiny-seg is segmentation.",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(cli, args, message):
    done = cli(*args)
    assert done.exit_code == 2, done.output
    assert message in done.output
    assert done.output.strip().count("\n") == 0


@pytest.mark.slow
def test_two_processes_under_torchrun_agree_on_the_weights(workdir):
    script = workdir / "two.py"
    script.write_text(
        "import torch.distributed as dist\n"
        "from dfkd.testing import make_plugins\n"
        "from dfkd.training.supervised import ScratchConfig, train_scratch\n"
        "cfg = ScratchConfig(dataset='tiny', model='lenet5_half', epochs=1, batch_size=32,\n"
        "                    lr=0.05, out='runs/ddp')\n"
        "out = train_scratch(cfg, plugins=make_plugins())\n"
        "w = sum(t.double().sum().item() for t in out.model.state_dict().values())\n"
        "from accelerate import PartialState\n"
        "size = PartialState().num_processes  # the processes accelerate shards over\n"
        "open(f'sum-{dist.get_rank()}.txt', 'w').write(f'{w:.10f} {out.last[\"top1\"]} {size}')\n"
    )
    run_two_processes(script)
    sums = [(workdir / f"sum-{rank}.txt").read_text() for rank in (0, 1)]
    assert sums[0] == sums[1]
    # one process group of two, formed without --cpu on a machine without CUDA
    assert sums[0].endswith(" 2")


def test_import_weights_converts_a_reference_checkpoint(cli, workdir, plugins):
    """The reference saves {'state_dict': ...} pickles, sometimes from DataParallel ('module.')."""
    from dfkd.models import build_model
    from dfkd.weights import load_weights, read_meta

    net = build_model("wrn16_1", 10, 3, plugins=plugins)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "acc": 0.91}, workdir / "cifar10_wrn16_1.pth")
    done = cli(
        "import-weights", "cifar10_wrn16_1.pth", "--model", "wrn16_1", "--dataset", "cifar10"
    )
    assert done.exit_code == 0, done.output
    target = workdir / "checkpoints/cifar10-wrn16_1.safetensors"
    loaded = load_weights(build_model("wrn16_1", 10, 3, plugins=plugins), target)
    assert all(
        torch.equal(a, b)
        for a, b in zip(net.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    assert read_meta(target)["num_classes"] == 10
    wrong = cli(
        "import-weights",
        "cifar10_wrn16_1.pth",
        "--model",
        "wrn40_2",
        "--dataset",
        "cifar10",
        "--out",
        "x.safetensors",
    )
    assert wrong.exit_code == 2 and "missing keys" in wrong.output
    assert not (workdir / "x.safetensors").exists()


def test_a_full_disk_leaves_no_partial_weights(plugins, workdir, monkeypatch):
    """ENOSPC while writing weights: one clear error, the temporary file gone, nothing renamed."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(
        DfkdError, match="the disk holding runs/full is full .*; no partial file was left"
    ):
        train_scratch(scratch_config(epochs=1, out="runs/full"), plugins=plugins)
    leftovers = {p.name for p in (workdir / "runs/full").iterdir()}
    assert not leftovers & {"model.safetensors", "model.json"}
    assert not (workdir / "runs/full/state/checkpoint.pt").exists()  # start.pt: the guard's
    assert not list(workdir.rglob("*.tmp"))


def test_a_seed_also_fixes_numpy_for_plugins_that_draw_from_it():
    import random

    import numpy as np

    from dfkd.training.setup import seed_everything

    def draws(seed: int) -> tuple[float, float, float]:
        seed_everything(seed)
        return (np.random.rand(), random.random(), torch.rand(()).item())

    assert draws(3) == draws(3) and draws(3) != draws(4)
