"""Top-1 of a classifier on a test split (mIoU: dfkd.training.segmentation; which one a run
uses: its task, dfkd.training.tasks)."""

from __future__ import annotations

from typing import Any

import torch

from dfkd.data.pipeline import InputFormat


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    fmt: InputFormat,
    accelerator: Any,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Top-1 (and top-5 past ten classes) in percent; each process scores its own shard."""
    was_training = model.training
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    shard = torch.arange(rank, len(images), world)
    correct1 = correct5 = 0
    total = 0
    num_classes = None
    for start in range(0, len(shard), batch_size):
        idx = shard[start : start + batch_size]
        x = fmt.from_uint8(images[idx]).to(accelerator.device)
        y = labels[idx].to(accelerator.device)
        with accelerator.autocast():
            logits = model(x)
        num_classes = logits.shape[1]
        top = logits.topk(min(5, num_classes), dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
        total += len(y)
    counts = torch.tensor([correct1, correct5, total], device=accelerator.device, dtype=torch.long)
    if world > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    correct1, correct5, total = counts.tolist()
    model.train(was_training)
    scores = {"top1": 100.0 * correct1 / max(total, 1)}
    if num_classes is not None and num_classes > 10:
        scores["top5"] = 100.0 * correct5 / max(total, 1)
    return scores
