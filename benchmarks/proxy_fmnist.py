"""Does the data-free proxy tell the truth? Agreement on the synthetic validation set against real
test accuracy, over finished data-free runs that scored both (runs on a dataset with a test split).

For every run directory given (each `dfkd run` with `--dataset fashion-mnist`, as `dfkd bench`
writes them), it reads `metrics.jsonl` and `config.json` and reports:

- across runs: Spearman's rank correlation between the last epoch's agreement and its test
  accuracy, over every (method, pair, seed) run;
- across epochs: the same correlation within each run, over its epochs (median over runs);
- what shipping costs: test accuracy of the epoch the proxy picks (highest agreement) minus that of
  the last epoch, and minus that of the test-selected best epoch, per run and on average.

Usage: python benchmarks/proxy_fmnist.py RUN_DIR... [--out benchmarks/results/proxy_fmnist.md]
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
        "best_top1": max(top1),
        "picked_epoch": rows[picked]["epoch"],
        "picked_top1": top1[picked],
        "epoch_rho": rho,
    }


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
    args = parser.parse_args()
    runs = [analyse(read_run(p)) for p in args.runs if (p / "metrics.jsonl").is_file()]
    runs = [r for r in runs if r["rows"]]
    text = report(runs)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
