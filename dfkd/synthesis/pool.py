"""A growing, resumable pool of synthesized images for the methods whose student trains on a pool
(DeepInversion, CMI, Fast-DFKD: docs/methods/framework.md#image-pool-and-memory-bank).

The reference writes every image as a PNG and re-reads them through DataLoader workers. Here the
pool lives in memory as one uint8 tensor (the same 8-bit quantisation, a quarter of the float
memory) and, given a directory, is persisted append-only: one safetensors chunk per ``add``, each
written atomically. A checkpoint records only how many chunks it covers. In a multi-process run
every process keeps its own pool in the same directory under its own chunk names (its shard), so
nothing collides and ``folder:RUN/images`` reads them all.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from dfkd.fileio import atomic_path


def _chunk_prefix(shard: int) -> str:
    """Process 0 keeps the plain names of a single-process run; process k writes images-rk-…."""
    return "images-" if shard == 0 else f"images-r{shard}-"


def _chunk_name(shard: int, index: int) -> str:
    return f"{_chunk_prefix(shard)}{index:05d}.safetensors"


def _to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats to bytes, rounding as torchvision's PNG writer does."""
    return images.detach().float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu()


class ImagePool:
    """Synthesized images (uint8, N×C×H×W) with optional int64 labels, growing without bound.

    ``seed`` (uint8) is a starting set, such as CMI's pre-inverted images; it is kept in memory
    only, never written to ``directory``, and must be passed again when resuming. Labels are all
    or nothing: once the pool holds labelled images, every batch must come with labels.
    ``shard`` is the process index of a multi-process run: it names this process's chunks.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        seed: Tensor | None = None,
        seed_labels: Tensor | None = None,
        shard: int = 0,
    ) -> None:
        self.directory = None if directory is None else Path(directory)
        self.shard = shard
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._images: Tensor | None = None  # capacity grows by doubling; rows [0, _size) are used
        self._labels: Tensor | None = None
        self._labelled: bool | None = None  # decided by the first batch
        self._size = 0
        self._chunks = 0
        if seed is not None:
            if seed.dtype != torch.uint8:
                raise TypeError(f"seed images must be uint8, got {seed.dtype}")
            labels = None if seed_labels is None else seed_labels.to("cpu", torch.int64)
            self._check(seed.cpu(), labels)
            self._append(seed.cpu(), labels)
        self._seed_size = self._size
        self._seed_labelled = self._labelled

    def __len__(self) -> int:
        return self._size

    @property
    def images(self) -> Tensor:
        """All images, uint8 (N, C, H, W): a view of the pool's storage, not a copy."""
        if self._images is None:
            return torch.empty((0,), dtype=torch.uint8)
        return self._images[: self._size]

    @property
    def labels(self) -> Tensor | None:
        """All labels, int64 (N,), or None for an unlabelled pool."""
        return self._labels[: self._size] if self._labelled else None

    def add(self, images: Tensor, labels: Tensor | None = None) -> None:
        """Quantise [0, 1] images to uint8 and append them (to disk first, when persisted)."""
        if not images.is_floating_point():
            raise TypeError(f"add() takes [0, 1] float images, got {images.dtype}")
        batch = _to_uint8(images)
        batch_labels = None if labels is None else labels.detach().to("cpu", torch.int64)
        self._check(batch, batch_labels)
        if self.directory is not None:
            if self._chunks == 0 and self._chunk_indices():
                raise FileExistsError(
                    f"{self.directory} already holds pool chunks; call load_state_dict() to resume "
                    "from them, or use an empty directory"
                )
            tensors = {"images": batch}
            if batch_labels is not None:
                tensors["labels"] = batch_labels
            path = self.directory / _chunk_name(self.shard, self._chunks)
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp))
        self._append(batch, batch_labels)
        self._chunks += 1

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``batch_size`` images drawn uniformly with replacement, with their labels (or None).

        Independent draws need no iterator state, so a resumed run only has to restore the
        generator to draw the same batches.
        """
        if self._size == 0:
            raise ValueError("cannot sample from an empty image pool")
        index = torch.randint(self._size, (batch_size,), generator=generator)
        labels = self.labels
        return self.images[index], None if labels is None else labels[index]

    def state_dict(self) -> dict[str, int]:
        return {"chunks": self._chunks, "size": self._size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Rebuild the pool as it was at ``state``: the seed, then chunks 0 … chunks−1 from disk.

        Chunks written after that checkpoint (by a run killed before its next one) are deleted,
        so the resumed run writes and sees exactly what an uninterrupted run would.
        """
        chunks, size = int(state["chunks"]), int(state["size"])
        if chunks and self.directory is None:
            raise ValueError("a pool without a directory cannot restore its chunks")
        self._size, self._chunks, self._labelled = self._seed_size, 0, self._seed_labelled
        if self.directory is not None:
            for index in self._chunk_indices():
                if index >= chunks:
                    (self.directory / _chunk_name(self.shard, index)).unlink()
            for leftover in self.directory.glob(f".{_chunk_prefix(self.shard)}[0-9]*.tmp"):
                leftover.unlink()
            for index in range(chunks):
                path = self.directory / _chunk_name(self.shard, index)
                if not path.exists():
                    raise FileNotFoundError(f"pool chunk {path} named by the checkpoint is missing")
                tensors = load_file(str(path))
                batch, batch_labels = tensors["images"], tensors.get("labels")
                self._check(batch, batch_labels)
                self._append(batch, batch_labels)
        self._chunks = chunks
        if self._size != size:
            raise ValueError(
                f"the image pool has {self._size} images after reloading, the checkpoint expects "
                f"{size}; was it resumed with a different seed set?"
            )

    def _chunk_indices(self) -> list[int]:
        pattern = re.compile(re.escape(_chunk_prefix(self.shard)) + r"(\d+)\.safetensors")
        found = (pattern.fullmatch(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _check(self, batch: Tensor, labels: Tensor | None) -> None:
        if batch.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(batch.shape)}")
        if self._size and batch.shape[1:] != self.images.shape[1:]:
            raise ValueError(
                f"images of shape {tuple(batch.shape[1:])} do not match the pool's "
                f"{tuple(self.images.shape[1:])}"
            )
        if self._labelled is not None and (labels is not None) != self._labelled:
            raise ValueError("a pool's images must be all labelled or all unlabelled")
        if labels is not None and labels.shape != (batch.shape[0],):
            raise ValueError(f"expected {batch.shape[0]} labels, got shape {tuple(labels.shape)}")

    def _append(self, batch: Tensor, labels: Tensor | None) -> None:
        if self._labelled is None:
            self._labelled = labels is not None
        end = self._size + batch.shape[0]
        self._images = _with_capacity(self._images, self._size, end, batch)
        self._images[self._size : end] = batch
        if labels is not None:
            self._labels = _with_capacity(self._labels, self._size, end, labels)
            self._labels[self._size : end] = labels
        self._size = end


def _with_capacity(buffer: Tensor | None, used: int, needed: int, like: Tensor) -> Tensor:
    """``buffer`` if it has ``needed`` rows, else a copy of its first ``used`` rows in a buffer
    at least twice as large: doubling keeps appends amortised O(1) per image."""
    if buffer is not None and buffer.shape[0] >= needed:
        return buffer
    capacity = max(needed, 2 * (0 if buffer is None else buffer.shape[0]))
    grown = like.new_empty((capacity, *like.shape[1:]))
    if buffer is not None:
        grown[:used] = buffer[:used]
    return grown
