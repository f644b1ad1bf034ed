"""One session for every job: the run directory it owns, what it records, and what it cleans up
when the set-up fails."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dfkd.errors import UsageError
from dfkd.options import option
from dfkd.synthesis.base import SynthesisResult, Synthesizer
from dfkd.synthesis.options import DataFreeOptions
from dfkd.testing import make_plugins, method_plugin
from dfkd.training.datafree import RunConfig, run_datafree
from dfkd.training.loop import SilentReporter
from dfkd.training.runs import create_run
from dfkd.training.session import open_session
from dfkd.training.tasks import TASKS, task_of


@dataclass
class PickyOptions(DataFreeOptions):
    refuse: int = option(
        0,
        "1: the synthesizer refuses the teacher, as a method that needs "
        "BatchNorm refuses a teacher without it.",
    )


class PickySynthesizer(Synthesizer):
    """A synthesizer whose check of the teacher fails when asked to, after the run directory
    was made (as every method's own checks do)."""

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        if options.refuse:
            raise UsageError("picky needs a teacher with BatchNorm layers.")

    def synthesize(self):
        shape = (
            self.options.syn_batch,
            self.ctx.channels,
            self.ctx.image_size,
            self.ctx.image_size,
        )
        self.images = self.ctx.normalize(torch.rand(shape))
        return SynthesisResult(self.images, {})

    def sample(self):
        return self.images.to(self.ctx.device)


@pytest.fixture
def plugins():
    """The `cli` fixture's plugin set."""
    tiny = {"epochs": 2, "ep_steps": 2, "kd_steps": 2, "batch_size": 8}
    info = {"options": PickyOptions, "presets": {"tiny": tiny}}
    return make_plugins(method_plugin("picky", PickySynthesizer, "checks the teacher", **info))


def picky(weights: Path, *options: str) -> tuple[str, ...]:
    args = ("run", "picky", "--teacher-weights", str(weights), "--student", "lenet5_half")
    args += ("--dataset", "tiny", "--preset", "tiny", "--val-size", "10", "--val-steps", "1")
    return (*args, *sum((("-o", o) for o in options), ()), "--out", "runs/p", "-q")


def test_a_check_that_fails_before_the_first_epoch_leaves_no_run_behind(
    cli, workdir, tiny_teacher_weights
):
    done = cli(*picky(tiny_teacher_weights["lenet5"], "refuse=1"))
    assert done.exit_code == 2, done.output
    assert done.output.strip() == "Error: picky needs a teacher with BatchNorm layers."
    assert not (workdir / "runs/p").exists()
    corrected = cli(*picky(tiny_teacher_weights["lenet5"]))  # no --overwrite needed
    assert corrected.exit_code == 0, corrected.output
    assert (workdir / "runs/p/student.safetensors").exists()


class StopAfterFirstEpoch(SilentReporter):
    def epoch_end(self, row):
        raise KeyboardInterrupt


def picky_config(weights: Path, *overrides: str) -> RunConfig:
    return RunConfig(
        method="picky",
        teacher="lenet5",
        student="lenet5_half",
        dataset="tiny",
        preset="tiny",
        teacher_weights=str(weights),
        out="runs/p",
        overrides=list(overrides),
        val_size=10,
        val_steps=1,
    )


def test_a_run_that_trained_or_was_resumed_is_kept_whatever_fails(
    plugins, workdir, tiny_teacher_weights
):
    with pytest.raises(KeyboardInterrupt):
        run_datafree(
            picky_config(tiny_teacher_weights["lenet5"]),
            plugins=plugins,
            reporter=StopAfterFirstEpoch(),
        )
    checkpoint = workdir / "runs/p/state/checkpoint.pt"
    assert checkpoint.exists()  # the epoch trained stays
    config = workdir / "runs/p/config.json"
    recorded = json.loads(config.read_text())
    recorded["options"]["resolved_options"]["refuse"] = 1  # the resume's set-up now fails
    config.write_text(json.dumps(recorded))
    with pytest.raises(UsageError, match="BatchNorm"):
        run_datafree(None, resume="runs/p", plugins=plugins)
    assert checkpoint.exists() and config.exists()


def test_the_run_is_locked_from_the_session_s_start_to_its_end(workdir):
    with open_session("scratch", {}, model="lenet5", dataset="tiny", out="runs/s") as session:
        assert json.loads((workdir / "runs/s/config.json").read_text())["command"] == "scratch"
        with pytest.raises(UsageError, match="Run runs/s is in use by process"):
            create_run(Path("runs/s"), overwrite=True)
        session.start()
    assert not (workdir / "runs/s/.lock.pid").exists()  # released, and names no holder
    create_run(Path("runs/s"), overwrite=True)


def test_a_session_records_the_teacher_s_fingerprint(workdir, tiny_teacher_weights):
    weights = tiny_teacher_weights["lenet5"]
    with open_session(
        "kd", {"lr": 0.1}, model="lenet5_half", dataset="tiny", out="runs/k", teacher=weights
    ) as session:
        session.record(validation_set="v1")
        session.start()
    config = json.loads((workdir / "runs/k/config.json").read_text())
    assert config["options"] == {"lr": 0.1} and config["validation_set"] == "v1"
    assert len(config["teacher_sha256"]) == 64 and "dfkd" in config["versions"]


@pytest.mark.parametrize(
    "command",
    [
        ("scratch", "--model", "lenet5"),
        ("kd", "--teacher", "lenet5", "--student", "lenet5_half"),
    ],
)
def test_a_bad_augment_is_refused_before_a_run_exists(cli, workdir, command):
    done = cli(*command, "--dataset", "tiny", "--augment", "mirror", "--out", "runs/a")
    assert done.exit_code == 2
    assert "--augment must be auto, crop-flip or none, not 'mirror'." in done.output
    assert not (workdir / "runs").exists()


def test_every_task_is_an_object_and_an_unknown_one_is_one_line():
    assert {name: task.metric for name, task in TASKS.items()} == {
        "classification": "top1",
        "segmentation": "miou",
    }
    with pytest.raises(UsageError, match="^Unknown task 'depth'; dfkd trains classification"):
        task_of("depth")
