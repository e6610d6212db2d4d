"""Semantic segmentation, a task of the one training loop: ``train_segmenter(SegmentationConfig) -> summary``.

What is the segmenter's own: the COCO, Pascal VOC or generated data (``open_segmentation_data``) with
torchvision's augmentation (``loader``), FCN or DeepLabV3 on a zoo backbone (built from the recipe, or
from a resumed checkpoint's spec), the step's loss (torchvision's criterion: cross-entropy ignoring 255
on ``out``, plus 0.5 x that of ``aux``; both logged), the evaluation (mean IoU and pixel accuracy of one
confusion matrix), best by mean IoU. Everything else (run folder, resume, torchrun, signals, logging) is
``train.loop``'s.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from .. import runs
from ..data.images import set_max_image_pixels
from ..detection.models import input_normalization
from ..detection.plots import detection_curves
from ..errors import CheckpointError, ConfigError
from ..train import distributed
from ..train.logging import duration, epoch_parts, finished_line
from ..train.loop import StepLosses, Task, run
from ..train.recipes import RunOptions
from ..train.state import TrainState, check_same_options, run_summary
from .data import IGNORE_INDEX, open_segmentation_data
from .evaluate import evaluate_segmenter
from .loader import Augmentation, SegmentationLoader
from .models import BUILDERS, segmenter_from_spec
from .recipes import SegmentationConfig, SegmentationRecipe

SEGMENTATION_COLUMNS = [
    "epoch",
    "iteration",
    "lr",
    "train_loss",
    "val_miou",
    "val_pixel_acc",
    "images_per_s",
    "epoch_time_s",
    "elapsed_s",
]


@dataclass
class SegmentationData:
    train: SegmentationLoader
    val: SegmentationLoader | None
    meta: dict[str, Any]  # the checkpoint's ``data`` record: classes, channels, normalisation, eval size


def _subset(dataset: Dataset, count: int | None) -> Dataset:
    return dataset if count is None else Subset(dataset, range(min(count, len(dataset))))


def build_segmentation_data(
    recipe: SegmentationRecipe,
    run: RunOptions,
    info: distributed.DistInfo,
    device: torch.device,
    normalization: tuple[list[float], list[float]] | None = None,
) -> SegmentationData:
    """The training and validation splits of ``run.data_dir``, sharded for this process. ``normalization``:
    a resumed run's (mean, std); None: that of ``run.init_weights``, else ImageNet's."""
    if not run.data_dir:
        raise ConfigError(
            "give the segmentation data folder (a COCO or Pascal VOC folder) with --data-dir DIR; "
            "`resnets segment make-data DIR` writes the Fashion-MNIST set"
        )
    if recipe.batch_size % info.world_size:
        raise ConfigError(f"batch size {recipe.batch_size} does not divide among {info.world_size} processes")
    set_max_image_pixels(run.max_image_pixels)
    train_set = open_segmentation_data(run.data_dir, recipe.train_split, strict=run.strict_data)
    val_set = None
    if recipe.eval_split:
        val_set = open_segmentation_data(
            run.data_dir, recipe.eval_split, strict=run.strict_data, in_chans=train_set.in_chans
        )
        if val_set.classes != train_set.classes:
            raise ConfigError(
                f"{run.data_dir}: the {recipe.eval_split} split's classes differ from the "
                f"{recipe.train_split} split's"
            )
    mean, std = normalization or input_normalization(run.init_weights, train_set.in_chans)
    workers = run.workers if run.workers is not None else 0
    common = {
        "device": device,
        "rank": info.rank,
        "world_size": info.world_size,
        "workers": workers,
        "mean": mean,
        "std": std,
    }
    augment = Augmentation(
        recipe.base_size, recipe.crop_size, recipe.min_scale, recipe.max_scale, recipe.hflip
    )
    train = SegmentationLoader(
        _subset(train_set, recipe.train_subset),
        batch_size=recipe.batch_size // info.world_size,
        train=True,
        seed=recipe.seed,
        augment=augment,
        **common,
    )
    val = None
    if val_set is not None:
        val = SegmentationLoader(
            _subset(val_set, recipe.eval_subset),
            batch_size=recipe.eval_batch_size,
            train=False,
            augment=augment,
            **common,
        )
    meta = {
        "classes": list(train_set.classes),
        "in_chans": train_set.in_chans,
        "image_mean": list(mean),
        "image_std": list(std),
        "base_size": recipe.base_size,
        "data_dir": str(run.data_dir),
        "train_split": recipe.train_split,
        "eval_split": recipe.eval_split,
    }
    return SegmentationData(train, val, meta)


def check_same_segmenter(ckpt: dict[str, Any], path: os.PathLike, recipe: SegmentationRecipe) -> None:
    """Before any work: the recipe builds the model the checkpoint holds."""
    spec = ckpt.get("model") or {}
    saved = spec.get("kwargs", {})
    wanted = {"name": recipe.model, **recipe.model_options()}
    check_same_options({"name": spec.get("name"), **saved}, wanted, path, "segmenter")


def default_output(recipe: SegmentationRecipe) -> str:
    return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-segment-{recipe.model}-{recipe.backbone}")


def train_segmenter(config: SegmentationConfig, resumed: runs.Resumed | None = None) -> dict[str, Any]:
    """Train as ``config`` says; returns the summary (mean IoU, time, throughput, output folder).
    ``resumed``: the checkpoint of ``config.run.resume`` when the caller has read it already."""
    return run(Segmentation(config), resumed)


class Segmentation(Task):
    command = "resnets segment train"
    columns = SEGMENTATION_COLUMNS

    def __init__(self, config: SegmentationConfig) -> None:
        super().__init__(config)
        # the loss's parts, logged per step: torchvision's two cross-entropies
        self.part_names = ("loss_out", "loss_aux") if config.recipe.aux_loss else ("loss_out",)
        self.resumed_normalization: tuple[list[float], list[float]] | None = None
        self.last_scores: dict[str, Any] = {}  # the last evaluation's per-class IoU, for the summary

    def check(self) -> None:
        if self.config.run.freeze_bn:
            raise ConfigError("--freeze-bn is the classifiers' option; a segmenter trains its BN layers")

    def default_output(self) -> str:
        return default_output(self.config.recipe)

    def lr_factors(self) -> dict[str, float]:
        recipe = self.config.recipe
        return {"aux_classifier": recipe.aux_lr_factor} if recipe.aux_loss else {}

    def check_resume(self, ckpt: dict[str, Any], path: os.PathLike) -> None:
        task = (ckpt.get("config") or {}).get("task")
        if task != "segmentation":
            command = "resnets detect train" if task == "detection" else "resnets train"
            raise CheckpointError(
                f"{path} is not a segmentation checkpoint; continue it with `{command} --resume`"
            )
        check_same_segmenter(ckpt, path, self.config.recipe)
        data = ckpt.get("data") or {}
        if isinstance(data.get("image_mean"), list) and isinstance(data.get("image_std"), list):
            self.resumed_normalization = (data["image_mean"], data["image_std"])

    def build_data(self, info: distributed.DistInfo, device: torch.device) -> SegmentationData:
        return build_segmentation_data(
            self.config.recipe, self.config.run, info, device, self.resumed_normalization
        )

    def data_meta(self, data: SegmentationData) -> dict[str, Any]:
        return data.meta

    def build_model(
        self,
        data: SegmentationData,
        device: torch.device,
        resumed: runs.Resumed | None,
        log: Callable[[str], None],
    ) -> nn.Module:
        if resumed is not None:
            return segmenter_from_spec(resumed.checkpoint["model"]).to(device)
        recipe = self.config.recipe
        model = BUILDERS[recipe.model](
            num_classes=len(data.meta["classes"]),
            in_chans=data.meta["in_chans"],
            backbone_weights=self.config.run.init_weights,
            log=log,
            **recipe.model_options(),
        )
        return model.to(device)

    def describe(self, data: SegmentationData) -> str:
        recipe = self.config.recipe
        return (
            f"training {recipe.model} on {recipe.backbone} with {len(data.meta['classes'])} classes from "
            f"{self.config.run.data_dir}"
        )

    def epoch_batches(
        self, data: SegmentationData, start: int, epoch_rng: dict | None, resume_rng: dict | None
    ) -> Iterator[tuple[int, Any]]:
        # order and augmentation come from (seed, epoch): a resumed epoch skips ahead without reading
        return enumerate(data.train.batches(start=start), start=start)

    def losses(self, forward: nn.Module, batch: Any) -> StepLosses:
        images, masks = batch
        if not isinstance(images, torch.Tensor):
            raise ConfigError(
                "the training images are of different sizes; give a crop size (--set crop_size=480)"
            )
        outputs = forward(images)
        # torchvision's references/segmentation/train.py criterion
        parts = tuple(
            F.cross_entropy(outputs[key], masks, ignore_index=IGNORE_INDEX)
            for key in ("out", "aux")
            if key in outputs
        )
        loss = parts[0] + self.config.recipe.aux_weight * parts[1] if len(parts) > 1 else parts[0]
        return StepLosses(loss, len(images), parts=parts)

    def evaluate(self, model: nn.Module, data: SegmentationData, last: bool) -> dict[str, Any]:
        if data.val is None:
            return {}
        scores, _ = evaluate_segmenter(model, data.val.batches(), len(data.meta["classes"]))
        if last:
            self.last_scores = {
                name: None if math.isnan(iou) else 100 * iou
                for name, iou in zip(data.meta["classes"], scores.iou, strict=True)
            }
        return {"val_miou": 100 * scores.mean_iou, "val_pixel_acc": 100 * scores.pixel_accuracy}

    def monitored_error(self, row: dict[str, Any]) -> float | None:
        return None if row.get("val_miou") is None else 100 - row["val_miou"]

    def update_best(self, state: TrainState, row: dict[str, Any]) -> None:
        row["is_best"] = row.get("val_miou") is not None and (
            not state.best or row["val_miou"] >= state.best["miou"]
        )
        if row["is_best"]:
            state.best = {"miou": row["val_miou"], "epoch": state.epoch, "split": "val"}

    def epoch_line(self, row: dict[str, Any]) -> str:
        parts = epoch_parts(row)
        if row.get("val_miou") is not None:
            parts.append(f"val mIoU {row['val_miou']:.1f} pixel acc {row['val_pixel_acc']:.1f}")
        parts += [f"{row['images_per_s']:.1f} img/s", duration(row["elapsed_s"])]
        return " | ".join(parts)

    def summary(
        self, state: TrainState, rows: list[dict[str, Any]], folder: runs.RunFolder
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"task": "segmentation", **run_summary(state, folder.path)}
        evaluated = [r for r in rows if r.get("val_miou") is not None]
        if evaluated:
            best = max(evaluated, key=lambda r: r["val_miou"])
            result["final_val_miou"] = evaluated[-1]["val_miou"]
            result["final_val_pixel_acc"] = evaluated[-1]["val_pixel_acc"]
            result["best_val_miou"], result["best_val_epoch"] = best["val_miou"], best["epoch"]
        if self.last_scores:
            result["final_val_iou"] = self.last_scores
        return result

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        lines = [finished_line(result)]
        if result.get("final_val_miou") is not None:
            lines.append(
                f"val mIoU {result['final_val_miou']:.2f}, "
                f"pixel accuracy {result['final_val_pixel_acc']:.2f} "
                f"(best mIoU {result['best_val_miou']:.2f} at epoch {result['best_val_epoch']})"
            )
        lines.append(f"outputs in {result['output']}")
        return lines

    def plot(self, folder: runs.RunFolder) -> None:
        recipe = self.config.recipe
        detection_curves(
            folder.steps(),
            folder.metrics(),
            folder.curves_path,
            title=f"{recipe.model} on {recipe.backbone}",
            metrics=(("val_miou", "mean IoU"), ("val_pixel_acc", "pixel accuracy")),
            metric_axis="validation (%)",
            loss_axis="training loss",
        )
