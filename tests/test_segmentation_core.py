"""The task-independent pieces segmentation adds to the core: mIoU, joint crops, targets."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from dfkd.tasks import IGNORE_INDEX
from dfkd.training.segmentation import (
    block_targets,
    confusion_matrix,
    crop_flip_pairs,
    pixel_cross_entropy,
    pixel_rows,
    scores_from_confusion,
)
from dfkd.training.validation import ValidationSet, agreement


def test_miou_follows_the_reference_over_one_confusion_matrix():
    # 3 classes; class 2 never occurs in a mask nor a prediction and is skipped; one ignored
    # pixel and one id beyond the classes are left out
    masks = torch.tensor([[[0, 0, 1], [1, IGNORE_INDEX, 7]]], dtype=torch.uint8)
    predictions = torch.tensor([[[0, 1, 1], [1, 0, 0]]])
    matrix = confusion_matrix(predictions, masks, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    scores = scores_from_confusion(matrix)
    # IoU0 = 1 / (2 + 1 - 1) = 0.5, IoU1 = 2 / (2 + 3 - 2) = 2/3; class 2 absent: skipped
    assert math.isclose(scores["miou"], 100 * (0.5 + 2 / 3) / 2)
    assert math.isclose(scores["pixel_acc"], 75.0)


def test_a_class_predicted_but_absent_counts_as_zero():
    masks = torch.zeros(1, 1, 4, dtype=torch.uint8)
    predictions = torch.tensor([[[0, 0, 0, 1]]])
    scores = scores_from_confusion(confusion_matrix(predictions, masks, 2))
    assert math.isclose(scores["miou"], 100 * (3 / 4 + 0) / 2)


def test_crops_cut_image_and_mask_alike():
    images = torch.arange(2 * 1 * 6 * 8, dtype=torch.uint8).reshape(2, 1, 6, 8)
    masks = images[:, 0].clone()
    rng = torch.Generator().manual_seed(0)
    crops, mask_crops = crop_flip_pairs(images, masks, 4, rng)
    assert crops.shape == (2, 1, 4, 4) and mask_crops.shape == (2, 4, 4)
    assert torch.equal(crops[:, 0], mask_crops)
    # each crop is a window of its own image, flipped or not
    for image, crop in zip(images, crops, strict=True):
        windows = image.unfold(1, 4, 1).unfold(2, 4, 1)[0]
        found = any(
            torch.equal(w, crop[0]) or torch.equal(w.flip(-1), crop[0])
            for row in windows
            for w in row
        )
        assert found


def test_a_short_image_is_padded_with_ignored_pixels():
    images = torch.full((1, 1, 3, 3), 9, dtype=torch.uint8)
    masks = torch.ones(1, 3, 3, dtype=torch.uint8)
    crops, mask_crops = crop_flip_pairs(images, masks, 4, torch.Generator().manual_seed(1))
    assert crops.shape == (1, 1, 4, 4)
    assert (mask_crops == IGNORE_INDEX).sum() == 7 and (crops == 0).sum() == 7


def test_pixel_losses_average_over_pixels_and_skip_ignored_ones():
    logits = torch.randn(2, 3, 4, 5)
    rows = pixel_rows(logits)
    assert rows.shape == (40, 3)
    assert torch.equal(rows[7], logits[0, :, 1, 2])
    masks = torch.randint(0, 3, (2, 4, 5), dtype=torch.uint8)
    masks[0, 0, 0] = IGNORE_INDEX
    keep = masks.flatten() != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(rows[keep], masks.flatten()[keep].long())
    assert torch.allclose(pixel_cross_entropy(logits, masks), expected)


def test_block_targets_ask_for_every_class_in_a_grid():
    targets = block_targets(3, 5, 4)
    assert targets.shape == (3, 4, 4)
    assert targets[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert targets[1, 0, 0] == 4 and targets[1, 0, 3] == 0  # cycles through the classes


class _Echo(torch.nn.Module):
    """A 'segmentation network' whose logits are its input: agreement is then known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_agreement_counts_pixels_for_a_segmentation_network():
    from dfkd.data.pipeline import InputFormat

    teacher_logits = torch.zeros(2, 2, 2, 2)
    teacher_logits[:, 0] = 1.0  # the teacher says class 0 everywhere
    images = torch.full((2, 2, 2, 2), 0.5)
    images[0, 1, 0, 0] = 0.9  # the echo says class 1 at one pixel of eight
    fmt = InputFormat((0.0, 0.0), (1.0, 1.0), None)
    scores = agreement(_Echo(), ValidationSet(images, teacher_logits), fmt, _NoAccelerator())
    assert scores["agree"] == pytest.approx(100 * 7 / 8)


def test_kappa_scores_a_student_that_answers_the_teachers_commonest_class_at_zero():
    from dfkd.data.pipeline import InputFormat

    def scores(student_answers: list[int], teacher_answers: list[int]) -> dict[str, float]:
        """A classifier that reads its logits off one-pixel, three-channel images."""
        images = torch.eye(3)[student_answers].view(-1, 3, 1, 1)
        valset = ValidationSet(images, torch.eye(3)[teacher_answers])
        fmt = InputFormat((0.0,) * 3, (1.0,) * 3, None)
        return agreement(torch.nn.Flatten(), valset, fmt, _NoAccelerator())

    constant = scores([0, 0, 0, 0], [0, 0, 1, 2])  # the teacher's commonest class throughout
    assert constant["agree"] == pytest.approx(50.0) and constant["val_kappa"] == pytest.approx(0)
    copy = scores([0, 0, 1, 2], [0, 0, 1, 2])
    assert copy["agree"] == pytest.approx(100.0) and copy["val_kappa"] == pytest.approx(1.0)
    assert "val_kappa" not in scores([1, 1], [1, 1])  # one class on both sides: nothing to read


class _NoAccelerator:
    device = torch.device("cpu")

    @staticmethod
    def autocast():
        return contextlib.nullcontext()
