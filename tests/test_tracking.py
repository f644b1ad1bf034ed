"""`--log-with`: the training commands log each epoch to accelerate's trackers, and only then."""

from __future__ import annotations

import json
from pathlib import Path

import dfkd_plugin_dafl
import pytest
from typer.testing import CliRunner

from dfkd.cli import make_app
from dfkd.testing import make_plugins


def _events(run_dir: Path):
    events = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    accumulator = events.EventAccumulator(str(run_dir / "dfkd"))
    accumulator.Reload()
    return accumulator


@pytest.fixture
def dafl_cli(workdir):
    app = make_app(make_plugins((dfkd_plugin_dafl, "dfkd-plugin-dafl")))
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def test_scratch_logs_top1_per_epoch_to_tensorboard(cli, workdir):
    pytest.importorskip("tensorboard")
    done = cli(
        "scratch", "--model", "lenet5", "--dataset", "tiny", "--epochs", "2", "--batch-size",
        "64", "--out", "teacher", "--log-with", "tensorboard", "-q",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    top1 = _events(workdir / "teacher").Scalars("top1")
    assert [e.step for e in top1] == [1, 2]
    metrics = (workdir / "teacher" / "metrics.jsonl").read_text().splitlines()
    assert [round(e.value, 3) for e in top1] == [
        round(json.loads(line)["top1"], 3) for line in metrics
    ]


def test_run_logs_scalars_and_the_sample_grid(dafl_cli, workdir, tiny_teacher_weights):
    pytest.importorskip("tensorboard")
    done = dafl_cli(
        "run", "dafl", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny",
        "--teacher-weights", tiny_teacher_weights["lenet5"], "-o", "epochs=2", "-o", "ep_steps=2",
        "-o", "kd_steps=1", "-o", "batch_size=8", "-o", "nz=8", "-o", "ngf=4",
        "--out", "student", "--log-with", "tensorboard", "-q",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    events = _events(workdir / "student")
    assert [e.step for e in events.Scalars("top1")] == [1, 2]
    assert [e.step for e in events.Scalars("seconds_synthesis")] == [1, 2]
    assert [e.step for e in events.Images("samples")] == [1, 2]


def test_nothing_is_logged_unless_asked(cli, workdir):
    done = cli(
        "scratch", "--model", "lenet5", "--dataset", "tiny", "--epochs", "1", "--out", "quiet",
        "-q",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert not (workdir / "quiet" / "dfkd").exists()


def test_a_tracker_without_its_package_is_one_line_before_the_run_exists(cli, workdir, monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    done = cli(
        "scratch", "--model", "lenet5", "--dataset", "tiny", "--epochs", "1", "--out", "r",
        "--log-with", "tensorboard",
    )  # fmt: skip
    assert done.exit_code == 2
    assert "pip install tensorboard" in done.output
    assert len(done.output.strip().splitlines()) == 1
    assert not (workdir / "r").exists()
    unknown = cli("scratch", "--model", "lenet5", "--dataset", "tiny", "--log-with", "tensorbored")
    assert unknown.exit_code == 2
    assert "Unknown tracker 'tensorbored'" in unknown.output
