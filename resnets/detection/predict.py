"""Detections on image files: read them as the detector's data was read, detect, keep the confident boxes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from ..data import load_image
from ..data.images import pil_to_uint8


def read_images(paths: Sequence[str | os.PathLike], in_chans: int) -> list[torch.Tensor]:
    """uint8 C x H x W images with the detector's channel count (``DataError`` naming a bad file)."""
    return [pil_to_uint8(load_image(path), in_chans) for path in paths]


@torch.inference_mode()
def predict(
    detector: nn.Module, images: Sequence[torch.Tensor], *, score_threshold: float = 0.5, batch_size: int = 8
) -> list[dict[str, torch.Tensor]]:
    """Each image's boxes (x0, y0, x1, y1 pixels), labels (1..K) and scores above ``score_threshold``,
    best first, on the CPU."""
    device = next(detector.parameters()).device
    detector.eval()
    results = []
    for start in range(0, len(images), batch_size):
        batch = [image.to(device).float() / 255 for image in images[start : start + batch_size]]
        for output in detector(batch):
            keep = output["scores"] >= score_threshold
            results.append({k: v[keep].cpu() for k, v in output.items()})
    return results
