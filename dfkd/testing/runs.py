"""Helpers for tests that run data-free distillation: a tiny run's config, a run interrupted or
held by another process, what a complete run directory holds, exact comparisons of two runs'
state, and a two-process torchrun launcher."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def tiny_run_config(
    method: str,
    teacher: str,
    weights: Path | str,
    out: Path | str,
    overrides: list[str],
    student: str = "lenet5_half",
    preset: str | None = None,
) -> Any:
    """A data-free RunConfig on the tiny dataset, from ``teacher`` (``weights``) to ``student``."""
    from dfkd.training.datafree import RunConfig

    return RunConfig(
        method=method,
        teacher=teacher,
        student=student,
        dataset="tiny",
        preset=preset,
        teacher_weights=str(weights),
        overrides=overrides,
        out=str(out),
    )


@contextlib.contextmanager
def run_held_elsewhere(run_dir: Path | str, cwd: Path) -> Iterator[int]:
    """Another process holding ``run_dir``'s lock (a run still going), for as long as the block
    lasts; yields its pid, which the refusals name."""
    code = (
        "import time\n"
        "from pathlib import Path\n"
        "from dfkd.training.runs import RunDir\n"
        f"with RunDir(Path({str(run_dir)!r})).lock():\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


class KillAfterEpoch:
    """A reporter that interrupts a run once epoch ``n`` is checkpointed, like a Ctrl-C or a kill:
    the way a resume test stops the first half of a run."""

    def __init__(self, n: int = 1) -> None:
        self.n = n

    def start(self, epochs: int, first_epoch: int) -> None: ...
    def epoch_start(self, epoch: int, steps: int) -> None: ...
    def step(self, logs: dict[str, float]) -> None: ...
    def close(self) -> None: ...
    def validation_set(self, line: str) -> None: ...
    def validation_progress(self, done: int, total: int) -> None: ...

    def epoch_end(self, row: dict[str, Any]) -> None:
        if row["epoch"] == self.n:
            raise KeyboardInterrupt


RUN_FILES = ("config.json", "metrics.jsonl", "student.safetensors", "samples.png")


def assert_complete_run(run_dir: Path, epochs: int | None = None) -> list[dict[str, Any]]:
    """Assert a finished data-free run left everything a user reads and ``--resume`` needs (and,
    given ``epochs``, one metrics row per epoch); return the metrics rows."""
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "state" / "checkpoint.pt").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if epochs is not None:
        assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    return rows


def checkpoint_objects(run_dir: Path, process: int = 0) -> dict[str, Any]:
    """The state a run's checkpoint holds for ``process``: the objects every process shares
    (student, optimiser, counters) and that process's own (synthesizer, kept images)."""
    import torch

    state = torch.load(run_dir / "state" / "checkpoint.pt", map_location="cpu", weights_only=True)
    return {**state["objects"], **state["processes"][process]["objects"]}


def assert_same_tensors(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    """Two state dicts with the same keys and every tensor equal to the bit."""
    import torch

    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


def assert_same_student(run_a: Path, run_b: Path) -> None:
    """Two runs ended with the same student, bit for bit: what an exact resume must give."""
    from safetensors.torch import load_file

    a, b = (load_file(str(run / "student.safetensors")) for run in (run_a, run_b))
    assert_same_tensors(a, b, "student")


def assert_same_state(a: Any, b: Any, where: str = "process state") -> None:
    """Nested checkpoint state equal to the bit (tensors exactly, everything else by ==)."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


_END_PROCESS_GROUP = """
import runpy, sys
from dfkd.training.process_group import run_then_leave

target = sys.argv.pop(1)
run_then_leave(lambda: runpy.run_path(target, run_name="__main__"))
"""


def run_two_processes(script: Path, *args: str) -> None:
    """Run ``script`` (with ``args``) under torchrun as two processes of one thread each, in the
    script's folder; a failure fails the calling test with the end of the processes' stderr."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    launcher = script.parent / "_end_process_group.py"
    launcher.write_text(_END_PROCESS_GROUP)
    done = subprocess.run(
        [*command, str(launcher), str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        cwd=script.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
