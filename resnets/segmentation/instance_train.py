"""Mask R-CNN, instance segmentation on the one training loop: ``train_mask_rcnn(MaskRCNNConfig) -> summary``.

Mask R-CNN "extends Faster R-CNN by adding a branch for predicting an object mask" (He et al. 2017), and
trains here as the detector it extends: ``detection.train.Detection`` with COCO instance masks in the targets
(``open_segmentation_data(task="instance")``: a COCO folder, or the generated Fashion-MNIST set, whose
boxes are its masks' extents), flipped with the image by detection's loader. The step minimises the sum of
torchvision's five losses (the detector's four and ``loss_mask``, the mask branch's per-pixel binary
cross-entropy), each logged. Each evaluation is COCOeval's box AP and mask AP on the validation split; the
best epoch is the one of the highest mask AP. Everything else (run folder, exact resume, torchrun, signals,
logging) is ``train.loop``'s, as for every task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import runs
from ..detection.data import DetectionDataset
from ..detection.plots import detection_curves
from ..detection.train import (
    LOSSES,
    Detection,
    DetectionData,
    build_detection_data,
    check_same_detector,
    image_sizes,
)
from ..errors import CheckpointError, ConfigError
from ..train import distributed
from ..train.logging import duration, epoch_parts, finished_line
from ..train.loop import run
from ..train.state import TrainState, check_same_options, run_summary
from .data import open_segmentation_data
from .evaluate import evaluate_instances
from .models import mask_rcnn, segmenter_from_spec
from .recipes import MaskRCNNConfig, MaskRCNNRecipe

MASK_LOSSES = (*LOSSES, "loss_mask")
# COCOeval's numbers kept per epoch: metrics.csv's column for each (box AP, then mask AP)
BOX_METRICS = {"AP": "val_box_ap", "AP50": "val_box_ap50", "AP75": "val_box_ap75"}
MASK_METRICS = {
    "AP": "val_mask_ap",
    "AP50": "val_mask_ap50",
    "AP75": "val_mask_ap75",
    "APs": "val_mask_aps",
    "APm": "val_mask_apm",
    "APl": "val_mask_apl",
}
INSTANCE_COLUMNS = [
    "epoch",
    "iteration",
    "lr",
    "train_loss",
    *BOX_METRICS.values(),
    *MASK_METRICS.values(),
    "images_per_s",
    "epoch_time_s",
    "elapsed_s",
]


def open_instance_data(root: str | os.PathLike, split: str, **options: Any) -> DetectionDataset:
    """A split with instance masks, read as ``detection.data.open_detection_data`` reads boxes."""
    return open_segmentation_data(root, split, task="instance", **options)


def make_mask_rcnn(
    recipe: MaskRCNNRecipe, init_weights: str | None, dataset: DetectionDataset, log: Callable[[str], None]
) -> nn.Module:
    min_size, max_size = image_sizes(recipe, dataset)
    options = {**recipe.model_options(), "min_size": min_size, "max_size": max_size}
    return mask_rcnn(
        num_classes=dataset.num_classes,
        in_chans=dataset.in_chans,
        backbone_weights=init_weights,
        log=log,
        **options,
    )


def default_output(recipe: MaskRCNNRecipe) -> str:
    return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-segment-mask_rcnn-{recipe.backbone}")


def train_mask_rcnn(config: MaskRCNNConfig, resumed: runs.Resumed | None = None) -> dict[str, Any]:
    """Train as ``config`` says; returns the summary (box and mask AP, time, throughput, output folder).
    ``resumed``: the checkpoint of ``config.run.resume`` when the caller has read it already."""
    return run(InstanceSegmentation(config), resumed)


class InstanceSegmentation(Detection):
    """The detection task with masks: its data reader, model, losses, evaluation and summary."""

    command = "resnets segment train"
    columns = INSTANCE_COLUMNS
    part_names = MASK_LOSSES

    def check(self) -> None:
        if self.config.run.freeze_bn:
            raise ConfigError(
                "--freeze-bn is the classifiers' option; Mask R-CNN's backbone BN is fixed by "
                "backbone_norm='frozen' (the default)"
            )

    def default_output(self) -> str:
        return default_output(self.config.recipe)

    def check_resume(self, ckpt: dict[str, Any], path: os.PathLike) -> None:
        task = (ckpt.get("config") or {}).get("task")
        if task != MaskRCNNConfig.TASK:
            command = {"detection": "resnets detect train", "segmentation": "resnets segment train"}
            raise CheckpointError(
                f"{path} is not a Mask R-CNN checkpoint; continue it with "
                f"`{command.get(task, 'resnets train')} --resume`"
            )
        if (ckpt.get("model") or {}).get("name") != "mask_rcnn":
            raise CheckpointError(f"{path} holds no Mask R-CNN (its model is not 'mask_rcnn')")

    def build_data(self, info: distributed.DistInfo, device: torch.device) -> DetectionData:
        if not self.config.run.data_dir:
            raise ConfigError(
                "give the instance segmentation data (a COCO folder with masks) with --data-dir DIR; "
                "`resnets segment make-data DIR` writes the Fashion-MNIST set"
            )
        return build_detection_data(self.config.recipe, self.config.run, info, device, open_instance_data)

    def build_model(
        self,
        data: DetectionData,
        device: torch.device,
        resumed: runs.Resumed | None,
        log: Callable[[str], None],
    ) -> nn.Module:
        recipe, dataset = self.config.recipe, data.train.dataset
        if resumed is not None:
            ckpt = resumed.checkpoint
            check_same_detector(ckpt, resumed.path, recipe, dataset)
            wanted = {"mask_head_width": recipe.mask_head_width}
            check_same_options(ckpt["model"].get("kwargs", {}), wanted, resumed.path, "Mask R-CNN")
            return segmenter_from_spec(ckpt["model"]).to(device)
        return make_mask_rcnn(recipe, self.config.run.init_weights, dataset, log).to(device)

    def describe(self, data: DetectionData) -> str:
        return (
            f"training a Mask R-CNN on {self.config.recipe.backbone} with {data.train.dataset.num_classes} "
            f"classes from {self.config.run.data_dir}"
        )

    def evaluate(self, model: nn.Module, data: DetectionData, last: bool) -> dict[str, Any]:
        if data.val is None:
            return {}
        metrics = evaluate_instances(model, data.val)
        row = {}
        for kind, columns in (("box", BOX_METRICS), ("mask", MASK_METRICS)):
            for name, column in columns.items():
                value = metrics[kind][name]
                row[column] = 100 * value if value >= 0 else None  # -1: no object of that size
        return row

    def monitored_error(self, row: dict[str, Any]) -> float | None:
        return None if row.get("val_mask_ap") is None else 100 - row["val_mask_ap"]

    def update_best(self, state: TrainState, row: dict[str, Any]) -> None:
        row["is_best"] = row.get("val_mask_ap") is not None and (
            not state.best or row["val_mask_ap"] >= state.best["mask_ap"]
        )
        if row["is_best"]:
            state.best = {"mask_ap": row["val_mask_ap"], "epoch": state.epoch, "split": "val"}

    def epoch_line(self, row: dict[str, Any]) -> str:
        parts = epoch_parts(row)
        if row.get("val_mask_ap") is not None:
            parts.append(f"val box AP {row['val_box_ap']:.1f} mask AP {row['val_mask_ap']:.1f}")
        parts += [f"{row['images_per_s']:.1f} img/s", duration(row["elapsed_s"])]
        return " | ".join(parts)

    def summary(
        self, state: TrainState, rows: list[dict[str, Any]], folder: runs.RunFolder
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"task": MaskRCNNConfig.TASK, **run_summary(state, folder.path)}
        evaluated = [r for r in rows if r.get("val_mask_ap") is not None]
        if evaluated:
            best = max(evaluated, key=lambda r: r["val_mask_ap"])
            for column in (*BOX_METRICS.values(), *MASK_METRICS.values()):
                result[f"final_{column}"] = evaluated[-1].get(column)
            result["best_val_mask_ap"], result["best_val_epoch"] = best["val_mask_ap"], best["epoch"]
        return result

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        lines = [finished_line(result)]
        if result.get("final_val_mask_ap") is not None:
            lines.append(
                f"val mask AP@[.5,.95] {result['final_val_mask_ap']:.2f}, box AP "
                f"{result['final_val_box_ap']:.2f} (best mask AP {result['best_val_mask_ap']:.2f} at epoch "
                f"{result['best_val_epoch']})"
            )
        lines.append(f"outputs in {result['output']}")
        return lines

    def plot(self, folder: runs.RunFolder) -> None:
        detection_curves(
            folder.steps(),
            folder.metrics(),
            folder.curves_path,
            title=f"Mask R-CNN on {self.config.recipe.backbone}",
            metrics=(("val_box_ap", "box AP@[.5,.95]"), ("val_mask_ap", "mask AP@[.5,.95]")),
            loss_axis="training loss (sum of the five)",
        )
