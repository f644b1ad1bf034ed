"""Fault injection: a run killed at any point resumes to exactly the run that was not killed.

Each test stops a tiny data-free run at a point chosen by ``random.Random(seed)`` (the seeds are
parameters, so a failure names the one that reproduces it), resumes it, and checks the student,
the whole checkpoint and ``metrics.jsonl`` (epochs 1..N once each, every line JSON) against an
uninterrupted run.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import dfkd_plugin_dafl
import dfkd_plugin_deepinv
import pytest
import torch
from safetensors.torch import load_file

from dfkd.fileio import TEMPORARY_SUFFIX
from dfkd.testing import (
    KillAfterEpoch,
    assert_same_state,
    checkpoint_objects,
    make_plugins,
    run_two_processes,
    tiny_run_config,
)
from dfkd.training.datafree import run_datafree
from dfkd.training.loop import Loop, SilentReporter

EPOCHS, STEPS = 3, 4
SEEDS = [0, 1, 2]
METHODS = {
    # a persistent generator: the whole state is in the checkpoint
    "dafl": (
        dfkd_plugin_dafl,
        "lenet5",
        ["ep_steps=4", "kd_steps=2", "batch_size=8", "nz=8", "ngf=4"],
    ),
    # a pool method: two chunks of images per epoch in RUN/images besides the checkpoint
    "deepinv": (
        dfkd_plugin_deepinv,
        "lenet5_bn",
        ["ep_steps=4", "kd_steps=2", "g_steps=3", "batch_size=8"],
    ),
}


def plugins_for(method: str) -> Any:
    return make_plugins((METHODS[method][0], f"dfkd-plugin-{method}"))


def start(method: str, weights: dict[str, Path], out: Path, reporter: Any = None) -> Any:
    module, teacher, options = METHODS[method]
    cfg = tiny_run_config(method, teacher, weights[teacher], out, [f"epochs={EPOCHS}", *options])
    return run_datafree(cfg, reporter=reporter, plugins=plugins_for(method))


def resume(method: str, out: Path) -> Any:
    return run_datafree(None, resume=str(out), plugins=plugins_for(method))


@pytest.fixture(scope="module")
def reference(tiny_teacher_weights, tmp_path_factory):
    """The uninterrupted run of each method, made once: ``reference(method)`` is its folder."""
    made: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in made:
            out = tmp_path_factory.mktemp("reference") / method
            start(method, tiny_teacher_weights, out)
            made[method] = out
        return made[method]

    return get


def clean_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a user's tool reads it: every line complete JSON, epochs 1..N once."""
    text = (run_dir / "metrics.jsonl").read_text()
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    return rows


def assert_same_run(run_dir: Path, reference_dir: Path) -> None:
    """Bit-identical student and checkpoint, the same scores, nothing temporary left."""
    a, b = (
        load_file(str(run_dir / "student.safetensors")),
        load_file(str(reference_dir / "student.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    checkpoints = [
        torch.load(d / "state/checkpoint.pt", map_location="cpu", weights_only=True)
        for d in (run_dir, reference_dir)
    ]
    assert_same_state(*checkpoints, where="checkpoint")

    def scores(d: Path) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in r.items() if not k.startswith("seconds")} for r in clean_metrics(d)
        ]

    assert scores(run_dir) == scores(reference_dir)
    assert not list(run_dir.rglob(f"*{TEMPORARY_SUFFIX}"))
    if (reference_dir / "images").exists():
        chunks = sorted(p.name for p in (reference_dir / "images").iterdir())
        assert sorted(p.name for p in (run_dir / "images").iterdir()) == chunks
        for name in chunks:
            assert (run_dir / "images" / name).read_bytes() == (
                reference_dir / "images" / name
            ).read_bytes(), name


class StopAtStep(SilentReporter):
    """Interrupts the run after its ``k``-th student (or synthesis) step, counted from 1."""

    def __init__(self, k: int) -> None:
        self.k, self.seen = k, 0

    def step(self, logs: dict[str, float]) -> None:
        self.seen += 1
        if self.seen == self.k:
            raise KeyboardInterrupt


@pytest.mark.parametrize("method", ["dafl", "deepinv"])
@pytest.mark.parametrize("seed", SEEDS)
def test_killed_mid_epoch(tiny_teacher_weights, reference, workdir, method, seed):
    k = random.Random(seed).randrange(1, EPOCHS * STEPS)
    with pytest.raises(KeyboardInterrupt):
        start(method, tiny_teacher_weights, workdir / "cut", StopAtStep(k))
    resume(method, workdir / "cut")
    assert_same_run(workdir / "cut", reference(method))


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_mid_checkpoint_write(tiny_teacher_weights, reference, workdir, seed):
    """The write stops half-way through the temporary file: the previous checkpoint stays."""
    kill_at = random.Random(seed).randrange(1, EPOCHS + 1)  # which checkpoint, 1 = the first
    checkpoint = workdir / "cut/state/checkpoint.pt"
    save, calls, before = torch.save, [], {}

    def torn_save(obj, f, *args, **kwargs):
        if "checkpoint.pt" in str(f):  # an epoch's checkpoint, not the run's start state
            calls.append(f)
        if len(calls) < kill_at or "checkpoint.pt" not in str(f):
            return save(obj, f, *args, **kwargs)
        before["bytes"] = checkpoint.read_bytes() if checkpoint.exists() else None
        save(obj, f, *args, **kwargs)
        Path(f).write_bytes(Path(f).read_bytes()[: Path(f).stat().st_size // 2])
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(torch, "save", torn_save)
        start("dafl", tiny_teacher_weights, workdir / "cut")
    assert (checkpoint.read_bytes() if checkpoint.exists() else None) == before["bytes"]
    assert not list((workdir / "cut").rglob(f"*{TEMPORARY_SUFFIX}"))
    resume("dafl", workdir / "cut")
    assert_same_run(workdir / "cut", reference("dafl"))


_SIGKILL_MID_CHECKPOINT = """
import os, shutil, signal, sys
from pathlib import Path
import dfkd_plugin_dafl, torch
from dfkd.testing import make_plugins, tiny_run_config
from dfkd.training.datafree import run_datafree

weights, out, kill_at, options = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
save, calls = torch.save, []


def torn_save(obj, f, *args, **kwargs):
    save(obj, f, *args, **kwargs)
    if "checkpoint.pt" not in str(f):
        return  # the run's start state, not an epoch's checkpoint
    calls.append(f)
    if len(calls) == kill_at:  # half of the temporary file is on disk: the process dies now
        shutil.copy(out / "state/checkpoint.pt", out.parent / "before.pt")
        Path(f).write_bytes(Path(f).read_bytes()[: Path(f).stat().st_size // 2])
        os.kill(os.getpid(), signal.SIGKILL)


torch.save = torn_save
cfg = tiny_run_config("dafl", "lenet5", weights, out, options)
run_datafree(cfg, plugins=make_plugins((dfkd_plugin_dafl, "dfkd-plugin-dafl")))
"""


@pytest.mark.slow
def test_sigkilled_mid_checkpoint_write_leaves_a_temporary_the_resume_removes(
    tiny_teacher_weights, reference, workdir
):
    """A killed process runs no cleanup: its half-written temporary stays until the resume."""
    kill_at = random.Random(3).randrange(2, EPOCHS + 1)  # after a first good checkpoint
    script = workdir / "kill.py"
    script.write_text(_SIGKILL_MID_CHECKPOINT)
    options = [f"epochs={EPOCHS}", *METHODS["dafl"][2]]
    args = [str(tiny_teacher_weights["lenet5"]), str(workdir / "cut"), str(kill_at), *options]
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    state = workdir / "cut/state"
    assert len(list(state.glob(f".checkpoint.pt.*{TEMPORARY_SUFFIX}"))) == 1
    assert (state / "checkpoint.pt").read_bytes() == (workdir / "before.pt").read_bytes()
    resume("dafl", workdir / "cut")
    assert_same_run(workdir / "cut", reference("dafl"))


def start_and_kill_before_checkpoint(weights: dict[str, Path], out: Path, epoch: int) -> None:
    """The process dies after epoch ``epoch``'s metrics row and weights, before its checkpoint."""
    checkpoint = Loop._checkpoint

    def die_first(self, job, epochs_done, best):
        if epochs_done == epoch:
            raise KeyboardInterrupt
        checkpoint(self, job, epochs_done, best)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Loop, "_checkpoint", die_first)
        start("dafl", weights, out)


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_after_the_metrics_append_before_the_checkpoint(
    tiny_teacher_weights, reference, workdir, seed
):
    epoch = random.Random(seed).randrange(2, EPOCHS + 1)
    start_and_kill_before_checkpoint(tiny_teacher_weights, workdir / "cut", epoch)
    rows = (workdir / "cut/metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, epoch + 1))  # one row ahead
    resume("dafl", workdir / "cut")
    assert_same_run(workdir / "cut", reference("dafl"))


def test_killed_before_the_first_checkpoint_starts_over(tiny_teacher_weights, reference, workdir):
    start_and_kill_before_checkpoint(tiny_teacher_weights, workdir / "cut", 1)
    assert not (workdir / "cut/state/checkpoint.pt").exists()
    assert len((workdir / "cut/metrics.jsonl").read_text().splitlines()) == 1
    resume("dafl", workdir / "cut")  # starts over; the row of the lost epoch is not kept twice
    assert_same_run(workdir / "cut", reference("dafl"))


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_mid_pool_chunk(tiny_teacher_weights, reference, workdir, seed):
    """The pool's chunk write dies half-way; the resume drops chunks newer than its checkpoint
    and writes the same ones again."""
    import dfkd.synthesis.pool as pool

    rounds = EPOCHS * STEPS // 2
    kill_at = random.Random(seed).randrange(1, rounds + 1)
    save, calls = pool.save_file, []

    def torn_save(tensors, filename, *args, **kwargs):
        calls.append(filename)
        save(tensors, filename, *args, **kwargs)
        if len(calls) == kill_at:
            Path(filename).write_bytes(Path(filename).read_bytes()[:100])
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(pool, "save_file", torn_save)
        start("deepinv", tiny_teacher_weights, workdir / "cut")
    assert len(list((workdir / "cut/images").glob("images-*.safetensors"))) == kill_at - 1
    resume("deepinv", workdir / "cut")
    assert_same_run(workdir / "cut", reference("deepinv"))


@pytest.mark.parametrize("seed", SEEDS)
def test_a_torn_last_metrics_line(tiny_teacher_weights, reference, workdir, seed):
    """Killed while appending: the row is cut anywhere, even one byte short of its newline."""
    rng = random.Random(seed)
    epoch = rng.randrange(1, EPOCHS)
    with pytest.raises(KeyboardInterrupt):
        start("dafl", tiny_teacher_weights, workdir / "cut", KillAfterEpoch(epoch))
    metrics = workdir / "cut/metrics.jsonl"
    row = json.dumps({"epoch": epoch + 1, "loss": 0.25, "top1": 12.5}, sort_keys=True) + "\n"
    metrics.write_text(metrics.read_text() + row[: rng.randrange(1, len(row))])
    resume("dafl", workdir / "cut")
    assert_same_run(workdir / "cut", reference("dafl"))


_TWO_PROCESSES_KILLED_MID_EPOCH = """
import json, sys
import dfkd_plugin_dafl
from dfkd.testing import make_plugins, tiny_run_config
from dfkd.training.datafree import DataFreeJob, run_datafree

weights, kill_step, options = sys.argv[1], int(sys.argv[2]), sys.argv[3:]


def plugins():
    return make_plugins((dfkd_plugin_dafl, "dfkd-plugin-dafl"))


def config(out):
    return tiny_run_config("dafl", "lenet5", weights, out, options)


run_datafree(config("whole"), plugins=plugins())
train_step = DataFreeJob.train_step


def die_mid_epoch_2(self, epoch, step):
    if (epoch, step) == (1, kill_step):
        raise KeyboardInterrupt  # on every process at the same step: a kill of the whole run
    return train_step(self, epoch, step)


DataFreeJob.train_step = die_mid_epoch_2
try:
    run_datafree(config("cut"), plugins=plugins())
except KeyboardInterrupt:
    pass
DataFreeJob.train_step = train_step
run_datafree(None, resume="cut", plugins=plugins())
"""


@pytest.mark.slow
def test_two_processes_killed_mid_epoch_resume_bit_identical(tiny_teacher_weights, workdir):
    kill_step = random.Random(4).randrange(STEPS)
    script = workdir / "two.py"
    script.write_text(_TWO_PROCESSES_KILLED_MID_EPOCH)
    options = [f"epochs={EPOCHS}", *METHODS["dafl"][2]]
    run_two_processes(script, str(tiny_teacher_weights["lenet5"]), str(kill_step), *options)
    whole, cut = workdir / "whole", workdir / "cut"
    assert_same_run(cut, whole)
    for process in (0, 1):
        assert_same_state(
            checkpoint_objects(whole, process),
            checkpoint_objects(cut, process),
            f"process {process}",
        )
    assert torch.load(whole / "state/checkpoint.pt", weights_only=True)["num_processes"] == 2


# A full disk: a real ENOSPC from a small tmpfs (needs root and mount; CI runs as root)


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        gc.collect()  # torch's writer of the failed save keeps its file open until collected
        subprocess.run(["umount", "--lazy", str(disk)], check=True)


@pytest.fixture
def plugins():
    """The `cli` fixture's plugin set: the test plugins and DAFL."""
    return plugins_for("dafl")


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_good_one(
    cli, tiny_teacher_weights, small_disk, monkeypatch
):
    run = small_disk / "run"
    kept: dict[str, bytes] = {}
    checkpoint = Loop._checkpoint

    def fill_the_disk_first(self, job, epochs_done, best):
        if epochs_done == 2 and not kept:  # once: the resume finds room
            kept["checkpoint"] = (run / "state/checkpoint.pt").read_bytes()
            with open(small_disk / "filler", "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        checkpoint(self, job, epochs_done, best)

    monkeypatch.setattr(Loop, "_checkpoint", fill_the_disk_first)
    options = [a for o in METHODS["dafl"][2] for a in ("-o", o)]
    done = cli(
        "run", "dafl", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny",
        "--teacher-weights", tiny_teacher_weights["lenet5"], "--epochs", "3", *options,
        "--out", run, "--quiet",
    )  # fmt: skip
    assert done.exit_code == 1, done.output
    assert done.output.strip().count("\n") == 0, done.output
    assert f"Could not write {run}/state/checkpoint.pt: the disk holding {run}/state is full (" in (
        done.output
    )
    assert "the previous checkpoint.pt is intact" in done.output
    assert f"continue the run with --resume {run}." in done.output
    assert (run / "state/checkpoint.pt").read_bytes() == kept["checkpoint"]
    assert not list(run.rglob(f"*{TEMPORARY_SUFFIX}"))
    (small_disk / "filler").unlink()
    gc.collect()  # the failed save's file is only closed, and its space freed, when collected
    resumed = cli("run", "--resume", run, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()] == [1, 2, 3]
