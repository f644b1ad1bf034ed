"""`--mixed-precision auto`: the precision a run uses, chosen by timing its own work.

Whether bf16 autocast pays on a CPU is not written in ``/proc/cpuinfo``. With AVX-512 BF16 it
halved DAFL's generator on one machine, yet the same flag is listed by CPUs where the casts
autocast adds cost more than the narrower arithmetic saves, and LeNet-sized networks spend much
of their time in exactly such overheads. So on a CPU ``auto`` times a short, representative
workload under float32 and under bf16 autocast and keeps bf16 only when it is clearly faster.

On CUDA the answer is not measured: bf16 where the GPU supports it (no loss scaling, the
range of float32), otherwise float32. fp16 is never chosen automatically, since its loss
scaling changes the training, not only its speed.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dfkd.errors import UsageError

PRECISIONS = ("no", "fp16", "bf16", "auto")
#: a candidate must beat float32 by this fraction of its time: timing noise on a shared
#: machine is a few per cent, and a precision that only ties is not worth its rounding
MARGIN = 0.10
#: timed calls per candidate after the warm-up; the median of five shrugs off one slow call
REPEATS = 5
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(value: str) -> str:
    """``value`` if it names a precision, else the one-line error every command shares."""
    if value not in PRECISIONS:
        raise UsageError(f"--mixed-precision must be no, fp16, bf16 or auto, not '{value}'.")
    return value


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision chosen and what it was chosen on: median seconds per workload call."""

    precision: str
    seconds: dict[str, float]


def choose_precision(
    workload: Callable[[], None],
    candidates: Sequence[str] = ("no", "bf16"),
    *,
    repeats: int = REPEATS,
    margin: float = MARGIN,
    timer: Callable[[], float] = time.perf_counter,
) -> PrecisionChoice:
    """Time ``workload`` under each candidate's CPU autocast ("no": none) and pick the fastest
    one that beats float32 by ``margin``; float32 otherwise.

    float32 is always measured, as the baseline. Each candidate runs once untimed first (the
    first call allocates and picks kernels), then the candidates take turns, in alternating
    order, so that a machine that gets busier or cooler half-way weighs on all of them alike.
    The global RNG is left as it was found: measuring must not change the run it is for.
    """
    names = ["no", *dict.fromkeys(c for c in candidates if c != "no")]
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.random.fork_rng(devices=[]):
        for name in names:
            with _autocast(name):
                workload()
        for i in range(repeats):
            for name in names if i % 2 == 0 else reversed(names):
                start = timer()
                with _autocast(name):
                    workload()
                times[name].append(timer() - start)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    fast_enough = [n for n in names[1:] if seconds[n] <= (1 - margin) * seconds["no"]]
    best = min(fast_enough, key=seconds.__getitem__, default="no")
    return PrecisionChoice(best, seconds)


def resolve_precision(
    requested: str, workload: Callable[[], None] | None = None, *, cpu: bool = False
) -> tuple[str, dict[str, Any]]:
    """The precision to give the accelerator for ``requested``, and a record of how it was
    decided for the run's config.json.

    Anything but ``auto`` is returned as it is. ``auto`` on CUDA (unless ``cpu``) is bf16 where
    supported, else "no". ``auto`` on the CPU times ``workload`` (by default `probe_workload`)
    with `choose_precision`; the record then holds the median seconds of each candidate.
    """
    check_precision(requested)
    record: dict[str, Any] = {"requested": requested}
    if requested != "auto":
        return requested, {**record, "chosen": requested}
    if not cpu and torch.cuda.is_available():
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "no"
        return chosen, {**record, "chosen": chosen, "device": "cuda", "measured": False}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _decided_by_main_process(lambda: resolve_precision(requested, workload, cpu=True))
    choice = choose_precision(workload or probe_workload())
    seconds = {name: round(value, 6) for name, value in choice.seconds.items()}
    record.update(
        chosen=choice.precision,
        device="cpu",
        measured=True,
        workload="given" if workload else "probe",
        seconds=seconds,
        margin=MARGIN,
        repeats=REPEATS,
        threads=torch.get_num_threads(),
    )
    return choice.precision, record


def _decided_by_main_process(
    decide: Callable[[], tuple[str, dict[str, Any]]],
) -> tuple[str, dict[str, Any]]:
    """In a multi-process CPU run every process must use one precision: process 0 measures
    (with the others waiting, as a one-process run would) and hands its choice to all."""
    import torch.distributed as dist
    from accelerate import PartialState

    state = PartialState(cpu=True)
    decided = [None]
    if state.is_main_process:
        with _single_process():
            decided = [decide()]
    dist.broadcast_object_list(decided, src=0)
    precision, record = decided[0]
    return precision, {**record, "decided_by": "process 0"}


@contextlib.contextmanager
def _single_process() -> Any:
    """Hide the process group from a nested resolve, so it measures instead of recursing."""
    saved = os.environ.pop("WORLD_SIZE")
    try:
        yield
    finally:
        os.environ["WORLD_SIZE"] = saved


def distillation_workload(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    *,
    batch_size: int,
    channels: int,
    image_size: int,
    student_size: int | None = None,
    kd_steps: int = 1,
    generator: torch.nn.Module | None = None,
    nz: int = 0,
    synthesis_batch_size: int = 0,
) -> Callable[[], None]:
    """One synthesis step and ``kd_steps`` student steps at a run's shapes, as a timing workload.

    The synthesis step is a generator step (``generator`` maps ``(n, nz)`` latents to images)
    or, without one, a step on the pixels themselves, as the image-optimising methods take.
    A student step draws a batch (from the generator when there is one), runs the frozen
    teacher without gradients and the student forward and backward. Optimiser steps are left
    out: their cost does not depend on the precision. The models are copies, so timing leaves
    the originals' weights, gradients and BatchNorm statistics alone; the inputs come from a
    private RNG.
    """
    teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
    student = copy.deepcopy(student).train()
    generator = copy.deepcopy(generator).train() if generator is not None else None
    rng = torch.Generator().manual_seed(0)
    n_syn = synthesis_batch_size or batch_size
    if generator is not None:
        z_syn, z = torch.randn(n_syn, nz, generator=rng), torch.randn(batch_size, nz, generator=rng)
    else:
        pixels = torch.rand(n_syn, channels, image_size, image_size, generator=rng)
        fixed = torch.rand(batch_size, channels, image_size, image_size, generator=rng)

    def fit(x: torch.Tensor) -> torch.Tensor:
        if student_size is None or student_size == x.shape[-1]:
            return x
        return F.interpolate(x, size=(student_size, student_size), mode="bilinear", antialias=True)

    def work() -> None:
        if generator is not None:
            x = generator(z_syn).float()
            params = list(generator.parameters())
        else:
            x = pixels.clone().requires_grad_(True)
            params = [x]
        loss = teacher(x).float().logsumexp(dim=1).mean()
        loss.backward(inputs=params)
        for _ in range(kd_steps):
            with torch.no_grad():
                x = generator(z).float() if generator is not None else fixed
                t_logits = teacher(x).float()
            s_logits = student(fit(x)).float()
            loss = F.kl_div(
                F.log_softmax(s_logits, 1),
                F.log_softmax(t_logits, 1),
                reduction="batchmean",
                log_target=True,
            )
            loss.backward(inputs=list(student.parameters()))

    return work


def probe_workload() -> Callable[[], None]:
    """The workload ``auto`` times when a command has none of its own: the Fashion-MNIST DAFL
    demo's shapes (LargeGenerator nz 128 ngf 16, LeNet-5 teacher, LeNet-5-Half student, batch
    128, 32 px, five student steps), a typical run of this project's CPU machines."""
    from dfkd.models.lenet import lenet5, lenet5_half
    from dfkd.synthesis.generators import LargeGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = (lenet5(10, 1), lenet5_half(10, 1), LargeGenerator(128, 16, 32, 1))
    teacher, student, generator = models
    return distillation_workload(
        teacher,
        student,
        batch_size=128,
        channels=1,
        image_size=32,
        kd_steps=5,
        generator=generator,
        nz=128,
    )


def _autocast(precision: str) -> contextlib.AbstractContextManager:
    if precision == "no":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=_DTYPES[precision])
