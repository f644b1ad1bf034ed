"""INT8 students without data, on real Fashion-MNIST: float against INT8 calibrated on the teacher's
synthetic images and INT8 calibrated on real training images (the limit), in one sitting.

For each finished data-free run given (a student distilled from the demo's LeNet-5-BN teacher,
e.g. the cells of `dfkd bench benchmarks/default-vs-dfq.toml`), it writes three ONNX files with
`dfkd export` and `dfkd quantize`, scores each on the real test split with `dfkd eval` (the file a
runtime loads, through onnxruntime), and times them in onnxruntime on one thread: the float and
INT8 sessions alternate, batch after batch, so that a busy machine slows both alike. The table
(per run, then mean ± std over runs) goes to benchmarks/results/quantize_fmnist.md and the plot
to docs/images/quantize-fmnist.png.

Whether integer kernels pay depends on the model's width more than on anything else: a second
table times the zoo's classifiers, float against INT8 made by the same onnxruntime quantisation
(random weights and calibration: only the time is meant), at 32 px in batches of 64.

Students distilled quantisation-aware (`--qat RUN_DIR ...`, e.g. the cells of `dfkd bench
benchmarks/quantize-fmnist.toml`, W4A4) are scored as PyTorch runs them, fake-quantised, and as
their INT8 file (`dfkd quantize`, the width onnxruntime executes).

Usage: python benchmarks/quantize_fmnist.py RUN_DIR [RUN_DIR ...] [--qat RUN_DIR ...]
           [--repeats 200] [--zoo lenet5_half,lenet5_bn,wrn16_1,wrn40_2,resnet18,vgg11]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import provenance

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "quantize_fmnist.md"
PLOT = ROOT / "docs" / "images" / "quantize-fmnist.png"
VARIANTS = {
    "float": ("export {run} --format onnx --out {out} --overwrite", "float32"),
    "int8-synthetic": (
        "quantize {run} --out {out} --overwrite",
        "INT8, synthetic calibration",
    ),
    "int8-real": (
        "quantize {run} --calibration-dataset fashion-mnist --out {out} --overwrite",
        "INT8, real calibration (limit)",
    ),
}
BATCHES = (1, 256)


def dfkd(command: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dfkd")), *command.split()],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"dfkd {command} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def latencies(
    files: dict[str, Path], batch: int, repeats: int, channels: int = 1
) -> dict[str, float]:
    """Median milliseconds a batch, the sessions taking turns, one intra-op thread each."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = {
        k: onnxruntime.InferenceSession(str(f), options, providers=["CPUExecutionProvider"])
        for k, f in files.items()
    }
    x = np.random.default_rng(0).random((batch, channels, 32, 32), dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for session in sessions.values():
        session.run(None, {"input": x})
    for _ in range(repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"input": x})
            times[name].append(1000 * (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in times.items()}


def measure(run: Path, repeats: int) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    files = {}
    for name, (command, _) in VARIANTS.items():
        out = run / f"bench-{name}.onnx"
        dfkd(command.format(run=run, out=out))
        scored = json.loads(dfkd(f"eval --weights {out} --dataset fashion-mnist --json"))
        rows[name] = {"top1": scored["top1"], "kib": out.stat().st_size / 1024}
        files[name] = out
    for batch in BATCHES:
        for name, ms in latencies(files, batch, repeats if batch > 1 else 5 * repeats).items():
            rows[name][f"ms@{batch}"] = ms
    return rows


def zoo_latency(names: list[str], repeats: int) -> list[str]:
    """Float and INT8 milliseconds for a batch of 64 of each zoo model, as table rows."""
    import tempfile

    import torch

    from dfkd.export import Deployable, export_onnx, quiet
    from dfkd.models import build_model
    from dfkd.quantize import quantize_onnx

    rows = []
    for name in names:
        channels = 1 if name.startswith("lenet") else 3
        model = build_model(name, 10, channels).eval()
        x = torch.rand(64, channels, 32, 32, generator=torch.Generator().manual_seed(0))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            with quiet(), torch.no_grad():
                blob = export_onnx(Deployable(model), x[:2])[0]
            (folder / "f.onnx").write_bytes(blob)
            prepared, quantized = folder / "p.onnx", folder / "q.onnx"
            quantize_onnx(folder / "f.onnx", prepared, quantized, [x[:32], x[32:]], "minmax")
            ms = latencies({"float": prepared, "int8": quantized}, 64, repeats, channels)
        rows.append(
            f"| {name} | {sum(p.numel() for p in model.parameters()) / 1e6:.3f} | "
            f"{ms['float']:.2f} | {ms['int8']:.2f} | {ms['float'] / ms['int8']:.2f}x |"
        )
    return rows


def measure_qat(run: Path) -> dict[str, float]:
    """A quantisation-aware student's test top-1 fake-quantised in PyTorch and as INT8 file."""
    out = run / "bench-int8-qat.onnx"
    dfkd(f"quantize {run} --out {out} --overwrite")
    scores = {}
    for name, weights in (("fake", run / "student.safetensors"), ("int8", out)):
        scored = json.loads(dfkd(f"eval --weights {weights} --dataset fashion-mnist --json"))
        scores[name] = scored["top1"]
    scores["scheme"] = json.loads((run / "student.json").read_text())["quantized"]
    return scores


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def report(
    measured: dict[str, dict[str, dict[str, float]]],
    commit: str,
    zoo: list[str],
    qat: dict[str, dict[str, float]],
) -> str:
    lines = [
        f"_`python benchmarks/quantize_fmnist.py`, {datetime.date.today()}, commit {commit}, "
        "onnxruntime on one thread of this 2-core CPU. Students: LeNet-5-half distilled from "
        "the demo's LeNet-5-BN teacher (91.31 %)._",
        "",
        "| run | model | top-1 % | size KiB | ms / batch of 1 | ms / batch of 256 |",
        "|---|---|---|---|---|---|",
    ]
    for run, rows in measured.items():
        for name, row in rows.items():
            lines.append(
                f"| {run} | {VARIANTS[name][1]} | {row['top1']:.2f} | {row['kib']:.1f} | "
                f"{row['ms@1']:.3f} | {row['ms@256']:.2f} |"
            )
    lines += ["", "Mean ± std over the runs:", ""]
    lines += [
        "| model | top-1 % | speed-up, batch of 1 | speed-up, batch of 256 |",
        "|---|---|---|---|",
    ]
    for name in VARIANTS:
        top1 = [rows[name]["top1"] for rows in measured.values()]
        ratio = {
            b: [rows["float"][f"ms@{b}"] / rows[name][f"ms@{b}"] for rows in measured.values()]
            for b in BATCHES
        }
        lines.append(
            f"| {VARIANTS[name][1]} | {mean_std(top1)} | {mean_std(ratio[1])}x | "
            f"{mean_std(ratio[256])}x |"
        )
    if qat:
        scheme = next(iter(qat.values()))["scheme"].upper()
        fake, int8 = ([r[k] for r in qat.values()] for k in ("fake", "int8"))
        per_run = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(fake, int8, strict=True))
        lines += [
            "",
            f"Quantisation-aware distillation at {scheme} ({', '.join(qat)}): the student as "
            f"PyTorch runs it, fake-quantised, {mean_std(fake)} %; its INT8 file in onnxruntime "
            f"{mean_std(int8)} % (per run: {per_run}).",
        ]
    if zoo:
        lines += [
            "",
            "Float against INT8 by model (random weights; onnxruntime, one thread, batch of 64, "
            "32 px; median ms):",
            "",
            "| model | parameters (M) | float ms | INT8 ms | speed-up |",
            "|---|---|---|---|---|",
            *zoo,
        ]
    return "\n".join(lines) + "\n"


def plot(
    measured: dict[str, dict[str, dict[str, float]]], qat: dict[str, dict[str, float]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, speed) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = list(VARIANTS)
    labels = [VARIANTS[n][1].replace(", ", "\n") for n in names]
    for ax, key, title in ((acc, "top1", "test top-1 %"), (speed, "ms@256", "ms / batch of 256")):
        values = [[rows[n][key] for rows in measured.values()] for n in names]
        bars = list(labels)
        if qat and key == "top1":
            scheme = next(iter(qat.values()))["scheme"].upper()
            values.append([r["fake"] for r in qat.values()])
            bars.append(f"{scheme}\nquantisation-aware")
        means = [statistics.mean(v) for v in values]
        spreads = [statistics.stdev(v) if len(v) > 1 else 0 for v in values]
        ax.bar(
            bars,
            means,
            yerr=spreads,
            color=["#777", "#2a7", "#27a", "#a72"][: len(bars)],
            capsize=4,
        )
        ax.set_title(title)
        if key == "top1":
            ax.set_ylim(min(means) - 5, max(means) + 2)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--qat", nargs="*", type=Path, default=[])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--zoo", default="lenet5_half,lenet5_bn,wrn16_1,wrn40_2,resnet18,vgg11")
    args = parser.parse_args()
    commit = provenance.commit()
    measured = {run.name: measure(run, args.repeats) for run in args.runs}
    zoo = zoo_latency([n for n in args.zoo.split(",") if n], max(10, args.repeats // 10))
    qat = {run.name: measure_qat(run) for run in args.qat}
    text = report(measured, commit, zoo, qat)
    RESULTS.write_text(text)
    plot(measured, qat)
    print(text)


if __name__ == "__main__":
    main()
