"""Segmentation metrics: mean IoU, pixel accuracy and per-class IoU from one confusion matrix; COCO mask AP.

The semantic metrics are torchvision's (``references/segmentation/utils.py``, ``ConfusionMatrix``): rows
are the target classes, columns the predicted ones; pixel accuracy is the diagonal over the total, a class's
IoU is diag / (row sum + column sum - diag), its accuracy diag / row sum. Two departures, both where
torchvision's numbers are not usable: a class absent from both targets and predictions has IoU nan and is
left out of the mean (torchvision's mean is then nan), and the ratios are computed in float64 (torchvision's
float32 rounds counts above 2**24 pixels, fewer than Pascal VOC's validation set holds). Pixels whose target
is ``ignore_index`` (255, VOC's object borders) are not counted, as torchvision drops every target outside
0..n-1; here any other out-of-range label is an error rather than silently dropped.

Mask AP is COCO's, computed by pycocotools' COCOeval with ``iouType="segm"`` on masks encoded with
``pycocotools.mask.encode`` (``resnets.detection.evaluate.coco_metrics`` runs it).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ..detection.evaluate import coco_metrics
from ..errors import DataError

IGNORE_INDEX = 255  # Pascal VOC's "void" label: object borders and pixels its annotators left out
MASK_THRESHOLD = 0.5  # a predicted mask's probabilities become a binary mask here (torchvision's references)


# --- semantic segmentation --------------------------------------------------------------------------


def confusion_matrix(
    target: torch.Tensor, prediction: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """num_classes x num_classes int64 counts, [target class, predicted class], over the pixels whose target
    is not ``ignore_index``; ``target`` and ``prediction`` are class indices of the same shape."""
    if target.shape != prediction.shape:
        raise DataError(
            f"targets {tuple(target.shape)} and predictions {tuple(prediction.shape)} differ in size"
        )
    target, prediction = target.flatten().long(), prediction.flatten().long()
    counted = target != ignore_index
    target, prediction = target[counted], prediction[counted]
    for name, labels in (("target", target), ("predicted", prediction)):
        outside = labels[(labels < 0) | (labels >= num_classes)]
        if outside.numel():
            raise DataError(
                f"{name} labels must be 0..{num_classes - 1}"
                + (f" (or {ignore_index}, ignored)" if name == "target" else "")
                + f", got {outside.unique()[:5].tolist()}"
            )
    counts = torch.bincount(num_classes * target + prediction, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """Fractions in [0, 1]; nan where nothing was counted (see the module docstring)."""

    pixel_accuracy: float  # torchvision's acc_global
    mean_iou: float  # over the classes present in targets or predictions
    iou: tuple[float, ...]  # per class; nan: absent from both
    class_accuracy: tuple[float, ...]  # per class, the share of its pixels predicted as it; nan: no pixel


def segmentation_scores(matrix: torch.Tensor) -> SegmentationScores:
    """Pixel accuracy, IoU and per-class accuracy of a ``confusion_matrix`` (or a sum of them)."""
    counts = matrix.double().cpu()
    hits = counts.diag()
    iou = hits / (counts.sum(1) + counts.sum(0) - hits)
    present = iou[~iou.isnan()]
    return SegmentationScores(
        pixel_accuracy=(hits.sum() / counts.sum()).item(),
        mean_iou=present.mean().item() if present.numel() else math.nan,
        iou=tuple(iou.tolist()),
        class_accuracy=tuple((hits / counts.sum(1)).tolist()),
    )


class ConfusionMatrix:
    """The confusion matrix of a whole evaluation, one batch at a time: ``update(target, prediction)``, then
    ``compute()``. ``matrix`` holds the counts (on the device of the batches: sum it over processes to
    combine shards)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @torch.inference_mode()
    def update(self, target: torch.Tensor, prediction: torch.Tensor) -> None:
        """Add a batch: class indices (B x H x W), e.g. ``prediction = model(x)["out"].argmax(1)``."""
        counts = confusion_matrix(target, prediction, self.num_classes, self.ignore_index)
        self.matrix = self.matrix.to(counts.device) + counts

    def compute(self) -> SegmentationScores:
        return segmentation_scores(self.matrix)


# --- instance segmentation --------------------------------------------------------------------------


def mask_average_precision(
    predictions: Sequence[Mapping[str, torch.Tensor]],
    targets: Sequence[Mapping[str, torch.Tensor]],
    mask_threshold: float = MASK_THRESHOLD,
) -> dict[str, float]:
    """COCO mask AP of one set of images, as COCOeval's 12 numbers (``AP``: AP@[.5:.95], ``AP50``, ``AP75``,
    by object size, recalls; fractions, -1 where undefined).

    ``predictions[i]``: image i's ``masks`` (N x H x W or torchvision's N x 1 x H x W; probabilities,
    binarised at ``mask_threshold``, or booleans), ``scores`` (N) and ``labels`` (N, the classes);
    ``targets[i]``: its ``masks`` (M x H x W, booleans or 0/1) and ``labels`` (M)."""
    if len(predictions) != len(targets):
        raise DataError(f"{len(predictions)} images of predictions for {len(targets)} of targets")
    ground_truth = _ground_truth(targets)
    results = []
    for image_id, prediction in enumerate(predictions, 1):
        masks = prediction["masks"]
        masks = masks[:, 0] if masks.dim() == 4 else masks
        binary = masks > mask_threshold if masks.is_floating_point() else masks.bool()
        for rle, label, score in zip(
            encode_masks(binary), prediction["labels"].tolist(), prediction["scores"].tolist(), strict=True
        ):
            results.append(
                {"image_id": image_id, "category_id": int(label), "segmentation": rle, "score": float(score)}
            )
    return coco_metrics(ground_truth, results, iou_type="segm")


def encode_masks(masks: torch.Tensor) -> list[dict[str, Any]]:
    """pycocotools' run-length encoding of N x H x W binary masks (it takes H x W x N in Fortran order)."""
    if not len(masks):
        return []
    array = masks.detach().cpu().numpy().astype(np.uint8).transpose(1, 2, 0)
    return mask_utils.encode(np.asfortranarray(array))


def _ground_truth(targets: Sequence[Mapping[str, torch.Tensor]]) -> COCO:
    """The targets as a COCO data set in memory: images 1..n, one annotation per mask."""
    images, annotations = [], []
    for image_id, target in enumerate(targets, 1):
        masks = target["masks"]
        height, width = masks.shape[-2:]
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for rle, label in zip(encode_masks(masks.bool()), target["labels"].tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": 0,
                }
            )
    categories = sorted({a["category_id"] for a in annotations})
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints its progress
        coco.createIndex()
    return coco
