"""Does the data-free proxy tell the truth? Agreement on the synthetic validation set against real
test accuracy, over finished data-free runs that scored both (runs on a dataset with a test split).

For every run directory given (each `dfkd run` with `--dataset fashion-mnist`, as `dfkd bench`
writes them), it reads `metrics.jsonl` and `config.json` and reports:

- across runs: Spearman's rank correlation between the last epoch's agreement and its test
  accuracy, over every (method, pair, seed) run;
- across epochs: the same correlation within each run, over its epochs (median over runs);
- what shipping costs: test accuracy of the epoch the proxy picks (highest agreement) minus that of
  the last epoch, and minus that of the test-selected best epoch, per run and on average;
- per pair (one teacher, so one validation set): the rank correlation across methods, for the
  run's own set and, with --designs, for other designs of the set, each scoring the runs' last
  students again (a set made without the BatchNorm prior; uniform noise).

Usage: python benchmarks/proxy_fmnist.py RUN_DIR... [--designs] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from scipy.stats import spearmanr


def read_run(path: Path) -> dict:
    options = json.loads((path / "config.json").read_text())["options"]
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line]
    rows = [r for r in rows if "top1" in r and "agree" in r]
    return {
        "name": path.name,
        "method": options["method"],
        "pair": f"{options['teacher']} → {options['student']}",
        "seed": options["seed"],
        "rows": rows,
    }


def analyse(run: dict) -> dict:
    rows = run["rows"]
    top1 = [r["top1"] for r in rows]
    agree = [r["agree"] for r in rows]
    picked = max(range(len(rows)), key=lambda i: (agree[i], i))  # ties: the later epoch
    rho = spearmanr(agree, top1).statistic if len(set(agree)) > 1 and len(set(top1)) > 1 else None
    return {
        **run,
        "last_top1": top1[-1],
        "last_agree": agree[-1],
        "last_kl": rows[-1]["val_kl"],
        "best_top1": max(top1),
        "picked_epoch": rows[picked]["epoch"],
        "picked_top1": top1[picked],
        "epoch_rho": rho,
    }


def rescore(runs: list[dict], paths: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Each run's last student scored on other designs of the validation set: run name ->
    design -> agreement %."""
    import torch

    from dfkd.data import open_dataset
    from dfkd.data.pipeline import InputFormat
    from dfkd.models import build_model, model_input_size
    from dfkd.training.setup import load_teacher, make_accelerator
    from dfkd.training.validation import ValidationSet, agreement, make_validation_set
    from dfkd.weights import load_weights, read_meta

    source = open_dataset("fashion-mnist")
    accelerator = make_accelerator()
    sets: dict[tuple[str, str], ValidationSet] = {}
    scores: dict[str, dict[str, float]] = {}
    for run in runs:
        path = paths[run["name"]]
        options = json.loads((path / "config.json").read_text())["options"]
        teacher, spec, _ = load_teacher(options["teacher"], source, options["teacher_weights"])
        t_fmt = InputFormat.of(source, spec.size)
        for design in ("no BN prior", "noise"):
            if (options["teacher"], design) not in sets:
                if design == "noise":
                    rng = torch.Generator().manual_seed(0)
                    images = torch.rand(500, 1, spec.size, spec.size, generator=rng)
                    with torch.no_grad():
                        logits = teacher(t_fmt.from_pixels(images)).float()
                    made = ValidationSet(images, logits)
                else:
                    made = make_validation_set(teacher, t_fmt, 10, 1, spec.size, bn_prior=False)
                sets[(options["teacher"], design)] = made
        weights = path / "student.safetensors"
        student_name = read_meta(weights)["model"]
        student = load_weights(build_model(student_name, 10, 1), weights)
        s_fmt = InputFormat.of(source, model_input_size(student_name))
        scores[run["name"]] = {
            design: agreement(student, sets[(options["teacher"], design)], s_fmt, accelerator)[
                "agree"
            ]
            for design in ("no BN prior", "noise")
        }
    return scores


def per_pair(runs: list[dict], rescored: dict[str, dict[str, float]] | None) -> str:
    designs = ["agreement", "−KL"]
    if rescored:
        designs += ["agreement, set without BN prior", "agreement, noise"]
    lines = [
        "| pair | methods | " + " | ".join(f"ρ: {d}" for d in designs) + " |",
        "|---|---|" + "---|" * len(designs),
    ]
    for pair in sorted({r["pair"] for r in runs}):
        group = [r for r in runs if r["pair"] == pair]
        top1 = [r["last_top1"] for r in group]
        columns = [[r["last_agree"] for r in group], [-r["last_kl"] for r in group]]
        if rescored:
            columns += [[rescored[r["name"]][d] for r in group] for d in ("no BN prior", "noise")]
        rhos = [f"{spearmanr(c, top1).statistic:.2f}" for c in columns]
        lines.append(f"| {pair} | {len(group)} | " + " | ".join(rhos) + " |")
    return "\n".join(lines) + "\n"


def report(runs: list[dict]) -> str:
    across = spearmanr([r["last_agree"] for r in runs], [r["last_top1"] for r in runs]).statistic
    epoch_rhos = [r["epoch_rho"] for r in runs if r["epoch_rho"] is not None]
    vs_last = [r["picked_top1"] - r["last_top1"] for r in runs]
    vs_best = [r["picked_top1"] - r["best_top1"] for r in runs]
    lines = [
        "| method | pair | seed | last top-1 % | last agreement % | ρ over epochs "
        "| proxy's epoch | its top-1 % | vs last | vs test-selected |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["pair"], r["method"], r["seed"])):
        rho = "–" if r["epoch_rho"] is None else f"{r['epoch_rho']:.2f}"
        lines.append(
            f"| {r['method']} | {r['pair']} | {r['seed']} | {r['last_top1']:.2f} | "
            f"{r['last_agree']:.2f} | {rho} | {r['picked_epoch']} | {r['picked_top1']:.2f} | "
            f"{r['picked_top1'] - r['last_top1']:+.2f} | {r['picked_top1'] - r['best_top1']:+.2f} |"
        )
    summary = [
        f"- Runs: {len(runs)}. Spearman ρ between last-epoch agreement and test accuracy, across "
        f"runs: **{across:.2f}**.",
        f"- Within runs, over epochs: median ρ **{statistics.median(epoch_rhos):.2f}** "
        f"(range {min(epoch_rhos):.2f} to {max(epoch_rhos):.2f}).",
        f"- Shipping the proxy's epoch instead of the last: {statistics.mean(vs_last):+.2f} points "
        f"on average (worst {min(vs_last):+.2f}); instead of the test-selected epoch: "
        f"{statistics.mean(vs_best):+.2f} (worst {min(vs_best):+.2f}).",
    ]
    return "\n".join(summary) + "\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--designs", action="store_true", help="Also score other set designs.")
    args = parser.parse_args()
    paths = {p.name: p for p in args.runs if (p / "metrics.jsonl").is_file()}
    runs = [r for r in (analyse(read_run(p)) for p in paths.values()) if r["rows"]]
    rescored = rescore(runs, paths) if args.designs else None
    text = report(runs) + "\n" + per_pair(runs, rescored)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
