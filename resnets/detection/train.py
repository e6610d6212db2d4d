"""The detection training loop: ``train_detector(DetectionConfig) -> summary``.

The classification loop's machinery, shared rather than copied: the run folder and its lock,
checkpoint rotation and ``best.pt`` (``train.engine.save_checkpoint``), the checkpoint format and exact
resume (``train.state``: ``make_checkpoint``, ``restore``, every RNG), ``MetricsLog`` / ``Progress``,
torchrun (``train.distributed``), signals (``StopRequest``), the non-finite loss check and the
out-of-memory explanations, and the optimiser and schedule builders. What is the detector's own:
the step (torchvision's detector returns its four losses: RPN objectness and box regression, the
region classifier and box regression; their sum is minimised, as in Faster R-CNN's approximate joint
training), and the evaluation (COCOeval's AP on the validation split instead of top-1 error).

The loop reads top to bottom as ``train.engine._train`` does: set-up, the epoch loop with the step in it,
the end of each epoch, the summary.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import runs
from ..data.images import set_max_image_pixels
from ..errors import CheckpointError, ConfigError, os_error
from ..io import write_json, write_text
from ..runtime import autocast, autocast_dtype, precision_name
from ..train import distributed
from ..train.build import build_optimizer, configure_determinism, seed_everything
from ..train.engine import (
    StopRequest,
    check_finite_loss,
    check_output,
    explained_failures,
    read_counts,
    save_checkpoint,
)
from ..train.logging import MetricsLog, Progress, _duration, _fmt
from ..train.recipes import RunOptions
from ..train.schedule import LRSchedule
from ..train.state import (
    EpochCounts,
    Training,
    TrainState,
    check_resume_entries,
    make_checkpoint,
    restore,
    weights_digest,
)
from ..weights import save_weights
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


class DetectionMetricsLog(MetricsLog):
    """``MetricsLog`` with the detector's columns (AP instead of error); trimming on resume is inherited."""

    def log_epoch(self, row: dict[str, Any]) -> None:
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=DETECTION_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in DETECTION_COLUMNS})


@dataclass
class DetectionData:
    train: DetectionLoader
    val: DetectionLoader | None
    meta: dict[str, Any]  # the checkpoint's ``data`` record


def build_detection_data(
    recipe: DetectionRecipe, run: RunOptions, info: distributed.DistInfo, device: torch.device
) -> DetectionData:
    """The training and validation splits of ``run.data_dir``, sharded for this process."""
    if not run.data_dir:
        raise ConfigError(
            "give the detection data folder (a COCO or VOC folder) with --data-dir DIR; "
            "`resnets detect make-data DIR` writes the Fashion-MNIST set"
        )
    if recipe.batch_size % info.world_size:
        raise ConfigError(f"batch size {recipe.batch_size} does not divide among {info.world_size} processes")
    set_max_image_pixels(run.max_image_pixels)
    train_set = open_detection_data(run.data_dir, recipe.train_split, strict=run.strict_data)
    train_set = train_set.subset(recipe.train_subset)
    val_set = None
    if recipe.eval_split:
        val_set = open_detection_data(
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
    differ = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in wanted.items() if k in saved and saved[k] != v]
    if differ:
        raise CheckpointError(
            f"{path} holds another detector ({'; '.join(differ[:4])}); resume with the "
            f"same detector options, or start a new run"
        )


def default_output(recipe: DetectionRecipe) -> str:
    return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-detect-{recipe.backbone}-{recipe.head}")


def train_detector(config: DetectionConfig, resumed: runs.Resumed | None = None) -> dict[str, Any]:
    """Train as ``config`` says; returns the summary (AP, time, throughput, output folder). Rank 0 holds
    the run folder's lock from before any data is read until the run ends."""
    if config.run.freeze_bn:
        raise ConfigError(
            "--freeze-bn is the classifiers' option; a detector's backbone BN is fixed by "
            "backbone_norm='frozen' (the default)"
        )
    if not config.run.output:
        config = dataclasses.replace(
            config, run=dataclasses.replace(config.run, output=default_output(config.recipe))
        )
    writer = distributed.env_info().is_main
    with runs.RunFolder(config.run.output).lock() if writer else nullcontext():
        if writer:  # the other ranks write nothing, and would find rank 0's lock held
            check_output(config)
        info, device = distributed.setup(config.run.device)
        try:
            with StopRequest().installed() as stop:
                return _train(config, info, device, stop, resumed)
        finally:
            distributed.cleanup()


def _train(
    config: DetectionConfig,
    info: distributed.DistInfo,
    device: torch.device,
    stop: StopRequest,
    resumed: runs.Resumed | None,
) -> dict[str, Any]:
    recipe, run = config.recipe, config.run
    progress = Progress(run.progress, enabled=info.is_main)
    folder = runs.RunFolder(run.output)
    resume_path, resume = None, None
    if run.resume:
        resumed = resumed or runs.read_for_resume(run.resume)
        for warning in resumed.warnings:
            progress.message(warning)
        resume_path, resume, damaged = resumed.path, resumed.checkpoint, resumed.damaged
        check_resume_entries(resume, resume_path)
        if (resume.get("config") or {}).get("task") != "detection":
            raise CheckpointError(
                f"{resume_path} is a classifier's checkpoint; continue it with `resnets train --resume`"
            )
        if info.is_main:
            for moved in folder.set_aside(damaged):
                progress.message(f"set the damaged checkpoint aside as {moved}")

    # --- set-up: data, detector, optimiser, schedule, precision, and where a resumed run was
    configure_determinism(recipe.deterministic, device)
    seed_everything(recipe.seed)
    data = build_detection_data(recipe, run, info, device)
    dataset = data.train.dataset
    if resume is not None:
        check_same_detector(resume, resume_path, recipe, dataset)
        detector = detector_from_spec(resume["model"])
    else:
        detector = make_detector(recipe, run, dataset, progress.message)
    detector = detector.to(device)
    seed_everything(recipe.seed + info.rank)  # the region sampling differs per process, not the weights

    steps_per_epoch = len(data.train)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch size {recipe.batch_size} is larger than the {len(dataset)} training images; "
            f"lower --batch-size"
        )
    total_steps = recipe.iterations or recipe.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = build_optimizer(detector, recipe, device)
    schedule = LRSchedule(optimizer, recipe, steps_per_epoch, total_steps)
    amp_dtype = autocast_dtype(recipe.amp, recipe.amp_dtype, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16 and device.type == "cuda")
    training = Training(detector, optimizer, schedule, scaler, None)
    state = TrainState()
    if resume is not None:
        state = restore(resume, resume_path, training)
        progress.message(f"resumed from {resume_path} at epoch {state.epoch}, iteration {state.iteration}")
    forward: nn.Module = detector
    if info.enabled:
        forward = nn.parallel.DistributedDataParallel(
            detector, device_ids=[device.index] if device.type == "cuda" else None
        )

    precision = precision_name(amp_dtype)
    log = None
    if info.is_main:
        folder.path.mkdir(parents=True, exist_ok=True)
        write_text(folder.config_path, config.to_json() + "\n")
        log = DetectionMetricsLog(
            folder,
            resume_epoch=state.epoch if resume else None,
            resume_iteration=state.iteration if resume else None,
        )
        progress.message(
            f"training a Faster R-CNN ({recipe.head}) on {recipe.backbone} with {dataset.num_classes} "
            f"classes from {run.data_dir}: {epochs} epochs of {steps_per_epoch} iterations, {device} "
            f"({precision}), world size {info.world_size} -> {folder.path}"
        )

    def save(metrics: dict | None) -> None:
        if info.is_main:
            ckpt = make_checkpoint(state, training, config, data.meta, None, metrics)
            try:
                save_checkpoint(folder, ckpt, run.keep_last)
            except OSError as exc:
                raise os_error(
                    exc,
                    "write the checkpoint",
                    "nothing was lost (the previous checkpoint is "
                    f"kept): free some space, then continue with: resnets detect train --resume "
                    f"{folder.path}",
                ) from None

    # --- the epoch loop (the host reads the device's counts every log_every steps only)
    stopping = False
    start = time.perf_counter() - state.elapsed_s
    if resume is not None and (state.epoch >= epochs or state.iteration >= total_steps):
        progress.message(
            f"the run already finished ({state.iteration} of {total_steps} iterations); "
            f"give more --epochs or --iterations to train longer"
        )
    while state.epoch < epochs and state.iteration < total_steps:
        data.train.set_epoch(
            state.epoch
        )  # order and flips from (seed, epoch): a mid-epoch resume skips ahead
        detector.train()
        counted = state.partial if info.is_main else EpochCounts()
        # epoch: loss sum, (no errors), images, non-finite losses; window: the same plus each loss's sum
        sums = torch.tensor([counted.loss_sum, 0.0, counted.images, 0.0], dtype=torch.float64, device=device)
        window = torch.zeros(4 + len(LOSSES), dtype=torch.float64, device=device)
        epoch_start = window_start = time.perf_counter()
        first = state.batch_in_epoch
        batches = progress.epoch(
            data.train.batches(start=first), state.epoch + 1, epochs, total=steps_per_epoch - first
        )
        for index, (images, targets) in enumerate(batches, start=first):
            if state.iteration >= total_steps:
                break
            if stopping or (not info.enabled and stop.signum is not None):
                state.stop_signal = stop.signum or signal.SIGTERM
                state.batch_in_epoch = index
                break

            # the step: the detector's four losses, their sum, backward, update
            with explained_failures(device, len(images)):
                with autocast(device, amp_dtype):
                    losses = forward(images, targets)
                    loss = sum(losses[name] for name in LOSSES)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            state.iteration += 1

            n = float(len(images))
            loss_value = loss.detach().double()
            step = torch.stack(
                (
                    loss_value * n,
                    torch.zeros_like(loss_value),
                    torch.full_like(loss_value, n),
                    (~torch.isfinite(loss_value)).double(),
                )
            )
            sums += step
            window += torch.cat((step, torch.stack([losses[name].detach().double() * n for name in LOSSES])))
            schedule.step_iteration()
            if state.iteration % run.log_every == 0:
                counts = read_counts(window, stop, device)
                loss_sum, _, count, nonfinite = counts[:4]
                check_finite_loss(nonfinite, state.iteration, run.log_every, schedule.lr)
                stopping = counts[-1] > 0
                record = {
                    "iteration": state.iteration,
                    "epoch": state.epoch + (index + 1) / steps_per_epoch,
                    "loss": loss_sum / count,
                    "lr": schedule.lr,
                    **{name: value / count for name, value in zip(LOSSES, counts[4:-1], strict=True)},
                    "images_per_s": count / (time.perf_counter() - window_start),
                }
                if log is not None:
                    log.log_step(record)
                progress.update(loss=record["loss"], lr=record["lr"])
                window.zero_()
                window_start = time.perf_counter()

        loss_sum, _, images_seen, nonfinite, stop_flags = read_counts(sums, stop, device)
        check_finite_loss(nonfinite, state.iteration, run.log_every, schedule.lr)
        stopping = stopping or stop_flags > 0
        epoch_time = time.perf_counter() - epoch_start + state.partial.seconds
        if state.stop_signal is not None:  # interrupted: save where we are and leave
            state.partial = EpochCounts(loss_sum, 0.0, images_seen, epoch_time)
            state.elapsed_s = time.perf_counter() - start
            save(None)
            distributed.barrier()
            progress.message(
                f"{signal.Signals(state.stop_signal).name}: saved a resumable checkpoint at "
                f"iteration {state.iteration} in {folder.path}; continue with: "
                f"resnets detect train --resume {folder.path}"
            )
            return {
                "interrupted": state.stop_signal,
                "output": str(folder.path),
                "iteration": state.iteration,
            }

        # --- end of epoch: metrics, evaluation (COCOeval on the validation split), schedule, checkpoint
        state.epoch += 1
        state.batch_in_epoch, state.partial = 0, EpochCounts()
        state.train_images += int(images_seen)
        state.train_time_s += epoch_time
        row: dict[str, Any] = {
            "epoch": state.epoch,
            "iteration": state.iteration,
            "lr": schedule.lr,
            "train_loss": loss_sum / max(images_seen, 1),
            "images_per_s": images_seen / max(epoch_time, 1e-9),
            "epoch_time_s": epoch_time,
        }
        last = state.epoch >= epochs or state.iteration >= total_steps
        if data.val is not None and (state.epoch % recipe.eval_every == 0 or last):
            with autocast(device, amp_dtype):
                metrics = evaluate_detector(detector, data.val)
            row.update(
                {
                    column: 100 * metrics[name] if metrics[name] >= 0 else None
                    for name, column in VAL_METRICS.items()
                }
            )
        schedule.step_epoch(None if row.get("val_ap") is None else 100 - row["val_ap"])
        row["is_best"] = row.get("val_ap") is not None and (
            not state.best or row["val_ap"] >= state.best["ap"]
        )
        if row["is_best"]:
            state.best = {"ap": row["val_ap"], "epoch": state.epoch, "split": "val"}
        state.elapsed_s = row["elapsed_s"] = time.perf_counter() - start
        if log is not None:
            log.log_epoch(row)
        progress.message(epoch_line(row))
        save(row)

    # --- the summary
    result = final_result(state, folder.metrics() if info.is_main else [], folder)
    result["world_size"], result["precision"] = info.world_size, precision
    if info.enabled:
        digests = distributed.gather_objects(weights_digest(detector))
        result["ranks_in_sync"] = len(set(digests)) == 1
    if info.is_main:
        save_weights(detector, folder.weights_path, metadata={"data": data.meta})
        if run.plot:
            detection_curves(
                folder.steps(),
                folder.metrics(),
                folder.curves_path,
                title=f"Faster R-CNN ({recipe.head}) on {recipe.backbone}",
            )
        write_json(folder.summary_path, result)  # last: marks the run finished
        for line in summary_lines(result):
            progress.message(line)
    distributed.barrier()
    return result


def epoch_line(row: dict[str, Any]) -> str:
    parts = [
        f"epoch {row['epoch']}",
        f"iter {row['iteration']}",
        f"lr {row['lr']:.4g}",
        f"loss {row['train_loss']:.4f}",
    ]
    if row.get("val_ap") is not None:
        parts.append(f"val AP {row['val_ap']:.1f} AP50 {row['val_ap50']:.1f}")
    parts += [f"{row['images_per_s']:.1f} img/s", _duration(row["elapsed_s"])]
    return " | ".join(parts)


def final_result(state: TrainState, rows: list[dict[str, Any]], folder: runs.RunFolder) -> dict[str, Any]:
    result: dict[str, Any] = {
        "task": "detection",
        "output": str(folder.path),
        "epochs_done": state.epoch,
        "iterations": state.iteration,
        "elapsed_s": state.elapsed_s,
        "images_per_s": state.train_images / max(state.train_time_s, 1e-9),
    }
    evaluated = [r for r in rows if r.get("val_ap") is not None]
    if evaluated:
        best = max(evaluated, key=lambda r: r["val_ap"])
        for key in VAL_METRICS.values():
            result[f"final_{key}"] = evaluated[-1].get(key)
        result["best_val_ap"], result["best_val_epoch"] = best["val_ap"], best["epoch"]
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        f"finished {result['epochs_done']} epochs ({result['iterations']} iterations) in "
        f"{_duration(result['elapsed_s'])}, {result['images_per_s']:.1f} train images/s"
    ]
    if result.get("final_val_ap") is not None:
        lines.append(
            f"val AP@[.5,.95] {result['final_val_ap']:.2f}, AP@.5 {result['final_val_ap50']:.2f} "
            f"(best AP {result['best_val_ap']:.2f} at epoch {result['best_val_epoch']})"
        )
    lines.append(f"outputs in {result['output']}")
    return lines
