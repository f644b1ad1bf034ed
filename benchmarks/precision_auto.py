"""float32 against bf16 autocast for one round of the Fashion-MNIST DAFL demo, and what
`--mixed-precision auto` picks on this machine.

A round is what `dfkd run dafl --preset fashion-mnist` repeats: one generator step and five
student steps (LargeGenerator nz 128 ngf 16, LeNet-5 teacher, LeNet-5-Half student, batch 128,
32 px as LeNet takes them). It is timed twice: through the real DAFL synthesizer and student
step, with autocast where a run applies it, and as `distillation_workload`, the stand-in that
`auto` times, to see that the stand-in tells the same story. The two precisions take turns and
the first call of each is not timed. One torch thread. Writes
benchmarks/results/precision_auto.md.

Usage: python benchmarks/precision_auto.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from dfkd_plugin_dafl import FASHION_MNIST
from dfkd_plugin_dafl.options import DAFLOptions
from dfkd_plugin_dafl.synthesizer import DAFLSynthesizer

from dfkd.models.lenet import lenet5, lenet5_half
from dfkd.options import build_options
from dfkd.synthesis.base import SynthesisContext
from dfkd.synthesis.losses import kd_kl
from dfkd.training.precision import MARGIN, distillation_workload, probe_workload, resolve_precision

RESULTS = Path(__file__).parent / "results" / "precision_auto.md"
MEAN, STD = (0.2860,), (0.3530,)


def autocast(precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def real_round(precision: str, options: DAFLOptions) -> Callable[[], None]:
    """One DAFL round as `DataFreeJob.train_step` runs it, autocast where accelerate puts it:
    the generator and teacher (the synthesizer's ``ctx.autocast()``) and the prepared student's
    forward; backward and optimiser steps outside."""
    torch.manual_seed(0)
    teacher, student = lenet5(10, 1).eval().requires_grad_(False), lenet5_half(10, 1)
    accelerator = SimpleNamespace(
        autocast=lambda: autocast(precision), num_processes=1, process_index=0
    )
    ctx = SynthesisContext(
        teacher, student, 10, 1, 32, MEAN, STD, torch.device("cpu"), accelerator=accelerator
    )
    synthesizer = DAFLSynthesizer(ctx, options)
    optimizer = torch.optim.SGD(student.parameters(), lr=options.lr, momentum=0.9)

    def run() -> None:
        synthesizer.synthesize()
        for _ in range(options.kd_steps):
            x = synthesizer.sample()
            with torch.no_grad(), autocast(precision):
                t_logits = teacher(x).float()
            student.train()
            with autocast(precision):
                s_logits = student(x).float()
            loss = kd_kl(s_logits, t_logits, T=options.T)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def stand_in(precision: str, options: DAFLOptions) -> Callable[[], None]:
    """`distillation_workload` at the preset's shapes, under the autocast `auto` puts around it."""
    torch.manual_seed(0)
    from dfkd.synthesis.generative import build_generator

    work = distillation_workload(
        lenet5(10, 1),
        lenet5_half(10, 1),
        batch_size=options.batch_size,
        channels=1,
        image_size=32,
        kd_steps=options.kd_steps,
        generator=build_generator(options, 1, 32),
        nz=options.nz,
    )

    def run() -> None:
        with autocast(precision):
            work()

    return run


def interleaved_ms(calls: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median milliseconds per call, the candidates taking turns after one untimed call each."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(repeats):
        for name in list(calls) if i % 2 == 0 else list(calls)[::-1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    options = build_options(DAFLOptions, FASHION_MNIST, [])
    rows = []
    for label, make in (("DAFL round (real code)", real_round), ("stand-in", stand_in)):
        ms = interleaved_ms({p: make(p, options) for p in ("no", "bf16")}, args.repeats)
        rows.append(
            f"| {label} | {ms['no']:.1f} | {ms['bf16']:.1f} | {ms['bf16'] / ms['no']:.2f} |"
        )
        print(rows[-1], flush=True)
    chosen, record = resolve_precision("auto", probe_workload(), cpu=True)
    probe = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in record["seconds"].items())
    print(f"auto picks {chosen} ({probe})", flush=True)
    RESULTS.write_text(
        "# float32 against bf16 autocast, and what `--mixed-precision auto` picks\n\n"
        f"`python benchmarks/precision_auto.py --repeats {args.repeats}`, "
        f"{datetime.date.today().isoformat()}: one round of `dfkd run dafl --preset "
        "fashion-mnist` (one generator step and five student steps; LargeGenerator nz 128 ngf "
        "16, LeNet-5 → LeNet-5-Half, batch 128, 32 px), one torch thread, milliseconds per "
        f"round, median of {args.repeats}, the precisions taking turns; load average "
        f"{load:.1f} at the start (other jobs share the cores).\n\n"
        "| workload | float32 (ms) | bf16 autocast (ms) | bf16 / float32 |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\n`auto` (probe workload, margin {MARGIN:.0%}) picks **{chosen}**: {probe}.\n"
    )


if __name__ == "__main__":
    main()
