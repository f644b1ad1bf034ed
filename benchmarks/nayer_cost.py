"""What NAYER-100 (the `cifar100` preset, wrn40_2 → wrn16_2) costs: measured on this CPU, and a
GPU estimate from its step counts.

It runs the product itself, `dfkd run nayer --preset cifar100`, from a randomly initialised
wrn40_2 with CIFAR-100's shape (100 classes, 3 × 32 × 32: timing does not depend on what the
weights learned), for one post-warm-up epoch: `-o warmup=0 -o epochs=1` makes that epoch one full
synthesis call (g_loops 2 × g_steps 40 generator steps at 400 images, re-created generator
included), and `-o ep_steps=S -o kd_steps=S` gives it S student steps at the preset's batch of 512
instead of 400. `metrics.jsonl` splits the epoch into synthesis and student seconds.

The estimate multiplies those per-call and per-step costs by the preset's counts (20 warm-up
epochs of 10 loops without student steps, then 100 epochs of 2 loops and 400 student steps), and
converts to GPU hours from FLOPs: torch's FlopCounterMode counts one generator step (generator
forward and backward, teacher forward and backward to the images, student forward for the
adversarial term) and one student step (teacher forward, student forward and backward), and a
sustained GPU rate turns the total into hours. The rate is an assumption, not a measurement; the
table gives a range and the rate that NAYER's reported ~2 GPU-hours implies.

Usage: python benchmarks/nayer_cost.py [--threads 2] [--student-steps 5]
       python benchmarks/nayer_cost.py --report-only   # the table again from the saved numbers
Writes benchmarks/results/nayer_cost.md, and the measured numbers to nayer_cost.json beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import provenance

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "nayer_cost.md"
MEASURED = RESULTS.with_suffix(".json")
MEAN, STD = "0.5071,0.4865,0.4409", "0.2673,0.2564,0.2762"
#: the `cifar100` preset's counts (plugins/nayer, nayer_100.sh)
EPOCHS, WARMUP, G_STEPS, G_LOOPS, GWP_LOOPS, STUDENT_STEPS = 120, 20, 40, 2, 10, 400
SYNTH_BATCH, STUDENT_BATCH = 400, 512
#: sustained GPU rates (TFLOP/s) the estimate is given at: small ResNets at these batches reach
#: a modest fraction of a modern GPU's peak
RATES = (10.0, 25.0, 50.0)
PAPER_HOURS = 2.0


def run_one_epoch(workdir: Path, threads: int, student_steps: int) -> dict:
    """One post-warm-up epoch of the cifar100 preset through `dfkd run`; its metrics line."""
    import torch
    from safetensors.torch import save_file

    from dfkd.models import build_model

    torch.manual_seed(0)
    weights = workdir / "wrn40_2.safetensors"
    teacher = build_model("wrn40_2", num_classes=100, in_channels=3)
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, weights)
    run_dir = workdir / "run"
    command = [
        sys.executable, "-m", "dfkd", "run", "nayer",
        "--teacher", "wrn40_2", "--student", "wrn16_2", "--teacher-weights", str(weights),
        "--classes", "100", "--channels", "3", "--image-size", "32",
        "--mean", MEAN, "--std", STD, "--preset", "cifar100",
        "-o", "warmup=0", "-o", "epochs=1", "-o", "embeddings=random",  # cost only
        "-o", f"ep_steps={student_steps}", "-o", f"kd_steps={student_steps}",
        "--val-size", "8", "--val-steps", "1", "--out", str(run_dir),
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) | {"process_cpu_seconds": cpu}


def step_flops() -> tuple[float, float]:
    """FLOPs of one generator step and one student step at the preset's batches."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from dfkd.api import Generator
    from dfkd.models import build_model

    teacher = build_model("wrn40_2", num_classes=100, in_channels=3).eval()
    student = build_model("wrn16_2", num_classes=100, in_channels=3)
    # the trunk only: the noisy layers are one (100 × 1000) linear map per 100 rows, negligible
    generator = Generator(1000, 64, 32, 3)
    for p in teacher.parameters():
        p.requires_grad_(False)

    z = torch.randn(SYNTH_BATCH, 1000)
    with FlopCounterMode(display=False) as counter:
        images = generator(z)
        loss = teacher(images).logsumexp(1).mean() - student(images).logsumexp(1).mean()
        loss.backward()
    generator_step = counter.get_total_flops()

    x = torch.randn(STUDENT_BATCH, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            target = teacher(x)
        F.kl_div(student(x).log_softmax(1), target.softmax(1), reduction="batchmean").backward()
    return generator_step, counter.get_total_flops()


def report(measured: dict) -> str:
    threads, student_steps = measured["threads"], measured["student_steps"]
    synthesis, wall = measured["seconds_synthesis"], measured["seconds"]
    student = (wall - synthesis) / student_steps
    cpu = measured["process_cpu_seconds"]
    per_gen_step = synthesis / (G_LOOPS * G_STEPS)
    gen_steps = (WARMUP * GWP_LOOPS + (EPOCHS - WARMUP) * G_LOOPS) * G_STEPS
    kd_steps = (EPOCHS - WARMUP) * STUDENT_STEPS
    wall_hours = (gen_steps * per_gen_step + kd_steps * student) / 3600
    # the process's CPU time, shared out between synthesis and student steps as the wall time is
    cpu_hours = wall_hours * cpu / wall
    gen_flops, kd_flops = measured["generator_step_flops"], measured["student_step_flops"]
    total = gen_steps * gen_flops + kd_steps * kd_flops
    implied = total / (PAPER_HOURS * 3600) / 1e12
    rows = "\n".join(
        f"| {rate:g} TFLOP/s | {total / (rate * 1e12) / 3600:.2f} h |" for rate in RATES
    )
    return f"""# NAYER-100 cost: wrn40_2 → wrn16_2, `--preset cifar100`

Measured {measured["date"]} at commit {measured["commit"]} by `benchmarks/nayer_cost.py` on this
project's CPU machine ({measured["cpus"]} cores), {threads} torch threads, float32, a random
CIFAR-100-shaped teacher.

| measured on the CPU | seconds |
|---|---|
| one synthesis call ({G_LOOPS} loops × {G_STEPS} steps at {SYNTH_BATCH} images) | {synthesis:.1f} |
| one generator step (that / {G_LOOPS * G_STEPS}) | {per_gen_step:.2f} |
| one student step (batch {STUDENT_BATCH}, mean of {student_steps}) | {student:.2f} |
| CPU time of the whole `dfkd run` process (all threads; start-up included) | {cpu:.0f} |

The seconds are wall-clock time on a machine that other work shared (load average
{measured["load"]:.1f} when the run ended). The process's CPU time, which sharing disturbs
far less, was {cpu:.0f} CPU-seconds against {wall:.0f} seconds of wall time × {threads} threads.

**Estimate (not a measurement).** The preset runs {gen_steps:,} generator steps
({WARMUP} warm-up epochs × {GWP_LOOPS} loops + {EPOCHS - WARMUP} epochs × {G_LOOPS} loops,
× {G_STEPS}) and {kd_steps:,} student steps ({EPOCHS - WARMUP} epochs × {STUDENT_STEPS}).
At the measured step times that is **{wall_hours:.0f} hours** of this machine
({wall_hours / 24:.1f} days), about {cpu_hours:.0f} CPU-hours.
FlopCounterMode counts {gen_flops / 1e12:.2f} TFLOP per generator step and
{kd_flops / 1e12:.2f} TFLOP per student step, {total / 1e15:.0f} PFLOP in all,
which at a sustained GPU rate of

| sustained rate | NAYER-100 |
|---|---|
{rows}

The paper's ~{PAPER_HOURS:g} GPU-hours for this pair implies a sustained {implied:.0f} TFLOP/s.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--student-steps", type=int, default=5)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        with tempfile.TemporaryDirectory() as tmp:
            metrics = run_one_epoch(Path(tmp), args.threads, args.student_steps)
        gen_flops, kd_flops = step_flops()
        measured = {
            "date": str(datetime.date.today()),
            "commit": provenance.commit(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "student_steps": args.student_steps,
            "seconds": metrics["seconds"],
            "seconds_synthesis": metrics["seconds_synthesis"],
            "process_cpu_seconds": metrics["process_cpu_seconds"],
            "load": os.getloadavg()[0],
            "generator_step_flops": gen_flops,
            "student_step_flops": kd_flops,
        }
        MEASURED.write_text(json.dumps(measured, indent=2) + "\n")
    text = report(json.loads(MEASURED.read_text()))
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
