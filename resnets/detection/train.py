"""Detection, the loop's second task: ``train_detector(DetectionConfig) -> summary``.

What is the detector's own: the COCO or VOC data (a batch is a list of images and their targets), the
detector (built from the recipe, or from a resumed checkpoint's spec), the step's loss (torchvision's
detector returns four: RPN objectness and box regression, the region classifier and box regression;
their sum is minimised, as in Faster R-CNN's approximate joint training, and each is logged), the
evaluation (COCOeval's AP on the validation split instead of top-1 error), best by AP, the AP curves.
Everything else (run folder, resume, torchrun, signals, logging) is ``train.loop``'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import runs
from ..data.images import set_max_image_pixels
from ..errors import CheckpointError, ConfigError
from ..train import distributed
from ..train.logging import duration, epoch_parts, finished_line
from ..train.loop import StepLosses, Task, run
from ..train.recipes import RunOptions
from ..train.state import TrainState, check_same_options, run_summary
from .data import DetectionDataset, open_detection_data
from .evaluate import evaluate_detector
from .loader import DetectionLoader
from .models import build_detector, detector_from_spec
from .plots import detection_curves
from .recipes import DetectionConfig, DetectionRecipe

LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
DETECTION_COLUMNS = [
    "epoch",
    "iteration",
    "lr",
    "train_loss",
    "val_ap",
    "val_ap50",
    "val_ap75",
    "val_aps",
    "val_apm",
    "val_apl",
    "val_ar100",
    "images_per_s",
    "epoch_time_s",
    "elapsed_s",
]
VAL_METRICS = {
    "AP": "val_ap",
    "AP50": "val_ap50",
    "AP75": "val_ap75",
    "APs": "val_aps",
    "APm": "val_apm",
    "APl": "val_apl",
    "AR100": "val_ar100",
}


@dataclass
class DetectionData:
    train: DetectionLoader
    val: DetectionLoader | None
    meta: dict[str, Any]  # the checkpoint's ``data`` record


def build_detection_data(
    recipe: DetectionRecipe,
    run: RunOptions,
    info: distributed.DistInfo,
    device: torch.device,
    open_data: Callable[..., DetectionDataset] = open_detection_data,
) -> DetectionData:
    """The training and validation splits of ``run.data_dir``, sharded for this process. ``open_data``:
    ``open_detection_data``, or another reader of its arguments (Mask R-CNN's, whose targets have masks)."""
    if not run.data_dir:
        raise ConfigError(
            "give the detection data folder (a COCO or VOC folder) with --data-dir DIR; "
            "`resnets detect make-data DIR` writes the Fashion-MNIST set"
        )
    if recipe.batch_size % info.world_size:
        raise ConfigError(f"batch size {recipe.batch_size} does not divide among {info.world_size} processes")
    set_max_image_pixels(run.max_image_pixels)
    train_set = open_data(run.data_dir, recipe.train_split, strict=run.strict_data)
    train_set = train_set.subset(recipe.train_subset)
    val_set = None
    if recipe.eval_split:
        val_set = open_data(
            run.data_dir,
            recipe.eval_split,
            strict=run.strict_data,
            in_chans=train_set.in_chans,
            classes=train_set.classes,
        )
        val_set = val_set.subset(recipe.eval_subset)
    workers = (
        run.workers if run.workers is not None else (0 if train_set.canvas else min(8, os.cpu_count() or 1))
    )
    common = {"device": device, "rank": info.rank, "world_size": info.world_size, "workers": workers}
    train = DetectionLoader(
        train_set,
        batch_size=recipe.batch_size // info.world_size,
        train=True,
        seed=recipe.seed,
        flip=recipe.hflip,
        **common,
    )
    val = (
        DetectionLoader(val_set, batch_size=recipe.eval_batch_size, train=False, **common)
        if val_set
        else None
    )
    meta = {
        **train_set.meta(),
        "data_dir": str(run.data_dir),
        "train_split": recipe.train_split,
        "eval_split": recipe.eval_split,
    }
    return DetectionData(train, val, meta)


def image_sizes(recipe: DetectionRecipe, dataset: DetectionDataset) -> tuple[int, int]:
    """(min_size, max_size): the recipe's, else a generated set's canvas (no resizing), else torchvision's."""
    if recipe.min_size is not None:
        return recipe.min_size, recipe.max_size or max(recipe.min_size, 1333)
    if dataset.canvas:
        return dataset.canvas, recipe.max_size or dataset.canvas
    return 800, recipe.max_size or 1333


def make_detector(
    recipe: DetectionRecipe, run: RunOptions, dataset: DetectionDataset, log: Callable[[str], None]
) -> nn.Module:
    min_size, max_size = image_sizes(recipe, dataset)
    return build_detector(
        recipe.backbone,
        dataset.num_classes,
        in_chans=dataset.in_chans,
        backbone_weights=run.init_weights,
        min_size=min_size,
        max_size=max_size,
        log=log,
        **recipe.detector_options(),
    )


def check_same_detector(
    ckpt: dict[str, Any], path, recipe: DetectionRecipe, dataset: DetectionDataset
) -> None:
    """Before any work: the recipe builds the detector the checkpoint holds (options left None take the
    checkpoint's resolved values)."""
    saved = ckpt["model"].get("kwargs", {})
    wanted = {
        "backbone": recipe.backbone,
        "num_classes": dataset.num_classes,
        "in_chans": dataset.in_chans,
        **{k: v for k, v in recipe.detector_options().items() if v is not None},
    }
    wanted = {k: list(v) if isinstance(v, tuple) else v for k, v in wanted.items()}
    if recipe.min_size is not None:
        wanted["min_size"] = recipe.min_size
    check_same_options(saved, wanted, path, "detector")


def default_output(recipe: DetectionRecipe) -> str:
    return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-detect-{recipe.backbone}-{recipe.head}")


def train_detector(config: DetectionConfig, resumed: runs.Resumed | None = None) -> dict[str, Any]:
    """Train as ``config`` says; returns the summary (AP, time, throughput, output folder).
    ``resumed``: the checkpoint of ``config.run.resume`` when the caller has read it already."""
    return run(Detection(config), resumed)


class Detection(Task):
    command = "resnets detect train"
    columns = DETECTION_COLUMNS
    part_names = LOSSES

    def check(self) -> None:
        if self.config.run.freeze_bn:
            raise ConfigError(
                "--freeze-bn is the classifiers' option; a detector's backbone BN is fixed by "
                "backbone_norm='frozen' (the default)"
            )

    def default_output(self) -> str:
        return default_output(self.config.recipe)

    def check_resume(self, ckpt: dict[str, Any], path: os.PathLike) -> None:
        if (ckpt.get("config") or {}).get("task") != "detection":
            raise CheckpointError(
                f"{path} is a classifier's checkpoint; continue it with `resnets train --resume`"
            )

    def build_data(self, info: distributed.DistInfo, device: torch.device) -> DetectionData:
        return build_detection_data(self.config.recipe, self.config.run, info, device)

    def data_meta(self, data: DetectionData) -> dict[str, Any]:
        return data.meta

    def build_model(
        self,
        data: DetectionData,
        device: torch.device,
        resumed: runs.Resumed | None,
        log: Callable[[str], None],
    ) -> nn.Module:
        recipe, dataset = self.config.recipe, data.train.dataset
        if resumed is not None:
            check_same_detector(resumed.checkpoint, resumed.path, recipe, dataset)
            return detector_from_spec(resumed.checkpoint["model"]).to(device)
        return make_detector(recipe, self.config.run, dataset, log).to(device)

    def describe(self, data: DetectionData) -> str:
        recipe = self.config.recipe
        return (
            f"training a Faster R-CNN ({recipe.head}) on {recipe.backbone} with "
            f"{data.train.dataset.num_classes} classes from {self.config.run.data_dir}"
        )

    def epoch_batches(
        self, data: DetectionData, start: int, epoch_rng: dict | None, resume_rng: dict | None
    ) -> Iterator[tuple[int, Any]]:
        # order and flips come from (seed, epoch): a resumed epoch skips ahead without reading
        return enumerate(data.train.batches(start=start), start=start)

    def losses(self, forward: nn.Module, batch: Any) -> StepLosses:
        images, targets = batch
        losses = forward(images, targets)
        parts = tuple(losses[name] for name in self.part_names)
        return StepLosses(sum(parts), len(images), parts=parts)

    def evaluate(self, model: nn.Module, data: DetectionData, last: bool) -> dict[str, Any]:
        if data.val is None:
            return {}
        metrics = evaluate_detector(model, data.val)
        return {
            column: 100 * metrics[name] if metrics[name] >= 0 else None
            for name, column in VAL_METRICS.items()
        }

    def monitored_error(self, row: dict[str, Any]) -> float | None:
        return None if row.get("val_ap") is None else 100 - row["val_ap"]

    def update_best(self, state: TrainState, row: dict[str, Any]) -> None:
        row["is_best"] = row.get("val_ap") is not None and (
            not state.best or row["val_ap"] >= state.best["ap"]
        )
        if row["is_best"]:
            state.best = {"ap": row["val_ap"], "epoch": state.epoch, "split": "val"}

    def epoch_line(self, row: dict[str, Any]) -> str:
        return epoch_line(row)

    def summary(
        self, state: TrainState, rows: list[dict[str, Any]], folder: runs.RunFolder
    ) -> dict[str, Any]:
        return final_result(state, rows, folder)

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        return summary_lines(result)

    def plot(self, folder: runs.RunFolder) -> None:
        recipe = self.config.recipe
        detection_curves(
            folder.steps(),
            folder.metrics(),
            folder.curves_path,
            title=f"Faster R-CNN ({recipe.head}) on {recipe.backbone}",
        )


def epoch_line(row: dict[str, Any]) -> str:
    parts = epoch_parts(row)
    if row.get("val_ap") is not None:
        parts.append(f"val AP {row['val_ap']:.1f} AP50 {row['val_ap50']:.1f}")
    parts += [f"{row['images_per_s']:.1f} img/s", duration(row["elapsed_s"])]
    return " | ".join(parts)


def final_result(state: TrainState, rows: list[dict[str, Any]], folder: runs.RunFolder) -> dict[str, Any]:
    result: dict[str, Any] = {"task": "detection", **run_summary(state, folder.path)}
    evaluated = [r for r in rows if r.get("val_ap") is not None]
    if evaluated:
        best = max(evaluated, key=lambda r: r["val_ap"])
        for key in VAL_METRICS.values():
            result[f"final_{key}"] = evaluated[-1].get(key)
        result["best_val_ap"], result["best_val_epoch"] = best["val_ap"], best["epoch"]
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [finished_line(result)]
    if result.get("final_val_ap") is not None:
        lines.append(
            f"val AP@[.5,.95] {result['final_val_ap']:.2f}, AP@.5 {result['final_val_ap50']:.2f} "
            f"(best AP {result['best_val_ap']:.2f} at epoch {result['best_val_epoch']})"
        )
    lines.append(f"outputs in {result['output']}")
    return lines
