"""The paper's testing protocols as small pure functions.

- ``topk_correct`` / ``topk_errors``: counts (which distributed callers sum) and error rates.
- Test-time augmentation, each a function ``(model, images) -> logits``:
  ``flip_logits``; ``ten_crop_logits`` (Sec. 3.4, from AlexNet); ``multiscale_logits``
  (Sec. 3.4, the fully-convolutional form of VGG/OverFeat). Views are combined by averaging
  their softmax scores; the functions return the log of that average, i.e. logits whose
  softmax is exactly the averaged probability, so loss and top-k treat every protocol alike.
- ``evaluate(model, loader, tta=...)`` -> top-1/top-5 error (percent), loss, images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from .errors import ConfigError, DataError

TTA = Callable[[nn.Module, Tensor], Tensor]
TTA_NAMES = ("none", "flip", "10crop", "multiscale")
# Sec. 3.4 of the paper: 10-crop from a shorter side of 256; multi-scale shorter sides.
PAPER_CROP, PAPER_RESIZE = 224, 256
PAPER_SCALES = (224, 256, 384, 480, 640)


# -- counting ---------------------------------------------------------------------------------
def topk_correct(logits: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """For each k, how many targets are among the k highest scores (k is clamped to the classes)."""
    maxk = min(max(ks), logits.shape[1])
    hits = logits.topk(maxk, dim=1).indices.eq(targets[:, None])
    return [int(hits[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


def topk_errors(logits: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> list[float]:
    """Top-k error in percent for each k (the paper reports error, not accuracy)."""
    n = targets.numel()
    return [100.0 * (n - c) / n for c in topk_correct(logits, targets, ks)]


def confusion_matrix(logits: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """``num_classes x num_classes`` counts; row = true class, column = predicted class."""
    # topk, not argmax: on tied scores (common in bfloat16) both must pick the class top-1 counts
    index = targets * num_classes + logits.topk(1, dim=1).indices[:, 0]
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes).cpu()


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """Accuracy (0..1) of each true class; NaN for a class with no images."""
    totals = confusion.sum(dim=1).double()
    return confusion.diagonal().double() / totals


# -- test-time augmentation -------------------------------------------------------------------
def mean_of_softmax(view_logits: Sequence[Tensor]) -> Tensor:
    """log(mean_v softmax(view_v)), computed stably in log space (no log(0) for tiny scores)."""
    stacked = torch.stack([v.float().log_softmax(dim=1) for v in view_logits])
    return torch.logsumexp(stacked, dim=0) - math.log(len(view_logits))


def plain_logits(model: nn.Module, images: Tensor) -> Tensor:
    return model(images)


def flip_logits(model: nn.Module, images: Tensor) -> Tensor:
    """Softmax scores of the image and its horizontal mirror, averaged."""
    return mean_of_softmax([model(images), model(images.flip(-1))])


def resize_shorter_side(images: Tensor, size: int) -> Tensor:
    """Resize a batch (B x C x H x W) so that its shorter side is ``size`` (bilinear, antialiased)."""
    if min(images.shape[-2:]) == size:
        return images
    return TF.resize(images, [size], antialias=True)


def ten_crop_logits(
    model: nn.Module, images: Tensor, *, resize: int = PAPER_RESIZE, crop: int = PAPER_CROP
) -> Tensor:
    """10-crop testing (paper Sec. 3.4, from AlexNet).

    As in AlexNet, the shorter side is resized to ``resize`` and the central ``resize`` square
    kept; its four corner and centre ``crop`` x ``crop`` crops and their horizontal flips go
    through the model, and their softmax scores are averaged.
    """
    if crop > resize:
        raise ConfigError(f"10-crop: crop size {crop} is larger than the resized shorter side {resize}")
    square = TF.center_crop(resize_shorter_side(images, resize), [resize, resize])
    crops = TF.ten_crop(square, [crop, crop])
    batch = images.shape[0]
    logits = model(torch.cat(crops))  # one forward pass over all 10 views
    return mean_of_softmax(list(logits.split(batch)))


def fully_convolutional_scores(model: nn.Module, images: Tensor) -> Tensor:
    """Class scores at every position of the last feature map: B x classes x h x w.

    The classifier ``fc`` is applied as a 1x1 convolution (its weight reshaped to K x C x 1 x 1)
    instead of after global average pooling, as in VGG's and OverFeat's dense evaluation.
    """
    features = model.forward_features(images)
    fc = model.fc
    return F.conv2d(features, fc.weight[:, :, None, None], fc.bias)


MULTISCALE_ELEMENTS = 1 << 23  # input values resized at once (32 MB in float32; the net's maps are ~20x)


def multiscale_logits(
    model: nn.Module,
    images: Tensor,
    *,
    scales: Sequence[int] = PAPER_SCALES,
    flip: bool = True,
    position_average: str = "softmax",
) -> Tensor:
    """Multi-scale fully-convolutional testing (paper Sec. 3.4, from VGG/OverFeat).

    For each scale the shorter side is resized to it and the score map computed fully
    convolutionally; softmax scores are averaged over the map's positions, then over the
    scales and their horizontal flips (each scale weighs the same, whatever its map size).
    ``position_average="logits"`` averages the score map before the softmax instead, which for
    a ResNet (a linear fc after global average pooling) equals the ordinary forward pass at each
    scale; it suits nets trained at one scale, whose off-centre positions score poorly alone.
    """
    if not scales:
        raise ConfigError("multi-scale testing needs at least one scale")
    if position_average not in ("softmax", "logits"):
        raise ConfigError(f"position_average must be 'softmax' or 'logits', got {position_average!r}")
    side = max(int(s) for s in scales) * max(images.shape[-2:]) / max(min(images.shape[-2:]), 1)
    chunk = max(1, int(MULTISCALE_ELEMENTS // (images.shape[1] * side * max(int(s) for s in scales))))
    if chunk < images.shape[0]:  # large scales: a few images at a time, so memory stays bounded
        return torch.cat(
            [
                multiscale_logits(model, part, scales=scales, flip=flip, position_average=position_average)
                for part in images.split(chunk)
            ]
        )
    views = []
    for size in scales:
        resized = resize_shorter_side(images, int(size))
        for view in (resized, resized.flip(-1)) if flip else (resized,):
            scores = fully_convolutional_scores(model, view).float().flatten(2)  # B x K x (h*w)
            if position_average == "logits":
                views.append(scores.mean(dim=2).log_softmax(dim=1))
            else:
                positions = scores.log_softmax(dim=1)
                views.append(torch.logsumexp(positions, dim=2) - math.log(positions.shape[2]))
    return torch.logsumexp(torch.stack(views), dim=0) - math.log(len(views))


def make_tta(name: str, *, image_size: int | None = None, scales: Sequence[int] | None = None) -> TTA:
    """The test-time augmentation called ``name`` (one of ``TTA_NAMES``).

    ``image_size`` is the size the model was trained at. The paper's sizes belong to 224-pixel
    training crops, so they are rescaled by ``image_size / 224`` (for 32-pixel CIFAR images:
    resize 37 and crop 32 for 10-crop; scales 32, 37, 55, 69, 91), which leaves them unchanged
    for ImageNet. ``scales`` (shorter sides in pixels) replaces the multi-scale default.
    """
    if name not in TTA_NAMES:
        raise ConfigError(f"unknown test-time augmentation {name!r}; choose one of {', '.join(TTA_NAMES)}")
    ratio = (image_size or PAPER_CROP) / PAPER_CROP
    if name == "none":
        return plain_logits
    if name == "flip":
        return flip_logits
    if name == "10crop":
        crop, resize = round(PAPER_CROP * ratio), round(PAPER_RESIZE * ratio)
        return partial(ten_crop_logits, resize=resize, crop=crop)
    chosen = tuple(int(s) for s in scales) if scales else tuple(round(s * ratio) for s in PAPER_SCALES)
    if any(s < 1 for s in chosen):
        raise ConfigError(f"multi-scale sizes must be positive, got {list(chosen)}")
    return partial(multiscale_logits, scales=chosen)


# -- the evaluation loop ----------------------------------------------------------------------
@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    *,
    tta: str | TTA = "none",
    confusion: bool = False,
) -> dict:
    """Top-1/top-5 error (percent), mean cross-entropy loss and image count over ``loader``.

    The result also holds the raw counts ``top1_correct``, ``top5_correct`` and ``loss_sum``,
    which distributed callers sum over processes before dividing by the summed ``images``.

    ``loader`` yields ``(images, labels)`` already on the model's device. ``tta`` is a name
    from ``TTA_NAMES`` (paper sizes) or a function from ``make_tta``. With fewer than five
    classes "top-5" is top-k for k = the number of classes; ``top5_k`` says which k was used.
    With ``confusion=True`` the result also holds the confusion matrix (a CPU tensor).
    """
    logits_fn = make_tta(tta) if isinstance(tta, str) else tta
    was_training = model.training
    model.eval()
    images, loss_sum, correct1, correct5, k5, matrix = 0, 0.0, 0, 0, 5, None
    try:
        for x, y in loader:
            logits = logits_fn(model, x).float()
            num_classes = logits.shape[1]
            if y.numel() and int(y.max()) >= num_classes:
                raise DataError(
                    f"label {int(y.max())} is out of range for a model with {num_classes} "
                    "classes; the dataset has more classes than the checkpoint"
                )
            k5 = min(5, num_classes)
            c1, c5 = topk_correct(logits, y, (1, k5))
            correct1, correct5 = correct1 + c1, correct5 + c5
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            images += y.numel()
            if confusion:
                batch_matrix = confusion_matrix(logits, y, num_classes)
                matrix = batch_matrix if matrix is None else matrix + batch_matrix
    finally:
        model.train(was_training)
    if images == 0:
        raise DataError("evaluation got no images: the split is empty")
    result = {
        "top1_error": 100.0 * (images - correct1) / images,
        "top5_error": 100.0 * (images - correct5) / images,
        "top5_k": k5,
        "loss": loss_sum / images,
        "images": images,
        "top1_correct": correct1,
        "top5_correct": correct5,
        "loss_sum": loss_sum,
    }
    if confusion:
        result["confusion"] = matrix
    return result
