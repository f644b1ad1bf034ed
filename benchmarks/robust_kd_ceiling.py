"""What share of each robustness teacher a student keeps when the real data is there: the ceiling
the data-free methods of benchmarks/robustness.toml are measured against.

The robustness targets are set as a share of the teacher (90 %, 95 % for NAYER and DFQ). A
student has a ceiling of its own: lenet5_half distilled with vanilla KD on the teacher's real
training split, as `dfkd kd` does it, is about as good as a data-free run of that student can
hope to be. For each cached teacher of `python benchmarks/robust_teachers.py` this runs

    dfkd kd --teacher lenet5_bn --teacher-weights checkpoints/robust/<name>.safetensors
            --student lenet5_half --dataset <the teacher's dataset> --epochs 10 --seed S

(a process each, resumed when stopped part-way) and writes the last epoch's test top-1, and its
share of the teacher's own score (the sidecar's), to benchmarks/results/robust_kd_ceiling.md.
A seed whose student ended at chance (within 1.2 times it) learned nothing: `dfkd kd` has no
collapse guard, so it is named beside the row and left out of the mean, not averaged in.

Usage: python benchmarks/robust_kd_ceiling.py [--seeds 0] [--epochs 10] [--root runs/robust-kd]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
from pathlib import Path

import provenance

from dfkd.training.runs import RunDir
from dfkd.weights import read_meta

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "robust_kd_ceiling.md"
CACHE = ROOT / "checkpoints" / "robust"
#: the teachers in the README's column order; a teacher not made yet is left out
TEACHERS = ("overfit", "smooth", "undertrained", "five-class", "inverted", "colour32", "resnet")


def last_top1(out: Path, teacher: Path, dataset: str, seed: int, epochs: int) -> float:
    """The run's last-epoch test top-1, running (or resuming) it first unless it is finished."""
    rows = RunDir(out).read_metrics()
    if len(rows) < epochs:
        args = ["kd", "--resume", str(out), "-q"]
        if not rows:
            args = ["kd", "--teacher-weights", str(teacher), "--student", "lenet5_half", "-q"]
            args += ["--dataset", dataset, "--epochs", str(epochs), "--seed", str(seed)]
            args += ["--out", str(out), "--overwrite"]
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "dfkd", *args], check=True, cwd=ROOT, env=env)
        rows = RunDir(out).read_metrics()
    return rows[-1]["top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--root", default="runs/robust-kd")
    args = parser.parse_args()
    commit = provenance.commit()
    seeds = " ".join(map(str, args.seeds))
    text = f"""# The real-data ceiling of the robustness teachers' student

`python benchmarks/robust_kd_ceiling.py --seeds {seeds} --epochs {args.epochs}`,
{datetime.date.today()}, commit {commit}: `dfkd kd` (vanilla KD, its defaults: T 1, SGD lr 0.1
cosine, batch 256) from each robustness teacher to lenet5_half on the teacher's own real training
split, {args.epochs} epochs, float32, one torch thread. Top-1 % on the real test split, last epoch,
mean ± std over seeds; the share is of the teacher's own test score.

| teacher | its top-1 % | KD student top-1 % | share of the teacher % |
|---|---|---|---|
"""
    for name in TEACHERS:
        weights = CACHE / f"{name}.safetensors"
        if not weights.exists():
            continue
        sidecar = read_meta(weights)
        runs = {seed: ROOT / args.root / f"{name}-seed{seed}" for seed in args.seeds}
        dataset = sidecar["dataset"]
        ended = {
            seed: last_top1(out, weights, dataset, seed, args.epochs) for seed, out in runs.items()
        }
        chance = 100.0 / sidecar["num_classes"]
        dead = {seed: top1 for seed, top1 in ended.items() if top1 <= 1.2 * chance}
        died = "".join(f"; seed {s} ended at chance, {top1:.2f} %" for s, top1 in dead.items())
        scores = [top1 for seed, top1 in ended.items() if seed not in dead]
        if not scores:
            text += f"| {name} | {sidecar['top1']:.2f} | every seed ended at chance | — |\n"
            continue
        mean = statistics.fmean(scores)
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        share = 100 * mean / sidecar["top1"]
        shown = f"{mean:.2f} ± {spread:.2f}"
        if dead:
            shown += f" ({len(scores)} of {len(ended)} seeds{died})"
        text += f"| {name} | {sidecar['top1']:.2f} | {shown} | {share:.1f} |\n"
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
