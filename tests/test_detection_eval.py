"""COCOeval on hand-made detections against hand-computed AP, and torchvision outputs as COCO results."""

import pytest
import torch

from resnets.detection.data import coco_from_dict
from resnets.detection.evaluate import METRICS, coco_metrics, percent, to_coco_results


def truth(boxes_per_image):
    """A COCO ground truth: image i holds boxes [x, y, w, h] of category 1 (size 100 x 100)."""
    images, annotations = [], []
    for image_id, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 100, "height": 100})
        for box in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    return coco_from_dict(
        {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "item"}, {"id": 2, "name": "other"}],
        }
    )


def detection(image_id, box, score, category=1):
    return {"image_id": image_id, "category_id": category, "bbox": box, "score": score}


def test_a_perfect_detection_scores_one():
    gt = truth([[[10, 10, 40, 40]], [[50, 20, 30, 60]]])
    metrics = coco_metrics(gt, [detection(1, [10, 10, 40, 40], 0.9), detection(2, [50, 20, 30, 60], 0.8)])
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(1.0) and metrics["AR100"] == pytest.approx(1.0)
    assert metrics["APm"] == pytest.approx(1.0)  # 40 x 40 and 30 x 60 are COCO's "medium" (32^2 to 96^2)
    assert metrics["APs"] == -1 and metrics["APl"] == -1  # no small or large objects: undefined


def test_a_shifted_box_counts_at_the_iou_thresholds_it_passes():
    # ground truth 40 x 40 at (10, 10); the detection shifted right by 10: intersection 30 x 40, union
    # 50 x 40, IoU 0.6 (the thresholds 0.50, 0.55 and 0.60 pass it: COCOeval matches IoU >= t).
    # Shifted by 9 instead: IoU 31/49 = 0.633, so exactly 3 of the 10 thresholds: AP = 0.3.
    gt = truth([[[10, 10, 40, 40]]])
    metrics = coco_metrics(gt, [detection(1, [19, 10, 40, 40], 0.9)])
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(0.0)
    assert metrics["AP"] == pytest.approx(0.3)
    # shifted by 20: IoU 20/60 = 1/3, below every threshold
    assert coco_metrics(gt, [detection(1, [30, 10, 40, 40], 0.9)])["AP"] == pytest.approx(0.0)


def test_ranked_detections_give_the_101_point_interpolated_precision():
    # two objects; the best-scored detection finds one, a false positive comes second, the other object
    # is never found: precision 1 up to recall 0.5, then nothing. COCO samples recall at 0, 0.01, ..., 1:
    # 51 of the 101 points have precision 1, so AP50 = 51 / 101.
    gt = truth([[[10, 10, 30, 30]], [[60, 60, 30, 30]]])
    found = [detection(1, [10, 10, 30, 30], 0.9), detection(1, [50, 50, 20, 20], 0.8)]
    metrics = coco_metrics(gt, found)
    assert metrics["AP50"] == pytest.approx(51 / 101)
    assert metrics["AR100"] == pytest.approx(0.5)
    # the same two detections in the other score order: the false positive first drops the precision
    # at recall 0.5 to 1/2, so AP50 = 51 / 101 * 0.5
    swapped = [dict(found[0], score=0.7), found[1]]
    assert coco_metrics(gt, swapped)["AP50"] == pytest.approx(51 / 101 * 0.5)
    # a detection of the wrong category finds nothing
    assert coco_metrics(gt, [detection(1, [10, 10, 30, 30], 0.9, category=2)])["AP50"] == pytest.approx(0.0)


def test_no_detections_score_zero_and_percentages():
    gt = truth([[[10, 10, 20, 20]]])
    metrics = coco_metrics(gt, [])
    assert set(metrics) == set(METRICS)
    assert metrics["AP"] == 0.0 and metrics["APs"] == 0.0 and metrics["APm"] == -1.0
    shown = percent({"AP": 0.25, "APl": -1.0, "images": 3.0})
    assert shown == {"AP": 25.0, "APl": None, "images": 3.0}


def test_torchvision_outputs_become_coco_results():
    outputs = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 50.0, 80.0]]),
            "labels": torch.tensor([2]),
            "scores": torch.tensor([0.75]),
        }
    ]
    results = to_coco_results(outputs, [7], category_ids=[3, 9])
    assert results == [{"image_id": 7, "category_id": 9, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.75}]
