"""The one training loop every command shares: epochs, evaluation, metrics, checkpoints, resume.

A command describes *what* it trains as a `Job`; the `Loop` owns everything around it, so
device placement, precision, the NaN guard, atomic checkpoints and progress live in one place.
"""

from __future__ import annotations

import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from dfkd.errors import DfkdError, DiskFull, UsageError
from dfkd.fileio import error_reason, write_atomic
from dfkd.training.guard import Collapsed, CollapseGuard
from dfkd.training.runs import START_OVER, RunDir
from dfkd.training.tracking import end_tracking, log_epoch, start_tracking
from dfkd.weights import save_weights

CHECKPOINT = "checkpoint.pt"
START = "start.pt"  # the state before the first epoch, where a guarded run restarts from


class TrainingDiverged(DfkdError):
    """The loss stopped being a number; the last good checkpoint is left as it was."""


class Job(ABC):
    """What one command trains. The loop calls these; the job never touches files."""

    #: the network that is evaluated on the test split and saved as the run's result
    model: torch.nn.Module

    @abstractmethod
    def stateful(self) -> dict[str, Any]:
        """What a resume must restore that every process holds alike (the DDP-synchronised model,
        its optimiser): objects with ``state_dict``/``load_state_dict``, saved from process 0."""

    def process_stateful(self) -> dict[str, Any]:
        """What each process holds for itself (a synthesizer's private state, its pool shard):
        saved from every process, and each process restores its own."""
        return {}

    @abstractmethod
    def steps_per_epoch(self, epoch: int) -> int: ...

    @abstractmethod
    def train_step(self, epoch: int, step: int) -> dict[str, float]:
        """One optimisation step; the returned dict has at least ``loss``."""

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Epoch bookkeeping such as a scheduler step; may return extra metrics or images."""
        return {}

    #: how many times the collapse guard has slowed the state now loaded down
    guard_level: int = 0
    #: objects ``stateful`` names that a release added: a checkpoint of an earlier release,
    #: without them, still resumes, leaving them as the job built them
    added_state: frozenset[str] = frozenset()

    def slow_down(self, levels: int) -> str:
        """The collapse guard's remedy, applied ``levels`` times to the state just restored
        (lower the rate); returns what changed. Only a job run under a guard needs it."""
        raise NotImplementedError(f"{type(self).__name__} cannot run under a collapse guard")


class Reporter(Protocol):
    def start(self, epochs: int, first_epoch: int) -> None: ...
    def epoch_start(self, epoch: int, steps: int) -> None: ...
    def step(self, logs: dict[str, float]) -> None: ...
    def epoch_end(self, row: dict[str, Any]) -> None: ...
    def rolled_back(self, event: str) -> None: ...
    def close(self) -> None: ...
    # before the loop starts: the synthetic validation set (validation.Progress)
    def validation_set(self, line: str) -> None: ...
    def validation_progress(self, done: int, total: int) -> None: ...


class SilentReporter:
    def start(self, epochs: int, first_epoch: int) -> None: ...
    def epoch_start(self, epoch: int, steps: int) -> None: ...
    def step(self, logs: dict[str, float]) -> None: ...
    def epoch_end(self, row: dict[str, Any]) -> None: ...
    def rolled_back(self, event: str) -> None: ...
    def close(self) -> None: ...
    def validation_set(self, line: str) -> None: ...
    def validation_progress(self, done: int, total: int) -> None: ...


@dataclass
class Outcome:
    """What a finished run reports: last and best test accuracy, where the weights are."""

    metrics: list[dict[str, Any]]
    weights: Path
    best_weights: Path
    model: torch.nn.Module | None = None  # the trained network, in memory, in this process
    extras: dict[str, Any] = field(default_factory=dict)
    best_by: str | None = "top1"  # the score that chose best_weights; None: no best was chosen
    #: False in the other processes of a multi-process run, which leave the report to process 0
    main_process: bool = True

    @property
    def last(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    @property
    def best_top1(self) -> float:
        return max((r.get("top1", 0.0) for r in self.metrics), default=0.0)

    @property
    def best_score(self) -> float | None:
        if self.best_by is None:
            return None
        return max((r.get(self.best_by, 0.0) for r in self.metrics), default=0.0)

    @property
    def guard_events(self) -> list[str]:
        """What the collapse guard did, in order (each kept row says what happened before it)."""
        return [event for r in self.metrics for event in r.get("guard", [])]

    @property
    def guard_notes(self) -> list[str]:
        """What the collapse guard saw and did not act on (a validation set it overruled)."""
        return [note for r in self.metrics for note in r.get("guard_notes", [])]


@dataclass
class Loop:
    accelerator: Any
    run: RunDir
    epochs: int
    evaluate: Callable[[torch.nn.Module], dict[str, float]]
    weights_meta: dict[str, Any]
    role: str = "student"  # file stem of the saved weights: student.safetensors, model.safetensors
    reporter: Reporter = field(default_factory=SilentReporter)
    on_best: Callable[[Path, dict[str, Any]], None] | None = None
    #: the score that chooses the best checkpoint (test accuracy, or mIoU), or None where the
    #: run has no labelled data: no score without data chose better epochs than the last
    #: (docs/architecture.md), so such a run's result is its last epoch
    criterion: str | None = "top1"
    #: watches each epoch for a collapsed student or generator (data-free runs)
    guard: CollapseGuard | None = None

    @property
    def weights_path(self) -> Path:
        return self.run.path / f"{self.role}.safetensors"

    @property
    def best_path(self) -> Path:
        return self.run.path / f"{self.role}-best.safetensors"

    def fit(self, job: Job, *, resume: bool = False) -> Outcome:
        """Train ``job`` to the last epoch. A full disk stops the run where --resume takes it up
        again: every file is written atomically, so the last checkpoint is whole (or there is
        none yet, and the resumed run starts over)."""
        try:
            return self._fit(job, resume)
        except DiskFull as exc:
            raise DiskFull(
                f"{exc} Once there is space, continue the run with --resume {self.run.path}."
            ) from exc

    def _fit(self, job: Job, resume: bool) -> Outcome:
        if not self.accelerator.is_main_process:
            self.reporter = SilentReporter()  # one progress display per run, not per process
        first_epoch, best = self._restore(job) if resume else (0, -1.0)
        if self.guard is not None and first_epoch == 0:
            self._save_state(job, 0, best, START, processes_own=False)
        self.reporter.start(self.epochs, first_epoch)
        start_tracking(self.accelerator, self.run)
        try:
            epoch = first_epoch
            while epoch < self.epochs:
                try:
                    best = self._one_epoch(job, epoch, best)
                except Collapsed as collapse:
                    epoch, best = self._roll_back(job, collapse, epoch)
                    continue
                epoch += 1
        finally:
            self.reporter.close()
            end_tracking(self.accelerator)
        model = self.accelerator.unwrap_model(job.model)
        return Outcome(
            self.run.read_metrics(),
            self.weights_path,
            self.best_path,
            model,
            best_by=self.criterion,
            main_process=self.accelerator.is_main_process,
        )

    def _one_epoch(self, job: Job, epoch: int, best: float) -> float:
        started = time.perf_counter()
        steps = job.steps_per_epoch(epoch)
        self.reporter.epoch_start(epoch, steps)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}  # a generator's logs come once per round, not every step
        for step in range(steps):
            logs = job.train_step(epoch, step)
            loss = logs["loss"]
            if not math.isfinite(loss):
                raise TrainingDiverged(self._diverged(loss, epoch, step))
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            self.reporter.step(logs)
        extras = job.end_epoch(epoch)
        model = self.accelerator.unwrap_model(job.model)
        scores = self.evaluate(job.model)
        row = {
            "epoch": epoch + 1,
            **{k: v / counts[k] for k, v in sums.items()},
            **scores,
            **{k: v for k, v in extras.items() if isinstance(v, int | float | str)},
            "seconds": round(time.perf_counter() - started, 3),
        }
        if self.guard is not None:
            collapse = self.guard.diagnose(row)
            if collapse is not None:
                raise collapse  # nothing of this epoch is kept
            row |= self.guard.accept(row)
        is_best = False
        if self.criterion is not None:
            score = scores.get(self.criterion, 0.0)
            is_best = score > best
            best = max(best, score)
        if self.accelerator.is_main_process:
            if isinstance(extras.get("images"), torch.Tensor):
                from dfkd.synthesis.grid import save_grid

                save_grid(extras["images"].float().cpu(), self.run.path / "samples.png")
            self.run.append_metrics(row)
            log_epoch(self.accelerator, row, extras.get("images"))
            meta = {
                **self.weights_meta,
                **{k: scores[k] for k in ("top1", "miou", "agree") if k in scores},
                "epoch": epoch + 1,
            }
            save_weights(model, self.weights_path, meta)
            if is_best:
                save_weights(model, self.best_path, meta)
                if self.on_best is not None:
                    self.on_best(self.best_path, meta)
        self._checkpoint(job, epoch + 1, best)
        self.accelerator.wait_for_everyone()
        shown = {"best": best, "best_by": self.criterion, "images": extras.get("images")}
        self.reporter.epoch_end(row | shown)
        return best

    def _diverged(self, loss: float, epoch: int, step: int) -> str:
        """What a NaN stop says: where the last kept epoch is, or that no epoch was kept, so
        there is no checkpoint to name (a resume would start over with the same values)."""
        where = f"Loss became {loss} at epoch {epoch + 1}, step {step + 1}; stopped."
        advice = "Lower the learning rate or try --mixed-precision no"
        if epoch == 0:
            return (
                f"{where} No epoch was kept, so there is no checkpoint. {advice}, and start the "
                f"run again with --overwrite (or --out elsewhere)."
            )
        return (
            f"{where} The last good checkpoint (epoch {epoch}) is kept in "
            f"{self.run.state_dir}. {advice}."
        )

    def _process_state(self, job: Job, objects: bool = True) -> dict[str, Any]:
        own = job.process_stateful() if objects else {}
        return {
            "objects": {k: _state_of(self.accelerator, v) for k, v in own.items()},
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        }

    def _checkpoint(self, job: Job, epochs_done: int, best: float) -> None:
        """One atomic file with the shared state and every process's own state and random
        streams, so a multi-process run resumes each process where it was."""
        self._save_state(job, epochs_done, best, CHECKPOINT)

    def _save_state(
        self, job: Job, epochs_done: int, best: float, name: str, processes_own: bool = True
    ) -> None:
        """``processes_own=False`` leaves out each process's own objects (the synthesizer, its
        pool): the run's start, to which only the student returns."""
        processes = _gather_to_main(self.accelerator, self._process_state(job, processes_own))
        if not self.accelerator.is_main_process:
            return
        state = {
            "epochs_done": epochs_done,
            "best_top1": best,
            "num_processes": self.accelerator.num_processes,
            "objects": {k: _state_of(self.accelerator, v) for k, v in job.stateful().items()},
            "processes": processes,
        }
        if self.guard is not None:
            state["guard"] = self.guard.state_dict()
        write_atomic(self.run.state_dir / name, lambda tmp: torch.save(state, tmp))

    def _roll_back(self, job: Job, collapse: Collapsed, epoch: int) -> tuple[int, float]:
        """Back to the last kept epoch's checkpoint (or, for a student stuck since its start,
        to the run's start), slowed down once more; the guard stops the run when its tries are
        spent. (The guard sees a collapse only after a kept epoch, so there is always a
        checkpoint to go back to; a run resumed from before start.pt existed has only that.)"""
        assert self.guard is not None
        self.guard.check_tries(collapse, self.run.path, epoch)
        self.accelerator.wait_for_everyone()
        path = self.run.state_dir / (START if collapse.restart else CHECKPOINT)
        if not path.exists():
            path = self.run.state_dir / CHECKPOINT
        state = torch.load(path, map_location="cpu", weights_only=True)
        epochs_done, best = self._load(job, state, keep_guard=True, partial=collapse.restart)
        action = job.slow_down(self.guard.rollbacks + 1 - job.guard_level)
        self.reporter.rolled_back(self.guard.rolled_back(collapse, epochs_done, action))
        return epochs_done, best

    def _restore(self, job: Job) -> tuple[int, float]:
        path = self.run.state_dir / CHECKPOINT
        if not path.exists():
            # Killed before the first checkpoint: the run starts over. Its rows are redone, and
            # each process's fresh objects are loaded with their own state, as from a checkpoint
            # of epoch 0: an image pool then drops the chunks the killed run wrote instead of
            # refusing to write beside them.
            for obj in job.process_stateful().values():
                obj.load_state_dict(_state_of(self.accelerator, obj))
            if self.accelerator.is_main_process:
                self.run.truncate_metrics(0)
            return 0, -1.0
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: one line, not a trace
            raise UsageError(f"Cannot resume: {path} is damaged. {START_OVER}") from exc
        try:
            return self._load(job, state)
        except DfkdError:
            raise
        except Exception as exc:  # noqa: BLE001 - readable, but not a checkpoint of this run
            raise UsageError(
                f"Cannot resume: {path} is damaged or does not fit the run ({error_reason(exc)}). "
                f"{START_OVER}"
            ) from exc

    def _load(
        self, job: Job, state: dict[str, Any], keep_guard: bool = False, partial: bool = False
    ) -> tuple[int, float]:
        """Put every object, random stream and the metrics back as ``state`` has them (the
        guard's count too, unless a rollback keeps it). A key that is missing or a tensor of the
        wrong shape raises: a damaged file, or a run whose recorded options were edited since;
        ``partial`` (a restart of the student) leaves the objects ``state`` lacks as they are."""
        recorded = state.get("num_processes", 1)
        if recorded != self.accelerator.num_processes:
            raise UsageError(
                f"{self.run.path} was checkpointed by {recorded} process(es); resume it with the "
                f"same number (now {self.accelerator.num_processes}), e.g. torchrun "
                f"--nproc_per_node {recorded}."
            )
        mine = (  # a checkpoint of a release before per-process state held one process's
            state["processes"][self.accelerator.process_index]
            if "processes" in state
            else {"objects": state["objects"], "rng": state["rng"]}
        )
        for objects, saved in (
            (job.stateful(), state["objects"]),
            (job.process_stateful(), mine["objects"]),
        ):
            for name, obj in objects.items():
                if (partial or name in job.added_state) and name not in saved:
                    continue
                target = (
                    self.accelerator.unwrap_model(obj) if isinstance(obj, torch.nn.Module) else obj
                )
                target.load_state_dict(saved[name])
        if self.guard is not None and "guard" in state and not keep_guard:
            self.guard.load_state_dict(state["guard"])
        torch.set_rng_state(mine["rng"]["torch"])
        random.setstate(_as_python_state(mine["rng"]["python"]))
        if self.accelerator.is_main_process:
            self.run.truncate_metrics(state["epochs_done"])
        return state["epochs_done"], state["best_top1"]


def _gather_to_main(accelerator: Any, obj: Any) -> list[Any] | None:
    """Every process's ``obj``, in process order, on the main process (None elsewhere)."""
    if accelerator.num_processes == 1:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] | None = (
        [None] * accelerator.num_processes if accelerator.is_main_process else None
    )
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def _state_of(accelerator: Any, obj: Any) -> Any:
    if isinstance(obj, torch.nn.Module):
        return accelerator.unwrap_model(obj).state_dict()
    return obj.state_dict()


def _as_python_state(state: Any) -> tuple:
    """``random.setstate`` wants tuples; a weights-only load may hand back lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
