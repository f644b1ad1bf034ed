"""The collapse guard: a forced collapse is rolled back and recovered from, or stops the run in
one line with its last healthy epoch kept; what it did is in metrics.jsonl and survives resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from dfkd.synthesis.base import SynthesisResult, Synthesizer
from dfkd.synthesis.options import DataFreeOptions
from dfkd.testing import checkpoint_objects, make_plugins, make_tiny_images, method_plugin
from dfkd.training.datafree import RunConfig, run_datafree
from dfkd.training.guard import Collapsed, CollapseGuard, RunCollapsed
from dfkd.training.loop import SilentReporter


class CollapsingSynthesizer(Synthesizer):
    """The tiny dataset's kind of images (a healthy student learns from them); on the epochs
    listed in ``POISONED`` the student's loss drives it to answer class 0 for everything, once
    per listed epoch (a rollback's retry is healthy) or, with ``ALWAYS``, every time. The poison
    is bookkeeping of the test, not the synthesizer's state, so a rollback does not undo it."""

    POISONED: list[int] = []
    ALWAYS = False

    def synthesize(self):
        images, _ = make_tiny_images(self.options.syn_batch, seed=int(torch.randint(1000, ())))
        self.images = F.interpolate(images.float() / 255, size=self.ctx.image_size)
        return SynthesisResult(self.images, {})

    def sample(self):
        return self.ctx.normalize(self.images).to(self.ctx.device)

    def student_loss(self, s_logits, t_logits, step):
        epoch = step // 40 + 1  # the tiny preset's 40 student steps an epoch
        if epoch in self.POISONED:
            return 100 * F.cross_entropy(s_logits, torch.zeros_like(s_logits[:, 0]).long()), {}
        return super().student_loss(s_logits, t_logits, step)

    def end_epoch(self, epoch):
        if not self.ALWAYS and epoch + 1 in self.POISONED:
            self.POISONED.remove(epoch + 1)
        return {}


@pytest.fixture
def collapsing(monkeypatch):
    monkeypatch.setattr(CollapsingSynthesizer, "POISONED", [])
    monkeypatch.setattr(CollapsingSynthesizer, "ALWAYS", False)
    tiny = {"epochs": 3, "ep_steps": 40, "kd_steps": 2, "batch_size": 32}
    return make_plugins(
        method_plugin(
            "collapse",
            CollapsingSynthesizer,
            "a student forced to collapse",
            options=DataFreeOptions,
            presets={"tiny": tiny},
        )
    )


class Interrupt(SilentReporter):
    def __init__(self, after: int):
        self.after = after

    def epoch_end(self, row):
        if row["epoch"] == self.after:
            raise KeyboardInterrupt


def _config(weights, out: str) -> RunConfig:
    return RunConfig(
        method="collapse",
        teacher="lenet5",
        student="lenet5_half",
        preset="tiny",
        teacher_weights=str(weights["lenet5"]),  # no dataset: teacher-only, as users run it
        out=out,
    )


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_collapsed_epoch_is_rolled_back_and_run_again_slower(
    collapsing, workdir, tiny_teacher_weights
):
    plain = run_datafree(_config(tiny_teacher_weights, "runs/plain"), plugins=collapsing)
    CollapsingSynthesizer.POISONED[:] = [2]
    guarded = run_datafree(_config(tiny_teacher_weights, "runs/g"), plugins=collapsing)
    rows = _rows(workdir / "runs/g")
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # the collapsed try left no row
    assert "guard" not in rows[0]
    [event] = rows[1]["guard"]
    assert event.startswith("epoch 2: the student answered one class for 100 % of the validation")
    assert event.endswith(
        "rolled back to epoch 1, student learning rate x0.5 of its schedule, gradient norm "
        "clipped at 5"
    )
    assert guarded.guard_events == [event]
    assert rows[1]["guard_rollbacks"] == 1 and "guard" not in rows[2]
    assert all(r["val_top_class"] < 90 for r in rows)  # no kept epoch is collapsed
    assert rows[2]["lr"] == pytest.approx(plain.metrics[2]["lr"] * 0.5)
    untimed = [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rows]
    assert untimed[0] == {k: v for k, v in plain.metrics[0].items() if not k.startswith("seconds")}
    counters = checkpoint_objects(workdir / "runs/g")["counters"]
    assert counters["guard_level"] == 1 and counters["grad_clip"] == 5.0
    assert guarded.last["val_top_class"] < 90


def test_a_run_rolled_back_resumes_exactly(collapsing, workdir, tiny_teacher_weights):
    CollapsingSynthesizer.POISONED[:] = [2]
    whole = run_datafree(_config(tiny_teacher_weights, "runs/whole"), plugins=collapsing)
    CollapsingSynthesizer.POISONED[:] = [2]
    with pytest.raises(KeyboardInterrupt):
        run_datafree(
            _config(tiny_teacher_weights, "runs/cut"), plugins=collapsing, reporter=Interrupt(2)
        )
    resumed = run_datafree(None, resume="runs/cut", plugins=collapsing)
    a, b = load_file(whole.weights), load_file(resumed.weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(workdir / "runs/cut")[1]["guard"] == _rows(workdir / "runs/whole")[1]["guard"]


def test_a_student_stuck_since_its_start_restarts_the_run_slower(
    collapsing, workdir, tiny_teacher_weights
):
    CollapsingSynthesizer.POISONED[:] = [1, 2, 3, 4, 5]  # dead from its first steps, once
    cfg = _config(tiny_teacher_weights, "runs/g")
    cfg.overrides = ["epochs=6"]  # patience: 5 epochs
    run_datafree(cfg, plugins=collapsing)
    rows = _rows(workdir / "runs/g")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]  # the stuck epochs are gone
    [event] = rows[0]["guard"]
    assert event.startswith("epoch 5: the student still answered one class for ")
    assert "after 5 epochs; restarted the student from its first weights (the synthesizer" in event
    assert "student learning rate x0.5 of its schedule" in event
    assert rows[-1]["val_top_class"] < 90


def test_a_collapse_that_persists_stops_in_one_line_keeping_the_last_healthy_epoch(
    collapsing, workdir, tiny_teacher_weights
):
    CollapsingSynthesizer.POISONED[:] = [3]
    CollapsingSynthesizer.ALWAYS = True
    with pytest.raises(RunCollapsed) as stopped:
        run_datafree(_config(tiny_teacher_weights, "runs/g"), plugins=collapsing)
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith("The run collapsed at epoch 3 (")
    assert "after 3 rollbacks" in message
    assert "runs/g/student.safetensors holds epoch 2's" in message
    assert "-o lr=" in message
    assert [r["epoch"] for r in _rows(workdir / "runs/g")] == [1, 2]
    assert json.loads((workdir / "runs/g/student.json").read_text())["epoch"] == 2


def test_the_cli_says_the_run_collapsed_and_exits_non_zero(
    collapsing, workdir, tiny_teacher_weights
):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    CollapsingSynthesizer.POISONED[:] = [2]
    CollapsingSynthesizer.ALWAYS = True
    weights = str(tiny_teacher_weights["lenet5"])
    done = CliRunner().invoke(
        make_app(collapsing),
        ["run", "collapse", "--teacher", "lenet5", "--student", "lenet5_half", "--preset",
         "tiny", "--teacher-weights", weights, "--out", "runs/cli"],
    )  # fmt: skip
    assert done.exit_code == 1
    assert "collapse guard: epoch 2: " in done.output
    assert "The run collapsed at epoch 2" in done.output and "holds epoch 1's" in done.output
    assert "Traceback" not in done.output


@pytest.mark.parametrize(
    ("row", "verdict"),
    [
        ({"epoch": 2, "val_top_class": 95.0, "val_top_class_teacher": 10.0}, "one class for 95"),
        ({"epoch": 2, "val_top_class": 95.0, "val_top_class_teacher": 80.0}, None),  # teacher too
        (  # a teacher that gives half its low-passed set one class: the student gives it all
            {"epoch": 2, "val_top_class": 100.0, "val_top_class_teacher": 52.0},
            "one class for 100 % of the validation set (the teacher 52 %)",
        ),
        ({"epoch": 2, "val_top_class": 60.0, "val_top_class_teacher": 10.0}, None),
        ({"epoch": 2, "agree": 12.0}, "agreement fell to 12.0 % (chance 10 %) from 60.0 %"),
        ({"epoch": 2, "agree": 15.0}, None),
        ({"epoch": 2, "agree": 40.0}, None),
        (
            {"epoch": 2, "syn_top_class": 97.0},
            "one class for 97 % of the epoch's synthetic samples",
        ),
        ({"epoch": 2, "syn_top_class": 70.0}, None),
    ],
)
def test_the_guard_reads_a_collapse_from_an_epochs_row(row, verdict):
    guard = CollapseGuard(num_classes=10)
    guard.accept({"agree": 60.0, "syn_top_class": 30.0, "val_top_class": 20.0})
    found = guard.diagnose(row)
    assert (found is None) if verdict is None else (verdict in found.reason)
    assert found is None or not found.restart  # a fall goes back one epoch


def test_a_student_or_generator_that_never_learned_is_not_called_collapsed():
    assert CollapseGuard(num_classes=10).diagnose({"epoch": 2, "agree": 11.0}) is None
    assert CollapseGuard(num_classes=10).diagnose({"epoch": 2, "syn_top_class": 100.0}) is None
    one_class = {"epoch": 3, "val_top_class": 100.0, "val_top_class_teacher": 10.0}
    assert CollapseGuard(num_classes=10).diagnose(one_class) is None
    assert CollapseGuard(num_classes=10, patience=4).diagnose(one_class) is None


def test_a_student_still_at_one_class_after_its_patience_is_stuck():
    stuck = {"epoch": 4, "val_top_class": 96.0, "val_top_class_teacher": 10.0}
    found = CollapseGuard(num_classes=10, patience=4).diagnose(stuck)
    assert found.reason == (
        "the student still answered one class for 96 % of the validation set (the teacher 10 %) "
        "after 4 epochs"
    )
    assert found.restart  # every kept epoch is as dead: back to the start
    assert CollapseGuard(num_classes=2).diagnose({"val_top_class": 99.0}) is None


ONE_CLASS_ON_VALIDATION = {"epoch": 6, "val_top_class": 96.0, "val_top_class_teacher": 10.0}


@pytest.mark.parametrize("patience", [None, 4])  # a student that fell, one never seen spread
def test_a_student_spread_on_its_own_samples_is_not_restarted_for_the_validation_set(patience):
    guard = CollapseGuard(num_classes=10, patience=patience)
    if patience is None:
        guard.accept({"val_top_class": 20.0})
    learning = ONE_CLASS_ON_VALIDATION | {"syn_student_top_class": 23.0, "syn_agree": 71.0}
    assert guard.diagnose(learning) is None
    [note] = guard.accept(learning)["guard_notes"]
    assert note.startswith("epoch 6: the student ")
    assert note.endswith(
        "but on the epoch's synthetic samples it put at most 23 % on one class and agreed with "
        "the teacher on 71 % (chance 10 %); the validation set does not read this student, so "
        "the guard did not act (and agreement on it says little about this run)"
    )
    assert "guard" not in guard.accept(learning)  # not a rollback
    assert guard.diagnose(learning | {"epoch": 7}) is None
    assert guard.accept(learning) == {}  # said once a run
    assert guard.state_dict()["overruled"]


@pytest.mark.parametrize(
    "synthetic",
    [
        {"syn_student_top_class": 98.0, "syn_agree": 11.0},  # one class there too
        {"syn_student_top_class": 30.0, "syn_agree": 15.0},  # spread, but at chance
        {},  # a job that does not count its samples' answers
    ],
)
def test_a_student_collapsed_on_its_own_samples_too_is_rolled_back(synthetic):
    guard = CollapseGuard(num_classes=10)
    guard.accept({"val_top_class": 20.0})
    found = guard.diagnose(ONE_CLASS_ON_VALIDATION | synthetic)
    assert found is not None and "one class for 96 % of the validation set" in found.reason
    assert guard.accept({"val_top_class": 20.0}) == {}


def test_a_student_spread_on_its_own_samples_falls_later_not_dead_from_its_start():
    guard = CollapseGuard(num_classes=10, patience=4)
    guard.accept(ONE_CLASS_ON_VALIDATION | {"syn_student_top_class": 30.0, "syn_agree": 60.0})
    fallen = ONE_CLASS_ON_VALIDATION | {"epoch": 8, "syn_student_top_class": 99.0, "syn_agree": 9.0}
    found = guard.diagnose(fallen)
    assert not found.restart  # back one epoch, not to the first weights


def test_each_epoch_records_how_the_student_answers_its_own_samples(
    collapsing, workdir, tiny_teacher_weights, monkeypatch
):
    seen = []
    diagnose = CollapseGuard.diagnose
    monkeypatch.setattr(
        CollapseGuard, "diagnose", lambda g, row: seen.append(row) or diagnose(g, row)
    )
    CollapsingSynthesizer.POISONED[:] = [2]
    CollapsingSynthesizer.ALWAYS = True
    with pytest.raises(RunCollapsed):
        run_datafree(_config(tiny_teacher_weights, "runs/g"), plugins=collapsing)
    healthy, *collapsed = seen
    assert healthy["syn_agree"] > 20 and healthy["syn_top_class"] < 50
    for row in collapsed:  # on its own last batch the poisoned student answers class 0 only
        assert row["syn_student_top_class"] == 100.0
        assert row["syn_agree"] < 20 and row["syn_top_class"] < 50


def test_a_restart_keeps_the_record_of_what_the_guard_did_before_it():
    guard = CollapseGuard(num_classes=10)
    earlier = guard.rolled_back(Collapsed(3, "agreement fell"), 2, "slower")
    assert guard.accept({})["guard"] == [earlier]  # epoch 3's row
    stuck = Collapsed(9, "the student still answered one class", restart=True)
    restart = guard.rolled_back(stuck, 0, "slower still")  # drops every row, epoch 3's too
    assert guard.accept({})["guard"] == [earlier, restart]
    assert guard.accept({}) == {}
    resumed = CollapseGuard(num_classes=10)
    resumed.load_state_dict(guard.state_dict())  # a resume, then another restart
    again = resumed.rolled_back(Collapsed(12, "stuck", restart=True), 0, "slowest")
    assert resumed.accept({})["guard"] == [earlier, restart, again]


class PoisonEpochs(SilentReporter):
    """Makes ``dfkd scratch``'s loss drive the student to class 0 in the listed epochs (1-based),
    each once: a rollback's retry of the epoch is healthy unless ``always``."""

    def __init__(self, epochs: list[int], always: bool = False) -> None:
        self.epochs, self.always, self.poisoned = list(epochs), always, False

    def epoch_start(self, epoch: int, steps: int) -> None:
        self.poisoned = epoch + 1 in self.epochs
        if self.poisoned and not self.always:
            self.epochs.remove(epoch + 1)


@pytest.fixture
def poisonable(monkeypatch):
    from dfkd.training.tasks import Classification

    reporter = PoisonEpochs([])
    honest = Classification.supervised_loss

    def loss(task, logits, y, *args, **kwargs):
        if reporter.poisoned:
            return 100 * F.cross_entropy(logits, torch.zeros_like(y))
        return honest(task, logits, y, *args, **kwargs)

    monkeypatch.setattr(Classification, "supervised_loss", loss)
    return reporter


def _scratch(out: str, epochs: int = 3):
    from dfkd.training.supervised import ScratchConfig

    return ScratchConfig(
        dataset="tiny", model="lenet5_bn", epochs=epochs, batch_size=32, lr=0.05, out=out
    )


def test_a_supervised_student_fallen_onto_one_class_is_rolled_back(poisonable, workdir):
    from dfkd.training.supervised import train_scratch

    plain = train_scratch(_scratch("runs/plain"), reporter=poisonable, plugins=make_plugins())
    poisonable.epochs[:] = [2]
    guarded = train_scratch(_scratch("runs/g"), reporter=poisonable, plugins=make_plugins())
    rows = _rows(workdir / "runs/g")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    [event] = guarded.guard_events
    assert event.startswith(
        "epoch 2: the student answered one class for 100 % of its last training batch (the labels "
    )
    assert event.endswith(
        "rolled back to epoch 1, student learning rate x0.5 of its schedule, gradient norm "
        "clipped at 5"
    )
    assert rows[1]["guard"] == [event]
    assert rows[2]["lr"] == pytest.approx(plain.metrics[2]["lr"] * 0.5)
    assert all(r["batch_top_class"] < 90 for r in rows)
    assert checkpoint_objects(workdir / "runs/g")["guard_counters"]["grad_clip"] == 5.0


def test_the_line_that_stops_a_run_gives_its_commands_advice(tmp_path):
    guard = CollapseGuard(num_classes=10, max_rollbacks=1, advice="Try a lower rate (--lr).")
    collapse = Collapsed(2, "the student answered one class")
    guard.rolled_back(collapse, 1, "slower")
    with pytest.raises(RunCollapsed) as stopped:
        guard.check_tries(collapse, tmp_path, 1)
    assert str(stopped.value).endswith("holds epoch 1's student. Try a lower rate (--lr).")


def test_a_supervised_restart_names_no_synthesizer():
    from dfkd.training.supervised import ScratchConfig, _guard
    from dfkd.training.tasks import Classification

    source = type("Source", (), {"num_classes": 10, "task": Classification.name})()
    guard = _guard(source, ScratchConfig(dataset="tiny", model="lenet5", epochs=10), 234)
    assert guard.patience == 3  # 500 steps of 234 a epoch
    stuck = Collapsed(3, "the student still answered one class", restart=True)
    assert "restarted the student from its first weights, slower" in guard.rolled_back(
        stuck, 0, "slower"
    )


@pytest.mark.parametrize(
    ("row", "classes", "task", "said"),
    [
        ({"agree": 19.0}, 10, "classification", "agrees with the teacher on 19.0 % of the"),
        ({"agree": 31.0}, 5, "classification", "near chance (20 %)"),  # a fifth of the way: 36
        ({"agree": 40.5}, 5, "classification", None),
        ({"agree": 49.0}, 10, "classification", None),  # WRN-16-1's FastDFKD student: 74 %
        (  # agreement from the teacher's own commonest class only
            {"agree": 45.0, "val_top_class": 96.0, "val_top_class_teacher": 45.0},
            10,
            "classification",
            "answers one class for 96 % of the validation set (the teacher 45 %)",
        ),
        ({"agree": 60.0, "val_top_class": 96.0, "val_top_class_teacher": 60.0}, 10,
         "classification", None),  # the teacher answers that class for most of it too
        (  # ZSKT's WRN-16-1 student (21 % of its teacher): the teacher's commonest class only
            {"agree": 51.7, "val_top_class": 100.0, "val_top_class_teacher": 51.7,
             "val_kappa": 0.0},
            10,
            "classification",
            "(Cohen's kappa 0.00)",
        ),
        ({"agree": 45.0, "val_top_class": 60.0, "val_top_class_teacher": 51.7,
          "val_kappa": 0.11}, 10, "classification", None),  # that teacher's FastDFKD student
        ({"agree": 12.0}, 11, "segmentation", None),  # sharp sets: good students agree little
        ({}, 10, "classification", None),
    ],
)  # fmt: skip
def test_a_finished_student_that_learned_little_is_called_weak(row, classes, task, said):
    from dfkd.training.guard import weak_student

    warning = weak_student(row, classes, task)
    if said is None:
        assert warning is None
    else:
        assert warning.startswith("the student ") and said in warning
        assert "--eval-data folder:PATH" in warning and "\n" not in warning


class IdleSynthesizer(CollapsingSynthesizer):
    """Images the teacher reads, and a student loss that teaches nothing."""

    def student_loss(self, s_logits, t_logits, step):
        return 0.0 * s_logits.sum(), {}


def test_a_run_whose_student_learned_nothing_says_so(workdir, tiny_teacher_weights):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    tiny = {"epochs": 1, "ep_steps": 5, "kd_steps": 1, "batch_size": 16}
    idle = make_plugins(
        method_plugin("idle", IdleSynthesizer, "a student that learns nothing",
                      options=DataFreeOptions, presets={"tiny": tiny})
    )  # fmt: skip
    weights = str(tiny_teacher_weights["lenet5"])
    done = CliRunner().invoke(
        make_app(idle),
        ["run", "idle", "--teacher", "lenet5", "--student", "lenet5_half", "--preset", "tiny",
         "--teacher-weights", weights, "--out", "runs/idle"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "weak student: the student " in done.output
    assert "it has likely not learned the teacher's task" in done.output
