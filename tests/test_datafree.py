"""The shared data-free loop, with a toy synthesizer: run directory, resume, kept images."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dfkd import hookimpl
from dfkd.errors import UsageError
from dfkd.options import option
from dfkd.synthesis.base import SynthesisResult, Synthesizer
from dfkd.synthesis.options import DataFreeOptions
from dfkd.testing import checkpoint_objects, make_plugins
from dfkd.training.datafree import RunConfig, run_datafree
from dfkd.training.loop import SilentReporter
from dfkd.training.runs import RunDir


@dataclass
class NoiseOptions(DataFreeOptions):
    brightness: float = option(0.5, "Mean of the noise images.")


class NoiseSynthesizer(Synthesizer):
    """Noise images; a counter stands in for the state a real method keeps."""

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        self.rounds = 0

    def synthesize(self):
        self.rounds += 1
        shape = (
            self.options.syn_batch,
            self.ctx.channels,
            self.ctx.image_size,
            self.ctx.image_size,
        )
        self.images = (torch.rand(shape) * self.options.brightness * 2).clamp(0, 1)
        return SynthesisResult(self.images, {"loss_g": self.rounds})

    def sample(self):
        return self.ctx.normalize(self.images).to(self.ctx.device)

    def state_dict(self):
        return {"rounds": self.rounds, "images": self.images}

    def load_state_dict(self, state):
        self.rounds, self.images = state["rounds"], state["images"]


class NoisePlugin:
    @hookimpl
    def register_methods(self, register):
        register(
            "noise",
            NoiseSynthesizer,
            "noise for tests",
            options=NoiseOptions,
            presets={"tiny": {"epochs": 2, "ep_steps": 4, "kd_steps": 2, "batch_size": 8}},
        )


def noise_config(tiny_teacher_weights, **overrides) -> RunConfig:
    values = dict(
        method="noise",
        teacher="lenet5",
        student="lenet5_half",
        dataset="tiny",
        preset="tiny",
        teacher_weights=str(tiny_teacher_weights["lenet5"]),
        out="runs/n",
    )
    return RunConfig(**(values | overrides))


@pytest.fixture
def noise_plugins():
    return make_plugins((NoisePlugin(), "dfkd-plugin-noise"))


class Recorder(SilentReporter):
    def __init__(self, stop_after: int | None = None):
        self.rows, self.stop_after = [], stop_after

    def epoch_end(self, row):
        self.rows.append(row)
        if row["epoch"] == self.stop_after:
            raise KeyboardInterrupt


def test_a_run_writes_everything(noise_plugins, workdir, tiny_teacher_weights):
    reporter = Recorder()
    outcome = run_datafree(
        noise_config(tiny_teacher_weights), plugins=noise_plugins, reporter=reporter
    )
    run = workdir / "runs/n"
    for name in (
        "config.json",
        "metrics.jsonl",
        "student.safetensors",
        "student.json",
        "samples.png",
        "state/checkpoint.pt",
    ):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["command"] == "run" and config["options"]["method"] == "noise"
    assert config["options"]["resolved_options"]["kd_steps"] == 2
    assert "dfkd-plugin-noise" in config["versions"]
    assert [r["epoch"] for r in outcome.metrics] == [1, 2]
    # 4 student steps per epoch, a synthesis every 2: loss_g is the mean over the 2 rounds
    assert outcome.metrics[0]["loss_g"] == pytest.approx((1 + 2) / 2)
    assert reporter.rows[-1]["images"].shape == (8, 1, 32, 32)  # the teacher's 32 px
    assert not (run / "images").exists()


def test_overrides_beat_the_preset_and_the_epochs_shortcut(
    noise_plugins, workdir, tiny_teacher_weights
):
    cfg = noise_config(tiny_teacher_weights, overrides=["epochs=1", "brightness=0.1"])
    outcome = run_datafree(cfg, plugins=noise_plugins)
    resolved = json.loads((workdir / "runs/n/config.json").read_text())["options"]
    assert resolved["resolved_options"]["brightness"] == 0.1 and len(outcome.metrics) == 1


def test_resume_restores_the_synthesizer_and_matches(noise_plugins, workdir, tiny_teacher_weights):
    whole = run_datafree(
        noise_config(tiny_teacher_weights, out="runs/whole"), plugins=noise_plugins
    )
    with pytest.raises(KeyboardInterrupt):
        run_datafree(
            noise_config(tiny_teacher_weights, out="runs/cut"),
            plugins=noise_plugins,
            reporter=Recorder(stop_after=1),
        )
    resumed = run_datafree(None, resume="runs/cut", plugins=noise_plugins)
    a, b = load_file(whole.weights), load_file(resumed.weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = checkpoint_objects(workdir / "runs/cut")
    assert state["synthesizer"]["rounds"] == 4
    assert state["counters"]["global_step"] == 8


def test_a_run_in_use_is_not_resumed_or_overwritten(noise_plugins, workdir, tiny_teacher_weights):
    run_datafree(noise_config(tiny_teacher_weights, overrides=["epochs=1"]), plugins=noise_plugins)
    before = (workdir / "runs/n/metrics.jsonl").read_text()
    busy = f"Run runs/n is in use by process {os.getpid()}"
    with RunDir(Path("runs/n")).lock():
        with pytest.raises(UsageError, match=busy):
            run_datafree(None, resume="runs/n", plugins=noise_plugins)
        with pytest.raises(UsageError, match=busy):
            run_datafree(noise_config(tiny_teacher_weights, overwrite=True), plugins=noise_plugins)
    assert (workdir / "runs/n/metrics.jsonl").read_text() == before


def test_keep_images_makes_a_transfer_set(noise_plugins, workdir, tiny_teacher_weights):
    outcome = run_datafree(
        noise_config(tiny_teacher_weights, keep_images=True), plugins=noise_plugins
    )
    assert outcome.extras["images"] == Path("runs/n/images")
    from dfkd.data import open_dataset

    images, labels = open_dataset("folder:runs/n/images", plugins=noise_plugins).load("train")
    assert images.shape == (4 * 8, 1, 32, 32) and labels is None
    from dfkd.training.supervised import KDConfig, train_kd

    kd = train_kd(
        KDConfig(
            dataset="tiny",
            teacher="lenet5",
            student="lenet5_half",
            epochs=1,
            batch_size=8,
            transfer_set="folder:runs/n/images",
            out="runs/kd",
            teacher_weights=str(tiny_teacher_weights["lenet5"]),
        ),
        plugins=noise_plugins,
    )
    assert kd.last["epoch"] == 1


def test_warmup_epochs_only_synthesize(noise_plugins, workdir, tiny_teacher_weights):
    cfg = noise_config(tiny_teacher_weights, overrides=["warmup=1"])
    outcome = run_datafree(cfg, plugins=noise_plugins)
    first, second = outcome.metrics
    assert "kl" not in first and first["loss"] == pytest.approx((1 + 2) / 2)
    before = torch.load(workdir / "runs/n/state/checkpoint.pt", weights_only=True)
    assert before["objects"]["counters"]["global_step"] == 4  # only the second epoch trained


@pytest.mark.parametrize(
    ("overrides", "lrs"),
    [
        ([], [0.05, 0.0]),
        (["schedule=constant"], [0.1, 0.1]),
        (["schedule=multistep", "milestones=1"], [0.01, 0.01]),
    ],
)
def test_the_students_schedule_is_an_option(
    noise_plugins, workdir, tiny_teacher_weights, overrides, lrs
):
    outcome = run_datafree(
        noise_config(tiny_teacher_weights, overrides=overrides), plugins=noise_plugins
    )
    assert [row["lr"] for row in outcome.metrics] == pytest.approx(lrs)


def test_adam_reaches_the_students_steps(noise_plugins, workdir, tiny_teacher_weights):
    cfg = noise_config(tiny_teacher_weights, overrides=["optimizer=adam"])
    run_datafree(cfg, plugins=noise_plugins)
    state = torch.load(workdir / "runs/n/state/checkpoint.pt", weights_only=True)
    assert "exp_avg_sq" in state["objects"]["optimizer"]["state"][0]  # Adam's, not SGD's


def _epoch_two_displacement(plugins, weights, out: str, grad_clip: float, lr: float) -> float:
    """How far epoch 2's four student steps move the student's parameters, with plain SGD (no
    momentum, no decay, a constant rate) so that each step moves them by lr × its gradient."""
    overrides = ["momentum=0", "weight_decay=0", "schedule=constant", f"lr={lr}"]
    cfg = noise_config(weights, out=out, overrides=[*overrides, f"grad_clip={grad_clip}"])
    with pytest.raises(KeyboardInterrupt):
        run_datafree(cfg, plugins=plugins, reporter=Recorder(stop_after=1))
    before = checkpoint_objects(Path(out))["student"]
    after = load_file(run_datafree(None, resume=out, plugins=plugins).weights)
    learned = [k for k in after if not k.endswith(("running_mean", "running_var", "_tracked"))]
    return torch.cat([(after[k] - before[k]).flatten() for k in learned]).norm().item()


def test_gradient_clipping_bounds_every_student_step(noise_plugins, workdir, tiny_teacher_weights):
    """The effect, not the call: a step clipped at norm c moves the student by at most lr × c,
    however large the gradient, and the same steps unclipped move it much further."""
    clip, lr, steps = 1e-3, 0.5, 4
    clipped = _epoch_two_displacement(noise_plugins, tiny_teacher_weights, "runs/c", clip, lr)
    free = _epoch_two_displacement(noise_plugins, tiny_teacher_weights, "runs/f", 0, lr)
    assert 0 < clipped <= steps * lr * clip * (1 + 1e-4)
    assert free > 10 * steps * lr * clip


def test_each_epoch_logs_the_student_s_gradient_norm_before_clipping(
    noise_plugins, workdir, tiny_teacher_weights
):
    """The logged norm is the step's: unclipped, four plain SGD steps move the student by at
    most lr × the sum of their norms; clipped, the norm logged is the one before the clip."""
    clip, lr, steps = 1e-3, 0.5, 4
    free = _epoch_two_displacement(noise_plugins, tiny_teacher_weights, "runs/f", 0, lr)
    _epoch_two_displacement(noise_plugins, tiny_teacher_weights, "runs/c", clip, lr)
    for run in ("f", "c"):
        rows = RunDir(workdir / "runs" / run).read_metrics()
        assert all(0 < r["grad_norm"] <= r["grad_norm_max"] for r in rows)
    free_row, clipped_row = (RunDir(workdir / f"runs/{r}").read_metrics()[1] for r in "fc")
    assert free <= steps * lr * free_row["grad_norm"] * (1 + 1e-4)
    assert clipped_row["grad_norm"] > 10 * clip


def test_cli_run_prints_where_the_samples_are(workdir, tiny_teacher_weights):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    app = make_app(make_plugins((NoisePlugin(), "dfkd-plugin-noise")))
    done = CliRunner().invoke(
        app,
        [
            "run",
            "noise",
            "--teacher",
            "lenet5",
            "--student",
            "lenet5_half",
            "--dataset",
            "tiny",
            "--preset",
            "tiny",
            "--teacher-weights",
            str(tiny_teacher_weights["lenet5"]),
            "--epochs",
            "1",
            "--out",
            "runs/cli",
            "--keep-images",
        ],
    )
    assert done.exit_code == 0, done.output
    assert "samples: runs/cli/samples.png" in done.output
    assert "dfkd kd --transfer-set folder:runs/cli/images" in done.output


def test_resume_keeps_the_recorded_options_when_the_plugin_changed(
    noise_plugins, workdir, tiny_teacher_weights, monkeypatch
):
    """A plugin upgraded between a crash and the resume: the run goes on with what it recorded,
    and a changed option set is refused in one line."""
    with pytest.raises(KeyboardInterrupt):
        run_datafree(
            noise_config(tiny_teacher_weights, out="runs/cut"),
            plugins=noise_plugins,
            reporter=Recorder(stop_after=1),
        )
    monkeypatch.setattr(NoiseOptions, "__init__", _defaults_changed(NoiseOptions.__init__))
    resumed = run_datafree(None, resume="runs/cut", plugins=noise_plugins)
    assert resumed.last["epoch"] == 2
    assert [row["lr"] for row in resumed.metrics] == pytest.approx([0.05, 0.0])

    @dataclass
    class Upgraded(NoiseOptions):
        contrast: float = option(1.0, "A new option.")

    class UpgradedPlugin:
        @hookimpl
        def register_methods(self, register):
            register("noise", NoiseSynthesizer, "noise", options=Upgraded)

    with pytest.raises(UsageError, match="differs in: contrast"):
        run_datafree(
            None, resume="runs/cut", plugins=make_plugins((UpgradedPlugin(), "dfkd-plugin-noise"))
        )


def _defaults_changed(init):
    """An options class whose defaults moved: a resume that rebuilt its options would diverge."""

    def changed(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "lr": 7.0} if "lr" not in kwargs else kwargs)

    return changed


def test_auto_precision_is_measured_once_and_recorded(
    noise_plugins, workdir, tiny_teacher_weights, monkeypatch
):
    import dfkd.training.datafree as datafree

    calls = []

    def fake(requested, workload, cpu=False):
        calls.append(requested)
        return "no", {"requested": requested, "chosen": "no", "seconds": {"no": 1.0, "bf16": 2.0}}

    monkeypatch.setattr(datafree, "resolve_precision", fake)
    with pytest.raises(KeyboardInterrupt):
        run_datafree(
            noise_config(tiny_teacher_weights, mixed_precision="auto"),
            plugins=noise_plugins,
            reporter=Recorder(stop_after=1),
        )
    recorded = json.loads((workdir / "runs/n/config.json").read_text())["options"]
    assert recorded["precision"]["chosen"] == "no" and recorded["mixed_precision"] == "auto"
    run_datafree(None, resume="runs/n", plugins=noise_plugins)
    assert calls == ["auto"]  # the resume reused the measured choice
