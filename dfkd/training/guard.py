"""The collapse guard: a data-free run whose student or generator dies says so, after trying to
recover, instead of handing back a constant classifier.

A student distilled from an over-confident teacher can fall into answering one class for every
input within a few epochs, and never leave it; a generator can fall onto one of the teacher's
classes. Neither makes the loss stop being a number, so the NaN guard does not see them. The loop
shows each epoch's row to the guard before it keeps the epoch: a collapsed epoch is never saved,
the run rolls back to the last healthy epoch, the job lowers its rate, and the epoch runs again.
After ``max_rollbacks`` tries the run stops with one line that says what to change.

The validation set is images inverted from the teacher, and for some teachers (a residual net's,
for one, on the sharp set made until 2026-12-07) a student that is learning still answers one
class on them. So a student collapse read there is confirmed on the samples the student learns
from, where the teacher's answers are its labels: a student that spreads its answers there and
agrees with the teacher well above chance has not collapsed, and the guard says once that it did
not act instead of restarting it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dfkd.errors import DfkdError

#: a student that puts this share (%) of the validation set on one class has collapsed, when
#: the teacher puts at most ``TEACHER_SHARE`` of it there and the student had spread its answers
#: before (no class above ``SPREAD``): an untrained network often answers one class too, and
#: that is where it starts, not where it fell. The set asks for its classes evenly, but a
#: teacher need not answer them so once the images are low-passed (WRN-16-1 calls half of its
#: set bag, and a DFAD student answering bag for everything ended at chance unseen at 50)
ONE_CLASS, TEACHER_SHARE, SPREAD = 90.0, 75.0, 50.0
#: a generator has collapsed when the teacher answers one class for this share (%) of a whole
#: epoch's synthetic samples, after an epoch where no class had more than ``SPREAD`` (a
#: generator often starts on one class too)
GENERATOR_ONE_CLASS = 95.0
#: agreement back at chance (within this factor of it) after it had reached ``LEARNED`` × chance
#: (an over-confident teacher's inverted set can keep a good student's agreement near 15 %)
NEAR_CHANCE, LEARNED = 1.2, 4.0
#: where a row says how the student answers: its commonest class's share (%), and the share of
#: that class in what it should answer
STUDENT_ANSWERS = (
    ("val_top_class", "val_top_class_teacher", "the validation set", "the teacher"),
    ("batch_top_class", "batch_top_class_labels", "its last training batch", "the labels"),
)
#: the second opinion: on the epoch's own synthetic samples a student that has not collapsed
#: puts under ``SPREAD`` of them on one class and agrees with the teacher on at least this
#: multiple of chance (one answering one class agrees only on that class's share)
SYNTHETIC_AGREES = 2.0


#: a finished classifier whose agreement on the (smoothed) validation set has come less than
#: this share of the way from chance (1/K) to full agreement has likely not learned the
#: teacher's task (benchmarks/results/validation_signal.md)
WEAK_AGREEMENT = 0.2
#: ... or whose Cohen's kappa with the teacher on it (agreement beyond what the two answer counts
#: alone give) is under this: a student answering the class the teacher gives half the set
#: agrees on half of it and scores 0. Of the robustness benches' students (validation_signal.md)
#: every one under it kept at most 58 % of its teacher, and one at 75 % scored 0.06
WEAK_KAPPA = 0.04


#: the remedy, each rollback: the student's rate times this, and clipping at this gradient norm
#: where the run had none (an over-confident teacher's KD gradients are what kill a
#: BatchNorm-free student early on)
GUARD_LR_FACTOR = 0.5
GUARD_GRAD_CLIP = 5.0


class SlowsDown:
    """The guard's remedy for a job that trains a student with ``optimizer`` on ``scheduler``:
    the job clips at ``grad_clip`` (0: no clip) and checkpoints ``guard_level``, the slow-downs
    its state already holds (``Job.slow_down``)."""

    optimizer: Any
    scheduler: Any
    grad_clip: float
    guard_level: int

    def slow_down(self, levels: int) -> str:
        """Halve the student's rate ``levels`` times (its schedule's base too, so the schedule
        goes on from the lower rate) and clip its gradients if nothing did."""
        factor = GUARD_LR_FACTOR**levels
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
        self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        self.guard_level += levels
        action = f"student learning rate x{GUARD_LR_FACTOR**self.guard_level:g} of its schedule"
        if not self.grad_clip:
            self.grad_clip = GUARD_GRAD_CLIP
            action += f", gradient norm clipped at {GUARD_GRAD_CLIP:g}"
        return action


class SlowDownState:
    """What `SlowsDown.slow_down` changed in ``job``, checkpointed with the rest of its state. A
    checkpoint from before the guard holds neither: the job then keeps ``clip``, its own."""

    def __init__(self, job: SlowsDown, clip: float) -> None:
        self.job, self.clip = job, clip

    def state_dict(self) -> dict[str, float]:
        return {"guard_level": self.job.guard_level, "grad_clip": self.job.grad_clip}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.job.guard_level = int(state.get("guard_level", 0))
        self.job.grad_clip = float(state.get("grad_clip", self.clip))


class Collapsed(Exception):  # noqa: N818 - an event the loop handles, not an error
    """Raised by the loop for an epoch the guard rejected; nothing of the epoch was saved.
    ``restart``: every kept epoch is as bad (a student that never left one class is dead from
    its first steps), so the run goes back to its start, not to the last kept epoch."""

    def __init__(self, epoch: int, reason: str, restart: bool = False) -> None:
        super().__init__(reason)
        self.epoch, self.reason, self.restart = epoch, reason, restart


class RunCollapsed(DfkdError):
    """The guard's tries are spent: the run stops, keeping its last healthy epoch."""


@dataclass
class CollapseGuard:
    """Reads each epoch's row; counts and records the rollbacks. Its state is checkpointed
    apart from the job's, so a rollback does not undo the count of rollbacks."""

    num_classes: int
    #: the epoch by which a student must have left one class (None: no limit): one still there
    #: has not learned, and is treated as collapsed
    patience: int | None = None
    max_rollbacks: int = 3
    rollbacks: int = 0
    peak_agree: float = 0.0  # over the epochs kept so far
    widest_student: float = 100.0  # the lowest share of one class in the student's answers
    widest_synthesis: float = 100.0  # the lowest share of one class in an epoch's samples
    #: whether the guard has said that the validation set misread a student (said once a run)
    overruled: bool = False
    #: events since the last kept row, which carries them (so never part of a checkpoint)
    unreported: list[str] = field(default_factory=list)
    #: notes since the last kept row: what the guard saw and did not act on
    unreported_notes: list[str] = field(default_factory=list)
    #: the end of the line that stops the run: what to change
    advice: str = (
        "Try a lower rate and tighter clipping (-o lr=... -o grad_clip=1), a higher "
        "temperature (-o T=4), or another method (dfkd list-methods)."
    )
    #: what a restart keeps, said after "restarted the student from its first weights"
    restart_detail: str = " (the synthesizer goes on)"
    #: what kept rows carry: a restart drops those rows, so the next kept row carries it again
    reported: list[str] = field(default_factory=list)
    reported_notes: list[str] = field(default_factory=list)

    def diagnose(self, row: dict[str, Any]) -> Collapsed | None:
        """The collapse of the epoch of ``row``, or None when it is healthy."""
        if self.num_classes < 3:
            return None  # with two classes, one class for most inputs can be right
        collapse = self._student_collapse(row)
        if collapse is not None:
            contradiction = self._synthetic_contradicts(row)
            if contradiction is None:
                return collapse
            if not self.overruled:
                self.overruled = True
                self.unreported_notes.append(
                    f"epoch {collapse.epoch}: {collapse.reason}, but {contradiction}; the "
                    "validation set does not read this student, so the guard did not act (and "
                    "agreement on it says little about this run)"
                )
        return self._generator_collapse(row)

    def _synthetic_contradicts(self, row: dict[str, Any]) -> str | None:
        """Why the epoch's own samples say the student has not collapsed, or None."""
        top, agree = row.get("syn_student_top_class"), row.get("syn_agree")
        chance = 100.0 / self.num_classes
        if top is None or agree is None or top >= SPREAD or agree < SYNTHETIC_AGREES * chance:
            return None
        return (
            f"on the epoch's synthetic samples it put at most {top:.0f} % on one class and agreed "
            f"with the teacher on {agree:.0f} % (chance {chance:.0f} %)"
        )

    def _student_collapse(self, row: dict[str, Any]) -> Collapsed | None:
        epoch = row["epoch"]
        # a data-free run reads the synthetic validation set, a supervised one its last batch
        key, reference, where, whose = next(
            (entry for entry in STUDENT_ANSWERS if entry[0] in row), STUDENT_ANSWERS[0]
        )
        share, spread = row.get(key), row.get(reference)
        if share is not None and share >= ONE_CLASS and spread <= TEACHER_SHARE:
            answered = f"one class for {share:.0f} % of {where} ({whose} {spread:.0f} %)"
            if self.widest_student <= SPREAD:
                return Collapsed(epoch, f"the student answered {answered}")
            if self.patience is not None and epoch >= self.patience:
                stuck = f"the student still answered {answered} after {epoch} epochs"
                return Collapsed(epoch, stuck, restart=True)
        chance = 100.0 / self.num_classes
        agree = row.get("agree")
        if (
            agree is not None
            and agree <= NEAR_CHANCE * chance
            and self.peak_agree >= LEARNED * chance
        ):
            return Collapsed(
                epoch,
                f"agreement fell to {agree:.1f} % (chance {chance:.0f} %) "
                f"from {self.peak_agree:.1f} %",
            )
        return None

    def _generator_collapse(self, row: dict[str, Any]) -> Collapsed | None:
        generated = row.get("syn_top_class")
        if (
            generated is not None
            and generated >= GENERATOR_ONE_CLASS
            and self.widest_synthesis <= SPREAD
        ):
            return Collapsed(
                row["epoch"],
                f"the teacher answered one class for {generated:.0f} % of the epoch's "
                "synthetic samples",
            )
        return None

    def accept(self, row: dict[str, Any]) -> dict[str, Any]:
        """The kept row's additions: what the guard did since the last kept epoch."""
        self.peak_agree = max(self.peak_agree, row.get("agree", 0.0))
        # spread on either set: a later fall to one class is a fall, not a student never alive
        answers = ("val_top_class", "syn_student_top_class", "batch_top_class")
        widest = min(row.get(key, 100.0) for key in answers)
        self.widest_student = min(self.widest_student, widest)
        self.widest_synthesis = min(self.widest_synthesis, row.get("syn_top_class", 100.0))
        additions: dict[str, Any] = {}
        if self.unreported:
            additions |= {"guard": self.unreported, "guard_rollbacks": self.rollbacks}
        if self.unreported_notes:
            additions["guard_notes"] = self.unreported_notes
        self.reported += self.unreported
        self.reported_notes += self.unreported_notes
        self.unreported, self.unreported_notes = [], []
        return additions

    def rolled_back(self, collapse: Collapsed, to_epoch: int, action: str) -> str:
        """Count and record a rollback; the event as the next kept row will carry it."""
        self.rollbacks += 1
        if collapse.restart:  # the epochs these were read from are gone, and their rows
            self.peak_agree, self.widest_student, self.widest_synthesis = 0.0, 100.0, 100.0
            self.unreported = self.reported + self.unreported
            self.unreported_notes = self.reported_notes + self.unreported_notes
            self.reported, self.reported_notes = [], []
        back = (
            f"restarted the student from its first weights{self.restart_detail}"
            if collapse.restart
            else f"rolled back to epoch {to_epoch}"
        )
        event = f"epoch {collapse.epoch}: {collapse.reason}; {back}, {action}"
        self.unreported.append(event)
        return event

    def check_tries(self, collapse: Collapsed, run: Any, last_kept: int) -> None:
        """Stop the run, in one line, when the rollbacks are spent."""
        if self.rollbacks < self.max_rollbacks:
            return
        kept = (
            f"{run}/student.safetensors holds epoch {last_kept}'s student"
            if last_kept
            else "no epoch was kept"
        )
        raise RunCollapsed(
            f"The run collapsed at epoch {collapse.epoch} ({collapse.reason}) after "
            f"{self.rollbacks} rollbacks that lowered the student's learning rate; stopped, "
            f"{kept}. {self.advice}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "rollbacks": self.rollbacks,
            "peak_agree": self.peak_agree,
            "widest_student": self.widest_student,
            "widest_synthesis": self.widest_synthesis,
            "overruled": self.overruled,
            "reported": self.reported,
            "reported_notes": self.reported_notes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollbacks = int(state["rollbacks"])
        self.peak_agree = float(state["peak_agree"])
        self.widest_student = float(state["widest_student"])
        self.widest_synthesis = float(state["widest_synthesis"])
        # absent from a checkpoint made before the second opinion
        self.overruled = bool(state.get("overruled", False))
        self.reported = list(state.get("reported", []))
        self.reported_notes = list(state.get("reported_notes", []))


def weak_student(row: dict[str, Any], num_classes: int, task: str) -> str | None:
    """The warning a finished run gives when its last row (``row``) shows a student that has
    likely not learned the teacher's task, or None: agreement near chance on the validation
    set or hardly beyond what the answer counts explain (Cohen's kappa), or one class for nearly
    all of it where the teacher spreads its answers. Only a set made to be read (a classifier's
    smoothed set, Task.validation_smoothed) says so: on the sharp images of a segmentation set,
    good students agree little too."""
    from dfkd.training.tasks import task_of

    agree = row.get("agree")
    if agree is None or num_classes < 3 or not task_of(task).validation_smoothed:
        return None
    chance = 100.0 / num_classes
    share, teacher_share = row.get("val_top_class", 0.0), row.get("val_top_class_teacher", 100.0)
    # at most half, not the guard's three quarters: good WRN-16-1 students answered the class
    # that teacher gives half its set for 92-100 % of it (the guard spares them on its second
    # opinion); at three quarters this line would name them too
    if share >= ONE_CLASS and teacher_share <= SPREAD:
        seen = (
            f"answers one class for {share:.0f} % of the validation set (the teacher "
            f"{teacher_share:.0f} %)"
        )
    elif (agree - chance) / (100.0 - chance) < WEAK_AGREEMENT:
        seen = (
            f"agrees with the teacher on {agree:.1f} % of the validation set, near chance "
            f"({chance:.0f} %)"
        )
    elif (kappa := row.get("val_kappa")) is not None and kappa < WEAK_KAPPA:
        seen = (
            f"agrees with the teacher on {agree:.1f} % of the validation set, hardly more than "
            f"its answer counts alone would give (Cohen's kappa {kappa:.2f})"
        )
    else:
        return None
    return (
        f"the student {seen}: it has likely not learned the teacher's task. Check it on a few "
        "real images (--eval-data folder:PATH) or try another method (dfkd list-methods)."
    )
