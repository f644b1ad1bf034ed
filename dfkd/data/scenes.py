"""Fashion-MNIST scenes: a small segmentation dataset made from real Fashion-MNIST items.

Each scene is a black, grey (1-channel) canvas of ``size`` x ``size`` px holding 2 to 4
(``min_items`` to ``max_items``) Fashion-MNIST items of 28x28, drawn with replacement and pasted
at uniformly random positions, wholly inside the canvas. An item's foreground is its pixels above
``FOREGROUND`` (10 of 255); pasting overwrites the canvas there and nowhere else, so later items
occlude earlier ones and an item's faint surround never hides what lies under it. The mask gives
every foreground pixel its item's class id + 1 and the rest 0 (``background``): a pixel is
non-zero in the scene exactly where its mask is not background, and it then holds the pixel of
the item the mask names. Train scenes take items from Fashion-MNIST's train split and test scenes
from its test split, each split from its own random stream of ``seed``, so the test scenes do
not depend on how many train scenes there are.

The output is a ``folder:`` segmentation dataset: ``classes.txt`` (background and the ten
Fashion-MNIST classes), ``train/images``, ``train/masks``, ``test/images``, ``test/masks``, as
PNGs named 00000.png, 00001.png, ... The same arguments write byte-identical files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from dfkd.data.folder import CLASSES_FILE
from dfkd.data.source import DataSource
from dfkd.errors import UsageError
from dfkd.tasks import CLASSIFICATION

FOREGROUND = 10  # an item's pixel is foreground when its value is above this (of 255)
BACKGROUND = "background"
CHUNK = 1024  # scenes composed at once: bounds memory whatever the count and size


def draw_layout(
    rng: np.random.Generator, n: int, pool: int, item: tuple[int, int], size: int, items: range
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For ``n`` scenes: how many items each holds, which (indices into a pool of ``pool``),
    and where their top-left corners go (rows, columns); slots past a scene's count are unused."""
    slots = items.stop - 1
    counts = rng.integers(items.start, items.stop, n)
    picks = rng.integers(0, pool, (n, slots))
    rows = rng.integers(0, size - item[0] + 1, (n, slots))
    cols = rng.integers(0, size - item[1] + 1, (n, slots))
    return counts, picks, rows, cols


def compose(
    images: np.ndarray,
    labels: np.ndarray,
    layout: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Scenes (n, size, size) and masks (n, size, size), both uint8, from grey ``images``
    (N, h, w) with class ``labels`` (N,) placed as ``layout`` says (see the module doc)."""
    counts, picks, rows, cols = layout
    n, height, width = len(counts), images.shape[1], images.shape[2]
    scenes = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for slot in range(picks.shape[1]):
        scene = np.nonzero(counts > slot)[0]
        chosen = picks[scene, slot]
        item = images[chosen]
        foreground = item > FOREGROUND
        # index arrays of each item's window: (m, 1, 1), (m, h, 1), (m, 1, w)
        at = (
            scene[:, None, None],
            (rows[scene, slot, None] + np.arange(height))[:, :, None],
            (cols[scene, slot, None] + np.arange(width))[:, None, :],
        )
        scenes[at] = np.where(foreground, item, scenes[at])
        ids = (labels[chosen] + 1).astype(np.uint8)[:, None, None]
        masks[at] = np.where(foreground, ids, masks[at])
    return scenes, masks


def make_scenes(
    out: Path,
    source: DataSource,
    *,
    seed: int = 0,
    train: int = 10000,
    test: int = 2000,
    size: int = 64,
    min_items: int = 2,
    max_items: int = 4,
) -> dict[str, int]:
    """Write the scenes dataset into ``out`` (absent or empty) from ``source``'s items (grey,
    labelled, Fashion-MNIST in the CLI); returns the number of scenes of each split.

    Everything is checked and read before anything is written; the files go to a hidden folder
    beside ``out`` that becomes ``out`` only when complete.
    """
    out = Path(out)
    if train < 1 or test < 1:
        raise UsageError("--train and --test must each be at least 1 scene.")
    if not 1 <= min_items <= max_items:
        raise UsageError(f"--min-items {min_items} and --max-items {max_items}: need 1 <= min <= max.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty folder; choose a new OUT.")
    if source.task != CLASSIFICATION or source.channels != 1 or not source.classes:
        raise UsageError(f"Scenes need grey, labelled items; {source.name} does not have them.")
    if len(source.classes) + 1 >= 255:
        raise UsageError(f"{source.name} has too many classes for 8-bit masks.")
    splits = {}
    for split in ("train", "test"):
        images, labels = source.load(split)
        if images.shape[2] > size or images.shape[3] > size:
            item = f"{images.shape[3]}x{images.shape[2]}"
            raise UsageError(f"--size {size} is smaller than {source.name}'s {item} items.")
        splits[split] = (images[:, 0].numpy(), labels.numpy())
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        (staging / CLASSES_FILE).write_text(
            "\n".join([BACKGROUND, *source.classes]) + "\n", encoding="utf-8"
        )
        for stream, (split, n) in enumerate((("train", train), ("test", test))):
            images, labels = splits[split]
            rng = np.random.default_rng([seed, stream])
            layout = draw_layout(
                rng, n, len(images), images.shape[1:], size, range(min_items, max_items + 1)
            )
            _write_split(staging / split, images, labels, layout, size)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"train": train, "test": test}


def _write_split(
    directory: Path,
    images: np.ndarray,
    labels: np.ndarray,
    layout: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    size: int,
) -> None:
    n = len(layout[0])
    digits = max(5, len(str(n - 1)))
    (directory / "images").mkdir(parents=True)
    (directory / "masks").mkdir()
    for start in range(0, n, CHUNK):
        part = tuple(a[start : start + CHUNK] for a in layout)
        scenes, masks = compose(images, labels, part, size)
        for i, (scene, mask) in enumerate(zip(scenes, masks, strict=True), start):
            name = f"{i:0{digits}d}.png"
            Image.fromarray(scene).save(directory / "images" / name)
            Image.fromarray(mask).save(directory / "masks" / name)
