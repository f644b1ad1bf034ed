"""Data-free distillation on real Fashion-MNIST: student accuracy over seeds, and wall time.

Teacher: the Fashion-MNIST teacher of `benchmarks/scratch_fmnist.py` (checkpoints/
fashion-mnist-<teacher>.safetensors); student lenet5_half; the method's `fashion-mnist` preset.
A run that reaches the time budget stops after its current epoch and counts what it reached.
Appends one row per (method, pair) to benchmarks/results/datafree_fmnist.md.

Usage: python benchmarks/datafree_fmnist.py --method dafl [--teacher lenet5] [--seeds 3]
       [--minutes 10] [--mixed-precision bf16] [-o key=value ...]

On a CPU with AVX-512 BF16 (this project's 2-core machines), `--mixed-precision bf16` runs the
generators about twice as fast; the table's options column says which runs used it.

Under `torchrun --standalone --nproc_per_node 2 benchmarks/datafree_fmnist.py ...` a run uses
both cores as two data-parallel processes (batch_size is then per process). The time budget is
not enforced there, since one process stopping alone would leave the other waiting for it; the
minutes column shows whether the preset fits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from dfkd.data import open_dataset
from dfkd.training.datafree import RunConfig, run_datafree
from dfkd.training.inputs import InputFormat, evaluate
from dfkd.training.loop import SilentReporter
from dfkd.training.setup import load_teacher, make_accelerator

RESULTS = Path(__file__).parent / "results" / "datafree_fmnist.md"
HEADER = (
    "| method | teacher → student | teacher % | student % (last, mean ± std) | best % (mean) "
    "| seeds | minutes per run | options |\n|---|---|---|---|---|---|---|---|\n"
)


class Budget(SilentReporter):
    """Stops a run at the first epoch boundary after the time budget."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def epoch_end(self, row: dict) -> None:
        if time.perf_counter() > self.deadline:
            raise TimeoutError


def teacher_accuracy(teacher: str, mixed_precision: str) -> float:
    """Scored like the students: accelerate allows one precision per process anyway."""
    source = open_dataset("fashion-mnist")
    net, spec, _ = load_teacher(teacher, source)
    images, labels = source.load("test")
    fmt = InputFormat.of(source, spec.size)
    return evaluate(net, images, labels, fmt, make_accelerator(mixed_precision))["top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True)
    parser.add_argument("--teacher", default="lenet5")
    parser.add_argument("--student", default="lenet5_half")
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("-o", "--option", action="append", default=[])
    args = parser.parse_args()
    # torchrun's variables: the accelerator that reads them is only made inside each run
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    main_process = int(os.environ.get("RANK", "0")) == 0
    say = print if main_process else (lambda *a, **k: None)
    last, best, minutes = [], [], []
    for seed in range(args.seeds):
        cfg = RunConfig(
            method=args.method,
            teacher=args.teacher,
            student=args.student,
            dataset="fashion-mnist",
            preset=args.preset,
            overrides=args.option,
            seed=seed,
            mixed_precision=args.mixed_precision,
            out=f"runs/bench-{args.method}-{args.teacher}-seed{seed}",
            overwrite=True,
        )
        start = time.perf_counter()
        try:
            budget = Budget(args.minutes * 60) if processes == 1 else None
            outcome = run_datafree(cfg, reporter=budget)
            metrics = outcome.metrics
        except TimeoutError:
            from dfkd.training.runs import RunDir

            metrics = RunDir(Path(cfg.out)).read_metrics()
        minutes.append((time.perf_counter() - start) / 60)
        last.append(metrics[-1]["top1"])
        best.append(max(r["top1"] for r in metrics))
        say(
            f"seed {seed}: last {last[-1]:.2f} % best {best[-1]:.2f} % after "
            f"{metrics[-1]['epoch']} epochs, {minutes[-1]:.1f} min",
            flush=True,
        )
    spread = statistics.stdev(last) if len(last) > 1 else 0.0
    teacher = teacher_accuracy(args.teacher, args.mixed_precision)
    flags = [f"--preset {args.preset}", *(f"-o {o}" for o in args.option)]
    if processes > 1:
        flags.insert(0, f"{processes} processes")
    if args.mixed_precision != "no":
        flags.append(f"--mixed-precision {args.mixed_precision}")
    row = (
        f"| {args.method} | {args.teacher} → {args.student} | {teacher:.2f} | "
        f"{statistics.mean(last):.2f} ± {spread:.2f} | {statistics.mean(best):.2f} | "
        f"{args.seeds} | {statistics.mean(minutes):.1f} | {' '.join(flags)} |"
    )
    say(
        f"teacher {teacher:.2f} %  student {statistics.mean(last):.2f} ± {spread:.2f} %  "
        f"{statistics.mean(minutes):.1f} min per run"
    )
    if not main_process:
        return
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    with RESULTS.open("a") as f:
        f.write(row + "\n")


if __name__ == "__main__":
    main()
