"""Data-free segmentation at CPU scale: DFAD on Fashion-MNIST scenes, beside its teacher and KD
on the real scenes.

Every step is a `dfkd` command, run one after another with one torch thread each, and skipped
when its run directory already holds a finished run, so the script can be stopped and started
again:

1. `dfkd make-scenes` writes the scenes (seed 0).
2. `dfkd scratch` trains the teacher.
3. For seeds 0, 1, 2: `dfkd run dfad-bn --preset fashion-mnist-scenes` (dfkd's variant: DFAD's
   game with the teacher's BatchNorm-statistics prior on the generator; no real image), `dfkd
   run deepinv --preset fashion-mnist-scenes` (pixels inverted from the teacher towards class
   layouts, its BatchNorm statistics matched), `dfkd kd` (the student on the real train scenes,
   KL at T 4) and `dfkd run dfad --preset fashion-mnist-scenes` (the paper's game).

Two benchmarks (`--style`):

- ``black`` (the default): 6000 train and 1000 test black canvases of 64 × 64 (11 classes),
  segnet_small (0.33 M) → segnet_small_half (0.08 M), about four hours for everything on a
  shared 2-core machine (minutes per run in the table); writes
  benchmarks/results/scenes_fmnist.md. The stress case: 78 % of the pixels are background, of
  one value.
- ``street``: 3000 train and 500 test CamVid-like street scenes of 128 × 128 (13 classes,
  colour, textured sky, building and road), a DeepLabV3-MobileNetV2 teacher (5.1 M) →
  segnet_small; writes benchmarks/results/street_scenes.md. At 128 px the teacher costs about
  3-6 s a batch of 16 forward and backward on one CPU thread (2026-12-07), so the whole
  benchmark is some ten CPU hours; on a GPU, minutes.

Each table gives test mIoU and pixel accuracy of the last epoch, mean ± std over the seeds and
each seed's, the test-selected best epoch in brackets, minutes per run, and each data-free run's
budget: its student and generator steps against the reference CamVid script's 75,000 and 15,000.

Usage: python benchmarks/scenes_fmnist.py [--style black|street] [--root DIR] [--data DIR]
           [--report-only]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import provenance

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Benchmark:
    """One scenes benchmark: its data, its pair and how long each is trained."""

    title: str
    data: str
    root: str
    scenes: tuple[str, ...]  # `dfkd make-scenes` arguments
    described: str  # the data, for the table's caption
    teacher: str
    student: str
    teacher_epochs: int
    kd_epochs: int
    results: str


BENCHMARKS = {
    "black": Benchmark(
        title="Segmentation: DFAD, DFAD-BN and DeepInversion on Fashion-MNIST scenes",
        data="data/fmnist-scenes",
        root="runs/scenes",
        scenes=("--train", "6000", "--test", "1000"),
        described="6000 train and 1000 test scenes of `dfkd make-scenes` (64 × 64, 11 classes)",
        teacher="segnet_small",
        student="segnet_small_half",
        teacher_epochs=8,
        kd_epochs=8,
        results="scenes_fmnist.md",
    ),
    "street": Benchmark(
        title="Segmentation: DFAD, DFAD-BN and DeepInversion on street scenes",
        data="data/street-scenes",
        root="runs/street-scenes",
        scenes=("--style", "street", "--train", "3000", "--test", "500"),
        described="3000 train and 500 test scenes of `dfkd make-scenes --style street` "
        "(128 × 128, colour, 13 classes)",
        teacher="deeplabv3_mobilenetv2",
        student="segnet_small",
        teacher_epochs=8,
        kd_epochs=8,
        results="street_scenes.md",
    ),
}
#: the data-free methods compared, and how the table names them
DATA_FREE = {
    "dfad": "DFAD (the paper's game)",
    "dfad-bn": "DFAD-BN (dfkd's variant: + the teacher's BatchNorm statistics)",
    "deepinv": "DeepInversion (pixels towards class layouts; generator steps: pixel steps)",
}
#: DFAD_camvid_deeplab.py: 300 epochs of 250 student steps, one generator step per 5
REFERENCE_STEPS = (75_000, 15_000)


def dfkd(*args: str) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "dfkd", *args, "-q"], check=True, env=env, cwd=ROOT)


def rows(run: Path) -> list[dict]:
    file = run / "metrics.jsonl"
    return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []


def complete(run: Path) -> bool:
    """The run directory holds every epoch its recorded options asked for."""
    config = run / "config.json"
    if not config.exists():
        return False
    options = json.loads(config.read_text())["options"]
    return len(rows(run)) == options.get("resolved_options", options)["epochs"]


def step(run: Path, command: str, *args: str) -> None:
    """Run ``dfkd COMMAND ARGS`` into ``run``, resume it, or leave a complete run alone."""
    if complete(run):
        return
    if (run / "state" / "checkpoint.pt").exists():
        dfkd(command, "--resume", str(run))
    else:
        dfkd(command, *args, "--out", str(run), "--overwrite")


def summary(runs: list[Path]) -> dict[str, str]:
    last = [rows(r)[-1] for r in runs]
    best = [max(r["miou"] for r in rows(run)) for run in runs]

    def spread(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {std:.2f}"

    minutes = statistics.mean(sum(r["seconds"] for r in rows(run)) / 60 for run in runs)
    names = ", ".join(run.name.rsplit("-seed", 1)[1] for run in runs)
    return {
        "miou": f"{spread([r['miou'] for r in last])} ({statistics.mean(best):.2f})",
        "seeds": ", ".join(f"{r['miou']:.2f}" for r in last) + f" (seeds {names})",
        "pixel_acc": spread([r["pixel_acc"] for r in last]),
        "minutes": f"{minutes:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", choices=sorted(BENCHMARKS), default="black")
    parser.add_argument(
        "--root", help="Runs folder [default: runs/scenes; street: runs/street-scenes]."
    )
    parser.add_argument(
        "--data", help="Scenes folder [default: data/fmnist-scenes; street: data/street-scenes]."
    )
    parser.add_argument(
        "--report-only", action="store_true", help="Write the table of the finished runs."
    )
    args = parser.parse_args()
    bench = BENCHMARKS[args.style]
    data_name = args.data or bench.data
    root, data = ROOT / (args.root or bench.root), ROOT / data_name
    if args.report_only:
        write_results(root, args.style)
        return
    dataset = f"folder:{data_name}"
    if not (data / "classes.txt").exists():
        dfkd("make-scenes", data_name, "--seed", "0", *bench.scenes)
    teacher = root / "teacher"
    step(
        teacher, "scratch", "--model", bench.teacher, "--dataset", dataset,
        "--epochs", str(bench.teacher_epochs), "--batch-size", "64", "--lr", "0.05",
    )  # fmt: skip
    pair = ["--teacher", bench.teacher, "--student", bench.student, "--dataset", dataset]
    pair += ["--teacher-weights", str(teacher / "model.safetensors")]
    # method by method, the data-free ones with a prior first: a benchmark stopped part-way has
    # whole rows for them, and `write_results` tables every method whose seeds all finished
    for method in ("dfad-bn", "deepinv", "kd", "dfad"):
        for seed in SEEDS:
            if method == "kd":
                step(
                    root / f"kd-seed{seed}", "kd", *pair, "--epochs", str(bench.kd_epochs),
                    "--batch-size", "64", "--lr", "0.05", "--temperature", "4",
                    "--seed", str(seed),
                )  # fmt: skip
            else:
                step(
                    root / f"{method}-seed{seed}", "run", method, *pair,
                    "--preset", "fashion-mnist-scenes", "--seed", str(seed),
                )  # fmt: skip
    write_results(root, args.style)


def budget(run: Path) -> str:
    """A data-free run's student and generator steps, against the reference's."""
    options = json.loads((run / "config.json").read_text())["options"]["resolved_options"]
    student = options["epochs"] * options["ep_steps"]
    generator = student // options["kd_steps"] * options["g_steps"]
    return (
        f"{student:,} / {generator:,} ({100 * student / REFERENCE_STEPS[0]:.1f} % of the "
        f"reference's {REFERENCE_STEPS[0]:,} / {REFERENCE_STEPS[1]:,})"
    )


def finished(root: Path, method: str) -> list[Path]:
    """The seeds of ``method`` whose runs are complete."""
    return [root / f"{method}-seed{s}" for s in SEEDS if complete(root / f"{method}-seed{s}")]


def write_results(root: Path, style: str) -> None:
    """The table of every method with a finished seed; a row of fewer than three says so."""
    bench = BENCHMARKS[style]
    teacher = rows(root / "teacher")[-1]
    kd = summary(finished(root, "kd"))
    data_free = {m: summary(finished(root, m)) for m in DATA_FREE if finished(root, m)}
    commit = provenance.commit()
    text = f"""# {bench.title}

`python benchmarks/scenes_fmnist.py --style {style}`, {datetime.date.today()}, commit {commit}:
{bench.described}, seed 0; one torch thread per run, on a 2-core machine that other benchmarks
shared (minutes are wall time). Test mIoU % of the last epoch, mean ± std over the seeds listed;
in brackets the mean of each seed's best epoch, **selected on the test set**.

| student {bench.student} | data | mIoU % | per seed | pixel accuracy % | \
minutes per run | student / generator steps |
|---|---|---|---|---|---|---|
| teacher {bench.teacher}, {bench.teacher_epochs} epochs, seed 0 | real scenes, labels | \
{teacher["miou"]:.2f} | | {teacher["pixel_acc"]:.2f} | \
{sum(r["seconds"] for r in rows(root / "teacher")) / 60:.1f} | |
| KD, {bench.kd_epochs} epochs, T 4 | real scenes, no labels | {kd["miou"]} | {kd["seeds"]} | \
{kd["pixel_acc"]} | {kd["minutes"]} | |
"""
    for method, row in data_free.items():
        text += (
            f"| {DATA_FREE[method]}, `--preset fashion-mnist-scenes` | none | {row['miou']} | "
            f"{row['seeds']} | {row['pixel_acc']} | {row['minutes']} | "
            f"{budget(root / f'{method}-seed0')} |\n"
        )
    (ROOT / "benchmarks" / "results" / bench.results).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
