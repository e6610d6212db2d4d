"""Detection training throughput (images/s in steady state, data loading included): ours against
torchvision's reference-style loop, alternating in one run.

- Data: the generated Fashion-MNIST detection set (64 x 64 canvases; written once into the temporary
  folder), the same files for both.
- Ours: ``resnets detect train``'s loop (``train_detector``) with the fashion-cpu recipe (the paper's C4
  Faster R-CNN on a CIFAR-style ResNet-20, batch 8, horizontal flips), no evaluation; images/s read from
  its steps.jsonl after the warm-up steps.
- The peer: what torchvision's detection reference (references/detection/train.py, ``--use-v2``) does:
  ``torchvision.datasets.CocoDetection`` wrapped for transforms v2 (PILToTensor, RandomHorizontalFlip,
  ToDtype, SanitizeBoundingBoxes), a DataLoader with 2 workers and a random batch sampler, and its
  ``train_one_epoch`` step (loss dict, sum, ``.item()`` and a finiteness check every step, SGD) on the
  same ``torchvision.models.detection.FasterRCNN`` (built by ``build_detector`` with the same backbone
  and options, from the same seed).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .harness import (
    BenchOptions,
    Comparison,
    alternate,
    logged_images_per_s,
    markdown_table,
    synchronize,
    write_result,
)

OURS, PEER = "ours (resnets detect train loop)", "peer (torchvision reference loop + DataLoader)"
BATCH = 8


def dataset_root(opts: BenchOptions) -> Path:
    from resnets.detection.synthetic import SyntheticSpec, make_fashion_detection

    spec = SyntheticSpec(canvas=64, train_images=opts.scale(1000, 64), val_images=opts.scale(50, 8))
    root = Path(tempfile.gettempdir()) / f"resnets-bench-fashion-det-{spec.train_images}"
    return make_fashion_detection(root, spec, data_dir=opts.data_dir)


def bench_recipe(iterations: int, backbone: str):
    from resnets.detection.recipes import DETECTION_RECIPES
    from resnets.train.recipes import get_recipe

    return dataclasses.replace(
        get_recipe("fashion-cpu", DETECTION_RECIPES),
        backbone=backbone,
        iterations=iterations,
        batch_size=BATCH,
        eval_split=None,
        schedule="constant",
        warmup=0.0,
        milestones=(),
    )


def ours_images_per_s(
    root: Path, backbone: str, warmup: int, steps: int, log_every: int, opts: BenchOptions
) -> float:
    from resnets.detection.recipes import DetectionConfig
    from resnets.detection.train import train_detector

    recipe = bench_recipe(warmup + steps, backbone)
    return logged_images_per_s(
        lambda run: train_detector(DetectionConfig(recipe=recipe, run=run)),
        data_dir=str(root),
        warmup=warmup,
        log_every=log_every,
        batch=BATCH,
        opts=opts,
        what="detection",
    )


def peer_loader(root: Path, workers: int = 2):
    """torchvision's reference data pipeline (v2 transforms) over the COCO files."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler
    from torchvision import datasets
    from torchvision.transforms import v2

    transforms = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Grayscale(1),  # CocoDetection opens images as RGB; the canvases (and the detector) are gray
            v2.RandomHorizontalFlip(0.5),
            v2.ToDtype(torch.float, scale=True),
            v2.SanitizeBoundingBoxes(),
        ]
    )
    dataset = datasets.CocoDetection(
        str(root / "train"), str(root / "annotations" / "instances_train.json"), transforms=transforms
    )
    dataset = datasets.wrap_dataset_for_transforms_v2(dataset, target_keys=("boxes", "labels", "image_id"))
    sampler = BatchSampler(RandomSampler(dataset), BATCH, drop_last=True)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=lambda batch: tuple(zip(*batch, strict=True)),
    )


def cycle(loader) -> Iterator:
    while True:
        yield from loader


def peer_runner(
    root: Path, backbone: str, warmup: int, steps: int, opts: BenchOptions
) -> Callable[[], float]:
    """The reference's train_one_epoch, built once (its DataLoader workers persist); each call: warm-up
    steps, then ``steps`` timed steps, images/s."""
    from resnets.detection.data import open_detection_data
    from resnets.detection.models import build_detector
    from resnets.detection.train import image_sizes

    device = opts.torch_device
    recipe = bench_recipe(1, backbone)
    dataset = open_detection_data(root, "train")
    min_size, max_size = image_sizes(recipe, dataset)
    torch.manual_seed(0)
    model = build_detector(
        recipe.backbone,
        dataset.num_classes,
        in_chans=1,
        min_size=min_size,
        max_size=max_size,
        **recipe.detector_options(),
    ).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    batches = cycle(peer_loader(root))

    def train(count: int) -> float:
        model.train()
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(count):
            images, targets = next(batches)
            images = [image.to(device) for image in images]
            targets = [
                {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets
            ]
            loss_dict = model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
            loss_value = losses.item()  # the reference logs every step
            if not math.isfinite(loss_value):
                raise RuntimeError(f"peer loss is {loss_value}")
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
        synchronize(device)
        return count * BATCH / (time.perf_counter() - t0)

    def run() -> float:
        train(warmup)
        return train(steps)

    return run


def run(opts: BenchOptions) -> str:
    root = dataset_root(opts)
    backbone = "resnet20"
    warmup, steps, log_every = opts.scale(10, 2), opts.scale(60, 4), opts.scale(10, 2)
    contenders = {
        OURS: lambda: ours_images_per_s(root, backbone, warmup, steps, log_every, opts),
        PEER: peer_runner(root, backbone, opts.scale(5, 1), steps, opts),
    }
    comparison = alternate(contenders, opts.rounds, Comparison("detection training images/s", True))
    payload = {
        "quick": opts.quick,
        "backbone": backbone,
        "batch": BATCH,
        "data": str(root),
        "comparison": comparison.to_dict(),
        "steps": steps,
        "warmup": warmup,
    }
    rows = [
        [
            f"Faster R-CNN C4 on {backbone}, 64x64 Fashion-MNIST canvases, batch {BATCH}",
            comparison.median(OURS),
            comparison.median(PEER),
            comparison.ratio(OURS, PEER),
        ]
    ]
    table = (
        f"Detection training throughput, images/s (steady state, data included), {opts.rounds} alternating "
        f"rounds, medians\n\n" + markdown_table(["workload", "ours img/s", "peer img/s", "x peer"], rows)
    )
    write_result("detection_throughput", payload, table, opts.results_dir)
    return table
