"""Batches of a detection data set: lists of images and targets, as torchvision's detectors take them.

The order and the flips of an epoch come from (seed, epoch) alone, never from the global random
generators, so ``batches(start=k)`` begins an epoch at its k-th batch with exactly the images and
flips an uninterrupted epoch would have had there: a run resumed in mid-epoch reads no image twice.
Training shuffles, flips horizontally (the only augmentation of the paper's detectors, Sec. 4.3 and
Faster R-CNN) and drops the last partial batch, each rank an equal shard; evaluation keeps every image
in order, rank r the images r, r + W, ... Images are decoded in ``workers`` DataLoader processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.splits import seed_for, shard_indices
from .data import DetectionDataset

Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]
_FLIP_STREAM = 7  # seed_for(seed, epoch, rank, stream): the flips' generator, apart from the order's
_LOADER_STREAM = 8  # the DataLoader's own generator (its workers' seeds)


def hflip(
    image: torch.Tensor, target: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The image mirrored left to right, and its boxes with it (x0, x1 -> W - x1, W - x0); Mask R-CNN's
    instance masks (``masks``, N x H x W), when the target has them, too."""
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    flipped = {**target, "boxes": boxes}
    if "masks" in target:
        flipped["masks"] = target["masks"].flip(-1)
    return image.flip(-1), flipped


class _Batches(Dataset):
    """One item per batch: DataLoader workers decode a whole batch each."""

    def __init__(self, dataset: DetectionDataset, batches: list[list[int]], flips: list[list[bool]]) -> None:
        self.dataset, self.batches, self.flips = dataset, batches, flips

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        images, targets = [], []
        for sample, flip in zip(self.batches[index], self.flips[index], strict=True):
            image, target = self.dataset[sample]
            if flip:
                image, target = hflip(image, target)
            images.append(image)
            targets.append(target)
        return images, targets


class SeededLoader:
    """What the detection and segmentation loaders share: this process's shard of an epoch, its order from
    (seed, epoch) only, and a DataLoader of whole batches whose workers' seeds come from its own
    generator."""

    loader_stream = _LOADER_STREAM

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        train: bool,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
    ) -> None:
        self.dataset, self.batch_size, self.train, self.device = dataset, batch_size, train, device
        self.seed, self.rank, self.world_size, self.workers = seed, rank, world_size, workers
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        return len(self._indices())

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _indices(self) -> torch.Tensor:
        return shard_indices(
            len(self.dataset),
            shuffle=self.train,
            drop_last=self.train,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
        )

    def _generator(self, stream: int) -> torch.Generator:
        """A generator of this epoch and rank for ``stream`` (flips, crops, the DataLoader's seeds)."""
        return torch.Generator().manual_seed(seed_for(self.seed, self.epoch, self.rank, stream))

    def _load(self, source: Dataset) -> DataLoader:
        # its own generator: DataLoader draws its workers' base seed from it, never from the global
        # generator, whose state a resumed run restores (a draw there would shift the region sampling)
        return DataLoader(
            source,
            batch_size=None,
            shuffle=False,
            num_workers=self.workers,
            generator=self._generator(self.loader_stream),
            pin_memory=self.device.type == "cuda",
        )


class DetectionLoader(SeededLoader):
    """``batches(start)`` yields (images float32 in [0, 1] on ``device``, targets on ``device``)."""

    def __init__(self, dataset: DetectionDataset, *, flip: bool = False, **options) -> None:
        super().__init__(dataset, **options)
        self.flip = flip and self.train

    def plan(self) -> tuple[list[list[int]], list[list[bool]]]:
        """This epoch's batches (dataset indices) and flips, from (seed, epoch) only."""
        indices = self._indices().tolist()
        count = len(self)
        batches = [indices[i * self.batch_size : (i + 1) * self.batch_size] for i in range(count)]
        if self.flip:
            draws = (torch.rand(len(indices), generator=self._generator(_FLIP_STREAM)) < 0.5).tolist()
        else:
            draws = [False] * len(indices)
        flips = [draws[i * self.batch_size : (i + 1) * self.batch_size] for i in range(count)]
        return batches, flips

    def batches(self, start: int = 0) -> Iterator[Batch]:
        batches, flips = self.plan()
        loader = self._load(_Batches(self.dataset, batches[start:], flips[start:]))
        for images, targets in loader:
            yield (
                [image.to(self.device, non_blocking=True).float().div_(255) for image in images],
                [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets],
            )

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()
