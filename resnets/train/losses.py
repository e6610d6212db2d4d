"""The training loss and the training error, for class labels or class-probability targets
(mixup and CutMix give the latter).

Cross-entropy with label smoothing (Szegedy et al. 2016), or timm's binary cross-entropy of
"ResNet strikes back" (Wightman et al. 2021, Sec. 3): one sigmoid per class against the smoothed
targets, optionally made 0/1 by a threshold (``bce_target_thresh``: a class present in a mix with
weight above it counts as present).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def smoothed_targets(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Labels (N) or probabilities (N x C) -> probabilities with ``smoothing`` spread evenly (timm's
    ``on = 1 - smoothing + smoothing / C``, ``off = smoothing / C``)."""
    if targets.dim() == 1:
        targets = F.one_hot(targets, num_classes).float()
    return targets * (1 - smoothing) + smoothing / num_classes if smoothing else targets


def cross_entropy(smoothing: float = 0.0) -> Criterion:
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # F.cross_entropy smooths labels and probability targets alike
        return F.cross_entropy(logits, targets, label_smoothing=smoothing)

    return loss


def binary_cross_entropy(smoothing: float = 0.0, target_threshold: float | None = None) -> Criterion:
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        target = smoothed_targets(targets, logits.shape[-1], smoothing)
        if target_threshold is not None:
            target = (target > target_threshold).to(target.dtype)
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))

    return loss


def make_criterion(bce: bool, smoothing: float, target_threshold: float | None) -> Criterion:
    return binary_cross_entropy(smoothing, target_threshold) if bce else cross_entropy(smoothing)


def error_count(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Misclassified images: for probability targets, each image counts ``1 - target[prediction]``
    (a mixed image predicted as the label of weight lam is lam right, 1 - lam wrong)."""
    predicted = logits.argmax(1)
    if targets.dim() == 1:
        return (predicted != targets).sum()
    return (1 - targets.gather(1, predicted[:, None])).sum()
