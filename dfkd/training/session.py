"""One job's set-up, made by one function for every command that runs a job.

`open_session` turns what a command resolved (its options, its models' names, its data) into a
`Session`: the run directory, created or reopened and locked for the whole job, its config.json
with the options and the teacher's fingerprint, the accelerator with its precision, the seeds of
every process, and the task of the data. A check that fails before the first epoch removes the
directory it made, so the corrected command runs without --overwrite. docs/architecture.md, "One
path from options to the first step", shows where it sits.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfkd.fileio import sha256_of
from dfkd.training.runs import RunDir, create_run, versions
from dfkd.training.setup import (
    check_resumed_teacher,
    make_accelerator,
    run_path,
    seed_everything,
)
from dfkd.training.tasks import Task, task_of


@dataclass
class Session:
    """What a job runs in: its accelerator, its locked run directory, its seed and its data's
    task. Made by `open_session`; use it as a context manager around the job's set-up and its
    `fit`."""

    command: str
    accelerator: Any
    run: RunDir
    seed: int
    resumed: bool
    #: the dataset, or the teacher-only inputs, the job trains and scores on (None: none)
    source: Any = None
    #: the teacher's weights file, whose sha256 config.json records (None: no teacher)
    teacher: Path | None = None
    _held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)
    _started: bool = field(default=False, repr=False)

    @property
    def task(self) -> Task:
        return task_of(self.source.task)

    @property
    def device(self) -> Any:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def record(self, **entries: Any) -> None:
        """Add ``entries`` to config.json (process 0), e.g. what the job measured while setting
        up, so that a resume finds it."""
        if self.is_main_process:
            self.run.write_config(self.run.read_config() | entries)

    def start(self) -> None:
        """Set-up is over: from here on the run directory is kept whatever happens (its epochs
        can be resumed, its log read)."""
        self._started = True

    def fit(self, loop: Any, job: Any) -> Any:
        """Run ``job`` in ``loop`` from the start, or from the run's checkpoint when resumed."""
        self.start()
        return loop.fit(job, resume=self.resumed)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        self._held.close()  # the lock first: the folder may go next
        if error is not None and not self.resumed and not self._started and self.is_main_process:
            _remove_half_made(self.run.path)


def _remove_half_made(path: Path) -> None:
    """Remove a run directory set up but never trained: left behind, it would block the corrected
    command (which then needs --overwrite) and look like a run that can be resumed. A symbolic
    link given as --out stays; the folder it led to goes."""
    shutil.rmtree(path.resolve(), ignore_errors=True)


def open_session(
    command: str,
    options: dict[str, Any],
    *,
    model: str,
    dataset: str,
    out: str | None = None,
    overwrite: bool = False,
    resume: str | None = None,
    seed: int = 0,
    mixed_precision: str = "no",
    cpu: bool = False,
    log_with: str | None = None,
    teacher: Path | None = None,
    source: Any = None,
    plugin_versions: dict[str, str] | None = None,
) -> Session:
    """The session of one job of ``command``. A new run goes to ``out`` (or
    ``runs/<date>-<command>-<model>-<dataset>``) and records ``options``, the versions and, with
    a ``teacher`` weights file, its sha256; ``resume`` reopens a run instead, refusing another
    teacher file than it started with. ``mixed_precision`` is the precision to run at (``auto``
    resolved on a probe when the caller has not timed its own workload). The run is locked from
    here until the session closes. Seeds: each process gets its own stream of ``seed`` (build
    the models before, under `seed_everything(seed)`, for the same initial weights in every
    process)."""
    if resume and teacher is not None:
        check_resumed_teacher(resume, teacher)
    path = Path(resume) if resume else run_path(command, model, dataset, out)
    accelerator = make_accelerator(mixed_precision, cpu, log_with, path)
    seed_everything(seed, accelerator.process_index)
    main = accelerator.is_main_process
    accelerator.wait_for_everyone()
    run = RunDir(path) if resume or not main else create_run(path, overwrite=overwrite)
    session = Session(command, accelerator, run, seed, bool(resume), source, teacher)
    try:
        session._held.enter_context(run.lock(accelerator))
        if main and not resume:
            config = {"command": command, "options": options, "versions": versions(plugin_versions)}
            if teacher is not None:
                config["teacher_sha256"] = sha256_of(teacher)
            run.write_config(config)
        accelerator.wait_for_everyone()
    except BaseException as exc:
        session.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return session
