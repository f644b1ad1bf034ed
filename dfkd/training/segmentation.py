"""What segmentation changes in training and scoring (docs/segmentation.md): per-pixel losses,
crops that cut image and mask alike, and mIoU from one confusion matrix over the split.

The score follows DFAD's reference (its ``StreamSegMetrics``): pixels whose mask is the ignore
index, or any id outside the classes, are left out; IoU_c = CM_cc / (row_c + col_c − CM_cc)
over the whole split, not per image; mIoU is the mean over the classes that occur in the masks
or the predictions (a class absent from both is skipped, one predicted but absent counts 0).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dfkd.tasks import IGNORE_INDEX

#: images per forward when scoring: test images are full-sized (256 × 341 for CamVid)
EVAL_BATCH = 16


def pixel_rows(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) logits as (B·H·W, K) rows, so a per-sample loss becomes a per-pixel one."""
    return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])


def confusion_matrix(
    predictions: torch.Tensor, masks: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """(K, K) counts, rows the true class, columns the predicted one, over valid pixels."""
    target = masks.long().flatten()
    valid = target < num_classes  # IGNORE_INDEX and any stray id beyond the classes
    index = target[valid] * num_classes + predictions.flatten()[valid]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores_from_confusion(matrix: torch.Tensor) -> dict[str, float]:
    """mIoU and pixel accuracy (both in percent) from a confusion matrix."""
    m = matrix.double()
    true_positive = m.diag()
    union = m.sum(0) + m.sum(1) - true_positive
    present = union > 0
    iou = true_positive[present] / union[present]
    total = m.sum()
    return {
        "miou": 100.0 * iou.mean().item() if present.any() else 0.0,
        "pixel_acc": 100.0 * (true_positive.sum() / total).item() if total > 0 else 0.0,
    }


@torch.no_grad()
def evaluate_segmentation(
    model: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    fmt: Any,
    accelerator: Any,
    num_classes: int,
    batch_size: int = EVAL_BATCH,
) -> dict[str, float]:
    """mIoU and pixel accuracy on a split at its stored size; each process scores its own shard
    and the confusion matrices are summed."""
    was_training = model.training
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    shard = torch.arange(rank, len(images), world)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=accelerator.device)
    for start in range(0, len(shard), batch_size):
        idx = shard[start : start + batch_size]
        x = fmt.from_uint8(images[idx]).to(accelerator.device)
        with accelerator.autocast():
            logits = model(x)
        matrix += confusion_matrix(logits.argmax(1), masks[idx].to(accelerator.device), num_classes)
    if world > 1:
        matrix = accelerator.reduce(matrix, reduction="sum")
    model.train(was_training)
    return scores_from_confusion(matrix.cpu())


def crop_flip_pairs(
    images: torch.Tensor,
    masks: torch.Tensor | None,
    size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reference's training augmentation: a random ``size`` × ``size`` crop and a horizontal
    flip with probability 1/2, the same for an image and its mask (an unlabelled transfer set
    has none). A side shorter than ``size`` is padded first (images with 0, masks with
    IGNORE_INDEX, so padding is never learnt)."""
    n, _, h, w = images.shape
    if masks is None:
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        cropped, _ = crop_flip_pairs(images, masks, size, generator)
        return cropped, None
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
        masks = F.pad(masks, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        h, w = h + pad_h, w + pad_w
    tops = torch.randint(0, h - size + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(0, w - size + 1, (n,), generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    out_images, out_masks = [], []
    for i, (top, left, flip) in enumerate(zip(tops, lefts, flips, strict=True)):
        image = images[i, :, top : top + size, left : left + size]
        mask = masks[i, top : top + size, left : left + size]
        if flip:
            image, mask = image.flip(-1), mask.flip(-1)
        out_images.append(image)
        out_masks.append(mask)
    return torch.stack(out_images), torch.stack(out_masks)


def pixel_cross_entropy(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the pixels a class claims (IGNORE_INDEX left out)."""
    return F.cross_entropy(logits.float(), masks.long(), ignore_index=IGNORE_INDEX)


def block_targets(size: int, num_classes: int, image_size: int, blocks: int = 2) -> torch.Tensor:
    """Per-pixel targets for inverting a segmentation teacher: each image a ``blocks`` ×
    ``blocks`` grid of classes, cycling through them, so every class is asked for in several
    places and every image holds several classes."""
    cells = torch.arange(size * blocks * blocks) % num_classes
    grid = cells.reshape(size, 1, blocks, blocks).float()
    return F.interpolate(grid, size=(image_size, image_size), mode="nearest")[:, 0].long()
