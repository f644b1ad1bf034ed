"""Sample grids, the picture a run leaves of what it synthesizes (``samples.png``)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from torch import Tensor

from dfkd.fileio import atomic_path


def save_grid(images: Tensor, path: str | os.PathLike[str], nrow: int | None = None) -> None:
    """Write a batch of [0, 1] images (N, C, H, W) as one PNG grid, atomically.

    ``nrow`` is the number of images per row; by default ⌈√N⌉, a square-ish grid. The PNG is
    written next to ``path`` and renamed over it, so a viewer never catches half a file.
    """
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if nrow is None:
        nrow = max(1, math.ceil(math.sqrt(images.shape[0])))
    with atomic_path(path) as tmp:
        save_image(images.detach().float().clamp(0, 1), tmp, nrow=nrow, format="png")
