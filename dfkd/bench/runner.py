"""Running a matrix: cells one after another or N at a time, each its own `dfkd run` process.

Every cell is an ordinary run directory, ``BENCH_DIR/cells/<cell>/``, so anything that reads
runs reads a cell, and a cell is resumed exactly like any run. When its process ends the bench
writes ``cell.json`` beside the run's files: the numbers the report needs, so the report never
re-reads checkpoints. A bench started again skips finished cells (``cell.json`` says done and
``metrics.jsonl`` holds every epoch), resumes the ones that had started and runs the rest; a
cell that failed is tried again, since the failure may have been fixed since. A cell whose
process a signal ended (the bench stopped, the machine shut down) is recorded as ``stopped``,
not failed: nothing went wrong with it, and the next bench resumes it from its checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dfkd.bench.matrix import Cell
from dfkd.errors import UsageError
from dfkd.fileio import write_json
from dfkd.tasks import CLASSIFICATION
from dfkd.training.runs import RunDir

CELL_FILE = "cell.json"
#: the test scores a cell can be ranked by, and how tables name them
SCORES = {"top1": "top-1", "miou": "mIoU"}
CELLS = "cells"
LOGS = "logs"

#: the RunConfig fields a cell sets, compared with a cell directory's config.json before reuse
_SETTINGS = (
    "method",
    "teacher",
    "student",
    "dataset",
    "preset",
    "seed",
    "mixed_precision",
    "quantize",
)


@dataclass
class Finished:
    """How a cell's process ended."""

    returncode: int
    error: str | None = None  # the last line the process wrote to stderr, when it failed
    peak_rss_kb: int | None = None  # the process's maximum resident set
    cpu_seconds: float | None = None  # the process's user + system time

    @property
    def by_signal(self) -> bool:
        """Ended by a signal (SIGTERM, SIGKILL, ...) rather than by exiting."""
        return self.returncode < 0


class Runner(Protocol):
    def __call__(self, cell: Cell, run_dir: Path, *, resume: bool, log: Path) -> Finished: ...


class SubprocessRunner:
    """``python -m dfkd run ... -q`` per cell with a fixed torch thread count, so N cells side by
    side share the cores predictably (one thread per job on a 2-core machine: see
    docs/architecture.md, "Threads")."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._running: set[subprocess.Popen] = set()

    def __call__(self, cell: Cell, run_dir: Path, *, resume: bool, log: Path) -> Finished:
        args = ["run", "--resume", str(run_dir)] if resume else cell.run_arguments(run_dir)
        command = [sys.executable, "-m", "dfkd", *args, "-q"]
        threads = str(self.threads)
        env = os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as stderr:
            stderr.write(f"$ {' '.join(command)}\n")
            stderr.flush()
            start = stderr.tell()
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
            self._running.add(process)
            try:
                # wait4, not wait: the resource usage of this child alone, even with N running
                _, status, usage = os.wait4(process.pid, 0)
            finally:
                self._running.discard(process)
        process.returncode = os.waitstatus_to_exitcode(status)
        error = None
        if process.returncode != 0:
            with log.open() as text:
                text.seek(start)
                lines = [line.strip() for line in text.read().splitlines() if line.strip()]
            error = lines[-1] if lines else _ended(process.returncode)
        return Finished(process.returncode, error, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)

    def interrupt(self) -> None:
        """Stop the cells still running when the bench stops; each keeps its last checkpoint,
        written atomically, and resumes from it. SIGTERM, not SIGINT: a process started in
        the background ignores SIGINT."""
        for process in list(self._running):
            process.send_signal(signal.SIGTERM)


def _ended(returncode: int) -> str:
    if returncode < 0:
        return f"stopped by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def cell_dir(bench_dir: Path, cell: Cell) -> Path:
    return bench_dir / CELLS / cell.name


def read_cell(path: Path) -> dict[str, Any] | None:
    file = path / CELL_FILE
    return json.loads(file.read_text()) if file.exists() else None


def is_finished(path: Path) -> bool:
    """Done: ``cell.json`` says so and the metrics hold every epoch the run was set to train."""
    record = read_cell(path)
    if not record or record.get("status") != "done":
        return False
    return len(RunDir(path).read_metrics()) == record.get("epochs")


def plan(cells: list[Cell], bench_dir: Path) -> dict[str, str]:
    """Each cell's next step: ``done``, ``resume`` or ``start``. A cell directory that holds a
    run with other settings (the bench file changed) is refused, one line per cell, rather than
    mixed into the table."""
    steps: dict[str, str] = {}
    conflicts: list[str] = []
    for cell in cells:
        path = cell_dir(bench_dir, cell)
        config_file = path / "config.json"
        if not config_file.exists():
            steps[cell.name] = "start"
            continue
        recorded = json.loads(config_file.read_text()).get("options", {})
        wanted = {k: v for k, v in cell.describe().items() if k in _SETTINGS}
        wanted |= {
            "overrides": list(cell.options),
            "teacher_weights": cell.pair.teacher_weights,
        }
        differ = [k for k, v in wanted.items() if recorded.get(k) != v]
        if differ:
            conflicts.append(
                f"{path} holds a run with other {', '.join(differ)}; remove it or bench into "
                "another --out."
            )
            continue
        steps[cell.name] = "done" if is_finished(path) else "resume"
    if conflicts:
        raise UsageError("\n".join(conflicts))
    return steps


def run_bench(
    cells: list[Cell],
    bench_dir: Path,
    runner: Runner,
    *,
    jobs: int = 1,
    on_cell: Callable[[dict[str, Any]], None] = lambda record: None,
) -> None:
    """Run every unfinished cell, ``jobs`` at a time; ``on_cell`` hears of each as it ends. The
    bench directory is locked meanwhile: a second bench into it would run the same cells."""
    bench_dir.mkdir(parents=True, exist_ok=True)
    with BenchDir(bench_dir).lock():
        steps = plan(cells, bench_dir)
        todo = [c for c in cells if steps[c.name] != "done"]
        _run_cells(todo, steps, bench_dir, runner, jobs, on_cell)


class BenchDir(RunDir):
    noun = "Bench"


def _run_cells(
    todo: list[Cell],
    steps: dict[str, str],
    bench_dir: Path,
    runner: Runner,
    jobs: int,
    on_cell: Callable[[dict[str, Any]], None],
) -> None:
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_cell, c, bench_dir, runner, steps[c.name]) for c in todo]
        try:
            for future in as_completed(futures):
                on_cell(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            stop = getattr(runner, "interrupt", None)
            if stop is not None:
                stop()
            raise


def run_cell(cell: Cell, bench_dir: Path, runner: Runner, step: str) -> dict[str, Any]:
    """Start or resume one cell, then record what it left as ``cell.json``. A resumed cell's
    CPU time adds the earlier attempts' recorded time to its own."""
    path = cell_dir(bench_dir, cell)
    earlier = (read_cell(path) or {}).get("cpu_seconds") if step == "resume" else None
    (path / CELL_FILE).unlink(missing_ok=True)  # a failed attempt's record; this one replaces it
    log = bench_dir / LOGS / f"{cell.name}.log"
    finished = runner(cell, path, resume=step == "resume", log=log)
    if earlier and finished.cpu_seconds is not None:
        finished.cpu_seconds += earlier
    record = cell_record(cell, path, finished)
    path.mkdir(parents=True, exist_ok=True)  # a run that failed before making its directory
    write_json(path / CELL_FILE, record)
    return record


def cell_record(cell: Cell, path: Path, finished: Finished) -> dict[str, Any]:
    """``cell.json``: the cell's settings, its outcome, accuracy and cost."""
    run = RunDir(path)
    config = json.loads(run.config_file.read_text()) if run.config_file.exists() else {}
    epochs = config.get("options", {}).get("resolved_options", {}).get("epochs")
    rows = run.read_metrics()
    complete = finished.returncode == 0 and bool(rows) and len(rows) == epochs
    error = finished.error
    if finished.returncode == 0 and not complete:
        error = f"{len(rows)} of {epochs} epochs in metrics.jsonl"
    status = "done" if complete else "stopped" if finished.by_signal else "failed"
    return {
        **cell.describe(),
        "status": status,
        "error": error,
        "returncode": finished.returncode,
        "epochs": epochs,
        **summarize(rows),
        "peak_rss_mb": round(finished.peak_rss_kb / 1024, 1) if finished.peak_rss_kb else None,
        "cpu_seconds": round(finished.cpu_seconds, 1) if finished.cpu_seconds else None,
        "images_synthesized": pool_size(path / "images"),
        "weak_student": _weak_student(path, rows) if complete else None,  # a finished run's line
        "versions": config.get("versions"),
    }


def _weak_student(path: Path, rows: list[dict[str, Any]]) -> str | None:
    """The `weak student` warning the run ended with (guard.weak_student), or None."""
    from dfkd.training.guard import weak_student

    sidecar = path / "student.json"
    if not rows or not sidecar.is_file():
        return None
    meta = json.loads(sidecar.read_text())
    task = meta.get("task", CLASSIFICATION)
    return weak_student(rows[-1], meta.get("num_classes", 0), task)


def test_score_of(rows: list[dict[str, Any]]) -> str | None:
    """The test score a run's rows record: top-1 for a classifier, mIoU for segmentation."""
    return next((key for key in SCORES if any(key in r for r in rows)), None)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Score and time from a run's metric rows. ``score`` names the test score (``top1`` or
    ``miou``). The best epoch is chosen on the test set, so its name says so; a row's ``agree``
    (teacher-student agreement, no labels needed) selects an epoch without looking at the test
    set when the method reports one."""
    key = test_score_of(rows)
    scored = [r for r in rows if key in r] if key else []
    best = max(scored, key=lambda r: r[key], default=None)
    agreed = [r for r in scored if "agree" in r]
    by_agreement = max(agreed, key=lambda r: r["agree"], default=None)
    synthesis = [r["seconds_synthesis"] for r in rows if "seconds_synthesis" in r]
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    gpu = [r["gpu_peak_mb"] for r in rows if "gpu_peak_mb" in r]
    return {
        "epochs_done": len(rows),
        "score": key,
        "last_score": scored[-1][key] if scored else None,
        "best_score_test_selected": best[key] if best else None,
        "best_epoch_test_selected": best["epoch"] if best else None,
        "best_by_agreement": (
            {k: by_agreement[k] for k in ("epoch", "agree")} | {"score": by_agreement[key]}
            if by_agreement
            else None
        ),
        "seconds": round(seconds, 3),
        "seconds_synthesis": round(sum(synthesis), 3) if len(synthesis) == len(rows) else None,
        "peak_gpu_mb": max(gpu) if gpu else None,
        # what the collapse guard did, and NAYER's label embeddings: what ran, in the report
        "guard_events": [event for r in rows for event in r.get("guard", [])],
        "guard_notes": [note for r in rows for note in r.get("guard_notes", [])],
        "embeddings": rows[-1].get("embeddings") if rows else None,
    }


def pool_size(images: Path) -> int | None:
    """Images in a run's pool (``RUN/images``), read from the safetensors headers alone;
    None for a method that keeps no pool (a generator's images are not counted anywhere)."""
    files = sorted(images.glob("images*.safetensors")) if images.is_dir() else []
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            total += json.loads(f.read(size))["images"]["shape"][0]
    return total
