"""A DFAD student step and a teacher evaluation forward with LeNet-5, one torch thread.

The student step is `DataFreeJob.train_step` on the DFAD `fashion-mnist` preset (plugins/dfad):
the lenet5 teacher's forward without gradients, then the lenet5_half student's forward, L1 loss
on the logits, backward and SGD step, on a batch of 512 from DFAD's generator (GeneratorA,
nz 100, ngf 16, drawn once: the generator is not what is timed). The evaluation forward is the
teacher in eval mode, without gradients, on 1000 images, the batch `evaluate` scores the test
split in. Both run in float32 and under bf16 autocast (the benchmark runs' precision).

`--compare BEFORE AFTER` times the `dfkd` package of two commits in one sitting on a machine that
others share: each round starts one process per commit, in alternating order, and each reports
the median of its repeats; the table gives the median over rounds and their range, and the
ratio BEFORE / AFTER. It writes benchmarks/results/dfad_step.md.

Usage:
  python benchmarks/dfad_step.py [--repeats 15]
  python benchmarks/dfad_step.py --compare REV_BEFORE REV_AFTER [--rounds 8] [--repeats 15]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "dfad_step.md"
ROOT = Path(__file__).resolve().parent.parent
BATCH, EVAL_BATCH = 512, 1000  # the DFAD fashion-mnist preset's batch; evaluate's batch
PRECISIONS = ("float32", "bf16")


def median_ms(call: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median milliseconds of ``call`` over ``repeats`` calls, after three untimed ones: on the
    wall clock, and in CPU time of this thread, which other processes on a shared machine
    disturb far less."""
    for _ in range(3):
        call()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        call()
        cpu.append(1000 * (time.thread_time() - start_cpu))
        wall.append(1000 * (time.perf_counter() - start))
    return {"wall": statistics.median(wall), "cpu": statistics.median(cpu)}


def measure(repeats: int) -> dict[str, object]:
    """Median times of this process's `dfkd`, per precision."""
    import torch

    from dfkd.models import build_model
    from dfkd.synthesis.generators import GeneratorA

    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = build_model("lenet5", 10, 1).eval().requires_grad_(False)  # as load_teacher does
    student = build_model("lenet5_half", 10, 1).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    generator = GeneratorA(nz=100, ngf=16, img_size=32, channels=1).train()
    with torch.no_grad():
        x = generator(torch.randn(BATCH, 100))
        x_eval = generator(torch.randn(EVAL_BATCH, 100))
    pools = sorted({type(m).__name__ for m in teacher.modules() if "Pool" in type(m).__name__})
    result: dict[str, object] = {"dfkd": str(Path(sys.modules["dfkd"].__file__).parent)}
    result["pooling"] = pools
    for precision in PRECISIONS:
        bf16 = precision == "bf16"

        def student_step(bf16: bool = bf16) -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                t_logits = teacher(x).float()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                s_logits = student(x).float()
            loss = (s_logits - t_logits).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def evaluation(bf16: bool = bf16) -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                teacher(x_eval)

        result[precision] = {
            "step_ms": median_ms(student_step, repeats),
            "eval_ms": median_ms(evaluation, repeats),
        }
    return result


def export(rev: str, into: Path) -> Path:
    """The `dfkd` package as committed at ``rev``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "archive", rev, "dfkd"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def child(package_root: Path, repeats: int) -> dict[str, object]:
    """One measuring process that imports `dfkd` from ``package_root``."""
    env = os.environ | {"PYTHONPATH": str(package_root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--repeats", str(repeats), "--json"],
        env=env,
        cwd=package_root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.splitlines()[-1])
    if not result["dfkd"].startswith(str(package_root)):
        raise RuntimeError(f"the child imported {result['dfkd']}, not the exported commit")
    return result


def compare(before: str, after: str, rounds: int, repeats: int) -> None:
    def short(rev: str) -> str:
        return subprocess.run(
            ["git", "rev-parse", "--short", rev],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    revs = [short(before), short(after)]
    if revs[0] == revs[1]:
        raise SystemExit(f"BEFORE and AFTER are the same commit, {revs[0]}")
    runs: dict[str, list[dict[str, object]]] = {rev: [] for rev in revs}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {rev: export(rev, Path(tmp) / rev) for rev in revs}
        for r in range(rounds):
            for rev in revs if r % 2 == 0 else revs[::-1]:
                runs[rev].append(child(roots[rev], repeats))
                print(f"round {r + 1}/{rounds} {rev}: {json.dumps(runs[rev][-1])}", flush=True)
    lines = [
        "# DFAD student step and teacher evaluation with LeNet-5",
        "",
        f"`python benchmarks/dfad_step.py --compare {revs[0]} {revs[1]} --rounds {rounds} "
        f"--repeats {repeats}`, run on {datetime.date.today().isoformat()}: one torch thread, "
        f"{rounds} rounds of one process per commit in alternating order, each process the median "
        f"of {repeats} repeats. Median over the rounds, with the range of the rounds' medians; "
        "`cpu` is the measuring thread's CPU time, `wall` the wall clock.",
        "",
        f"Pooling in the built teacher: {revs[0]} {runs[revs[0]][0]['pooling']}, "
        f"{revs[1]} {runs[revs[1]][0]['pooling']}.",
        "",
        f"| what | precision | clock | {revs[0]} ms | {revs[1]} ms | ratio {revs[0]} / {revs[1]} |",
        "|---|---|---|---|---|---|",
    ]
    for key, what in (("step_ms", f"student step, batch {BATCH}"), ("eval_ms", "teacher eval")):
        for precision in PRECISIONS:
            for clock in ("cpu", "wall"):
                cells, medians = [], []
                for rev in revs:
                    values = [run[precision][key][clock] for run in runs[rev]]
                    medians.append(statistics.median(values))
                    cells.append(f"{medians[-1]:.1f} ({min(values):.1f}–{max(values):.1f})")
                ratio = medians[0] / medians[1]
                lines.append(
                    f"| {what} | {precision} | {clock} | {cells[0]} | {cells[1]} | {ratio:.2f} |"
                )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="One JSON line (for --compare).")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare, args.rounds, args.repeats)
        return
    result = measure(args.repeats)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
