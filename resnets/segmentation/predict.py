"""A trained segmenter on images: its checkpoint read back (FCN, DeepLabV3 or Mask R-CNN), each pixel's class,
masks drawn. Mask R-CNN's objects are found and drawn by ``resnets.detection``'s ``predict`` and
``draw_boxes``, as a detector's."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..checkpoints import load_checkpoint, load_state_into
from ..detection.plots import save_png, to_pil
from ..errors import CheckpointError
from ..runs import RunFolder
from .data import voc_palette
from .models import segmenter_from_spec
from .recipes import MaskRCNNConfig, SegmentationConfig

DRAWN_OPACITY = 0.5  # of the class colours over the image
SEGMENTATION_TASKS = (SegmentationConfig.TASK, MaskRCNNConfig.TASK)  # FCN/DeepLabV3's, Mask R-CNN's runs


def is_mask_rcnn(ckpt: dict[str, Any]) -> bool:
    """Whether a checkpoint holds a Mask R-CNN (instance segmentation), not FCN or DeepLabV3."""
    spec = ckpt.get("model")
    return isinstance(spec, dict) and spec.get("name") == "mask_rcnn"


def load_segmenter(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A segmentation run's newest checkpoint (a run folder or a ``.pt``): the model in eval mode and the
    checkpoint (its ``data`` entry holds the classes, and for FCN and DeepLabV3 the input normalisation,
    which Mask R-CNN holds inside)."""
    path = Path(path)
    file = RunFolder(path).last if path.is_dir() else path
    ckpt = load_checkpoint(file)
    data = ckpt.get("data") or {}
    config = ckpt.get("config")
    if isinstance(config, dict) and config.get("task") not in SEGMENTATION_TASKS:
        command = "resnets detect" if config.get("task") == "detection" else "resnets eval|predict|export"
        raise CheckpointError(f"{file} is not a segmentation checkpoint; read it with `{command}`")
    if not isinstance(data.get("classes"), list) or not (
        is_mask_rcnn(ckpt) or isinstance(data.get("image_mean"), list)
    ):
        raise CheckpointError(f"{file} is not a checkpoint of `resnets segment train` (no classes recorded)")
    model = segmenter_from_spec(ckpt["model"])
    load_state_into(model, ckpt["state_dict"], source=f"checkpoint {str(file)!r}")
    return model.to(device).eval(), ckpt


def normalization(ckpt: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The (mean, std) the run's images were normalised with, as C x 1 x 1 tensors."""
    data = ckpt["data"]
    return (
        torch.tensor(data["image_mean"], dtype=torch.float32).view(-1, 1, 1),
        torch.tensor(data["image_std"], dtype=torch.float32).view(-1, 1, 1),
    )


@torch.inference_mode()
def predict_masks(
    model: nn.Module, images: Sequence[torch.Tensor], ckpt: dict[str, Any]
) -> list[torch.Tensor]:
    """Each uint8 C x H x W image's class per pixel (int64 H x W, on the CPU), at the image's own size; the
    model sees it as evaluation did (shorter side at the run's ``base_size``, when it had one)."""
    device = next(model.parameters()).device
    mean, std = (t.to(device) for t in normalization(ckpt))
    base = ckpt["data"].get("base_size")
    masks = []
    for image in images:
        x = (image.to(device).float() / 255 - mean) / std
        height, width = x.shape[-2:]
        if base:
            scale = base / min(height, width)
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            x = F.interpolate(x[None], size, mode="bilinear", align_corners=False)[0]
        scores = model(x[None])["out"]
        if scores.shape[-2:] != (height, width):
            scores = F.interpolate(scores, (height, width), mode="bilinear", align_corners=False)
        masks.append(scores.argmax(1)[0].cpu())
    return masks


def overlay(image: torch.Tensor, mask: torch.Tensor) -> Image.Image:
    """``image`` (uint8 C x H x W) with its pixels' classes (H x W) in the VOC palette's colours over it,
    the background left clear."""
    picture = to_pil(image)
    labels = mask.numpy().astype(np.uint8)
    colours = Image.fromarray(class_colours()[labels])
    alpha = Image.fromarray(np.where(labels > 0, int(255 * DRAWN_OPACITY), 0).astype(np.uint8))
    picture.paste(colours, (0, 0), alpha)
    return picture


def class_colours() -> np.ndarray:
    """The VOC palette: 256 x 3 uint8, row k the colour of class k."""
    return np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)


def draw_mask(image: torch.Tensor, mask: torch.Tensor, path: str | os.PathLike, scale: int = 1) -> Path:
    """``overlay`` as a PNG (``scale``: enlarge small images)."""
    picture = overlay(image, mask)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return save_png(picture, path)
