"""Batched, differentiable augmentations used inside synthesis loops.

They act on whole batches with tensor ops and stay in the autograd graph, because the generator
or the pixels being optimised receive gradients through them. Padding crop + flip for student
training batches lives in ``dfkd.data.pipeline.random_crop_flip``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """n uniform draws in [0, 1) from ``generator`` (on its own device), moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, device=gen_device).to(device)


def jitter_flip(
    x: Tensor, max_shift: int, flip: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """DeepInversion's jitter: roll the whole batch by one random integer offset per spatial axis,
    each in [−max_shift, max_shift], then, if ``flip``, mirror the whole batch horizontally with
    probability ½ (docs/methods/deepinv.md#the-datafree-benchmark).

    One decision per batch, not per sample, as in the reference. The draws come from
    ``generator``, so a seeded generator makes the result reproducible.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    dy, dx = torch.randint(
        -max_shift, max_shift + 1, (2,), generator=generator, device=gen_device
    ).tolist()
    out = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    if flip and torch.rand((), generator=generator, device=gen_device).item() < 0.5:
        out = torch.flip(out, dims=(-1,))
    return out


def random_resized_crop(
    x: Tensor,
    scale: tuple[float, float] = (0.25, 1.0),
    size: int | tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
    *,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = False,
) -> Tensor:
    """A random resized crop per sample, resampled bilinearly to ``size`` (default: the input's).

    CMI's local view (docs/methods/cmi.md#reference-implementation: scale [0.25, 1], then a
    horizontal flip, which ``flip=True`` adds per sample at no extra cost). Each sample gets its
    own box: area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``, position
    uniform inside the image. A box that would stick out is shrunk to fit instead of redrawn, so
    every draw is batched.
    Built on affine_grid + grid_sample so that gradients reach the input.
    """
    n, c, h, w = x.shape
    if size is None:
        size = (h, w)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    area = scale[0] + (scale[1] - scale[0]) * _rand(n, generator, x.device)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * _rand(n, generator, x.device))
    # Box sides as fractions of the image sides: their product is the area fraction and the box's
    # width/height in pixels is the aspect ratio.
    frac_w = torch.sqrt(area * aspect * h / w).clamp(max=1.0)
    frac_h = torch.sqrt(area / aspect * w / h).clamp(max=1.0)
    # Box centres in affine_grid's [-1, 1] coordinates, keeping the box inside the image.
    centre_x = (1 - frac_w) * (2 * _rand(n, generator, x.device) - 1)
    centre_y = (1 - frac_h) * (2 * _rand(n, generator, x.device) - 1)
    sign_x = torch.ones(n, device=x.device)
    if flip:
        sign_x = torch.where(_rand(n, generator, x.device) < 0.5, -sign_x, sign_x)
    zero = torch.zeros(n, device=x.device)
    theta = torch.stack(
        [
            torch.stack([sign_x * frac_w, zero, centre_x], dim=1),
            torch.stack([zero, frac_h, centre_y], dim=1),
        ],
        dim=1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, [n, c, out_h, out_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def clip_to_pixel_range(
    x_normalised: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
) -> Tensor:
    """Clamp channel c of a normalised image to [−m_c/s_c, (1 − m_c)/s_c], the image of [0, 1]
    under normalisation: keeps directly optimised pixels valid
    (docs/methods/framework.md#normalisation).

    Returns a new tensor; to clip optimised pixels in place, copy it back under ``no_grad``.
    """
    m = torch.as_tensor(mean, dtype=x_normalised.dtype, device=x_normalised.device)
    s = torch.as_tensor(std, dtype=x_normalised.dtype, device=x_normalised.device)
    shape = (1, -1) + (1,) * (x_normalised.dim() - 2)
    return x_normalised.clamp(min=(-m / s).view(shape), max=((1 - m) / s).view(shape))
