"""Teacher in, student out: runs with no dataset, the synthetic validation set that judges them,
and the errors of the flow."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dfkd_plugin_dafl
import pytest
import torch
from safetensors.torch import save_file

from dfkd.errors import UsageError
from dfkd.export import find_weights
from dfkd.tasks import CLASSIFICATION
from dfkd.testing import make_plugins, tiny_run_config
from dfkd.training.datafree import run_datafree
from dfkd.training.loop import SilentReporter
from dfkd.training.teacher_inputs import InputFlags, describe_inputs, find_teacher_weights
from dfkd.training.validation import cache_path

BUDGET = ["epochs=2", "ep_steps=4", "kd_steps=2", "batch_size=8", "nz=8", "ngf=4"]


def plugins():
    return make_plugins((dfkd_plugin_dafl, "dfkd-plugin-dafl"))


@pytest.fixture(name="plugins")
def dafl_plugins():
    """What the `cli` fixture's app is made with: the built-ins and DAFL."""
    return plugins()


@pytest.fixture
def teacher(tiny_teacher_weights, workdir) -> Path:
    """The tiny LeNet-5 teacher of the session (its validation set is made once, beside it)."""
    return tiny_teacher_weights["lenet5"]


@pytest.fixture
def teacher_copy(teacher, workdir) -> Path:
    """A private copy of the teacher and its sidecar, for tests that change them."""
    dest = workdir / "teacher" / "tiny-lenet5.safetensors"
    dest.parent.mkdir()
    shutil.copy(teacher, dest)
    shutil.copy(teacher.with_suffix(".json"), dest.with_suffix(".json"))
    return dest


def no_data_config(weights: Path, out: str, **fields):
    cfg = tiny_run_config("dafl", "lenet5", weights, out, BUDGET)
    cfg.dataset = None
    for key, value in fields.items():
        setattr(cfg, key, value)
    return cfg


def test_a_run_needs_only_the_teachers_weights(teacher, workdir, monkeypatch):
    def no_dataset(*args, **kwargs):
        raise AssertionError("a dataset was opened")

    monkeypatch.setattr("dfkd.training.datafree.open_dataset", no_dataset)
    empty = workdir / "empty"
    empty.mkdir()
    outcome = run_datafree(
        no_data_config(teacher, "runs/alone", data_root=str(empty)), plugins=plugins()
    )
    rows = outcome.metrics
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all("top1" not in r and 0 <= r["agree"] <= 100 and r["val_kl"] >= 0 for r in rows)
    assert outcome.best_by is None  # nothing without data picks better epochs than the last
    assert not (workdir / "runs/alone/student-best.safetensors").exists()
    last = json.loads((workdir / "runs/alone/student.json").read_text())
    assert last["agree"] == rows[-1]["agree"] and last["epoch"] == 2
    assert last["classes"] == [str(i) for i in range(10)] and last["dataset"] == "none"
    with pytest.raises(UsageError, match="keeps only its last epoch"):
        find_weights(workdir / "runs/alone", "best")
    recorded = json.loads((workdir / "runs/alone/config.json").read_text())["options"]
    assert recorded["dataset"] is None and recorded["teacher_weights"] == str(teacher)


def test_with_a_test_split_both_scores_are_reported_and_top1_chooses(tiny_teacher_weights, workdir):
    cfg = tiny_run_config("dafl", "lenet5", tiny_teacher_weights["lenet5"], "runs/both", BUDGET)
    outcome = run_datafree(cfg, plugins=plugins())
    assert {"top1", "agree", "val_kl"} <= set(outcome.last) and outcome.best_by == "top1"


def test_the_validation_set_is_made_once_per_teacher_and_shared(teacher, workdir):
    from dfkd.training import validation

    run_datafree(no_data_config(teacher, "runs/a"), plugins=plugins())
    cached = cache_path(teacher)
    made = cached.stat().st_mtime_ns
    steps = validation.default_steps(CLASSIFICATION)
    assert _metadata(cached)["wanted"].endswith(
        f"-{validation.SIZE}-{steps}-{validation.LR}-{validation.SEED}-"
        f"{validation.TV_WEIGHT}-{validation.CHUNK}-jitter{validation.JITTER}-"
        f"lowpass{validation.LOW_PASS}"
    )
    cfg = no_data_config(teacher, "runs/b", seed=1)
    assert run_datafree(cfg, plugins=plugins()).last["agree"] >= 0
    assert cached.stat().st_mtime_ns == made  # read, not made again


def test_runs_started_together_make_the_validation_set_once(teacher_copy, workdir, monkeypatch):
    from dfkd.data.pipeline import InputFormat
    from dfkd.models.lenet import lenet5
    from dfkd.training import validation

    made = []
    real = validation.make_validation_set

    def slow_make(*args, **kwargs):
        made.append(threading.get_ident())
        time.sleep(0.5)  # long enough for the other run to arrive while this one makes it
        return real(*args, **kwargs)

    monkeypatch.setattr(validation, "make_validation_set", slow_make)
    fmt = InputFormat((0.2,), (0.3,), 32)
    net = lenet5(10, 1).eval()

    def one_run() -> validation.ValidationSet:
        return validation.validation_set(net, teacher_copy, fmt, 10, 1, 32, workdir, 8, 2)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: one_run(), range(2))
    assert len(made) == 1
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.teacher_logits, second.teacher_logits)


def test_a_cached_validation_set_is_not_read_for_another_normalisation(teacher_copy, workdir):
    """Images inverted through one --mean/--std are not another normalisation's: a corrected
    normalisation makes its own set instead of scoring on the stale one."""
    from dfkd.data.pipeline import InputFormat
    from dfkd.models.lenet import lenet5
    from dfkd.training import validation

    net = lenet5(10, 1).eval()

    def valset(mean: float) -> validation.ValidationSet:
        fmt = InputFormat((mean,), (0.3,), 32)
        return validation.validation_set(net, teacher_copy, fmt, 10, 1, 32, workdir, 10, 2)

    first, corrected = valset(0.2), valset(0.8)
    assert not torch.equal(first.images, corrected.images)
    assert torch.equal(valset(0.8).images, corrected.images)  # the corrected one is kept


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


@pytest.mark.slow
def test_the_validation_set_is_reproducible(teacher):
    from dfkd.data.pipeline import InputFormat
    from dfkd.models.lenet import lenet5
    from dfkd.training import validation
    from dfkd.training.validation import make_validation_set
    from dfkd.weights import load_weights

    net = load_weights(lenet5(10, 1), teacher).eval()
    fmt = InputFormat((0.2,), (0.3,), 32)
    a, b = (make_validation_set(net, fmt, 10, 1, 32, size=100) for _ in range(2))
    assert torch.equal(a.images, b.images) and torch.equal(a.teacher_logits, b.teacher_logits)
    assert a.images.shape == (100, 1, 32, 32) and 0 <= a.images.min() <= a.images.max() <= 1
    assert a.steps == validation.default_steps(CLASSIFICATION)
    # classes balanced by construction; the teacher calls most images what they were made to be
    hits = (a.teacher_logits.argmax(1) == torch.arange(100) % 10).float().mean()
    assert hits > 0.5


def test_a_classifier_is_scored_on_its_inversions_low_passed(teacher):
    """The set a classifier is read on keeps what its classes look like, not the teacher's fine
    texture: smoother than the same inversion left sharp, and its logits are the teacher's on the
    images kept."""
    from dfkd.data.pipeline import InputFormat
    from dfkd.models.lenet import lenet5
    from dfkd.training.validation import make_validation_set
    from dfkd.weights import load_weights

    net = load_weights(lenet5(10, 1), teacher).eval()
    fmt = InputFormat((0.2,), (0.3,), 32)
    smooth = make_validation_set(net, fmt, 10, 1, 32, size=20, steps=30)
    sharp = make_validation_set(net, fmt, 10, 1, 32, size=20, steps=30, smoothed=False)

    def roughness(images: torch.Tensor) -> float:
        return (images[..., 1:] - images[..., :-1]).abs().mean().item()

    assert roughness(smooth.images) < 0.7 * roughness(sharp.images)
    with torch.no_grad():
        logits = net(fmt.from_pixels(smooth.images))
    assert torch.allclose(logits, smooth.teacher_logits, atol=1e-4)


class Seen(SilentReporter):
    """What a run's reporter is told about its validation set."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.counts: list[tuple[int, int]] = []

    def validation_set(self, line: str) -> None:
        self.lines.append(line)

    def validation_progress(self, done: int, total: int) -> None:
        self.counts.append((done, total))


class Recording(torch.nn.Module):
    """A teacher that remembers the largest batch it was given, and can be slow."""

    def __init__(self, net: torch.nn.Module, sleep: float = 0.0) -> None:
        super().__init__()
        self.net, self.sleep, self.largest = net, sleep, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, len(x))
        time.sleep(self.sleep)
        return self.net(x)


def _bn_teacher(sleep: float = 0.0) -> Recording:
    from dfkd.models.lenet import lenet5_bn

    torch.manual_seed(0)
    return Recording(lenet5_bn(10, 1), sleep)


FMT_ARGS = (10, 1, 32)  # classes, channels, image size of the tiny teachers


def test_the_validation_set_is_made_a_chunk_at_a_time_and_said(teacher_copy, workdir):
    from dfkd.data.pipeline import InputFormat
    from dfkd.training import validation

    fmt, net, seen = InputFormat((0.2,), (0.3,), 32), _bn_teacher(), Seen()
    made = validation.validation_set(
        net, teacher_copy, fmt, *FMT_ARGS, workdir, 120, 2, progress=seen
    )
    assert net.largest <= validation.CHUNK == 50  # memory grows with the chunk, not the set
    assert seen.lines == ["validation set: 120 images × 2 steps"]
    assert seen.counts == [(50, 120), (100, 120), (120, 120)]
    again = validation.make_validation_set(net, fmt, *FMT_ARGS, 120, 2)
    first_chunk = validation.make_validation_set(net, fmt, *FMT_ARGS, 50, 2)
    assert torch.equal(made.images, again.images)
    assert torch.equal(made.teacher_logits, again.teacher_logits)
    assert torch.equal(made.images[:50], first_chunk.images)  # each chunk made on its own
    assert made.images.shape == (120, 1, 32, 32) and made.steps == 2


def test_a_teacher_too_slow_for_the_budget_gets_a_smaller_set(teacher_copy, workdir, monkeypatch):
    from dfkd.data.pipeline import InputFormat
    from dfkd.training import validation

    # 10 ms a forward: the default 500 × 200 takes at least 20 s, over a budget of half a second
    monkeypatch.setattr(validation, "BUDGET_SECONDS", 0.5)
    fmt, slow, seen = InputFormat((0.2,), (0.3,), 32), _bn_teacher(sleep=0.01), Seen()
    made = validation.validation_set(slow, teacher_copy, fmt, *FMT_ARGS, workdir, progress=seen)
    assert len(made.images) == 50 and validation.MIN_STEPS <= made.steps < 200  # 5 a class
    assert seen.counts == [(50, 50)]
    assert seen.lines[0].startswith(
        f"validation set: 50 images × {made.steps} steps, not 500 × 200: that would take ~"
    )

    def timed_again(*args):
        raise AssertionError("the teacher was timed again")

    # kept as the defaults' set: later runs read it rather than time the teacher again
    monkeypatch.setattr(validation, "_seconds_per_image_step", timed_again)
    seen = Seen()
    read = validation.validation_set(slow.net, teacher_copy, fmt, *FMT_ARGS, workdir, progress=seen)
    assert torch.equal(read.images, made.images) and read.steps == made.steps
    assert seen.lines == [
        f"validation set: 50 images × {made.steps} steps (cut from 500 × 200 to the 0.5 s "
        f"budget), read from {cache_path(teacher_copy)}"
    ]
    given = validation.validation_set(slow.net, teacher_copy, fmt, *FMT_ARGS, workdir, 20, 3)
    assert len(given.images) == 20 and given.steps == 3  # both given: not timed, nor cut


def test_a_run_records_its_validation_set_and_keeps_what_the_user_gave(
    teacher_copy, workdir, monkeypatch
):
    from dfkd.testing import KillAfterEpoch
    from dfkd.training import validation

    def recorded(run: str) -> dict:
        return json.loads((workdir / run / "config.json").read_text())["validation_set"]

    monkeypatch.setattr(validation, "BUDGET_SECONDS", 0.0)  # every teacher is too slow
    with pytest.raises(KeyboardInterrupt):
        cut = no_data_config(teacher_copy, "runs/cut")
        run_datafree(cut, plugins=plugins(), reporter=KillAfterEpoch(1))
    assert recorded("runs/cut") == {"images": 50, "steps": validation.MIN_STEPS}  # 5 a class
    seen = Seen()
    given = no_data_config(teacher_copy, "runs/given", val_size=20)
    run_datafree(given, plugins=plugins(), reporter=seen)
    assert recorded("runs/given") == {"images": 20, "steps": validation.MIN_STEPS}
    assert seen.lines[0].startswith("validation set: 20 images × 10 steps, not 20 × 200: ")

    # a resumed run is scored on the set its first epochs were, whatever the budget says now
    monkeypatch.setattr(validation, "BUDGET_SECONDS", 1e9)
    cache_path(teacher_copy).unlink()
    seen = Seen()
    run_datafree(None, resume=str(workdir / "runs/cut"), plugins=plugins(), reporter=seen)
    assert seen.lines == ["validation set: 50 images × 10 steps"]
    assert recorded("runs/cut") == {"images": 50, "steps": validation.MIN_STEPS}


def test_the_cli_shows_the_validation_set_as_it_is_made(cli, teacher_copy, workdir):
    options = [*sum((["-o", o] for o in BUDGET), []), "-o", "epochs=1"]
    args = ["run", "dafl", "--teacher-weights", teacher_copy, "--student", "lenet5_half"]
    given = ["--val-size", "100", "--val-steps", "2"]
    done = cli(*args, *options, *given, "--out", "r")
    assert done.exit_code == 0, done.output
    assert "validation set: 100 images × 2 steps\n" in done.output
    assert "validation set: 50/100 images" in done.output
    assert "validation set: 100/100 images" in done.output
    read = cli(*args, *options, *given, "--out", "r2")
    assert f"validation set: 100 images × 2 steps, read from {cache_path(teacher_copy)}" in (
        read.output
    )
    assert "/100 images" not in read.output


def test_inputs_come_from_the_sidecar_then_flags(teacher_copy):
    inputs = describe_inputs("lenet5", teacher_copy, InputFlags(), make_plugins())
    assert (inputs.num_classes, inputs.channels, inputs.image_size) == (10, 1, 32)
    assert inputs.mean == (0.2,) and inputs.std == (0.3,)
    teacher_copy.with_suffix(".json").unlink()
    with pytest.raises(UsageError, match="--classes --channels --image-size --mean --std"):
        describe_inputs("lenet5", teacher_copy, InputFlags(), make_plugins())
    flags = InputFlags(classes=10, channels=1, image_size=32, mean=(0.5,), std=(0.5,))
    assert describe_inputs("lenet5", teacher_copy, flags, make_plugins()).mean == (0.5,)


def test_flags_that_contradict_the_sidecar_are_refused(teacher):
    with pytest.raises(UsageError, match="--classes 7 contradicts the teacher's sidecar"):
        describe_inputs("lenet5", teacher, InputFlags(classes=7), make_plugins())


def test_class_names_file_must_match_the_class_count(teacher, workdir):
    names = workdir / "names.txt"
    names.write_text("a\nb\nc\n")
    with pytest.raises(UsageError, match="lists 3 classes; the teacher has 10"):
        describe_inputs("lenet5", teacher, InputFlags(class_names=str(names)), make_plugins())
    names.write_text("".join(f"c{i}\n" for i in range(10)))
    inputs = describe_inputs("lenet5", teacher, InputFlags(class_names=str(names)), make_plugins())
    assert inputs.classes[3] == "c3"


def test_a_timm_teacher_brings_its_own_input_format():
    from dfkd.training.teacher_inputs import _model_config

    config = _model_config("timm:resnet18")
    assert config["image_size"] == 224 and config["channels"] == 3 and config["classes"] == 1000
    assert len(config["mean"]) == 3


def test_the_teacher_is_found_in_checkpoints(workdir):
    folder = workdir / "checkpoints"
    folder.mkdir()
    with pytest.raises(UsageError, match="dfkd scratch.*dfkd import-weights.*--teacher-weights"):
        find_teacher_weights("wrn40_2", folder)
    (folder / "cifar10-wrn40_2.safetensors").touch()
    assert find_teacher_weights("wrn40_2", folder) == folder / "cifar10-wrn40_2.safetensors"
    (folder / "cifar100-wrn40_2.safetensors").touch()
    with pytest.raises(UsageError, match="Several teachers wrn40_2.*--teacher-weights"):
        find_teacher_weights("wrn40_2", folder)


def test_the_cli_runs_without_a_dataset_and_says_which_teacher(teacher, workdir, monkeypatch):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    checkpoints = workdir / "checkpoints"
    checkpoints.mkdir()
    for suffix in (".safetensors", ".json", ".valset.safetensors"):  # the set, if made already
        src = teacher.with_name(teacher.name.removesuffix(".safetensors") + suffix)
        if src.exists():
            shutil.copy(src, checkpoints / f"tiny-lenet5{suffix}")
    teacher = checkpoints / "tiny-lenet5.safetensors"
    monkeypatch.setenv("DFKD_CHECKPOINTS", str(checkpoints))
    app = make_app(plugins())
    args = ["run", "dafl", "--teacher", "lenet5", "--student", "lenet5_half", "-q"]
    budget = sum((["-o", o] for o in [*BUDGET, "epochs=1"]), [])
    done = CliRunner().invoke(app, [*args, *budget, "--out", "r"])
    assert done.exit_code == 0, done.output
    assert f"teacher weights: {teacher}" in done.output
    assert "the result is the last epoch (no test split to choose another by) after 1 epoch\n" in (
        done.output
    )
    assert "agreement: how often the student's top class is the teacher's" in done.output
    bad = CliRunner().invoke(app, [*args, "--dataset", "tiny", "--classes", "10"])
    assert bad.exit_code == 2 and "--classes describe the teacher's inputs" in bad.output


def test_the_teachers_sidecar_names_it_when_teacher_is_not_given(teacher, workdir):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    app = make_app(plugins())
    options = [*sum((["-o", o] for o in BUDGET), []), "-o", "epochs=1", "--val-size", "8"]
    common = ["--teacher-weights", str(teacher), "--student", "lenet5_half", "--dataset", "tiny"]
    done = CliRunner().invoke(app, ["run", "dafl", *common, *options, "-q", "--out", "r"])
    assert done.exit_code == 0, done.output
    assert json.loads((workdir / "r/config.json").read_text())["options"]["teacher"] == "lenet5"

    both = ["run", "dafl", "--teacher", "lenet5_bn", *common, *options, "--out", "r2"]
    refused = CliRunner().invoke(app, both)
    assert refused.exit_code == 2
    assert refused.output.strip() == f"Error: {teacher} holds weights of lenet5, not lenet5_bn."
    assert not (workdir / "r2").exists()


@pytest.mark.parametrize("labelled", [True, False])
def test_eval_data_scores_the_users_own_images(teacher, workdir, labelled):
    from dfkd.testing import make_tiny_images

    images, labels = make_tiny_images(40, seed=5)
    folder = workdir / "mine"
    folder.mkdir()
    tensors = {"images": images} | ({"labels": labels} if labelled else {})
    save_file(tensors, str(folder / "images.safetensors"))
    cfg = no_data_config(teacher, "runs/own", eval_data=f"folder:{folder}")
    last = run_datafree(cfg, plugins=plugins()).last
    key = "eval_top1" if labelled else "eval_agree"
    assert 0 <= last[key] <= 100 and ({"eval_top1", "eval_agree"} - {key}).isdisjoint(last)


def test_a_bad_eval_data_leaves_no_run_behind(teacher, workdir):
    from typer.testing import CliRunner

    from dfkd.cli import make_app
    from dfkd.testing import make_tiny_images

    app = make_app(plugins())
    options = [*sum((["-o", o] for o in BUDGET), []), "-o", "epochs=1", "--val-size", "8"]
    command = ["run", "dafl", "--teacher-weights", str(teacher), "--student", "lenet5_half"]
    command += [*options, "-q", "--out", "runs/own", "--eval-data"]
    images, _ = make_tiny_images(4, seed=5)
    for folder, channels in (("rgb", 3), ("grey", 1)):
        (workdir / folder).mkdir()
        coloured = images.expand(-1, channels, -1, -1).contiguous()
        save_file({"images": coloured}, f"{folder}/images.safetensors")
    refused = CliRunner().invoke(app, [*command, "folder:rgb"])
    assert refused.exit_code == 2, refused.output
    message = "Error: --eval-data folder:rgb has 3-channel images; the teacher takes 1."
    assert refused.output.strip() == message
    assert not (workdir / "runs").exists()

    done = CliRunner().invoke(app, [*command, "folder:grey"])  # the corrected command
    assert done.exit_code == 0, done.output
    assert "eval_agree" in (workdir / "runs/own/metrics.jsonl").read_text()
