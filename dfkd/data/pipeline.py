"""Batched tensor operations from uint8 splits to model input; no PIL, nothing per image.

A whole split lives in memory as one uint8 tensor, so augmentation and normalisation work on a
batch at a time, on whatever device the batch is on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

Batch = tuple[torch.Tensor, torch.Tensor | None]

# ITU-R 601 luma, as PIL's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)


def _per_channel(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    return (x - _per_channel(mean, x)) / _per_channel(std, x)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Back to [0, 1] pixels, for saving or showing what a model sees."""
    return x * _per_channel(std, x) + _per_channel(mean, x)


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey to RGB by repetition, RGB to grey by luma. Only for callers that choose to adapt a
    dataset to a model; a silent mismatch should be an error instead."""
    have = x.shape[1]
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        return (x * _per_channel(_LUMA, x)).sum(dim=1, keepdim=True)
    raise ValueError(f"Cannot convert {have} channels to {channels}.")


def to_float(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    size: int | None = None,
    channels: int | None = None,
) -> torch.Tensor:
    """uint8 (N, C, H, W) to normalised float model input, resized to ``size`` when it differs
    (LeNet takes 32 px, (Fashion-)MNIST is 28 px). Bilinear with antialiasing, as PIL resizes in
    the reference transforms. Normalisation uses the dataset's statistics in its own channels,
    before any conversion to ``channels``."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float takes uint8 images, not {images.dtype}; they would be rescaled.")
    x = images.float().div_(255)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    x = normalize(x, mean, std)
    return x if channels is None else convert_channels(x, channels)


def random_crop_flip(
    x: torch.Tensor,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RandomCrop(size, padding) and RandomHorizontalFlip for a whole batch in two gathers, each
    sample with its own offsets and coin. Pads with zeros, which matches torchvision when applied
    before normalisation."""
    n, c, h, w = x.shape
    device = generator.device if generator is not None else x.device
    span = 2 * padding + 1
    dy = torch.randint(0, span, (n, 1), generator=generator, device=device)
    dx = torch.randint(0, span, (n, 1), generator=generator, device=device)
    cols = torch.arange(w, device=device).expand(n, w)
    if flip:
        mirrored = torch.rand(n, 1, generator=generator, device=device) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    rows = (torch.arange(h, device=device) + dy).to(x.device)
    cols = (cols + dx).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


class BatchLoader:
    """(x, y) batches sliced from in-memory tensors, for one process or one shard of several.

    Each epoch draws its order from ``seed + epoch`` (``epoch`` advances with every pass and may
    be set to resume), so runs repeat and every shard sees the same order. Shard k takes every
    ``num_shards``-th sample of it, so shards are disjoint and together cover the data. With
    ``drop_last`` every shard is cut to the same length and processes stay in step; without it
    shard sizes may differ by one sample. ``transform`` (augmentation, ``to_float``, a move to a
    device) runs on each whole batch; y is None for unlabelled data.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        batch_size: int = 128,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        num_shards: int = 1,
        shard_index: int = 0,
    ) -> None:
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels.")
        if batch_size < 1 or not 0 <= shard_index < num_shards:
            raise ValueError(
                f"Need batch_size >= 1 and 0 <= shard_index < num_shards; got {batch_size}, "
                f"{shard_index}, {num_shards}."
            )
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.transform = transform
        self.num_shards = num_shards
        self.shard_index = shard_index
        self.epoch = 0

    def _shard_size(self) -> int:
        n = len(self.images)
        if self.drop_last:
            return n // self.num_shards
        return len(range(self.shard_index, n, self.num_shards))

    def __len__(self) -> int:
        size = self._shard_size()
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.images)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        self.epoch += 1
        shard = order[self.shard_index :: self.num_shards]
        return self._batches(shard[: len(self) * self.batch_size])

    def _batches(self, indices: torch.Tensor) -> Iterator[Batch]:
        for batch in indices.split(self.batch_size):
            x = self.images[batch]
            if self.transform is not None:
                x = self.transform(x)
            yield x, None if self.labels is None else self.labels[batch]


@dataclass(frozen=True)
class InputFormat:
    """The dataset's normalisation and the pixel size one model expects."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int | None

    @classmethod
    def of(cls, source: Any, size: int | None) -> InputFormat:
        return cls(tuple(source.mean), tuple(source.std), size)

    def from_uint8(self, images: torch.Tensor) -> torch.Tensor:
        return to_float(images, self.mean, self.std, size=self.size)

    def from_pixels(self, images01: torch.Tensor) -> torch.Tensor:
        """Normalise images in [0, 1] (a synthesizer's output) and fit them to the model."""
        x = normalize(images01, self.mean, self.std)
        return self.fit(x)

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """Resize an already normalised batch when the model expects another size."""
        if self.size is None or x.shape[-1] == self.size:
            return x
        return torch.nn.functional.interpolate(
            x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
        )
