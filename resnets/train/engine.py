"""Classification, the loop's first task: ``train(config) -> summary``.

What is a classifier's own: the image datasets (``build_data``), a zoo model (from pretrained weights,
SyncBN under DDP, channels-last, compiled), mixup/CutMix before the step, the cross-entropy (or BCE)
loss and its top-1 errors, the validation and test errors each epoch (the test set only at the end with
``final_test_only``), best by validation error, the error curves. Everything else is ``train.loop``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .. import runs
from ..data import DataBundle
from ..data.mixing import MIXING_STREAM, MixupCutmix
from ..data.splits import seed_for
from ..evaluate import evaluate
from ..plots import training_curves
from ..runtime import ExecutionPath, execution_path, uses_channels_last
from . import distributed
from .build import (
    build_data_bundle,
    build_ema,
    build_model,
    check_names,
    default_output,
    set_train_mode,
)
from .logging import METRIC_COLUMNS, duration, epoch_parts, finished_line
from .loop import StepLosses, Task, replayed, run
from .losses import error_count, make_criterion
from .recipes import TrainConfig
from .state import TrainState, check_same_model, run_summary


class Classification(Task):
    command = "resnets train"
    columns = METRIC_COLUMNS
    counts_errors = True

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        recipe = config.recipe
        self.criterion = make_criterion(recipe.bce_loss, recipe.label_smoothing, recipe.bce_target_thresh)
        self.mixing: MixupCutmix | None = None  # needs the data's classes
        self.rank, self.distributed, self.device = 0, False, torch.device("cpu")

    def check(self) -> None:
        check_names(self.config.recipe)  # unknown model/dataset: an error before any work starts

    def default_output(self) -> str:
        return default_output(self.config.recipe)

    def check_resume(self, ckpt: dict[str, Any], path: os.PathLike) -> None:
        recipe = self.config.recipe
        check_same_model(ckpt, path, recipe.model, recipe.model_options)

    def build_data(self, info: distributed.DistInfo, device: torch.device) -> DataBundle:
        recipe = self.config.recipe
        data = build_data_bundle(recipe, self.config.run, device, info)
        self.mixing = MixupCutmix(
            data.num_classes, recipe.mixup, recipe.cutmix, recipe.mixup_prob, recipe.mixup_switch_prob
        )
        self.rank, self.distributed, self.device = info.rank, info.enabled, device
        return data

    def data_meta(self, data: DataBundle) -> dict[str, Any]:
        return data.meta()

    def build_model(
        self, data: DataBundle, device: torch.device, resumed: runs.Resumed | None, log: Any
    ) -> nn.Module:
        model = build_model(self.config.recipe, self.config.run, data, device, log)
        if self.distributed and self.config.recipe.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def build_ema(self, model: nn.Module) -> AveragedModel | None:
        return build_ema(model, self.config.recipe)

    def execution_path(self, device: torch.device, images: int) -> ExecutionPath:
        recipe = self.config.recipe
        return execution_path(
            recipe.amp, recipe.amp_dtype, recipe.channels_last, recipe.compile, device, images
        )

    def compile_mode(self) -> str:
        return self.config.recipe.compile_mode

    def describe(self, data: DataBundle) -> str:
        recipe = self.config.recipe
        return f"training {recipe.model} on {recipe.dataset} with recipe {recipe.name}"

    def train_mode(self, model: nn.Module) -> None:
        set_train_mode(model, self.config.run.freeze_bn)

    def epoch_batches(
        self, data: DataBundle, start: int, epoch_rng: dict | None, resume_rng: dict | None
    ) -> Iterator[tuple[int, Any]]:
        return replayed(data.train, start, epoch_rng, resume_rng)

    def prepare(self, batch: Any, epoch: int, index: int) -> Any:
        x, y = batch
        recipe = self.config.recipe
        if self.mixing.enabled:  # seeded by (seed, epoch, rank, batch): a resumed epoch mixes alike
            x, y = self.mixing(x, y, seed_for(recipe.seed, epoch, self.rank, MIXING_STREAM, index))
        if uses_channels_last(recipe.channels_last, self.device):
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def losses(self, forward: nn.Module, batch: Any) -> StepLosses:
        x, y = batch
        logits = forward(x)
        return StepLosses(self.criterion(logits, y), y.shape[0], errors=error_count(logits, y))

    def evaluate(self, model: nn.Module, data: DataBundle, last: bool) -> dict[str, Any]:
        recipe = self.config.recipe
        splits = ("val", "test") if last or not recipe.final_test_only else ("val",)
        return evaluate_splits(model, data, recipe.tta, self.device, splits)

    def monitored_error(self, row: dict[str, Any]) -> float | None:
        return row.get("val_error", row.get("test_error"))

    def update_best(self, state: TrainState, row: dict[str, Any]) -> None:
        """Best by validation error; by test error when there is no validation split."""
        split = "val" if row.get("val_error") is not None else "test"
        error = row.get(f"{split}_error")
        row["is_best"] = error is not None and (not state.best or error <= state.best["error"])
        if row["is_best"]:
            state.best = {"error": error, "epoch": state.epoch, "split": split}

    def epoch_line(self, row: dict[str, Any]) -> str:
        parts = [*epoch_parts(row), f"train err {row['train_error']:.2f}%"]
        for split in ("val", "test"):
            if row.get(f"{split}_error") is not None:
                parts.append(f"{split} err {row[f'{split}_error']:.2f}%")
        parts += [f"{row['images_per_s']:.0f} img/s", f"{duration(row['elapsed_s'])}"]
        return " | ".join(parts)

    def summary(
        self, state: TrainState, rows: list[dict[str, Any]], folder: runs.RunFolder
    ) -> dict[str, Any]:
        result = run_summary(state, folder.path)
        for split in ("val", "test"):
            evaluated = [r for r in rows if r.get(f"{split}_error") is not None]
            if evaluated:
                best = min(evaluated, key=lambda r: r[f"{split}_error"])
                result[f"final_{split}_error"] = evaluated[-1][f"{split}_error"]
                result[f"best_{split}_error"] = best[f"{split}_error"]
                result[f"best_{split}_epoch"] = best["epoch"]
        return result

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        return summary_lines(result)

    def plot(self, folder: runs.RunFolder) -> None:
        # training error from the logged steps (dense, as Fig. 6), test error per epoch
        steps = [{"iteration": s["iteration"], "train_error": s["error"]} for s in folder.steps()]
        epochs = folder.metrics()
        rows = steps or [{"iteration": r["iteration"], "train_error": r["train_error"]} for r in epochs]
        rows = rows + [{"iteration": r["iteration"], "test_error": r["test_error"]} for r in epochs]
        recipe = self.config.recipe
        training_curves(
            {recipe.model: rows},
            folder.curves_path,
            title=f"{recipe.model} on {recipe.dataset} ({recipe.name})",
        )


def train(config: TrainConfig, resumed: runs.Resumed | None = None) -> dict[str, Any]:
    """Train as ``config`` says; returns the summary (errors, time, throughput, output folder).
    ``resumed``: the checkpoint of ``config.run.resume`` when the caller has read it already."""
    return run(Classification(config), resumed)


def evaluate_splits(
    model: nn.Module,
    data: DataBundle,
    tta: str,
    device: torch.device,
    splits: tuple[str, ...] = ("val", "test"),
) -> dict[str, float]:
    """Validation and test error (%) and loss, reduced over processes as counts."""
    out = {}
    for split in splits:
        loader = getattr(data, split)
        if loader is None:
            continue
        m = evaluate(model, loader, tta=tta)
        loss_sum, errors, images = distributed.sum_counts(
            [m["loss"] * m["images"], m["top1_error"] * m["images"] / 100, m["images"]], device
        )
        out[f"{split}_loss"] = loss_sum / images
        out[f"{split}_error"] = 100 * round(errors) / images
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The final summary: best and final errors, time, throughput, where things are."""
    lines = [finished_line(result, ".0f")]
    for split in ("val", "test"):
        final = result.get(f"final_{split}_error")
        if final is not None:
            best = result.get(f"best_{split}_error")
            lines.append(
                f"{split} error: final {final:.2f}% (accuracy {100 - final:.2f}%), best {best:.2f}% "
                f"(epoch {result.get(f'best_{split}_epoch')})"
            )
    if result.get("output"):
        lines.append(f"outputs in {result['output']}")
    return lines
