"""``folder:PATH`` datasets: your own images, labelled by class folders, by masks, or a bare
transfer set.

PATH is taken as given (relative to the working directory); ``--data-root`` does not apply and
there is nothing to download. Four layouts are recognised, in this order:

1. ``classes.txt`` (one class name per line: ids 0..K-1 in order) with ``train/images/``,
   ``train/masks/``, ``test/images/`` and ``test/masks/``: a segmentation dataset. Each image
   pairs with the mask of the same file stem (``a.jpg`` with ``a.png``); a mask is a
   single-channel PNG of class ids, 255 where no class applies (never JPEG: its lossy
   compression changes ids). Images are kept at their size, which must be one size per split
   (the test split's may differ from the train split's, and need not be square);
   ``image_size``, the side of the square training crops, is the shorter side of the train
   images, so that small images are trained on whole. Everything but the pixel values is
   checked when the folder is opened.
2. ``train/<class>/...`` with ``test/<class>/...`` (or ``val/``), as torchvision's ImageFolder
   lays them out: a labelled dataset whose classes are the sorted folder names under ``train/``.
3. ``images*.safetensors`` files (``images.safetensors``, or the chunks ``images-00000...``
   that an ImagePool appends), each holding ``images`` (uint8 N, C, H, W) and optionally
   ``labels``: the fast form dfkd writes for synthesized images. Image files beside them are
   ignored.
4. Anything else: every image under PATH, recursively, as an unlabelled train split.

Images are grey (1 channel) when every one of them is, otherwise RGB. In layouts 2-4, when sizes
differ, all are resized (squashed, not cropped) to a square of the shorter side of the most common
size, ties going to the size seen first; a folder of 32x32 images with a few strays therefore stays
32 px.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import safe_open
from safetensors.torch import load_file

from dfkd.data.segmentation import (
    check_mask_mode,
    check_mask_size,
    identity_table,
    ids_list,
    read_pairs,
)
from dfkd.data.source import Arrays, DataSource, Split
from dfkd.errors import UsageError
from dfkd.tasks import IGNORE_INDEX, SEGMENTATION

TENSOR_FILES = "images*.safetensors"
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
GREY_MODES = frozenset({"1", "L", "LA"})
CLASSES_FILE = "classes.txt"
LOSSY = frozenset({".jpg", ".jpeg"})


def list_images(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


class ImageFolderSource(DataSource):
    def __init__(self, root: str | Path | None = None, download: bool = False, *, arg: str) -> None:
        path = Path(arg).expanduser()
        if not path.is_dir():
            raise UsageError(f"folder:{arg} needs a directory of images; {path} is not one.")
        _refuse_run_directory(path, arg)
        self.name = f"folder:{arg}"
        self.location = path.resolve()
        self._splits: dict[str, tuple[list[Path], list[int] | None]] = {}
        self._tensor_files: list[Path] = []
        self._pairs: dict[str, list[tuple[Path, Path]]] = {}
        train = path / "train"
        test = next((path / d for d in ("test", "val") if (path / d).is_dir()), None)
        if (path / CLASSES_FILE).is_file():
            self._init_segmentation(path)
        elif test is not None and train.is_dir() and any(d.is_dir() for d in train.iterdir()):
            self._init_labelled(train, test)
        elif tensor_files := sorted(path.glob(TENSOR_FILES)):
            self._init_tensor_files(tensor_files)
        else:
            files = list_images(path)
            if not files:
                known = " ".join(sorted(IMAGE_EXTENSIONS))
                raise UsageError(f"{self.name} holds no images (files ending {known}).")
            self.classes = []
            self.unlabelled_because = (
                "it has train/<class>/ folders but no test/ (or val/) beside them; a labelled "
                "folder needs both, with the same class folders"
                if train.is_dir() and any(d.is_dir() for d in train.iterdir())
                else "it is a folder of images without class folders; lay it out as "
                "train/<class>/ and test/<class>/ for labels"
            )
            self._splits["train"] = (files, None)
            self.channels, self.image_size = _scan(files)
        self.mean = (0.5,) * self.channels
        self.std = (0.5,) * self.channels

    def _init_labelled(self, train: Path, test: Path) -> None:
        self.classes = sorted(d.name for d in train.iterdir() if d.is_dir())
        index = {c: i for i, c in enumerate(self.classes)}
        for split, directory in (("train", train), ("test", test)):
            files: list[Path] = []
            labels: list[int] = []
            for class_dir in sorted(d for d in directory.iterdir() if d.is_dir()):
                if class_dir.name not in index:
                    raise UsageError(
                        f"{class_dir} is a class that {train} lacks; both splits need the same "
                        "class folders."
                    )
                found = list_images(class_dir)
                files += found
                labels += [index[class_dir.name]] * len(found)
            if not files:
                raise UsageError(f"{directory} holds no images in its class folders.")
            self._splits[split] = (files, labels)
        self.channels, self.image_size = _scan(self._splits["train"][0] + self._splits["test"][0])

    def _init_segmentation(self, path: Path) -> None:
        self.task = SEGMENTATION
        self.classes = _read_classes(path / CLASSES_FILE)
        grey, sizes = True, {}
        for split in ("train", "test"):
            images, masks = path / split / "images", path / split / "masks"
            for directory in (images, masks):
                if not directory.is_dir():
                    raise UsageError(
                        f"{self.name} has {CLASSES_FILE}, so it is read as images with masks, but "
                        f"{directory} is missing; lay it out as train/images, train/masks, "
                        "test/images and test/masks."
                    )
            pairs = _pair_by_stem(images, masks)
            first: tuple[Path, tuple[int, int]] | None = None
            for image, mask in pairs:
                size, mode = _header(image)
                mask_size, mask_mode = _header(mask)
                check_mask_mode(mask, mask_mode)
                check_mask_size(image, size, mask, mask_size)
                grey = grey and mode in GREY_MODES
                if first is None:
                    first = (image, size)
                elif size != first[1]:
                    w, h = first[1]
                    raise UsageError(
                        f"{image} is {size[0]}x{size[1]} but {first[0]} is {w}x{h}; the images "
                        f"of {split}/ must be one size: resize them (and their masks, with "
                        "nearest-neighbour resampling) to one."
                    )
            self._pairs[split] = pairs
            sizes[split] = first[1]
        self.channels = 1 if grey else 3
        self.image_size = min(sizes["train"])

    def _init_tensor_files(self, files: list[Path]) -> None:
        shapes, top_label = set(), -1
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                names = set(f.keys())
                if "images" not in names:
                    raise UsageError(f"{file} has no 'images' tensor.")
                images = f.get_slice("images")
                shape, dtype = images.get_shape(), images.get_dtype()
                if "labels" in names:
                    top_label = max(top_label, int(f.get_tensor("labels").max()))
            if dtype != "U8" or len(shape) != 4 or shape[2] != shape[3]:
                raise UsageError(
                    f"{file} holds {dtype} images of shape {shape}; dfkd needs square uint8 "
                    "images as (N, C, H, W)."
                )
            shapes.add(tuple(shape[1:]))
        if len(shapes) > 1:
            raise UsageError(f"{self.name}: its tensor files hold images of different shapes.")
        self._tensor_files = files
        self.channels, self.image_size = shape[1], shape[2]
        self.classes = [str(i) for i in range(top_label + 1)]
        self.unlabelled_because = "its images*.safetensors files hold no 'labels' tensor"

    def _read(self, split: Split) -> Arrays:
        if self._pairs:
            k = len(self.classes)
            return read_pairs(
                self._pairs[split],
                channels=self.channels,
                table=identity_table(k),
                refused=lambda mask, values: (
                    f"{mask} holds class {ids_list(values)}, but {CLASSES_FILE} lists {k} "
                    f"classes: ids 0-{k - 1}, and {IGNORE_INDEX} where no class applies."
                ),
            )
        if self._tensor_files and split == "train":
            parts = [load_file(str(file)) for file in self._tensor_files]
            images = torch.cat([p["images"] for p in parts])
            if not all("labels" in p for p in parts):
                return images, None
            return images, torch.cat([p["labels"] for p in parts]).long()
        if split not in self._splits:
            raise UsageError(
                f"{self.name} has no test split: it is an unlabelled folder. Lay it out as "
                "train/<class>/ and test/<class>/ to evaluate on it."
            )
        files, labels = self._splits[split]
        images = _read_images(files, self.channels, self.image_size)
        return images, None if labels is None else torch.tensor(labels, dtype=torch.int64)


def _read_classes(file: Path) -> list[str]:
    """One class name a line, ids 0..K-1 in order; blank lines at the end are ignored."""
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise UsageError(f"{file} lists no classes; write one class name a line.")
    if "" in names:
        raise UsageError(f"Line {names.index('') + 1} of {file} is blank; name every class.")
    if len(names) > IGNORE_INDEX:
        raise UsageError(
            f"{file} lists {len(names)} classes; masks hold ids 0-{IGNORE_INDEX - 1} "
            f"({IGNORE_INDEX} means no class)."
        )
    return names


def _pair_by_stem(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """(image, mask) files of one split, paired by file stem, in the images' sorted order."""
    found = []
    for directory in (images, masks):
        by_stem: dict[str, Path] = {}
        for file in sorted(directory.iterdir()):
            if file.suffix.lower() not in IMAGE_EXTENSIONS or not file.is_file():
                continue
            if file.stem in by_stem:
                raise UsageError(
                    f"{by_stem[file.stem]} and {file} share the name {file.stem}; images pair "
                    "with masks by name, so each name may appear once."
                )
            by_stem[file.stem] = file
        found.append(by_stem)
    by_image, by_mask = found
    if not by_image:
        raise UsageError(f"{images} holds no images.")
    for stem, image in by_image.items():
        if stem not in by_mask:
            raise UsageError(f"{image} has no mask {masks / stem}.png.")
    for stem, mask in by_mask.items():
        if stem not in by_image:
            raise UsageError(f"{mask} has no image named {stem} in {images}.")
        if mask.suffix.lower() in LOSSY:
            raise UsageError(
                f"{mask} is a JPEG, whose lossy compression changes class ids; save masks as PNG."
            )
    return [(by_image[stem], by_mask[stem]) for stem in sorted(by_image)]


def _header(file: Path) -> tuple[tuple[int, int], str]:
    """Size and mode of an image, from its header alone."""
    try:
        with Image.open(file) as image:
            return image.size, image.mode
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"{file} is not a readable image ({exc}).") from exc


def _refuse_run_directory(path: Path, arg: str) -> None:
    """A dfkd run directory is not an image folder (read as one, its samples.png grid would be
    the only image); point at the images the run kept instead."""
    if not (path / "config.json").is_file() or not (path / "metrics.jsonl").is_file():
        return
    if (path / "images").is_dir():
        raise UsageError(
            f"{path} is a dfkd run directory; the images it kept are folder:{Path(arg) / 'images'}"
        )
    raise UsageError(
        f"{path} is a dfkd run directory and kept no images (a data-free run keeps them with "
        "--keep-images)."
    )


def _scan(files: list[Path]) -> tuple[int, int]:
    """Channels and square size for ``files``, from their headers alone (see the module doc)."""
    sizes: Counter[tuple[int, int]] = Counter()
    grey = True
    for file in files:
        try:
            with Image.open(file) as image:
                sizes[image.size] += 1
                grey = grey and image.mode in GREY_MODES
        except (UnidentifiedImageError, OSError) as exc:
            raise UsageError(f"{file} is not a readable image ({exc}).") from exc
    (width, height), _ = sizes.most_common(1)[0]
    return (1 if grey else 3), min(width, height)


def _read_images(files: list[Path], channels: int, size: int) -> torch.Tensor:
    mode = "L" if channels == 1 else "RGB"
    out = torch.empty(len(files), channels, size, size, dtype=torch.uint8)
    for i, file in enumerate(files):
        with Image.open(file) as image:
            pixels = image.convert(mode)
        if pixels.size != (size, size):
            pixels = pixels.resize((size, size), Image.Resampling.BILINEAR)
        array = np.array(pixels, dtype=np.uint8).reshape(size, size, channels)
        out[i] = torch.from_numpy(array).permute(2, 0, 1)
    return out
