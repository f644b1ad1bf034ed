"""A BatchNorm-free student's first epochs, measured: DFQ's `default` preset from the five-class
robustness teacher, whose first try in the robustness bench answered one class for everything
(20.0 % on the test split) before the collapse guard existed.

Three runs of the first four epochs (before the guard's patience of five epochs, so that it
does not step in), each a `dfkd run`, differing only in the student's step:

- lr 0.1, no clip: the Fashion-MNIST preset's student step;
- lr 0.1, gradient norm clipped at 5: the `default` preset's;
- lr 0.02, no clip.

Per epoch, from metrics.jsonl: the student's gradient norm before clipping (mean and largest
over the epoch's steps), the share of the validation set the student gives its most frequent
class, its agreement with the teacher there, and its top-1 on the real test split. Writes
benchmarks/results/student_collapse.md. Needs the teacher of `python benchmarks/robust_teachers.py
--only five-class`.

Usage: python benchmarks/student_collapse.py [--root runs/student-collapse] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import provenance

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "student_collapse.md"
TEACHER = "checkpoints/robust/five-class.safetensors"
DATASET = "folder:data/robust/five-class"
EPOCHS = 4
#: each student step: its run folder's name, how the table names it, its options
STEPS = {
    "lr01-noclip": ("lr 0.1, no clip", ("lr=0.1", "grad_clip=0")),
    "lr01-clip5": ("lr 0.1, clip 5 (`default`)", ("lr=0.1", "grad_clip=5")),
    "lr002-noclip": ("lr 0.02, no clip", ("lr=0.02", "grad_clip=0")),
}
COLUMNS = ("grad_norm", "grad_norm_max", "val_top_class", "agree", "top1")


def run(out: Path, seed: int, options: tuple[str, ...]) -> list[dict]:
    """The run's metrics rows, running it first unless a finished one is there."""
    metrics = out / "metrics.jsonl"
    if not metrics.exists() or len(metrics.read_text().splitlines()) < EPOCHS:
        args = ["run", "dfq", "--teacher", "lenet5_bn", "--teacher-weights", TEACHER]
        args += ["--student", "lenet5_half", "--dataset", DATASET, "--preset", "default"]
        args += ["--seed", str(seed), "--mixed-precision", "no", "-o", f"epochs={EPOCHS}"]
        args += [*sum((["-o", o] for o in options), []), "--out", str(out), "--overwrite", "-q"]
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "dfkd", *args], check=True, cwd=ROOT, env=env)
    return [json.loads(line) for line in metrics.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/student-collapse")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    commit = provenance.commit()
    seeds = " ".join(map(str, args.seeds))
    text = f"""# A BatchNorm-free student's first epochs: DFQ from the five-class teacher

`python benchmarks/student_collapse.py --seeds {seeds}`, {datetime.date.today()}, commit
{commit}: DFQ's `default` preset, lenet5_bn (five classes) → lenet5_half, float32, the first
{EPOCHS} epochs, one torch thread. Gradient norms are the student's, before clipping, mean and
largest over an epoch's steps; "one class" is the share of the synthetic validation set the
student gives its most frequent class (the teacher's is 20 %); top-1 on the real test split.

| student step | seed | epoch | gradient norm | largest | one class % | agree % | top-1 % |
|---|---|---|---|---|---|---|---|
"""
    for folder, (name, options) in STEPS.items():
        for seed in args.seeds:
            for row in run(ROOT / args.root / f"{folder}-seed{seed}", seed, options):
                cells = " | ".join(f"{row.get(c, float('nan')):.2f}" for c in COLUMNS)
                text += f"| {name} | {seed} | {row['epoch']} | {cells} |\n"
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
