"""Judging a student without data: its agreement with the teacher on a fixed synthetic set.

The set is made once per teacher, from a fixed seed, by inverting the teacher (DeepInversion's
priors: each image optimised from noise so the teacher calls it its assigned class, with the
teacher's BatchNorm statistics matched where it has any, and a little smoothness), and kept beside
the teacher's weights. Every method distilled from that teacher is then scored on the same images,
which none of them trains on: top-1 agreement with the teacher and the mean KL(teacher || student).
docs/architecture.md says why inverted images rather than a method's own samples. A segmentation
teacher is asked for a grid of classes per image, and agreement is counted per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dfkd.errors import DfkdError
from dfkd.fileio import held_lock, sha256_of, write_atomic
from dfkd.tasks import CLASSIFICATION, SEGMENTATION
from dfkd.training.inputs import InputFormat

#: the set's recipe; a change makes every cached set stale (its key includes these)
SIZE = 500  # default images (--val-size)
#: a segmentation set keeps K logits per pixel: fewer images hold as many predictions
SEGMENTATION_SIZE = 64
STEPS = 60  # default Adam steps on them (--val-steps)
LR = 0.1
SEED = 20261201
TV_WEIGHT = 1e-3


@dataclass
class ValidationSet:
    """Images in [0, 1] at the teacher's size and the teacher's logits on them."""

    images: torch.Tensor
    teacher_logits: torch.Tensor


def _fingerprint(weights: Path, size: int = SIZE, steps: int = STEPS) -> str:
    return f"{sha256_of(weights)[:16]}-{size}-{steps}-{LR}-{SEED}-{TV_WEIGHT}"


def cache_path(weights: Path) -> Path:
    return weights.with_name(weights.name.removesuffix(".safetensors") + ".valset.safetensors")


def validation_set(
    teacher: torch.nn.Module,
    weights: Path,
    fmt: InputFormat,
    num_classes: int,
    channels: int,
    image_size: int,
    fallback_dir: Path,
    size: int = SIZE,
    steps: int = STEPS,
    task: str = CLASSIFICATION,
) -> ValidationSet:
    """The teacher's validation set: read from beside its weights, else made and kept there (or in
    ``fallback_dir`` when that folder cannot be written). Runs compare on one set only when
    they share ``size`` and ``steps`` (the defaults, unless a teacher is too costly to invert
    on the machine at hand)."""
    from safetensors.torch import save_file

    key = _fingerprint(weights, size, steps)
    places = (cache_path(weights), fallback_dir / "valset.safetensors")
    cached = _read_cached(places, key)
    if cached is not None:
        return cached
    # runs of one teacher started together (a bench's cells) make the set once; the others wait
    # and read it (nobody waits where that folder cannot be written)
    with held_lock(cache_path(weights).with_suffix(".lock"), required=False):
        cached = _read_cached(places, key)  # made by another run while this one waited
        if cached is not None:
            return cached
        made = make_validation_set(
            teacher, fmt, num_classes, channels, image_size, size, steps, task=task
        )
        tensors = {"images": made.images, "teacher_logits": made.teacher_logits}
        for place in places:
            try:
                write_atomic(place, lambda tmp: save_file(tensors, str(tmp), metadata={"key": key}))
                break
            except (DfkdError, OSError):
                continue
    return made


def _read_cached(places: tuple[Path, ...], key: str) -> ValidationSet | None:
    """The first of ``places`` that holds the set made for ``key``; damaged or foreign files
    are passed over (and made again by the caller)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    for place in places:
        if place.is_file():
            try:
                with safe_open(str(place), "pt") as f:
                    if (f.metadata() or {}).get("key") == key:
                        tensors = load_file(str(place))
                        return ValidationSet(tensors["images"], tensors["teacher_logits"])
            except (SafetensorError, OSError, KeyError):
                pass
    return None


def make_validation_set(
    teacher: torch.nn.Module,
    fmt: InputFormat,
    num_classes: int,
    channels: int,
    image_size: int,
    size: int = SIZE,
    steps: int = STEPS,
    bn_prior: bool = True,
    task: str = CLASSIFICATION,
) -> ValidationSet:
    """Invert the teacher into ``size`` images, classes balanced, from ``SEED`` on the CPU
    (``bn_prior=False`` leaves out the BatchNorm-statistics term, for the proxy benchmark's
    comparison of designs)."""
    from dfkd.synthesis.bn_hooks import attach_bn_hooks
    from dfkd.synthesis.losses import bn_statistics, tv_l2
    from dfkd.training.segmentation import block_targets

    device = next(teacher.parameters()).device
    rng = torch.Generator().manual_seed(SEED)
    pixels = torch.rand(size, channels, image_size, image_size, generator=rng).to(device)
    logit_pixels = torch.logit(pixels.clamp(0.02, 0.98)).requires_grad_(True)
    if task == SEGMENTATION:
        targets = block_targets(size, num_classes, image_size).to(device)
    else:
        targets = (torch.arange(size) % num_classes).to(device)
    optimizer = torch.optim.Adam([logit_pixels], lr=LR)
    hooks = attach_bn_hooks(teacher) if bn_prior else []
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.enable_grad():
            for _ in range(steps):
                images = torch.sigmoid(logit_pixels)
                x = fmt.from_pixels(images)
                loss = F.cross_entropy(teacher(x).float(), targets) + TV_WEIGHT * tv_l2(x)
                if hooks:
                    loss = loss + bn_statistics(hooks)
                optimizer.zero_grad(set_to_none=True)
                loss.backward(inputs=[logit_pixels])
                optimizer.step()
    finally:
        for hook in hooks:
            hook.remove()
        teacher.train(was_training)
    images = torch.sigmoid(logit_pixels.detach()).cpu()
    with torch.no_grad():
        logits = teacher(fmt.from_pixels(images.to(device))).float().cpu()
    return ValidationSet(images, logits)


@torch.no_grad()
def agreement(
    model: torch.nn.Module,
    valset: ValidationSet,
    fmt: InputFormat,
    accelerator: Any,
    batch_size: int = 500,
) -> dict[str, float]:
    """Top-1 agreement with the teacher (%) and mean KL(teacher || model) on the set, per image
    for a classifier and per pixel for a segmentation network."""
    was_training = model.training
    model.eval()
    agree, kl, total = 0.0, 0.0, 0
    classes = valset.teacher_logits.shape[1]
    s_answers = torch.zeros(classes, dtype=torch.long)
    t_answers = torch.zeros(classes, dtype=torch.long)
    for start in range(0, len(valset.images), batch_size):
        x = fmt.from_pixels(valset.images[start : start + batch_size]).to(accelerator.device)
        t = valset.teacher_logits[start : start + batch_size].to(accelerator.device)
        with accelerator.autocast():
            s = model(x).float()
        agree += (s.argmax(1) == t.argmax(1)).sum().item()
        kl += F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), log_target=True, reduction="sum")
        total += t.numel() // t.shape[1]
        s_answers += torch.bincount(s.argmax(1).flatten().cpu(), minlength=classes)
        t_answers += torch.bincount(t.argmax(1).flatten().cpu(), minlength=classes)
    model.train(was_training)
    top = int(s_answers.argmax())
    return {
        "agree": 100.0 * agree / total,
        "val_kl": float(kl) / total,
        # the share of the set on the student's commonest class, and the teacher's share of
        # that class: a student answering one class for everything shows here (guard.py)
        "val_top_class": 100.0 * s_answers[top].item() / total,
        "val_top_class_teacher": 100.0 * t_answers[top].item() / total,
    }
