"""Benchmark of `dfkd run lopes` on real Fashion-MNIST: both pairs, every objective, several seeds.

Runs the CLI as a user would (records once per teacher, then one `dfkd run` per cell, one at a
time, under `nice`), and writes a markdown table of the student's final and best top-1 (mean ±
std over seeds) and wall time. Teachers are the checkpoints `dfkd scratch` leaves in
checkpoints/ (see the plugin README).

    python plugins/lopes/benchmarks/fashion_mnist.py --out benchmarks/results/lopes.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PAIRS = (("hinton1200", "hinton800"), ("lenet5", "lenet5_half"))
OBJECTIVES = (
    "top_layer",
    "all_layers",
    "all_layers_dropout",
    "spectral_all_layers",
    "spectral_layer_pairs",
)


def dfkd(*args: str) -> float:
    """Run one dfkd command under nice; return its wall time in seconds."""
    started = time.perf_counter()
    command = ["nice", "-n", "10", str(Path(sys.executable).parent / "dfkd"), *args]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/bench-lopes", help="records and run directories")
    parser.add_argument("--checkpoints", default="checkpoints", help="teacher weights")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/lopes.md")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, raw = [], []
    for teacher, student in PAIRS:
        weights = Path(args.checkpoints) / f"fashion-mnist-{teacher}.safetensors"
        records = work / f"{teacher}.lopes.safetensors"
        record_s = dfkd(
            "lopes", "record", "--teacher", teacher, "--dataset", "fashion-mnist",
            "--teacher-weights", str(weights), "--spectral", "--out", str(records), "--overwrite",
        )  # fmt: skip
        for objective in OBJECTIVES:
            finals, bests, walls = [], [], []
            for seed in range(args.seeds):
                run = work / f"{teacher}-{objective}-{seed}"
                wall = dfkd(
                    "run", "lopes", "--teacher", teacher, "--student", student,
                    "--dataset", "fashion-mnist", "--teacher-weights", str(weights),
                    "--preset", "fashion-mnist", "-o", f"records={records}",
                    "-o", f"objective={objective}", "--seed", str(seed),
                    "--out", str(run), "--overwrite", "-q",
                )  # fmt: skip
                metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
                finals.append(metrics[-1]["top1"])
                bests.append(max(m["top1"] for m in metrics))
                walls.append(wall)
                pair = f"{teacher}->{student}"
                raw.append(
                    {"pair": pair, "objective": objective, "seed": seed, "final": finals[-1],
                     "best": bests[-1], "wall_s": round(wall, 1)}
                )  # fmt: skip
                print(json.dumps(raw[-1]), flush=True)
            rows.append(
                f"| {teacher} → {student} | {objective} | {mean_std(finals)} | {mean_std(bests)} "
                f"| {statistics.mean(walls):.0f} |"
            )
        rows.append(f"| {teacher} → {student} | (records, once) | | | {record_s:.0f} |")
    table = "\n".join(
        [
            "| pair | objective | final top-1 % | best top-1 % | wall s / run |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    Path(args.out).write_text(table + "\n")
    (work / "raw.json").write_text(json.dumps(raw, indent=1))
    print(table)


if __name__ == "__main__":
    main()
