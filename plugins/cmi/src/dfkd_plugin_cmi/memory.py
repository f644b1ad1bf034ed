"""CMI's feature memory bank: the negatives of the contrastive loss, kept across synthesis rounds.

A ring buffer on the CPU, as in the reference
(docs/methods/framework.md#image-pool-and-memory-bank): ``max_size`` rows initialised with randn,
written in order and overwritten oldest-first once full, never reset. Draws come only from rows
that have been written, until the bank has wrapped once, so the randn start is never read.
Unlike the reference, ``add`` takes any number of rows: a batch that does not divide
``max_size`` wraps around the end, and one larger than the bank leaves it as writing its rows one
at a time would: only the last ``max_size`` of them, in ring order.
"""

from __future__ import annotations

import torch
from torch import Tensor


class MemoryBank:
    """A ring buffer of ``max_size`` feature rows of width ``dim`` (CPU, float32)."""

    def __init__(self, max_size: int, dim: int, generator: torch.Generator | None = None) -> None:
        if max_size < 1 or dim < 1:
            raise ValueError(
                f"a memory bank needs max_size >= 1 and dim >= 1, got {max_size}, {dim}"
            )
        self.max_size = max_size
        self.dim = dim
        self.data = torch.randn(max_size, dim, generator=generator)
        self.ptr = 0  # the next row to write
        self.filled = 0  # rows written so far, at most max_size

    def add(self, rows: Tensor) -> None:
        """Append ``rows`` (n, dim), overwriting the oldest rows once the bank is full."""
        if rows.dim() != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected rows of shape (n, {self.dim}), got {tuple(rows.shape)}")
        n = rows.shape[0]
        kept = rows.detach().to("cpu", torch.float32)[-self.max_size :]
        # Where the kept rows land had all n rows been written one at a time.
        start = self.ptr + n - kept.shape[0]
        self.data[(start + torch.arange(kept.shape[0])) % self.max_size] = kept
        self.ptr = (self.ptr + n) % self.max_size
        self.filled = min(self.max_size, self.filled + n)

    def get_data(self, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``k`` distinct written rows, chosen at random (k may not exceed ``filled``)."""
        if k > self.filled:
            raise ValueError(f"asked for {k} rows but the bank holds {self.filled}")
        index = torch.randperm(self.filled, generator=generator)[:k]
        return self.data[index]

    def state_dict(self) -> dict[str, Tensor | int]:
        """The written rows only: the rest is never read, so a resumed bank need not keep it."""
        return {"data": self.data[: self.filled].clone(), "ptr": self.ptr, "filled": self.filled}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        filled = int(state["filled"])
        data = state["data"]
        if data.shape != (filled, self.dim) or filled > self.max_size:
            raise ValueError(
                f"a bank state of {tuple(data.shape)} rows does not fit a bank of "
                f"{self.max_size} x {self.dim}; was bank_size or the teacher changed?"
            )
        self.data[:filled] = data
        self.ptr = int(state["ptr"])
        self.filled = filled
