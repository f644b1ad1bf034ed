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

``style="street"`` makes the CamVid-like variant, colour and 128 px by default: every scene is
a street of three textured background classes, ``sky`` (a blue gradient above a skyline),
``building`` (blocks of random colour and height with a grid of windows) and ``road`` (dark
grey with a dashed lane mark), each with low-frequency shading and pixel noise, and 3 to 6
Fashion-MNIST items scaled 1-2x, each tinted one random colour (colour says nothing of the
class), standing on the lower part of the scene. Its masks number ``sky``, ``building``,
``road``, then the item classes.
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
#: the street style's background classes, mask ids 0, 1, 2; the items' classes follow
STREET = ("sky", "building", "road")
STYLES = ("black", "street")
#: the street style's defaults where the caller gives none: size, fewest and most items
STREET_DEFAULTS = (128, 3, 6)
BLACK_DEFAULTS = (64, 2, 4)


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
    size: int | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
    style: str = "black",
) -> dict[str, int]:
    """Write the scenes dataset into ``out`` (absent or empty) from ``source``'s items (grey,
    labelled, Fashion-MNIST in the CLI); returns the number of scenes of each split, their size
    and the number of classes. ``size``,
    ``min_items`` and ``max_items`` left None take the style's defaults.

    Everything is checked and read before anything is written; the files go to a hidden folder
    beside ``out`` that becomes ``out`` only when complete.
    """
    out = Path(out)
    if style not in STYLES:
        raise UsageError(f"--style must be {' or '.join(STYLES)}, not '{style}'.")
    defaults = STREET_DEFAULTS if style == "street" else BLACK_DEFAULTS
    size = size or defaults[0]
    min_items = min_items or defaults[1]
    max_items = max_items or defaults[2]
    if train < 1 or test < 1:
        raise UsageError("--train and --test must each be at least 1 scene.")
    if not 1 <= min_items <= max_items:
        raise UsageError(
            f"--min-items {min_items} and --max-items {max_items}: need 1 <= min <= max."
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty folder; choose a new OUT.")
    if source.task != CLASSIFICATION or source.channels != 1 or not source.classes:
        raise UsageError(f"Scenes need grey, labelled items; {source.name} does not have them.")
    if len(source.classes) + len(STREET) >= 255:
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
        backgrounds = list(STREET) if style == "street" else [BACKGROUND]
        (staging / CLASSES_FILE).write_text(
            "\n".join([*backgrounds, *source.classes]) + "\n", encoding="utf-8"
        )
        items = range(min_items, max_items + 1)
        for stream, (split, n) in enumerate((("train", train), ("test", test))):
            images, labels = splits[split]
            rng = np.random.default_rng([seed, stream])
            if style == "street":
                _write_street_split(staging / split, images, labels, n, size, items, rng)
            else:
                layout = draw_layout(rng, n, len(images), images.shape[1:], size, items)
                _write_split(staging / split, images, labels, layout, size)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "train": train,
        "test": test,
        "size": size,
        "classes": len(backgrounds) + len(source.classes),
    }


def _write_split(
    directory: Path,
    images: np.ndarray,
    labels: np.ndarray,
    layout: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    size: int,
) -> None:
    n = len(layout[0])
    for start in range(0, n, CHUNK):
        part = tuple(a[start : start + CHUNK] for a in layout)
        _save_pairs(directory, start, n, *compose(images, labels, part, size))


def _save_pairs(
    directory: Path, start: int, total: int, scenes: np.ndarray, masks: np.ndarray
) -> None:
    """Write scenes and masks as PNGs numbered from ``start`` (of ``total`` in the split)."""
    digits = max(5, len(str(total - 1)))
    (directory / "images").mkdir(parents=True, exist_ok=True)
    (directory / "masks").mkdir(exist_ok=True)
    for i, (scene, mask) in enumerate(zip(scenes, masks, strict=True), start):
        name = f"{i:0{digits}d}.png"
        Image.fromarray(scene).save(directory / "images" / name)
        Image.fromarray(mask).save(directory / "masks" / name)


def _write_street_split(
    directory: Path,
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    size: int,
    items: range,
    rng: np.random.Generator,
) -> None:
    for start in range(0, n, CHUNK):
        pairs = [
            street_scene(rng, images, labels, size, items) for _ in range(min(CHUNK, n - start))
        ]
        scenes, masks = (np.stack(part) for part in zip(*pairs, strict=True))
        _save_pairs(directory, start, n, scenes, masks)


def _shading(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    """Smooth random (size, size) shading: a ``cells`` x ``cells`` grid of uniform values in
    [-amplitude, amplitude] upsampled bilinearly."""
    grid = rng.uniform(-amplitude, amplitude, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR))


def street_scene(
    rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, size: int, items: range
) -> tuple[np.ndarray, np.ndarray]:
    """One street scene (size, size, 3) uint8 and its mask (size, size): see the module doc."""
    rows = np.arange(size)[:, None]
    # the skyline: blocks of random width, each with its own top; the road starts below it
    skyline = np.empty(size, np.int64)
    column = 0
    while column < size:
        width = int(rng.integers(size // 10 + 1, size // 4 + 2))
        skyline[column : column + width] = rng.integers(size // 8, size * 9 // 20)
        column += width
    road_top = int(rng.integers(size * 11 // 20, size * 3 // 4))
    mask = np.where(rows < skyline[None, :], 0, 1).astype(np.uint8)
    mask[road_top:] = 2

    sky = np.array([90, 150, 225], np.float32) + rng.uniform(-25, 25, 3)
    scene = sky + (rows[..., None] * (60.0 / size)).astype(np.float32)  # lighter at the horizon
    block_colour = rng.uniform(70, 190, 3).astype(np.float32)
    period = int(rng.integers(6, 11))
    windows = ((rows % period) < period // 2) & ((np.arange(size)[None, :] % period) < period // 2)
    building = block_colour - 45.0 * windows[..., None]
    road = np.full((size, size, 3), rng.uniform(55, 105), np.float32)
    lane = (np.abs(rows - (road_top + size) // 2) <= max(1, size // 64)) & (
        (np.arange(size)[None, :] // max(2, size // 8)) % 2 == 0
    )
    road = np.where(lane[..., None], 225.0, road)
    scene = np.where((mask == 1)[..., None], building, scene)
    scene = np.where((mask == 2)[..., None], road, scene)
    scene = scene + _shading(rng, size, 4, 25.0)[..., None]
    scene = scene + rng.normal(0, 6, (size, size, 3)).astype(np.float32)

    for _ in range(int(rng.integers(items.start, items.stop))):
        pick = int(rng.integers(len(images)))
        scale = rng.uniform(1.0, 2.0)
        side = min(size, round(images.shape[1] * scale)), min(size, round(images.shape[2] * scale))
        item = np.asarray(Image.fromarray(images[pick]).resize(side[::-1], Image.BILINEAR))
        top = int(rng.integers(min(size // 3, size - side[0]), size - side[0] + 1))
        left = int(rng.integers(0, size - side[1] + 1))
        window = (slice(top, top + side[0]), slice(left, left + side[1]))
        foreground = item > FOREGROUND
        tint = rng.uniform(0.25, 1.0, 3).astype(np.float32)
        scene[window] = np.where(foreground[..., None], item[..., None] * tint, scene[window])
        mask[window] = np.where(foreground, len(STREET) + labels[pick], mask[window])
    return np.clip(scene, 0, 255).round().astype(np.uint8), mask
