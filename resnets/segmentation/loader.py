"""Batches of a semantic segmentation set: normalised images and their masks, augmented as torchvision's
references do (``references/segmentation/presets.py``).

Training: the shorter side resized to a random size in [min_scale, max_scale] x ``base_size`` (masks by
nearest neighbour), flipped with probability 0.5, cropped to ``crop_size`` at a random place (padded with
0 and 255, ignored, where smaller); evaluation: the shorter side resized to ``base_size``. ``None`` skips
the resize or the crop (the generated canvases, all of one size). As detection's loader (both are
``detection.loader.SeededLoader``s), each epoch's order and every random draw come from (seed, epoch, rank)
alone, never from the global generators, so ``batches(start=k)`` begins an epoch at its k-th batch exactly
as an uninterrupted epoch would have.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..detection.loader import SeededLoader
from .data import IGNORE_INDEX

Batch = tuple[torch.Tensor, torch.Tensor]  # float B x C x H x W (normalised), int64 B x H x W
_DRAW_STREAM = 9  # seed_for(seed, epoch, rank, stream): the augmentation's generator
_LOADER_STREAM = 10  # the DataLoader's own generator (its workers' seeds)


@dataclass(frozen=True)
class Augmentation:
    """The sizes of the training (and evaluation) transforms; None: not applied."""

    base_size: int | None = None
    crop_size: int | None = None
    min_scale: float = 0.5
    max_scale: float = 2.0
    hflip: bool = False


def resize(image: torch.Tensor, mask: torch.Tensor, shorter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 image and mask with their shorter side ``shorter`` (bilinear, and nearest for the mask)."""
    height, width = image.shape[-2:]
    scale = shorter / min(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size == (height, width):
        return image, mask
    image = F.interpolate(image[None].float(), size, mode="bilinear", align_corners=False)[0]
    mask = F.interpolate(mask[None, None].float(), size, mode="nearest")[0, 0]
    return image.round().clamp(0, 255).to(torch.uint8), mask.long()


def crop(
    image: torch.Tensor, mask: torch.Tensor, size: int, at: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``size`` x ``size`` crop at the fractions ``at`` of the free space, padded (0, and 255 in the
    mask) where the image is smaller."""
    height, width = image.shape[-2:]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0)
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        height, width = image.shape[-2:]
    top, left = int(at[0] * (height - size + 1)), int(at[1] * (width - size + 1))
    return image[:, top : top + size, left : left + size], mask[top : top + size, left : left + size]


class _Batches(Dataset):
    """One item per batch: DataLoader workers read and transform a whole batch each."""

    def __init__(
        self,
        dataset: Dataset,
        batches: list[list[int]],
        draws: list[list[list[float]]],
        augment: Augmentation,
        train: bool,
    ) -> None:
        self.dataset, self.batches, self.draws, self.augment, self.train = (
            dataset,
            batches,
            draws,
            augment,
            train,
        )

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        images, masks = [], []
        for sample, draw in zip(self.batches[index], self.draws[index], strict=True):
            image, mask = self.dataset[sample]
            image, mask = self.transform(image, mask, draw)
            images.append(image)
            masks.append(mask)
        return images, masks

    def transform(self, image: torch.Tensor, mask: torch.Tensor, draw: list[float]) -> Batch:
        a = self.augment
        if not self.train:
            return resize(image, mask, a.base_size) if a.base_size else (image, mask)
        scale, flip, top, left = draw
        if a.base_size:
            shorter = int(a.base_size * (a.min_scale + (a.max_scale - a.min_scale) * scale))
            image, mask = resize(image, mask, shorter)
        if a.hflip and flip < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if a.crop_size:
            image, mask = crop(image, mask, a.crop_size, (top, left))
        return image, mask


class SegmentationLoader(SeededLoader):
    """``batches(start)`` yields (normalised float images, int64 masks) on ``device``; a batch of images
    of different sizes (evaluation of VOC) comes as lists."""

    loader_stream = _LOADER_STREAM

    def __init__(
        self,
        dataset: Dataset,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Augmentation = Augmentation(),
        **options: Any,
    ) -> None:
        super().__init__(dataset, **options)
        self.augment = augment
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(-1, 1, 1)

    def plan(self) -> tuple[list[list[int]], list[list[list[float]]]]:
        """This epoch's batches (dataset indices) and each image's draws (scale, flip, crop's top and left,
        uniform in [0, 1)), from (seed, epoch, rank) only."""
        indices = self._indices().tolist()
        count = len(self)
        draws = torch.rand(
            len(indices), 4, generator=self._generator(_DRAW_STREAM), dtype=torch.float64
        ).tolist()
        size = self.batch_size
        return (
            [indices[i * size : (i + 1) * size] for i in range(count)],
            [draws[i * size : (i + 1) * size] for i in range(count)],
        )

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image.to(self.device, non_blocking=True).float().div_(255) - self.mean) / self.std

    def batches(self, start: int = 0) -> Iterator[Batch | tuple[list[torch.Tensor], list[torch.Tensor]]]:
        batches, draws = self.plan()
        loader = self._load(_Batches(self.dataset, batches[start:], draws[start:], self.augment, self.train))
        for images, masks in loader:
            images = [self.normalize(image) for image in images]
            masks = [mask.to(self.device, non_blocking=True) for mask in masks]
            if len({tuple(image.shape) for image in images}) == 1:
                yield torch.stack(images), torch.stack(masks)
            else:
                yield images, masks

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()
