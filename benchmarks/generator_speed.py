"""Generator throughput: channels-last against the plain layout, float32 and bf16 autocast.

The generator is most of a generative method's compute (DAFL, ZSKT, DFQ, CuDFKD, DFAD, CMI), so
its layout decides their speed. `Generator.forward` runs its convolutions in channels-last; this
script times that against running the same modules on the plain (N, C, H, W) tensor, for the
generators of the Fashion-MNIST presets, one torch thread, and writes
benchmarks/results/generator_speed.md.

Usage: python benchmarks/generator_speed.py [--batch 128] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from dfkd.synthesis.generators import Generator, GeneratorA, LargeGenerator

RESULTS = Path(__file__).parent / "results" / "generator_speed.md"
#: (label, generator class, nz, ngf) as the Fashion-MNIST presets build them (32 px, 1 channel)
GENERATORS = [
    ("LargeGenerator ngf 16 (dafl, dfq, zskt, cudfkd)", LargeGenerator, 128, 16),
    ("GeneratorA ngf 16 (dfad)", GeneratorA, 100, 16),
    ("Generator ngf 8 (cmi)", Generator, 64, 8),
]


def plain_forward(gen: Generator, z: torch.Tensor) -> torch.Tensor:
    """The same modules on the (N, C, H, W) layout, as before channels-last."""
    out = gen.l1(z).view(z.shape[0], gen.start_channels, gen.init_size, gen.init_size)
    return gen.conv_blocks(out)


def autocast(bf16: bool) -> AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def mean_ms(call: Callable[[], object], repeats: int) -> float:
    """Mean milliseconds of ``call`` after one untimed warm-up call."""
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return 1000 * (time.perf_counter() - start) / repeats


def milliseconds(
    gen: Generator, forward: Callable, z: torch.Tensor, bf16: bool, repeats: int
) -> tuple[float, float]:
    """Time of a no-grad forward (a student batch) and of forward + backward (a generator step)."""

    def sample() -> None:
        with torch.no_grad(), autocast(bf16):
            forward(gen, z)

    def step() -> None:
        with autocast(bf16):
            out = forward(gen, z).float()
        out.mean().backward()

    return mean_ms(sample, repeats), mean_ms(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for label, cls, nz, ngf in GENERATORS:
        gen = cls(nz=nz, ngf=ngf, img_size=32, channels=1)
        z = torch.randn(args.batch, nz)
        for bf16 in (False, True):
            plain = milliseconds(gen, plain_forward, z, bf16, args.repeats)
            fast = milliseconds(gen, Generator.forward, z, bf16, args.repeats)
            precision = "bf16" if bf16 else "float32"
            rows.append(
                f"| {label} | {precision} | {plain[0]:.1f} → {fast[0]:.1f} "
                f"({plain[0] / fast[0]:.1f}×) | {plain[1]:.1f} → {fast[1]:.1f} "
                f"({plain[1] / fast[1]:.1f}×) |"
            )
            print(rows[-1], flush=True)
    RESULTS.write_text(
        "# Generator speed: plain layout → channels-last\n\n"
        f"`python benchmarks/generator_speed.py`: batch {args.batch}, 32 × 32 × 1 images, one "
        "torch thread, milliseconds per call (mean of "
        f"{args.repeats}).\n\n"
        "| generator | precision | forward, no grad (ms) | forward + backward (ms) |\n"
        "|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    main()
