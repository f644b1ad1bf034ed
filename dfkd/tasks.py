"""What a network predicts: one label per image, or one per pixel.

A model's registration says ``task=`` (classification when absent), a dataset source's ``task``
attribute says what its labels are, and a method's ``tasks=`` lists what it can distil. The
commands pick the loss, the augmentation and the score by task (docs/segmentation.md).
"""

from __future__ import annotations

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"
TASKS = (CLASSIFICATION, SEGMENTATION)
#: the mask value of pixels that no class claims (void, unlabelled); never scored or trained on
IGNORE_INDEX = 255
