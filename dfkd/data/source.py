"""The dataset source every consumer sees, and the places dfkd looks for dataset files."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import torch

from dfkd.errors import UsageError
from dfkd.tasks import CLASSIFICATION

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
Arrays = tuple[torch.Tensor, torch.Tensor | None]


class DataSource:
    """One dataset on disk: shape and normalisation known up front, splits read on demand.

    Subclasses set the attributes and implement ``_read``. Two sources of the same type over the
    same ``location`` compare equal, which is what lets ``load`` read a split once per process
    however often the dataset is opened. The tensors it returns are shared by every caller:
    copy them before changing them in place.
    """

    name: str
    location: Path
    classes: list[str]  # empty for an unlabelled folder
    unlabelled_because = ""  # why ``classes`` is empty and how to label it, for the error
    channels: int
    image_size: int  # images are square
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: classification: labels are int64 (N,); segmentation: uint8 masks (N, H, W) the size of
    #: their images, IGNORE_INDEX where no class applies, and ``image_size`` is the side of the
    #: square crops a model trains on (its test images may be larger, and need not be square)
    task: str = CLASSIFICATION

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) or None

    def load(self, split: Split) -> Arrays:
        """Images as uint8 (N, C, H, W) and labels as int64 (N,) (masks for segmentation), or
        None when unlabelled."""
        if split not in SPLITS:
            raise UsageError(f"Unknown split '{split}' of {self.name}; use 'train' or 'test'.")
        return _load_once(self, split)

    def _read(self, split: Split) -> Arrays:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.location == self.location

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, self.location))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


@functools.lru_cache(maxsize=8)
def _load_once(source: DataSource, split: Split) -> Arrays:
    return source._read(split)


def candidate_roots(root: str | Path | None, *system: str | Path) -> list[Path]:
    """Where dataset files may live, in the order tried: ``--data-root``, ``$DFKD_DATA``,
    ``./data``, then system-wide copies (Debian's ``/usr/share/datasets/...``)."""
    roots: list[Path] = []
    for place in (root, os.environ.get("DFKD_DATA"), "./data", *system):
        if place:
            path = Path(place).expanduser()
            if path not in roots:
                roots.append(path)
    return roots


def missing_data(title: str, roots: list[Path], get: str = "") -> UsageError:
    """The one-line error for absent files: where dfkd looked and the two ways out; or, for a
    dataset dfkd cannot download, where to ``get`` it instead of the --download hint."""
    shown = [str(r) if r.is_absolute() or str(r).startswith(".") else f"./{r}" for r in roots]
    looked = ", ".join(shown)
    if get:
        return UsageError(
            f"{title} not found (looked in {looked}). dfkd cannot download it: {get}, then put "
            "it under one of them or point --data-root at it."
        )
    return UsageError(
        f"{title} not found (looked in {looked}). Put the files under one of them, "
        "point --data-root at them, or add --download."
    )
