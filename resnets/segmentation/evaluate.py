"""A segmenter's scores on a data set.

Semantic (FCN, DeepLabV3): one confusion matrix over every pixel, as torchvision's
``references/segmentation/train.py`` ``evaluate`` (argmax of ``out``, summed over processes).
Instance (Mask R-CNN): COCOeval twice on the same detections, as torchvision's ``references/detection``
``CocoEvaluator`` with ``iou_types=["bbox", "segm"]``: box AP on the boxes, mask AP on the masks (each
object's probabilities binarised at 0.5 and run-length encoded). Under torchrun each process segments its
shard and rank 0 evaluates the gathered results, as AP is not a sum of per-shard counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..detection.evaluate import coco_metrics, to_coco_results
from ..detection.loader import DetectionLoader
from ..train import distributed
from .metrics import MASK_THRESHOLD, ConfusionMatrix, SegmentationScores, encode_masks


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


# --- Mask R-CNN -------------------------------------------------------------------------------------


def to_coco_mask_results(
    outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int], category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """Mask R-CNN's detections as COCO ``segm`` result entries: each mask (N x 1 x H x W probabilities)
    above 0.5, run-length encoded, with its score and the ground truth's category id."""
    results = []
    for output, image_id in zip(outputs, image_ids, strict=True):
        binary = output["masks"][:, 0] > MASK_THRESHOLD
        for rle, label, score in zip(
            encode_masks(binary), output["labels"].tolist(), output["scores"].tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[label - 1]),
                    "segmentation": rle,
                    "score": float(score),
                }
            )
    return results


@torch.inference_mode()
def segment_instances(
    model: nn.Module, loader: DetectionLoader
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's COCO result entries for this process's images: (boxes, masks). Eval mode inside, the
    caller's mode restored."""
    training = model.training
    model.eval()
    category_ids = loader.dataset.category_ids
    boxes, masks = [], []
    try:
        for images, targets in loader:
            outputs = model(images)
            ids = [int(t["image_id"]) for t in targets]
            boxes += to_coco_results(outputs, ids, category_ids)
            masks += to_coco_mask_results(outputs, ids, category_ids)
    finally:
        model.train(training)
    return boxes, masks


def evaluate_instances(model: nn.Module, loader: DetectionLoader) -> dict[str, dict[str, float]]:
    """COCOeval's numbers (fractions) on the loader's data set, over every process's images: ``box`` (box
    AP ...) and ``mask`` (mask AP ...), each with ``images`` and ``detections``; every process returns
    them."""
    found = segment_instances(model, loader)
    gathered = distributed.gather_objects(found)
    metrics = None
    if loader.rank == 0:
        ground_truth = loader.dataset.coco()
        ids = [r.image_id for r in loader.dataset.records]
        metrics = {}
        for key, kind, iou_type in (("box", 0, "bbox"), ("mask", 1, "segm")):
            merged = [entry for part in gathered for entry in part[kind]]
            metrics[key] = coco_metrics(ground_truth, merged, ids, iou_type=iou_type)
            metrics[key].update(images=float(len(ids)), detections=float(len(merged)))
    return distributed.gather_objects(metrics)[0]
