"""Segmentation training throughput (images/s in steady state, data loading included): ours against
torchvision's reference loop (references/segmentation/train.py, ``--use-v2``) as a user would write it,
alternating in one run.

What both sides share:
- Data: the generated Fashion-MNIST segmentation set (64 x 64 gray canvases, 11 classes with the
  background; written once into the temporary folder), read from the same COCO files (instances with RLE
  masks): ours' ``open_segmentation_data`` takes a COCO folder, and the reference's ``--use-v2`` path reads
  only COCO. Every training image is used on both sides (the reference's
  ``_coco_remove_images_without_annotations`` is left out: it would train the peer on fewer images).
- Augmentation: torchvision's ``SegmentationPresetTrain`` at ``BASE_SIZE`` 64 / ``CROP_SIZE`` 56 (the
  reference's 520 / 480 scaled to the canvases): the shorter side resized to a random size in 0.5-2.0 x 64
  (bilinear for the image, nearest for the mask), a horizontal flip with probability 0.5, padding to 56
  (0 in the image, 255 in the mask) where smaller, a random 56 x 56 crop, the image scaled to [0, 1] and
  normalised by the same mean and std (ImageNet's averaged over the channels, what ours uses for a gray
  input without backbone weights).
- Model: FCN with torchvision's ``FCNHead`` and auxiliary head on a CIFAR-style ResNet-20 at its own
  strides (fashion-cpu's), built by ``resnets.segmentation.models.fcn`` after the same seed; float32, NCHW,
  eager on both sides (the segmentation task's execution path: the recipe's ``amp`` is off).
- Batch ``BATCH`` (16, fashion-cpu's), loss cross-entropy ignoring 255 on ``out`` + 0.5 x that of ``aux``,
  SGD (momentum 0.9, weight decay 1e-4, no Nesterov), the poly schedule stepped every iteration.

- Ours: ``resnets segment train``'s loop (``train_segmenter``) with the fashion-cpu recipe, the sizes above
  and no evaluation, everything else at its defaults (its ``SegmentationLoader`` decodes the batches in the
  training process: ``--workers`` 0 for a segmentation set; order and augmentation drawn from (seed, epoch));
  one host read per ``--log-every`` window; images/s read from its steps.jsonl after the warm-up steps. The
  training set is large enough that the timed steps lie in its first epoch.
- The peer: ``torchvision.datasets.CocoDetection`` (images opened as "L": the canvases and the model are
  gray, the reference opens RGB) wrapped by ``wrap_dataset_for_transforms_v2(target_keys={"masks",
  "labels"})``, the reference's ``CocoDetectionToVOCSegmentation`` (instance masks merged into one mask of
  class indices, pixels of two objects 255; its COCO-to-VOC label map is the identity on this set's category
  ids), then ``SegmentationPresetTrain(use_v2=True, backend="pil")``: ``RandomResize``,
  ``RandomHorizontalFlip``, ``PadIfSmaller``, ``RandomCrop``, ``PILToTensor``, ``ToDtype`` (float32 scaled,
  masks int64), ``Normalize``, ``ToPureTensor``; a ``DataLoader`` with a ``RandomSampler``, 2 workers (kept
  alive across epochs, which spares the peer the reference's restart per epoch), ``drop_last`` and the
  reference's ``utils.collate_fn`` (``cat_list``: padding with 0 and 255); its ``train_one_epoch``:
  forward, criterion, ``zero_grad``, backward, ``step``, ``LambdaLR`` poly step, then the metric logger's
  ``loss.item()`` and lr every step (a log line formatted every 10 steps, not printed); the reference's
  parameter groups (the auxiliary head at 10 x the lr).

Where the two still differ (none changes the work much): the peer's ``RandomResize`` antialiases
(torchvision's default) and draws the side from ``randint(32, 128)``, ours interpolates without
antialiasing at ``int(64 x U(0.5, 2.0))``. Both train the auxiliary head at 10 x the lr. Before
augmentation both read the same pixels and masks from the files (checked by hand on the first images,
2026-12-07).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .harness import (
    BenchOptions,
    Comparison,
    alternate,
    logged_images_per_s,
    markdown_table,
    synchronize,
    write_result,
)

OURS, PEER = "ours (resnets segment train loop)", "peer (torchvision reference loop + DataLoader)"
BATCH = 16  # fashion-cpu's batch
BASE_SIZE, CROP_SIZE = 64, 56  # the reference's 520 / 480, scaled to the 64 x 64 canvases
IGNORE = 255
PRINT_FREQ = 10  # the reference's --print-freq


def dataset_root(opts: BenchOptions) -> Path:
    from resnets.detection.synthetic import SyntheticSpec
    from resnets.segmentation.synthetic import make_fashion_segmentation

    # the timed steps (warm-up included) within one epoch of ours: 75 batches of 16
    spec = SyntheticSpec(canvas=64, train_images=opts.scale(1200, 96), val_images=opts.scale(50, 8))
    root = Path(tempfile.gettempdir()) / f"resnets-bench-fashion-seg-{spec.train_images}"
    return make_fashion_segmentation(root, spec, data_dir=opts.data_dir)


def bench_recipe(iterations: int):
    from resnets.segmentation.recipes import SEGMENTATION_RECIPES
    from resnets.train.recipes import get_recipe

    return dataclasses.replace(
        get_recipe("fashion-cpu", SEGMENTATION_RECIPES),
        iterations=iterations,
        batch_size=BATCH,
        base_size=BASE_SIZE,
        crop_size=CROP_SIZE,
        eval_split=None,
    )


def ours_images_per_s(root: Path, warmup: int, steps: int, log_every: int, opts: BenchOptions) -> float:
    from resnets.segmentation.recipes import SegmentationConfig
    from resnets.segmentation.train import train_segmenter

    recipe = bench_recipe(warmup + steps)
    return logged_images_per_s(
        lambda run: train_segmenter(SegmentationConfig(recipe=recipe, run=run)),
        data_dir=str(root),
        warmup=warmup,
        log_every=log_every,
        batch=BATCH,
        opts=opts,
        what="segmentation",
    )


def peer_transforms(mean: list[float], std: list[float]):
    """``presets.SegmentationPresetTrain(base_size, crop_size, use_v2=True, backend="pil")``, after the
    reference's ``CocoDetectionToVOCSegmentation``."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    transforms = [
        coco_to_segmentation,
        v2.RandomResize(min_size=int(0.5 * BASE_SIZE), max_size=int(2.0 * BASE_SIZE)),
        v2.RandomHorizontalFlip(0.5),
        PadIfSmaller(CROP_SIZE),
        v2.RandomCrop(CROP_SIZE),
        v2.PILToTensor(),
        v2.ToDtype(
            dtype={torch.Tensor: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True
        ),
        v2.Normalize(mean=mean, std=std),
        v2.ToPureTensor(),
    ]
    return v2.Compose(transforms)


def coco_to_segmentation(image: Any, target: dict[str, Any]) -> tuple[Any, Any]:
    """The reference's ``v2_extras.CocoDetectionToVOCSegmentation``: the instance masks merged into one
    mask of class indices (here the category ids themselves), pixels of two or more objects 255."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    if "masks" not in target or len(target["labels"]) == 0:
        return image, tv_tensors.Mask(torch.zeros(v2.functional.get_size(image), dtype=torch.uint8))
    masks = target["masks"].to(torch.uint8)
    labels = torch.as_tensor(target["labels"], dtype=torch.uint8)
    mask, _ = (masks * labels.reshape(-1, 1, 1)).max(dim=0)
    mask[masks.sum(dim=0) > 1] = IGNORE
    return image, tv_tensors.Mask(mask)


class PadIfSmaller:
    """The reference's ``v2_extras.PadIfSmaller``: pad right and bottom to ``size`` (0 in the image, 255
    in the mask), before ``RandomCrop``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Any, mask: Any) -> tuple[Any, Any]:
        from torchvision.transforms import v2

        height, width = v2.functional.get_size(image)
        padding = [0, 0, max(self.size - width, 0), max(self.size - height, 0)]
        if not any(padding):
            return image, mask
        return v2.functional.pad(image, padding, fill=0), v2.functional.pad(mask, padding, fill=IGNORE)


def cat_list(images: list[torch.Tensor], fill_value: int = 0) -> torch.Tensor:
    """The reference's ``utils.cat_list``: a batch padded to the largest size."""
    max_size = tuple(max(s) for s in zip(*[img.shape for img in images], strict=True))
    batched = images[0].new(len(images), *max_size).fill_(fill_value)
    for img, pad_img in zip(images, batched, strict=True):
        pad_img[..., : img.shape[-2], : img.shape[-1]].copy_(img)
    return batched


def collate_fn(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's ``utils.collate_fn``."""
    images, targets = list(zip(*batch, strict=True))
    return cat_list(images, fill_value=0), cat_list(targets, fill_value=IGNORE)


def peer_loader(root: Path, mean: list[float], std: list[float], workers: int = 2):
    """The reference's ``get_coco(..., use_v2=True)`` and its training DataLoader."""
    from PIL import Image
    from torch.utils.data import DataLoader, RandomSampler
    from torchvision import datasets

    class GrayCocoDetection(datasets.CocoDetection):
        def _load_image(self, id: int) -> Image.Image:
            path = self.coco.loadImgs(id)[0]["file_name"]
            return Image.open(os.path.join(self.root, path)).convert("L")

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress lines
        dataset = GrayCocoDetection(
            str(root / "train"),
            str(root / "annotations" / "instances_train.json"),
            transforms=peer_transforms(mean, std),
        )
    dataset = datasets.wrap_dataset_for_transforms_v2(dataset, target_keys={"masks", "labels"})
    return DataLoader(
        dataset,
        batch_size=BATCH,
        sampler=RandomSampler(dataset),
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collate_fn,
        drop_last=True,
    )


def criterion(inputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """The reference's criterion."""
    losses = {name: F.cross_entropy(x, target, ignore_index=IGNORE) for name, x in inputs.items()}
    if len(losses) == 1:
        return losses["out"]
    return losses["out"] + 0.5 * losses["aux"]


class MetricLogger:
    """What the reference's ``utils.MetricLogger`` does per step: smoothed values of host floats, a line
    formatted every ``PRINT_FREQ`` steps (kept, not printed: the benchmark's output stays readable)."""

    def __init__(self) -> None:
        self.meters: dict[str, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=20)
        )
        self.count = 0
        self.line = ""

    def update(self, **values: float) -> None:
        for name, value in values.items():
            self.meters[name].append(value)
        self.count += 1
        if self.count % PRINT_FREQ == 0:
            self.line = "  ".join(
                f"{name}: {statistics.median(v):.4f} ({sum(v) / len(v):.4f})"
                for name, v in self.meters.items()
            )


def cycle(loader) -> Iterator:
    while True:
        yield from loader


def peer_runner(root: Path, warmup: int, steps: int, opts: BenchOptions) -> Callable[[], float]:
    """The reference's train_one_epoch, built once (its DataLoader workers persist); each call: warm-up
    steps, then ``steps`` timed steps, images/s."""
    from resnets.detection.models import input_normalization
    from resnets.segmentation.models import fcn
    from resnets.segmentation.synthetic import CLASSES
    from resnets.train.build import seed_everything

    device = opts.torch_device
    recipe = bench_recipe(1)
    mean, std = input_normalization(None, 1)
    seed_everything(recipe.seed)
    model = fcn(num_classes=len(CLASSES), in_chans=1, **recipe.model_options()).to(device)
    params_to_optimize = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad]},
        {"params": [p for p in model.classifier.parameters() if p.requires_grad]},
        {"params": [p for p in model.aux_classifier.parameters() if p.requires_grad], "lr": recipe.lr * 10},
    ]
    optimizer = torch.optim.SGD(
        params_to_optimize, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    # the poly schedule over every step this benchmark takes (its base must stay >= 0)
    total = opts.rounds * (warmup + steps) + 1
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda x: (1 - x / total) ** 0.9)
    batches = cycle(peer_loader(root, mean, std))
    metric_logger = MetricLogger()

    def train(count: int) -> float:
        model.train()
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(count):
            image, target = next(batches)
            image, target = image.to(device), target.to(device)
            output = model(image)
            loss = criterion(output, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lr_scheduler.step()
            metric_logger.update(loss=loss.item(), lr=optimizer.param_groups[0]["lr"])
        synchronize(device)
        return count * BATCH / (time.perf_counter() - t0)

    def run() -> float:
        train(warmup)
        return train(steps)

    return run


def run(opts: BenchOptions) -> str:
    root = dataset_root(opts)
    warmup, steps, log_every = opts.scale(10, 2), opts.scale(60, 4), opts.scale(10, 2)
    contenders = {
        OURS: lambda: ours_images_per_s(root, warmup, steps, log_every, opts),
        PEER: peer_runner(root, opts.scale(5, 1), steps, opts),
    }
    comparison = alternate(contenders, opts.rounds, Comparison("segmentation training images/s", True))
    payload = {
        "quick": opts.quick,
        "model": "fcn on resnet20 (aux head), float32, NCHW, eager",
        "batch": BATCH,
        "base_size": BASE_SIZE,
        "crop_size": CROP_SIZE,
        "data": str(root),
        "comparison": comparison.to_dict(),
        "steps": steps,
        "warmup": warmup,
    }
    rows = [
        [
            f"FCN on resnet20, Fashion-MNIST canvases 64x64 cropped to {CROP_SIZE}, batch {BATCH}",
            comparison.median(OURS),
            comparison.median(PEER),
            comparison.ratio(OURS, PEER),
        ]
    ]
    table = (
        f"Segmentation training throughput, images/s (steady state, data included), {opts.rounds} "
        f"alternating rounds, medians\n\n"
        + markdown_table(["workload", "ours img/s", "peer img/s", "x peer"], rows)
    )
    write_result("segmentation_throughput", payload, table, opts.results_dir)
    return table
