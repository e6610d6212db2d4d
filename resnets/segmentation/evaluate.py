"""A semantic segmenter's scores on a data set: one confusion matrix over every pixel, as torchvision's
``references/segmentation/train.py`` ``evaluate`` (argmax of ``out``, summed over processes)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..train import distributed
from .metrics import ConfusionMatrix, SegmentationScores


@torch.inference_mode()
def evaluate_segmenter(
    model: nn.Module, batches: Iterable[Any], num_classes: int
) -> tuple[SegmentationScores, torch.Tensor]:
    """The scores and the confusion matrix (summed over the processes of a distributed run) of ``model``
    on ``batches`` of (images, masks): tensors, or lists of images of different sizes."""
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    for images, masks in batches:
        if isinstance(images, torch.Tensor):
            matrix.update(masks, model(images)["out"].argmax(1))
        else:
            for image, mask in zip(images, masks, strict=True):
                matrix.update(mask[None], model(image[None])["out"].argmax(1))
    model.train(was_training)
    counts = distributed.sum_tensor(matrix.matrix.double()).round().long().cpu()
    matrix.matrix = counts
    return matrix.compute(), counts
