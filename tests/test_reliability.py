"""Nothing lost, nothing silent: trained teachers, busy and damaged runs, misleading messages."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import dfkd_plugin_dafl
import pytest
import torch
from PIL import Image

from dfkd import hookimpl
from dfkd.data import open_dataset
from dfkd.errors import DfkdError, DiskFull, UsageError
from dfkd.fileio import TEMPORARY_SUFFIX, write_atomic
from dfkd.models import build_model
from dfkd.synthesis.options import DataFreeOptions
from dfkd.testing import KillAfterEpoch, make_plugins, run_held_elsewhere, tiny_run_config
from dfkd.training.datafree import run_datafree
from dfkd.training.loop import SilentReporter
from dfkd.training.runs import RunDir
from dfkd.training.supervised import KDConfig, ScratchConfig, train_kd, train_scratch
from dfkd.weights import load_state_file, save_weights, sidecar_path


def scratch(dataset: str = "tiny") -> tuple[str, ...]:
    """`dfkd scratch` for one quick LeNet-5 epoch on ``dataset``."""
    return ("scratch", "--model", "lenet5", "--dataset", dataset, "--epochs", "1", "--lr", "0.05")


class QuietMethod:
    """A method that is never built: the commands here stop before any synthesis."""

    @hookimpl
    def register_methods(self, register):
        register("quiet", "dfkd.synthesis.base:Synthesizer", "never built", options=DataFreeOptions)


@pytest.fixture
def plugins():
    """The test plugin set plus one method, so that `dfkd run` can be called."""
    return make_plugins((QuietMethod(), "dfkd-plugin-quiet"))


def scratch_config(**overrides) -> ScratchConfig:
    values = dict(dataset="tiny", model="lenet5", epochs=1, batch_size=32, lr=0.05, out="runs/r")
    return ScratchConfig(**(values | overrides))


def one_line(done, exit_code: int, text: str) -> None:
    assert done.exit_code == exit_code, done.output
    assert text in done.output
    assert done.output.strip().count("\n") == 0, done.output


def tensors_equal(a: Path, b: Path) -> bool:
    x, y = load_state_file(a), load_state_file(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def save_images(folder: Path, count: int = 2) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("L", (28, 28), 40 * i).save(folder / f"{i}.png")


# 1. A trained teacher is never silently replaced


def test_scratch_makes_only_the_first_teacher_the_default_unless_asked(cli, workdir):
    default = workdir / "checkpoints/tiny-lenet5.safetensors"
    first = cli(*scratch(), "--out", "runs/a")
    assert "teacher checkpoint: checkpoints/tiny-lenet5.safetensors" in first.stdout
    kept = default.read_bytes()

    second = cli(*scratch(), "--seed", "1", "--out", "runs/b")
    assert second.exit_code == 0, second.output
    assert default.read_bytes() == kept
    assert "teacher checkpoint: runs/b/model-best.safetensors" in second.stdout
    promote = "import-weights runs/b/model-best.safetensors --model lenet5 --dataset tiny"
    assert "The default teacher checkpoints/tiny-lenet5.safetensors is unchanged" in second.stderr
    assert "--teacher-weights runs/b/model-best.safetensors" in second.stderr
    assert f"'dfkd {promote} --set-default'" in second.stderr
    # the default names the run that made it: that run's later best epochs may replace it
    made_by = json.loads(sidecar_path(default).read_text())["run"]
    assert made_by == str((workdir / "runs/a").resolve())
    assert (
        json.loads((workdir / "runs/b/config.json").read_text())["options"]["set_default"] is False
    )

    assert cli(*promote.split(), "--set-default").exit_code == 0  # the suggested command works
    assert tensors_equal(default, workdir / "runs/b/model-best.safetensors")
    third = cli(*scratch(), "--seed", "2", "--out", "runs/c", "--set-default")
    assert "teacher checkpoint: checkpoints/tiny-lenet5.safetensors" in third.stdout
    assert tensors_equal(default, workdir / "runs/c/model-best.safetensors")


def test_import_weights_writes_beside_an_existing_default(cli, workdir, plugins):
    default = workdir / "checkpoints/tiny-lenet5.safetensors"
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        torch.save(build_model("lenet5", 10, 1, plugins=plugins).state_dict(), f"{seed}.pth")
    args = ("--model", "lenet5", "--dataset", "tiny")
    assert cli("import-weights", "1.pth", *args).exit_code == 0
    assert tensors_equal(default, Path("1.pth"))
    second = cli("import-weights", "2.pth", *args)
    assert second.exit_code == 0, second.output
    assert "wrote checkpoints/tiny-lenet5-2.safetensors" in second.stdout
    assert "The default teacher checkpoints/tiny-lenet5.safetensors is unchanged" in second.stderr
    assert tensors_equal(default, Path("1.pth"))
    assert tensors_equal(workdir / "checkpoints/tiny-lenet5-2.safetensors", Path("2.pth"))
    assert "tiny-lenet5-3.safetensors" in cli("import-weights", "3.pth", *args).stdout
    assert cli("import-weights", "3.pth", *args, "--set-default").exit_code == 0
    assert tensors_equal(default, Path("3.pth"))
    both = cli("import-weights", "2.pth", *args, "--set-default", "--out", "x.safetensors")
    one_line(both, 2, "--set-default writes the default teacher checkpoint; drop --out.")


class StoppedAtStart(SilentReporter):
    """Interrupts a run before its first epoch, like a kill while it was loading."""

    def start(self, epochs: int, first_epoch: int) -> None:
        raise KeyboardInterrupt


class OtherRunMeanwhile(SilentReporter):
    """Runs ``dfkd scratch ARGS`` in the first epoch of the run it reports: a run started at the
    same time that finishes first."""

    def __init__(self, cli, *args: str) -> None:
        self.cli, self.args, self.done = cli, args, None

    def epoch_start(self, epoch: int, steps: int) -> None:
        if self.done is None:
            self.done = self.cli(*self.args)


def test_a_resumed_run_leaves_a_default_made_since_it_started(cli, workdir, plugins):
    default = workdir / "checkpoints/tiny-lenet5.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_scratch(scratch_config(out="runs/a"), plugins=plugins, reporter=StoppedAtStart())
    assert not default.exists()  # run a started while there was no default
    made = cli(*scratch(), "--seed", "1", "--out", "runs/b")
    assert "teacher checkpoint: checkpoints/tiny-lenet5.safetensors" in made.stdout

    resumed = cli("scratch", "--resume", "runs/a")
    assert resumed.exit_code == 0, resumed.output
    assert "teacher checkpoint: runs/a/model-best.safetensors" in resumed.stdout
    assert "The default teacher checkpoints/tiny-lenet5.safetensors is unchanged" in resumed.stderr
    assert tensors_equal(default, workdir / "runs/b/model-best.safetensors")


def test_of_two_runs_started_together_the_first_to_publish_makes_the_default(cli, workdir, plugins):
    default = workdir / "checkpoints/tiny-lenet5.safetensors"
    other = OtherRunMeanwhile(cli, *scratch(), "--seed", "1", "--out", "runs/b")
    outcome = train_scratch(scratch_config(out="runs/a"), plugins=plugins, reporter=other)
    assert other.done.exit_code == 0, other.done.output
    assert "teacher checkpoint: checkpoints/tiny-lenet5.safetensors" in other.done.stdout
    # the CLI prints this path as the run's checkpoint, with the hint to make it the default
    assert outcome.extras["checkpoint"] == Path("runs/a/model-best.safetensors")
    assert tensors_equal(default, workdir / "runs/b/model-best.safetensors")
    assert not tensors_equal(default, workdir / "runs/a/model-best.safetensors")


def test_import_weights_never_writes_over_a_file_or_the_default_unasked(cli, workdir, plugins):
    default = workdir / "checkpoints/tiny-lenet5.safetensors"
    for seed in (1, 2):
        torch.manual_seed(seed)
        torch.save(build_model("lenet5", 10, 1, plugins=plugins).state_dict(), f"{seed}.pth")
    args = ("--model", "lenet5", "--dataset", "tiny")
    assert cli("import-weights", "1.pth", *args).exit_code == 0
    mine = workdir / "mine.safetensors"
    mine.write_bytes(b"a file of mine")
    one_line(
        cli("import-weights", "2.pth", *args, "--out", mine),
        2,
        f"{mine} exists; pass --overwrite to replace it",
    )
    assert mine.read_bytes() == b"a file of mine"
    assert cli("import-weights", "2.pth", *args, "--out", mine, "--overwrite").exit_code == 0
    assert tensors_equal(mine, Path("2.pth"))
    for flags in ((), ("--overwrite",)):  # --set-default is what replaces the default
        refused = cli("import-weights", "2.pth", *args, "--out", default, *flags)
        one_line(refused, 2, "is the default teacher checkpoint; replace it with --set-default")
    assert tensors_equal(default, Path("1.pth"))


# 2. One writer per run directory


def test_a_run_in_use_is_refused_and_a_dead_holder_leaves_no_lock(cli, workdir):
    assert cli(*scratch(), "--out", "runs/r").exit_code == 0
    with run_held_elsewhere("runs/r", workdir) as holder:
        busy = f"Run runs/r is in use by process {holder}"
        one_line(cli("scratch", "--resume", "runs/r"), 2, busy)
        one_line(cli(*scratch(), "--out", "runs/r", "--overwrite"), 2, busy)
        assert (workdir / "runs/r/model.safetensors").exists()
    assert cli("scratch", "--resume", "runs/r").exit_code == 0


# 3. A resume goes on with the run it names: its method, its teacher


def dafl_cli():
    """The CLI with DAFL installed, the method of the runs resumed here."""
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    app = make_app(make_plugins((dfkd_plugin_dafl, "dfkd-plugin-dafl")))
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def copy_teacher(weights: Path, dest: Path) -> Path:
    """A private copy of a teacher and its sidecar, for a test that replaces it."""
    shutil.copy(weights, dest)
    shutil.copy(sidecar_path(weights), sidecar_path(dest))
    return dest


def start_then_kill(command: str, teacher: Path) -> None:
    """Start a two-epoch `kd` or DAFL `run` from ``teacher`` in runs/r, killed after epoch 1."""
    with pytest.raises(KeyboardInterrupt):
        if command == "kd":
            cfg = KDConfig(
                dataset="tiny",
                teacher="lenet5",
                student="lenet5_half",
                teacher_weights=str(teacher),
                epochs=2,
                batch_size=32,
                out="runs/r",
            )
            train_kd(cfg, plugins=make_plugins(), reporter=KillAfterEpoch(1))
        else:
            budget = ["epochs=2", "ep_steps=2", "kd_steps=1", "batch_size=8", "nz=8", "ngf=4"]
            cfg = tiny_run_config("dafl", "lenet5", teacher, "runs/r", budget)
            cfg.val_size, cfg.val_steps = 16, 1
            dafl = make_plugins((dfkd_plugin_dafl, "dfkd-plugin-dafl"))
            run_datafree(cfg, plugins=dafl, reporter=KillAfterEpoch(1))


@pytest.mark.parametrize("command", ["kd", "run"])
def test_a_resume_refuses_another_teacher_than_the_run_started_with(
    workdir, tiny_teacher_weights, command
):
    teacher = copy_teacher(tiny_teacher_weights["lenet5"], workdir / "teacher.safetensors")
    start_then_kill(command, teacher)
    torch.manual_seed(7)  # the default teacher retrained, say
    retrained = build_model("lenet5", 10, 1, plugins=make_plugins())
    save_weights(retrained, teacher, json.loads(sidecar_path(teacher).read_text()))
    metrics = (workdir / "runs/r/metrics.jsonl").read_text()

    refused = dafl_cli()(command, "--resume", "runs/r")
    one_line(refused, 2, f"{teacher} is not the teacher runs/r was started with")
    assert (workdir / "runs/r/metrics.jsonl").read_text() == metrics
    # with its teacher back, a run from before the teacher's sha256 was recorded resumes as it did
    copy_teacher(tiny_teacher_weights["lenet5"], teacher)
    config = json.loads((workdir / "runs/r/config.json").read_text())
    del config["teacher_sha256"]
    (workdir / "runs/r/config.json").write_text(json.dumps(config))
    resumed = dafl_cli()(command, "--resume", "runs/r", "-q")
    assert resumed.exit_code == 0, resumed.output


def test_a_resume_refuses_a_method_or_model_other_than_the_runs(workdir, tiny_teacher_weights):
    start_then_kill("run", tiny_teacher_weights["lenet5"])
    cli = dafl_cli()
    one_line(
        cli("run", "cmi", "--resume", "runs/r"),
        2,
        "runs/r was started with method dafl, not cmi; leave method out to resume it",
    )
    one_line(
        cli("run", "dafl", "--student", "lenet5", "--resume", "runs/r"),
        2,
        "runs/r was started with --student lenet5_half, not lenet5",
    )
    assert [json.loads(r)["epoch"] for r in (workdir / "runs/r/metrics.jsonl").open()] == [1]
    resumed = cli("run", "dafl", "--student", "lenet5_half", "--resume", "runs/r", "-q")
    assert resumed.exit_code == 0, resumed.output


# 5. Damaged files and failed writes: one line, never a traceback


@pytest.mark.parametrize("damage", ["truncated", "text", "sidecar"])
@pytest.mark.parametrize("command", ["eval", "run"])
def test_damaged_weights_are_one_line(cli, workdir, plugins, damage, command):
    path = workdir / "w.safetensors"
    save_weights(build_model("lenet5", 10, 1, plugins=plugins), path, {"model": "lenet5"})
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "text":
        path.write_text("these are not weights\n")
    else:
        sidecar_path(path).write_text('{"model": "lenet5", "num_cl')
    if command == "eval":
        done = cli("eval", "--model", "lenet5", "--dataset", "tiny", "--weights", path)
    else:
        args = ("--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny")
        done = cli("run", "quiet", *args, "--teacher-weights", path)
    one_line(
        done, 2, f"{sidecar_path(path)}, the description" if damage == "sidecar" else str(path)
    )
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("command", ["eval", "run", "run-without-dataset"])
def test_a_sidecar_field_of_the_wrong_type_is_one_line(cli, workdir, plugins, command):
    path = workdir / "w.safetensors"
    meta = {"model": "lenet5", "num_classes": "ten", "channels": 1, "mean": [0.2], "std": [0.3]}
    save_weights(build_model("lenet5", 10, 1, plugins=plugins), path, meta)
    if command == "eval":
        done = cli("eval", "--model", "lenet5", "--dataset", "tiny", "--weights", path)
    else:
        dataset = ("--dataset", "tiny") if command == "run" else ("--image-size", "32")
        args = ("--teacher", "lenet5", "--student", "lenet5_half", *dataset)
        done = cli("run", "quiet", *args, "--teacher-weights", path)
    message = f'{sidecar_path(path)}, the description of w.safetensors, gives num_classes as "ten"'
    one_line(done, 2, message + ", not a whole number; fix it")
    assert not (workdir / "runs").exists()


def test_out_naming_a_file_is_one_line(cli, workdir):
    (workdir / "taken").write_text("a file\n")
    one_line(cli(*scratch(), "--out", "taken"), 2, "taken is a file, not a run directory")


def test_a_run_directory_behind_a_symlink_is_overwritten_and_made_through_it(cli, workdir):
    assert cli(*scratch(), "--out", "disk/r").exit_code == 0
    (workdir / "disk/r/notes.txt").write_text("the first run's\n")
    (workdir / "runs").mkdir()
    (workdir / "runs/r").symlink_to(workdir / "disk/r")
    done = cli(*scratch(), "--seed", "1", "--out", "runs/r", "--overwrite")
    assert done.exit_code == 0, done.output
    assert (workdir / "runs/r").is_symlink() and not (workdir / "disk/r/notes.txt").exists()
    assert json.loads((workdir / "disk/r/config.json").read_text())["options"]["seed"] == 1

    (workdir / "runs/new").symlink_to(workdir / "disk/new")  # a link to a folder not made yet
    done = cli(*scratch(), "--out", "runs/new")
    assert done.exit_code == 0, done.output
    assert (workdir / "disk/new/model.safetensors").is_file()
    (workdir / "runs/loop").symlink_to("loop")
    message = "Cannot create run directory runs/loop: it is a symbolic link that leads to no folder"
    one_line(cli(*scratch(), "--out", "runs/loop"), 2, message)


UNEXPECTED_POS = "[enforce fail at inline_container.cc:672] . unexpected pos 2351872 vs 2351764"
FULL = "the disk holding {} is full (3.0 KiB free)"
ROOM = 50 << 30


@pytest.mark.parametrize(
    ("failure", "free", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 3 << 10, FULL),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), ROOM, "your disk quota for {} is used up"),
        (RuntimeError(UNEXPECTED_POS), 3 << 10, FULL),  # torch's words for a full disk
        (RuntimeError(UNEXPECTED_POS), ROOM, f"RuntimeError: {UNEXPECTED_POS}"),  # not the disk
    ],
    ids=["ENOSPC", "EDQUOT", "torch-disk-full", "torch-room-to-spare"],
)
def test_a_failed_write_says_whether_the_disk_is_full(tmp_path, monkeypatch, failure, free, reason):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"the previous weights")
    measured = []

    def disk_usage(folder):  # the free space the decision reads, with the partial file still there
        measured.append((Path(folder), len(list(tmp_path.glob(f".*{TEMPORARY_SUFFIX}")))))
        return SimpleNamespace(free=free)

    def writer(tmp):
        tmp.write_bytes(b"the first half of the new weights")
        raise failure

    monkeypatch.setattr("dfkd.fileio.disk_usage", disk_usage)
    with pytest.raises(DfkdError) as caught:
        write_atomic(target, writer)
    full = reason != f"RuntimeError: {UNEXPECTED_POS}"
    advice = " Free some space there, or write to another disk with --out." if full else ""
    assert str(caught.value) == (
        f"Could not write {target}: {reason.format(tmp_path)}; the previous weights.bin is "
        f"intact.{advice}"
    )
    assert isinstance(caught.value, DiskFull) == full
    assert measured == [(tmp_path, 1)]
    assert target.read_bytes() == b"the previous weights"
    assert not list(tmp_path.glob(f".*{TEMPORARY_SUFFIX}"))


def test_a_run_stopped_by_a_full_disk_says_so_and_resumes_once_there_is_space(
    cli, workdir, monkeypatch
):
    save, failed = torch.save, []

    def full_once_at_epoch_2(obj, f, *args, **kwargs):  # then there is room again
        if obj["epochs_done"] == 2 and not failed:
            failed.append(f)
            Path(f).write_bytes(b"the first few bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr("torch.save", full_once_at_epoch_2)
    args = ("--model", "lenet5", "--dataset", "tiny", "--epochs", "2", "--lr", "0.05")
    done = cli("scratch", *args, "--out", "runs/r", "--quiet")
    one_line(
        done,
        1,
        "Could not write runs/r/state/checkpoint.pt: the disk holding runs/r/state is full (",
    )
    assert done.output.rstrip().endswith(
        "; the previous checkpoint.pt is intact. Free some space there, or write to another disk "
        "with --out. Once there is space, continue the run with --resume runs/r."
    )
    checkpoint = workdir / "runs/r/state/checkpoint.pt"
    assert torch.load(checkpoint, weights_only=True)["epochs_done"] == 1
    assert cli("scratch", "--resume", "runs/r").exit_code == 0
    assert [r["epoch"] for r in RunDir(workdir / "runs/r").read_metrics()] == [1, 2]
    assert torch.load(checkpoint, weights_only=True)["epochs_done"] == 2


def test_a_failed_checkpoint_write_keeps_the_previous_one(plugins, workdir, monkeypatch):
    train_scratch(scratch_config(), plugins=plugins)
    checkpoint = workdir / "runs/r/state/checkpoint.pt"
    before = checkpoint.read_bytes()

    def failed(obj, f, *args, **kwargs):  # how torch.save reports a failed write
        Path(f).write_bytes(b"the first few bytes")
        raise RuntimeError(UNEXPECTED_POS)

    monkeypatch.setattr("torch.save", failed)
    with pytest.raises(DfkdError, match=r"checkpoint.pt: RuntimeError: .*checkpoint.pt is intact"):
        train_scratch(scratch_config(epochs=2), plugins=plugins, resume="runs/r")
    assert checkpoint.read_bytes() == before
    assert not list((workdir / "runs/r").rglob("*.tmp"))


def test_a_failed_metrics_append_is_an_error_not_a_traceback(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_file.mkdir()  # any OSError: a folder in the way, a full disk
    with pytest.raises(
        DfkdError, match="Could not write .*metrics.jsonl: .*; the rows before it are intact"
    ):
        run.append_metrics({"epoch": 1})


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("state/checkpoint.pt", lambda b: b[:300], "runs/r/state/checkpoint.pt is damaged"),
        (  # readable, but a key is gone
            "state/checkpoint.pt",
            lambda b: b.replace(b"best_top1", b"\0est_top1"),
            "runs/r/state/checkpoint.pt is damaged or does not fit the run (KeyError: 'best_top1')",
        ),
        ("config.json", lambda b: b[:30], "runs/r/config.json is damaged"),
        ("config.json", lambda b: b"[]", "runs/r/config.json holds no run options"),
        (
            "config.json",
            lambda b: edit_options(b, lr="abc"),
            'runs/r/config.json records lr = "abc", not float | None; correct it to resume',
        ),
        ("config.json", lambda b: edit_options(b, model=None), "config.json records no model."),
        ("metrics.jsonl", lambda b: b"{oops\n" + b, "runs/r/metrics.jsonl is damaged at line 1"),
    ],
)
def test_a_damaged_run_stops_its_resume_in_one_line(cli, workdir, name, damage, message):
    assert cli(*scratch(), "--out", "runs/r").exit_code == 0
    file = workdir / "runs/r" / name
    file.write_bytes(damage(file.read_bytes()))
    done = cli("scratch", "--resume", "runs/r")
    one_line(done, 2, message)
    assert "--overwrite" in done.output


def edit_options(config: bytes, **changes) -> bytes:
    """config.json with its options changed (None: the option removed), as a hand edit."""
    data = json.loads(config)
    for key, value in changes.items():
        data["options"].pop(key)
        if value is not None:
            data["options"][key] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize("command", ["kd", "run"])
def test_a_config_with_a_wrong_type_or_without_its_models_stops_a_resume(
    workdir, tiny_teacher_weights, command
):
    start_then_kill(command, tiny_teacher_weights["lenet5"])
    config = workdir / "runs/r/config.json"
    recorded = config.read_bytes()
    metrics = (workdir / "runs/r/metrics.jsonl").read_text()
    if command == "kd":
        wrong = edit_options(recorded, lr="abc")
    else:  # the method's options are recorded as resolved_options
        data = json.loads(recorded)
        data["options"]["resolved_options"]["lr"] = "abc"
        wrong = json.dumps(data).encode()
    cases = [
        (wrong, 'runs/r/config.json records lr = "abc", not float; correct it to resume the run.'),
        (edit_options(recorded, teacher=None), "runs/r/config.json records no teacher."),
        (edit_options(recorded, student=None), "runs/r/config.json records no student."),
    ]
    for damaged, message in cases:
        config.write_bytes(damaged)
        one_line(dafl_cli()(command, "--resume", "runs/r"), 2, message)
    assert (workdir / "runs/r/metrics.jsonl").read_text() == metrics
    config.write_bytes(recorded)
    resumed = dafl_cli()(command, "--resume", "runs/r", "-q")
    assert resumed.exit_code == 0, resumed.output


def test_a_torn_last_metrics_line_is_dropped_on_resume(plugins, workdir):
    with pytest.raises(KeyboardInterrupt):
        train_scratch(scratch_config(epochs=2), plugins=plugins, reporter=KillAfterEpoch(1))
    metrics = workdir / "runs/r/metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "top1": 4')  # killed mid-append
    resumed = train_scratch(scratch_config(epochs=2), plugins=plugins, resume="runs/r")
    assert [r["epoch"] for r in resumed.metrics] == [1, 2]
    assert metrics.read_text().endswith("}\n")


def test_resume_removes_the_temporaries_a_killed_writer_left(plugins, workdir):
    train_scratch(scratch_config(), plugins=plugins)
    run = workdir / "runs/r"
    leftover = run / "state/.checkpoint.pt.k1ll3d_x.dfkd.tmp"  # as write_atomic names them
    leftover.write_bytes(b"half a checkpoint")
    mine = run / "notes.tmp"  # a user's file that merely looks temporary
    mine.write_text("keep me\n")
    train_scratch(scratch_config(epochs=2), plugins=plugins, resume="runs/r")
    assert not leftover.exists() and mine.exists()


# 8. Messages that say what is wrong


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--model", "wrn40_3", "--dataset", "tiny"],
        ["kd", "--teacher", "wrn40_3", "--student", "lenet5_half", "--dataset", "tiny"],
        ["run", "quiet", "--teacher", "wrn40_3", "--student", "lenet5_half", "--dataset", "tiny"],
    ],
)
def test_a_misspelt_teacher_is_an_unknown_model_not_missing_weights(cli, args):
    one_line(cli(*args), 2, "Unknown model 'wrn40_3'. Did you mean 'wrn40_2'")


def test_a_nan_in_the_first_epoch_names_no_checkpoint(cli, workdir):
    done = cli(*scratch(), "--lr", "1e30", "--batch-size", "32", "--out", "runs/r")
    one_line(done, 1, "; stopped. No epoch was kept, so there is no checkpoint. Lower the learning")
    assert "epoch 0" not in done.output
    assert not (workdir / "runs/r/state/checkpoint.pt").exists()  # start.pt is no checkpoint


@pytest.mark.parametrize("command", ["eval", "kd", "run", "run-without-dataset"])
def test_a_timm_teacher_timm_does_not_have_is_unknown_not_untrained(cli, command):
    pytest.importorskip("timm")
    teacher, student = ("--teacher", "timm:resnet1"), ("--student", "lenet5_half")
    args = {
        "eval": ("eval", "--model", "timm:resnet1", "--dataset", "tiny"),
        "kd": ("kd", *teacher, *student, "--dataset", "tiny"),
        "run": ("run", "quiet", *teacher, *student, "--dataset", "tiny"),
        "run-without-dataset": ("run", "quiet", *teacher, *student),
    }[command]
    done = cli(*args)
    one_line(done, 2, "Unknown timm model 'resnet1'. Did you mean 'timm:resnet18'")
    assert "dfkd scratch" not in done.output


def test_a_folder_with_train_but_no_test_says_so(cli, workdir):
    for label in ("a", "b"):
        save_images(workdir / f"shapes/train/{label}")
    done = cli(*scratch("folder:shapes"))
    one_line(done, 2, "it has train/<class>/ folders but no test/ (or val/) beside them")


def test_a_one_class_folder_is_refused(cli, workdir):
    for split in ("train", "test"):
        save_images(workdir / f"one/{split}/cat")
    done = cli(*scratch("folder:one"))
    one_line(done, 2, "Dataset folder:one has one class (cat); a classifier needs at least two.")
    assert not (workdir / "checkpoints").exists()


def test_a_data_root_that_does_not_exist_is_an_error(cli, workdir):
    one_line(cli(*scratch(), "--data-root", "nowhere"), 2, "--data-root nowhere does not exist")
    assert not (workdir / "runs").exists()


def test_a_run_directory_is_not_an_image_folder(plugins, workdir):
    run = workdir / "runs/dafl"
    save_images(run / "images")  # what --keep-images keeps (as chunks; PNGs serve as well here)
    Image.new("RGB", (64, 64)).save(run / "samples.png")
    (run / "config.json").write_text("{}\n")
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(UsageError, match="the images it kept are folder:runs/dafl/images"):
        open_dataset("folder:runs/dafl", plugins=plugins)
    shutil.rmtree(run / "images")
    with pytest.raises(UsageError, match="kept no images .*--keep-images"):
        open_dataset("folder:runs/dafl", plugins=plugins)


# 9. Budgets and coefficients are range-checked before anything is written

RUN = ("run", "quiet", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "Option 'epochs' must be >= 1, not 0."),
        (["-o", "epochs=-3"], "Option 'epochs' must be >= 1, not -3."),
        (["-o", "batch_size=0"], "Option 'batch_size' must be >= 1, not 0."),
        (["-o", "lr=nan"], "Option 'lr' must be a finite number, not nan."),
        (["-o", "lr=-1"], "Option 'lr' must be > 0, not -1.0."),
        (["-o", "T=0"], "Option 'T' must be > 0, not 0.0."),
        (["-o", "momentum=1"], "Option 'momentum' must be >= 0 and < 1, not 1.0."),
        (["-o", "kd_steps=0"], "Option 'kd_steps' must be >= 1, not 0."),
        (["-o", "milestones=1,-2"], "Option 'milestones' must be >= 1, not -2."),
        (
            ["-o", "ep_steps=10", "-o", "kd_steps=3"],
            "Option 'ep_steps' (10) must be a multiple of 'kd_steps' (3): an epoch is whole "
            "synthesis rounds; e.g. ep_steps=9.",
        ),
        (["-o", "warmup=2", "--epochs", "2"], "Option 'warmup' (2) must be below 'epochs' (2)"),
        (
            ["-o", "schedule=multistep", "-o", "milestones=5", "--epochs", "5"],
            "Option 'milestones' must be below 5, the epochs after warm-up",
        ),
    ],
)
def test_run_refuses_out_of_range_options_before_writing(cli, workdir, args, message):
    one_line(cli(*RUN, "--teacher-weights", "nowhere.safetensors", *args), 2, message)
    assert not (workdir / "runs").exists()


def test_a_shorter_run_moves_the_milestones_the_user_did_not_set(workdir, tiny_teacher_weights):
    """DFAD's defaults (and its cifar10 preset) drop the rate at epochs 100 and 200 of 500."""
    import dfkd_plugin_dfad
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    app = make_app(make_plugins((dfkd_plugin_dfad, "dfkd-plugin-dfad")))
    teacher = tiny_teacher_weights["lenet5"]
    quick = ["ep_steps=5", "kd_steps=5", "batch_size=8", "nz=8", "ngf=4"]
    args = ["run", "dfad", "--teacher-weights", teacher, "--student", "lenet5_half"]
    args += ["--dataset", "tiny", *sum((["-o", o] for o in quick), []), "--epochs", "2"]
    args += ["--val-size", "8", "--val-steps", "1", "-q"]

    def cli(*more):
        return CliRunner().invoke(app, [str(a) for a in [*args, *more]])

    done = cli("--out", "runs/r")
    assert done.exit_code == 0, done.output
    assert (
        "dfad defaults: milestones 100,200 (of 500 epochs after warm-up) moved to 1 for 2, at "
        "the same fractions; set them with -o milestones=A,B." in done.stderr
    )
    recorded = json.loads((workdir / "runs/r/config.json").read_text())["options"]
    assert recorded["resolved_options"]["milestones"] == [1]
    yours = cli("-o", "milestones=100", "--out", "runs/yours")  # the user's own are checked
    one_line(yours, 2, "Option 'milestones' must be below 2, the epochs after warm-up")
    assert not (workdir / "runs/yours").exists()
    bench = ["bench", "--methods", "dfad", "--pairs", f"lenet5:lenet5_half@{teacher}"]
    bench += ["--dataset", "tiny", "--preset", "cifar10", "--epochs", "2", "--dry-run"]
    listed = CliRunner().invoke(app, bench)
    assert listed.exit_code == 0, listed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be >= 1, not 0."),
        (["--epochs", "0"], "--epochs must be >= 1, not 0."),
        (["--lr", "nan"], "--lr must be a finite number, not nan."),
        (["--lr", "-0.1"], "--lr must be > 0, not -0.1."),
        (["--weight-decay", "-1"], "--weight-decay must be >= 0, not -1.0."),
    ],
)
@pytest.mark.parametrize("command", ["scratch", "kd"])
def test_scratch_and_kd_refuse_out_of_range_flags_before_writing(
    cli, workdir, command, args, message
):
    base = scratch() if command == "scratch" else ("kd", *RUN[2:])
    one_line(cli(*base, *args), 2, message)
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-T", "0"], "--temperature must be > 0, not 0.0."),
        (["--alpha", "-1"], "--alpha must be >= 0, not -1.0."),
        (["--beta", "inf"], "--beta must be a finite number, not inf."),
    ],
)
def test_kd_refuses_out_of_range_loss_flags(cli, workdir, args, message):
    one_line(cli("kd", *RUN[2:], *args), 2, message)
    assert not (workdir / "runs").exists()


def test_eval_refuses_a_batch_size_below_one(cli):
    done = cli("eval", "--model", "lenet5", "--dataset", "tiny", "--batch-size", "0")
    one_line(done, 2, "--batch-size must be >= 1, not 0.")


def test_every_shipped_preset_satisfies_the_range_checks():
    """What `dfkd list-methods` lists, built as `dfkd run --preset` builds it."""
    import importlib

    from dfkd.options import build_options

    names = ["cmi", "cudfkd", "dafl", "deepinv", "dfad", "dfq", "fast", "lopes", "nayer", "zskt"]
    modules = [(importlib.import_module(f"dfkd_plugin_{n}"), f"dfkd-plugin-{n}") for n in names]
    methods = make_plugins(*modules).methods
    built = 0
    for name in names:
        entry = methods.get(name)
        for preset in entry.info["presets"].values():
            build_options(entry.info["options"], preset)
            built += 1
    assert built == 73  # FastDFKD 23, DFAD 9, NAYER 9, DeepInversion 6 and 26 more
    # `default`: the small-image values with the stable student step; NAYER's also grows a larger
    # pool and trains the student longer on it (docs/methods/nayer.md#the-default-preset)
    larger_pool = {"synthesis_batch_size": 400, "g_steps": 8, "ep_steps": 300, "kd_steps": 150}
    for name in names:
        presets = methods.get(name).info["presets"]
        small_images = presets["fashion-mnist"] | (larger_pool if name == "nayer" else {})
        assert presets["default"] == small_images | {"grad_clip": 5.0}, name

    from dfkd_plugin_deepinv.invert_options import PRESETS, build_config

    for preset in PRESETS:
        build_config(preset, {"model": "resnet34", "dataset": "cifar10"})


def test_a_python_warning_in_a_run_is_one_line(workdir, tiny_teacher_weights):
    """DFQ on a teacher without BatchNorm drops its BN term and says so, in one line."""
    import dfkd_plugin_dfq
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    app = make_app(make_plugins((dfkd_plugin_dfq, "dfkd-plugin-dfq")))
    quick = ["ep_steps=2", "kd_steps=2", "batch_size=8", "nz=8", "ngf=4"]
    args = ["run", "dfq", "--teacher-weights", tiny_teacher_weights["lenet5"], "--dataset"]
    args += ["tiny", "--student", "lenet5_half", *sum((["-o", o] for o in quick), [])]
    args += ["--epochs", "1", "--val-size", "8", "--val-steps", "1", "-q", "--out", "runs/r"]
    done = CliRunner().invoke(app, [str(a) for a in args])
    assert done.exit_code == 0, done.output
    said = [line for line in done.stderr.splitlines() if "no BatchNorm" in line]
    assert said and said[0].startswith("Warning: DFQ: the teacher has no BatchNorm layer")
    assert "UserWarning" not in done.stderr and "warn_without_batchnorm" not in done.stderr
