"""Segmentation metrics: mean IoU, pixel accuracy and per-class IoU against torchvision's reference
computation and hand-computed cases; COCO mask AP on perfect, missed and constructed predictions."""

import math

import pytest
import torch

from resnets.errors import DataError
from resnets.segmentation import ConfusionMatrix, confusion_matrix, mask_average_precision


def torchvision_reference(target: torch.Tensor, prediction: torch.Tensor, n: int):
    """The oracle: torchvision's references/segmentation/utils.py, ConfusionMatrix.update and .compute (its
    evaluate() passes target.flatten(), output.argmax(1).flatten()), and the mean IoU it prints."""
    a, b = target.flatten(), prediction.flatten()
    k = (a >= 0) & (a < n)
    inds = n * a[k].to(torch.int64) + b[k]
    mat = torch.bincount(inds, minlength=n**2).reshape(n, n)
    h = mat.float()
    acc_global = torch.diag(h).sum() / h.sum()
    acc = torch.diag(h) / h.sum(1)
    iu = torch.diag(h) / (h.sum(1) + h.sum(0) - torch.diag(h))
    return mat, acc_global.item(), acc, iu, iu.mean().item()


def test_scores_equal_torchvisions_reference_on_the_same_predictions():
    torch.manual_seed(0)
    n = 5
    targets = torch.randint(0, n, (3, 2, 16, 16))
    targets[..., :3] = 255  # VOC's void borders
    hints = torch.nn.functional.one_hot(targets.clamp(max=n - 1), n).movedim(-1, 2)
    logits = torch.randn(3, 2, n, 16, 16) + 2 * hints  # right more often than not
    confusion = ConfusionMatrix(n)
    for target, output in zip(targets, logits, strict=True):  # three batches of two images
        confusion.update(target, output.argmax(1))
    scores = confusion.compute()
    mat, acc_global, acc, iu, mean_iou = torchvision_reference(targets, logits.argmax(2), n)
    assert confusion.matrix.dtype == torch.int64 and torch.equal(confusion.matrix, mat)
    assert 0 < scores.mean_iou < 1
    assert scores.mean_iou == pytest.approx(mean_iou, abs=1e-6)
    assert scores.pixel_accuracy == pytest.approx(acc_global, abs=1e-6)
    assert scores.iou == pytest.approx(iu.tolist(), abs=1e-6)
    assert scores.class_accuracy == pytest.approx(acc.tolist(), abs=1e-6)


def scores_of(target, prediction, n):
    confusion = ConfusionMatrix(n)
    confusion.update(target, prediction)
    return confusion.compute()


def test_a_perfect_prediction_scores_one():
    target = torch.tensor([[0, 1, 2], [2, 1, 255]])
    scores = scores_of(target, target.clamp(max=2), 3)  # the void pixel's prediction does not count
    assert scores.mean_iou == 1.0 and scores.pixel_accuracy == 1.0 and scores.iou == (1.0, 1.0, 1.0)


def test_half_overlap_gives_one_third_and_ignored_pixels_do_not_count():
    # class 1 on pixels 0-1 of the target, predicted on pixels 1-2: intersection 1, union 3
    target = torch.tensor([[1, 1, 0, 0, 255, 255]])
    prediction = torch.tensor([[0, 1, 1, 0, 1, 0]])  # the last two pixels are void: any prediction
    scores = scores_of(target, prediction, 2)
    assert scores.iou == pytest.approx((1 / 3, 1 / 3))  # class 0: pixel 3 of 0, 2, 3
    assert scores.mean_iou == pytest.approx(1 / 3)
    assert scores.pixel_accuracy == pytest.approx(2 / 4)  # 4 pixels counted, 2 right
    assert confusion_matrix(target, prediction, 2).tolist() == [[1, 1], [1, 1]]


def test_a_class_absent_from_targets_and_predictions_is_left_out_of_the_mean():
    target = torch.tensor([0, 0, 2, 2])
    prediction = torch.tensor([0, 0, 2, 0])  # class 1 nowhere: torchvision's mean would be nan
    scores = scores_of(target, prediction, 3)
    assert math.isnan(scores.iou[1]) and math.isnan(torchvision_reference(target, prediction, 3)[4])
    assert scores.mean_iou == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_labels_out_of_range_are_refused():
    with pytest.raises(DataError, match=r"target labels must be 0..2 \(or 255, ignored\), got \[7\]"):
        confusion_matrix(torch.tensor([0, 7]), torch.tensor([0, 1]), 3)
    with pytest.raises(DataError, match=r"predicted labels must be 0..2, got \[3\]"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 3)


def square(top: int, left: int, size: int, canvas: int = 20) -> torch.Tensor:
    mask = torch.zeros(canvas, canvas, dtype=torch.bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_mask_ap_perfect_and_missed_predictions():
    masks = torch.stack([square(0, 0, 6), square(10, 10, 8)])
    targets = [{"masks": masks, "labels": torch.tensor([1, 2])}]
    # torchvision's Mask R-CNN output: N x 1 x H x W probabilities
    perfect = {
        "masks": masks[:, None].float() * 0.9,
        "scores": torch.tensor([0.9, 0.8]),
        "labels": torch.tensor([1, 2]),
    }
    metrics = mask_average_precision([perfect], targets)
    assert [metrics[k] for k in ("AP", "AP50", "AP75")] == pytest.approx([1.0, 1.0, 1.0])
    elsewhere = {
        "masks": torch.stack([square(0, 12, 6), square(12, 0, 6)]),
        **{k: perfect[k] for k in ("scores", "labels")},
    }
    metrics = mask_average_precision([elsewhere], targets)
    assert [metrics[k] for k in ("AP", "AP50", "AP75")] == [0.0, 0.0, 0.0]


def test_mask_ap_of_constructed_overlaps():
    # a 3-column object predicted on 2 of its columns: IoU 2/3, a match at the IoU thresholds 0.50, 0.55,
    # 0.60 and 0.65 of COCO's ten (0.50:0.05:0.95), a miss at the six others: AP 4/10, AP50 1, AP75 0
    target = torch.zeros(1, 10, 10, dtype=torch.bool)
    target[0, 2:8, 2:5] = True
    predicted = torch.zeros(1, 10, 10, dtype=torch.bool)
    predicted[0, 2:8, 3:5] = True
    one = {"masks": predicted, "scores": torch.tensor([0.7]), "labels": torch.tensor([3])}
    metrics = mask_average_precision([one], [{"masks": target, "labels": torch.tensor([3])}])
    assert [metrics[k] for k in ("AP", "AP50", "AP75")] == pytest.approx([0.4, 1.0, 0.0])
    # two objects, one found exactly and one missed (an empty second image of predictions): precision 1 up
    # to recall 0.5, so 51 of COCO's 101 recall points (0, 0.01, ..., 0.5) have precision 1
    found = {"masks": target, "scores": torch.tensor([0.9]), "labels": torch.tensor([3])}
    nothing = {
        "masks": torch.zeros(0, 10, 10),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
    }
    gt = {"masks": target, "labels": torch.tensor([3])}
    metrics = mask_average_precision([found, nothing], [gt, gt])
    assert [metrics[k] for k in ("AP", "AP50", "AP75")] == pytest.approx([51 / 101] * 3)
