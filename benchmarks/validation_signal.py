"""How well agreement on the synthetic validation set ranks finished students, without data.

A run without a test split is read on its student's agreement with the teacher on images inverted
from the teacher (dfkd/training/validation.py). This script takes finished `dfkd bench` runs
whose cells were scored on each teacher's real test split, makes each teacher's validation set by
two recipes, and asks how well each recipe's agreement orders the students as their real test
accuracy (as a share of the teacher's) does: Spearman's rank correlation, within each teacher (the
question a user with one teacher asks: which student is better) and over all cells. It ranks them
by Cohen's kappa on the smoothed set too (agreement beyond what the answer counts alone give).

    python benchmarks/validation_signal.py DIR [DIR ...] [--root R] [--size N]

The recipes:
- `sharp`: the inversion as it was up to 2026-12-07 (60 Adam steps, no jitter, the images kept
  as inverted);
- `smoothed`: the classification default since (`Task.validation_steps` steps with
  DeepInversion's jitter and flips, the images kept low-passed).

Both use `--size` images a teacher (default: the runs' 500, on which agreement near 50 % has a
binomial spread of about ±2 points). Relative teacher paths in
the cells' config.json are read from `--root` (the bench's checkout). Writes
benchmarks/results/validation_signal.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import mean

import torch
from scipy.stats import spearmanr

from dfkd.data.pipeline import InputFormat
from dfkd.models import build_model
from dfkd.tasks import CLASSIFICATION
from dfkd.training.guard import WEAK_KAPPA, weak_student
from dfkd.training.setup import make_accelerator
from dfkd.training.validation import ValidationSet, agreement, default_steps, make_validation_set
from dfkd.weights import load_weights, read_meta

RESULT = Path(__file__).parent / "results" / "validation_signal.md"
SHARP_STEPS = 60
RECIPES = {
    "sharp": {"steps": SHARP_STEPS, "smoothed": False},
    "smoothed": {"steps": default_steps(CLASSIFICATION), "smoothed": True},
}
#: what orders the students: agreement on each recipe's set, and Cohen's kappa on the smoothed
SIGNALS = (*RECIPES, "kappa")


def load(path: Path) -> tuple[torch.nn.Module, dict]:
    meta = read_meta(path)
    model = build_model(meta["model"], meta["num_classes"], meta["channels"])
    return load_weights(model, path).eval(), meta


def spearman(a: list[float], b: list[float]) -> float:
    return float(spearmanr(a, b).statistic)


def cells_of(dirs: list[Path]) -> list[Path]:
    return sorted(
        cell
        for d in dirs
        for cell in (d / "cells").iterdir()
        if (cell / "student.safetensors").is_file() and (cell / "cell.json").is_file()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="finished `dfkd bench` output folders")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the bench's checkout")
    parser.add_argument("--size", type=int, default=500, help="validation images a teacher")
    args = parser.parse_args()
    torch.set_num_threads(1)

    accelerator = make_accelerator()
    teachers: dict[Path, tuple[torch.nn.Module, dict]] = {}
    sets: dict[str, dict[str, ValidationSet]] = {}
    seconds: dict[str, dict[str, float]] = {}
    rows = []
    for cell in cells_of(args.dirs):
        info = json.loads((cell / "cell.json").read_text())
        given = json.loads((cell / "config.json").read_text())["options"]["teacher_weights"]
        if given is None:
            print(f"skipped {cell.name}: its teacher was the default checkpoint", flush=True)
            continue
        weights = (args.root / given).resolve()
        if weights not in teachers:
            teachers[weights] = load(weights)
        teacher, meta = teachers[weights]
        fmt = InputFormat(tuple(meta["mean"]), tuple(meta["std"]), meta.get("input_size"))
        size = meta.get("input_size") or meta["image_size"]
        name = weights.stem
        if name not in sets:
            sets[name], seconds[name] = {}, {}
            for recipe, how in RECIPES.items():
                started = time.perf_counter()
                made = make_validation_set(
                    teacher, fmt, meta["num_classes"], meta["channels"], size, args.size, **how
                )
                seconds[name][recipe] = time.perf_counter() - started
                sets[name][recipe] = made
            print(f"sets of {name}: {seconds[name]}", flush=True)
        student, student_meta = load(cell / "student.safetensors")
        s_fmt = InputFormat(fmt.mean, fmt.std, student_meta.get("input_size"))
        row = {
            "cell": cell.name,
            "teacher": name,
            "method": info["method"],
            "share": 100.0 * info["last_score"] / meta["top1"],
        }
        scored = {r: agreement(student, v, s_fmt, accelerator) for r, v in sets[name].items()}
        row |= {recipe: scores["agree"] for recipe, scores in scored.items()}
        row["kappa"] = scored["smoothed"].get("val_kappa", 0.0)
        said = weak_student(scored["smoothed"], meta["num_classes"], CLASSIFICATION)
        row["weak"] = said is not None
        rows.append(row)
        print(json.dumps(row), flush=True)
    write(rows, seconds, args)


def write(rows: list[dict], seconds: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    teachers = sorted({r["teacher"] for r in rows})
    lines = [
        "# Agreement on the validation set against real test accuracy",
        "",
        f"`python benchmarks/validation_signal.py {' '.join(str(d) for d in args.dirs)}`, "
        f"{time.strftime('%Y-%m-%d')}: {len(rows)} finished students of {len(teachers)} teachers, "
        f"{args.size} validation images a teacher and recipe. Spearman's rank correlation between "
        "a student's agreement with its teacher and its last-epoch test top-1 as a share of the "
        "teacher's (1: the same order; 0: none).",
        "",
        "The last column ranks by Cohen's kappa on the smoothed set instead: agreement beyond "
        "what the student's and the teacher's answer counts alone give.",
        "",
        "| teacher | students | "
        + " | ".join(RECIPES)
        + " | smoothed, kappa | seconds to make (sharp / smoothed) |",
        "|---|---|" + "---|" * len(SIGNALS) + "---|",
    ]
    within = {signal: [] for signal in SIGNALS}
    for teacher in teachers:
        group = [r for r in rows if r["teacher"] == teacher]
        shares = [r["share"] for r in group]
        cells = []
        for signal in SIGNALS:
            rho = spearman([r[signal] for r in group], shares)
            within[signal].append(rho)
            cells.append(f"{rho:.2f}")
        made = " / ".join(f"{seconds[teacher][r]:.0f}" for r in RECIPES)
        lines.append(f"| {teacher} | {len(group)} | " + " | ".join(cells) + f" | {made} |")
    lines.append(
        "| **mean within a teacher** | | "
        + " | ".join(f"**{mean(v):.2f}**" for v in within.values())
        + " | |"
    )
    shares = [r["share"] for r in rows]
    lines.append(
        f"| all cells together | {len(rows)} | "
        + " | ".join(f"{spearman([r[k] for r in rows], shares):.2f}" for k in SIGNALS)
        + " | |"
    )
    lines += [
        "",
        "A finished run calls its student weak (`dfkd.training.guard.weak_student`) when its "
        "agreement on the smoothed set has come less than a fifth of the way from chance (1/K) "
        f"to 100 %, or its kappa there is under {WEAK_KAPPA}, or it answers one class for 90 % "
        "of the set where the teacher answers it for at most half. Called weak here: "
        + _shares([r for r in rows if r["weak"]])
        + "; not called weak: "
        + _shares([r for r in rows if not r["weak"]])
        + ".",
        "",
        "Every student, by teacher and test share (agreement %, sharp / smoothed; kappa on "
        "the smoothed set):",
        "",
        "| teacher | method | test top-1, % of the teacher | sharp | smoothed | kappa | weak |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["teacher"], r["share"])):
        lines.append(
            f"| {r['teacher']} | {r['method']} | {r['share']:.1f} | {r['sharp']:.1f} | "
            f"{r['smoothed']:.1f} | {r['kappa']:.2f} | {'yes' if r['weak'] else ''} |"
        )
    RESULT.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULT}")


def _shares(rows: list[dict]) -> str:
    """How many students, and the range of their test shares of the teacher."""
    if not rows:
        return "none"
    shares = [r["share"] for r in rows]
    return f"{len(rows)} students, {min(shares):.0f}-{max(shares):.0f} % of their teacher"


if __name__ == "__main__":
    main()
