"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of training batches, with timm's
switches (``--mixup``, ``--cutmix``, ``--mixup-prob``, ``--mixup-switch-prob``) over
torchvision's ``v2.MixUp`` / ``v2.CutMix``.

Targets become class probabilities (N x classes): ``lam`` on an image's own label and ``1 - lam``
on its partner's (v2 pairs each image with the one before it in the batch). CutMix's ``lam`` is
the share of the image left unpasted, so a label's weight equals its area.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

MIXING_STREAM = 7  # the training step's per-batch seed stream for mixing (splits.seed_for)


class MixupCutmix:
    """Per batch: with probability ``prob`` mix; when both alphas are set, CutMix with probability
    ``switch_prob``, else mixup (timm's ``Mixup`` in its default ``batch`` mode)."""

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ) -> None:
        self.num_classes, self.prob, self.switch_prob = num_classes, prob, switch_prob
        self.mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup is not None or self.cutmix is not None)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed images, N x classes float targets); every draw comes from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            if not self.enabled or float(torch.rand(())) >= self.prob:
                return images, F.one_hot(labels, self.num_classes).float()
            use_cutmix = self.cutmix is not None and (
                self.mixup is None or float(torch.rand(())) < self.switch_prob
            )
            return (self.cutmix if use_cutmix else self.mixup)(images, labels)
