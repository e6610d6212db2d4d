"""Detection metrics with pycocotools' COCOeval: AP over IoU 0.50:0.95 (COCO's mAP@[.5, .95], paper
Table 8), AP50 (VOC's mAP@.5, Table 7), AP75, AP by object size and recall at 1, 10, 100 detections.

``coco_metrics(ground_truth, detections)`` is the pure part (hand-made detections in, numbers out);
``evaluate_detector(detector, loader)`` runs a detector over a data set first. Under torchrun each
process detects its shard and rank 0 evaluates the gathered detections, as the numbers must come
from all images at once (AP is not a sum of per-shard counts).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from ..train import distributed
from .loader import DetectionLoader

# COCOeval.stats, in its order
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def to_coco_results(
    outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int], category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """torchvision's detections (x0, y0, x1, y1; labels 1..K) as COCO result entries ([x, y, w, h],
    the ground truth's category ids)."""
    results = []
    for output, image_id in zip(outputs, image_ids, strict=True):
        boxes = output["boxes"].detach().float().cpu()
        for box, label, score in zip(
            boxes.tolist(), output["labels"].tolist(), output["scores"].tolist(), strict=True
        ):
            x0, y0, x1, y1 = box
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[label - 1]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    return results


def coco_metrics(
    ground_truth: COCO,
    detections: list[dict[str, Any]],
    image_ids: Sequence[int] | None = None,
    iou_type: str = "bbox",
) -> dict[str, float]:
    """COCOeval's 12 numbers (fractions; -1 where the ground truth has no object of that size) for
    ``detections`` (COCO result entries) on ``image_ids`` (default: every image of the ground truth);
    ``iou_type`` "segm" compares masks (their entries' ``segmentation``) instead of boxes."""
    ids = sorted(ground_truth.getImgIds() if image_ids is None else image_ids)
    if not detections:  # pycocotools cannot load an empty result list; nothing detected scores 0
        has_size = _sizes_present(ground_truth, ids)
        return {name: (0.0 if has_size.get(name[2:], True) else -1.0) for name in METRICS}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        predicted = ground_truth.loadRes([dict(d) for d in detections])
        evaluation = COCOeval(ground_truth, predicted, iouType=iou_type)
        evaluation.params.imgIds = ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(value) for name, value in zip(METRICS, evaluation.stats, strict=True)}


def _sizes_present(ground_truth: COCO, ids: Sequence[int]) -> dict[str, bool]:
    """Whether the images hold (non-crowd) objects that are small, medium, large (COCO's area ranges)."""
    areas = [
        a.get("area", 0)
        for a in ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=list(ids)))
        if not a.get("iscrowd", 0)
    ]
    return {
        "s": any(a < 32**2 for a in areas),
        "m": any(32**2 <= a < 96**2 for a in areas),
        "l": any(a >= 96**2 for a in areas),
    }


@torch.inference_mode()
def detect(detector: nn.Module, loader: DetectionLoader) -> list[dict[str, Any]]:
    """The detector's COCO result entries for this process's images (eval mode inside, the caller's
    mode restored)."""
    training = detector.training
    detector.eval()
    dataset = loader.dataset
    category_ids = dataset.category_ids
    results = []
    try:
        for images, targets in loader:
            outputs = detector(images)
            results += to_coco_results(outputs, [int(t["image_id"]) for t in targets], category_ids)
    finally:
        detector.train(training)
    return results


def evaluate_detector(detector: nn.Module, loader: DetectionLoader) -> dict[str, float]:
    """COCOeval's numbers on the loader's data set, over every process's images; every process
    returns them."""
    detections = detect(detector, loader)
    gathered = distributed.gather_objects(detections)
    metrics = None
    if loader.rank == 0:
        merged = [d for part in gathered for d in part]
        ids = [r.image_id for r in loader.dataset.records]
        metrics = coco_metrics(loader.dataset.coco(), merged, ids)
        metrics["images"] = float(len(ids))
        metrics["detections"] = float(len(merged))
    return distributed.gather_objects(metrics)[0]


def per_image_ap50(ground_truth: COCO, detections: list[dict[str, Any]], image_id: int) -> float:
    """AP at IoU 0.5 of one image (for choosing figures' examples); nan when it has no objects."""
    mine = [d for d in detections if d["image_id"] == image_id]
    if not ground_truth.getAnnIds(imgIds=[image_id]):
        return float("nan")
    return coco_metrics(ground_truth, mine, [image_id])["AP50"] if mine else 0.0


def percent(metrics: dict[str, float]) -> dict[str, float | None]:
    """Fractions as percentages (the paper's tables), -1 (undefined) as None."""
    return {k: (None if v < 0 else 100 * v) if k in METRICS else v for k, v in metrics.items()}


__all__ = [
    "METRICS",
    "coco_metrics",
    "detect",
    "evaluate_detector",
    "percent",
    "to_coco_results",
    "per_image_ap50",
]
