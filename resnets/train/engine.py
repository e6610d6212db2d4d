"""The training loop: ``train(config) -> result``, built of small functions.

One process, or one of several under ``torchrun`` (DDP). Everything that changes the weights
comes from ``config.recipe``; ``config.run`` says where to write and how to show progress.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ResnetsError
from ..runtime import autocast, autocast_dtype, precision_name
from . import checkpoint as ckpt_io
from . import distributed
from .build import (
    build_data_bundle,
    build_ema,
    build_model,
    build_optimizer,
    check_names,
    configure_determinism,
    default_output,
    seed_everything,
    set_train_mode,
    weighted_depth,
)
from .logging import MetricsLog, Progress, summary_lines
from .recipes import TrainConfig
from .runstate import (
    Saver,
    TrainingDiverged,
    TrainState,
    apply_loader_state,
    check_same_model,
    loader_state,
    restore,
    weights_digest,
)
from .schedule import LRSchedule


@dataclass
class Loop:
    """What one epoch needs; built once by ``train``."""

    model: nn.Module  # what forward runs through (DDP and/or compiled)
    raw: nn.Module  # the plain model (its state_dict has no prefixes)
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    ema: Any
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    label_smoothing: float
    freeze_bn: bool
    max_iterations: int
    log_every: int
    stop: StopRequest
    log: MetricsLog | None
    progress: Progress


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a resumable checkpoint at the next step and exits.

    A second Ctrl-C interrupts at once (KeyboardInterrupt), for when saving itself hangs.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train as ``config`` says; returns the summary (errors, time, throughput, output folder)."""
    check_names(config.recipe)  # unknown model/dataset: an error before any work starts
    check_output(config)
    info, device = distributed.setup(config.run.device)
    try:
        with StopRequest().installed() as stop:
            return _train(config, info, device, stop)
    finally:
        distributed.cleanup()


def check_output(config: TrainConfig) -> None:
    """A new run must not silently mix its logs and checkpoints with an earlier run's."""
    run = config.run
    if run.output and not run.resume and (Path(run.output) / ckpt_io.LAST).exists():
        raise ConfigError(f"{run.output} already holds a run (last.pt); continue it with "
                          f"--resume {run.output} or choose another --output")


def _train(config: TrainConfig, info: distributed.DistInfo, device: torch.device,
           stop: StopRequest) -> dict[str, Any]:
    recipe, run = config.recipe, config.run
    progress = Progress(run.progress, enabled=info.is_main)
    resume_path, resume = None, None
    if run.resume:
        resume_path, resume = ckpt_io.load_for_resume(run.resume, log=progress.message)
        check_same_model(resume, resume_path, recipe.model, recipe.model_kwargs)
    output = Path(run.output or default_output(recipe))

    configure_determinism(recipe.deterministic, device)
    seed_everything(recipe.seed)
    data = build_data_bundle(recipe, run, device, info)
    model = build_model(recipe, run, data, device, progress.message)
    if info.enabled and recipe.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    seed_everything(recipe.seed + info.rank)  # different augmentation per process, same init weights

    steps_per_epoch = len(data.train)
    if steps_per_epoch == 0:
        raise ConfigError(f"batch size {recipe.batch_size} is larger than the training set; "
                          "lower --batch-size")
    total_steps = recipe.iterations or recipe.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = build_optimizer(model, recipe)
    schedule = LRSchedule(optimizer, recipe, steps_per_epoch, total_steps, depth=weighted_depth(model))
    amp_dtype = autocast_dtype(recipe.amp, recipe.amp_dtype, device)
    # GradScaler only for float16 on CUDA: bfloat16 has float32's range and needs no loss scaling
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16 and device.type == "cuda")
    ema = build_ema(model, recipe)
    state = TrainState()
    if resume is not None:
        state = restore(resume, resume_path, model, optimizer, schedule, scaler, ema, data)
        progress.message(f"resumed from {resume_path} at epoch {state.epoch}, iteration {state.iteration}")

    forward_model: nn.Module = model
    if info.enabled:
        forward_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if recipe.compile:
        forward_model = torch.compile(forward_model)

    precision = precision_name(amp_dtype)
    log = None
    if info.is_main:
        output.mkdir(parents=True, exist_ok=True)
        ckpt_io.write_atomic(output / "config.json", lambda tmp: tmp.write_text(config.to_json() + "\n"))
        log = MetricsLog(output, resume_epoch=state.epoch if resume else None,
                         resume_iteration=state.iteration if resume else None)
        progress.message(f"training {recipe.model} on {recipe.dataset} with recipe {recipe.name}: "
                         f"{epochs} epochs of {steps_per_epoch} iterations, {device} ({precision}), "
                         f"world size {info.world_size} -> {output}")
    loop = Loop(model=forward_model, raw=model, optimizer=optimizer, schedule=schedule, scaler=scaler,
                ema=ema, device=device, amp_dtype=amp_dtype, channels_last=recipe.channels_last,
                label_smoothing=recipe.label_smoothing, freeze_bn=run.freeze_bn, max_iterations=total_steps,
                log_every=run.log_every, stop=stop, log=log, progress=progress)
    saver = Saver(output, config, data, info.is_main, run.keep_last)

    start = time.perf_counter() - state.elapsed_s
    if resume is not None and (state.epoch >= epochs or state.iteration >= total_steps):
        progress.message(f"the run already finished ({state.iteration} of {total_steps} iterations); "
                         f"give more --epochs or --iterations to train longer")
    while state.epoch < epochs and state.iteration < total_steps:
        set_epoch(data, state.epoch)
        resume_rng = None
        if state.batch_in_epoch:  # resuming an interrupted epoch: replay its data order up to there
            epoch_rng, resume_rng = resume["epoch_rng"], resume["rng"]
            apply_loader_state(data, ckpt_io.set_rng_state(epoch_rng))
        else:
            epoch_rng = ckpt_io.rng_state(loader_state(data))
        t0 = time.perf_counter()
        counts = train_one_epoch(loop, data, state, epochs, resume_rng=resume_rng)
        epoch_time = time.perf_counter() - t0 + state.partial[3]
        if counts is None:  # interrupted: save where we are and leave
            state.partial[3] = epoch_time
            state.elapsed_s = time.perf_counter() - start
            saver.save(state, loop, epoch_rng=epoch_rng, metrics=None)
            distributed.barrier()
            name = signal.Signals(stop.signum).name
            progress.message(f"{name}: saved a resumable checkpoint at iteration {state.iteration} in "
                             f"{output}; continue with: resnets train --resume {output}")
            return {"interrupted": stop.signum, "output": str(output), "iteration": state.iteration}
        state.epoch += 1
        state.batch_in_epoch, state.partial = 0, [0.0] * 4
        state.train_images += int(counts["images"])
        state.train_time_s += epoch_time
        row = epoch_row(state, counts, epoch_time, loop, start)
        if state.epoch % recipe.eval_every == 0 or state.epoch >= epochs or state.iteration >= total_steps:
            row.update(evaluate_splits(loop, data, recipe.tta))
        schedule.step_epoch(row.get("val_error", row.get("test_error")))
        update_best(state, row)
        state.elapsed_s = row["elapsed_s"] = time.perf_counter() - start
        if log is not None:
            log.log_epoch(row)
        progress.epoch_line(row)
        saver.save(state, loop, epoch_rng=None, metrics=row)

    result = final_result(state, output, log)
    result["world_size"] = info.world_size
    result["precision"] = precision  # what amp resolved to on this device ("auto" differs by machine)
    if info.enabled:  # DDP keeps replicas equal; check it, since a silent divergence wastes a run
        digests = distributed.gather_objects(weights_digest(model))
        result["ranks_in_sync"] = len(set(digests)) == 1
        if not result["ranks_in_sync"]:
            progress.message(f"warning: the {info.world_size} processes ended with different weights")
    if info.is_main:
        saver.finish(loop, result)
        for line in summary_lines(result):
            progress.message(line)
    distributed.barrier()
    return result


def train_one_epoch(loop: Loop, data: Any, state: TrainState, epochs: int,
                    resume_rng: dict | None = None) -> dict[str, float] | None:
    """One pass over the training data; returns summed counts, or None when a stop was requested."""
    set_train_mode(loop.raw, loop.freeze_bn)
    # loss sum, errors, images; an epoch resumed in the middle starts from the (global) counts so far
    sums = torch.tensor(state.partial[:3] if distributed.env_info().is_main else [0.0] * 3,
                        dtype=torch.float64, device=loop.device)
    window = torch.zeros(3, dtype=torch.float64, device=loop.device)
    window_start = time.perf_counter()
    batches = loop.progress.epoch(data.train, state.epoch + 1, epochs, total=len(data.train))
    for index, (x, y) in enumerate(batches):
        if index < state.batch_in_epoch:
            if index == state.batch_in_epoch - 1 and resume_rng is not None:
                ckpt_io.set_rng_state(resume_rng)
            continue
        if state.iteration >= loop.max_iterations:
            break
        if distributed.any_flag(loop.stop.signum is not None, loop.device):
            loop.stop.signum = loop.stop.signum or signal.SIGTERM
            state.batch_in_epoch = index
            state.partial[:3] = distributed.sum_counts(sums.tolist(), loop.device)
            return None
        loss, errors = train_step(loop, x, y, state.iteration)
        n = y.shape[0]
        step = torch.tensor([float(loss) * n, float(errors), float(n)], dtype=torch.float64,
                            device=loop.device)
        sums += step
        window += step
        state.iteration += 1
        message = loop.schedule.step_iteration(int(errors), n)
        if message:
            loop.progress.message(message)
        if state.iteration % loop.log_every == 0:
            loss_sum, err, count = distributed.sum_counts(window.tolist(), loop.device)
            record = {"iteration": state.iteration, "epoch": state.epoch + (index + 1) / len(data.train),
                      "loss": loss_sum / count, "error": 100 * err / count, "lr": loop.schedule.lr,
                      "images_per_s": count / (time.perf_counter() - window_start)}
            if loop.log is not None:
                loop.log.log_step(record)
            loop.progress.update(loss=record["loss"], err=record["error"], lr=record["lr"])
            window.zero_()
            window_start = time.perf_counter()
    loss_sum, errors, images = distributed.sum_counts(sums.tolist(), loop.device)
    return {"loss_sum": loss_sum, "errors": errors, "images": images}


def train_step(loop: Loop, x: torch.Tensor, y: torch.Tensor,
               iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward, optimiser step, EMA update. Returns (loss, number of errors)."""
    if loop.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        with autocast(loop.device, loop.amp_dtype):
            logits = loop.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=loop.label_smoothing)
        if distributed.any_flag(not bool(torch.isfinite(loss)), loop.device):
            raise TrainingDiverged(
                f"the loss is {float(loss.detach())} at iteration {iteration + 1} "
                f"(lr {loop.schedule.lr:g}); training stopped and no checkpoint was written with these "
                f"weights. Try a lower --lr, a longer warm-up (--set warmup=...), or --amp-dtype bfloat16.")
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
    except torch.OutOfMemoryError:
        raise ResnetsError(f"out of memory on {loop.device} with {x.shape[0]} images per step; use a smaller "
                           f"--batch-size (e.g. {max(1, x.shape[0] // 2)} per process), --amp, or a smaller "
                           f"model") from None
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
            raise ResnetsError(f"out of memory on {loop.device} with {x.shape[0]} images per step; use a "
                               f"smaller --batch-size (e.g. {max(1, x.shape[0] // 2)})") from None
        if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ResnetsError(f"torch.compile failed ({first}); train without --compile (on CPU it "
                               f"needs a working C++ compiler, on CUDA Triton)") from None
        raise
    if loop.ema is not None:
        loop.ema.update_parameters(loop.raw)
    return loss.detach(), (logits.argmax(1) != y).sum()


def evaluate_splits(loop: Loop, data: Any, tta: str) -> dict[str, float]:
    """Validation and test error (%) and loss of the evaluated weights (EMA when enabled),
    reduced over processes as counts."""
    from ..evaluate import evaluate

    model = loop.ema.module if loop.ema is not None else loop.raw
    out = {}
    for split in ("val", "test"):
        loader = getattr(data, split, None)
        if loader is None:
            continue
        with autocast(loop.device, loop.amp_dtype):
            m = evaluate(model, loader, tta=tta)
        loss_sum, errors, images = distributed.sum_counts(
            [m["loss"] * m["images"], m["top1_error"] * m["images"] / 100, m["images"]], loop.device)
        out[f"{split}_loss"] = loss_sum / images
        out[f"{split}_error"] = 100 * round(errors) / images
    return out


def epoch_row(state: TrainState, counts: dict[str, float], epoch_time: float, loop: Loop,
              start: float) -> dict[str, Any]:
    images = max(counts["images"], 1)
    return {"epoch": state.epoch, "iteration": state.iteration, "lr": loop.schedule.lr,
            "train_loss": counts["loss_sum"] / images, "train_error": 100 * counts["errors"] / images,
            "images_per_s": counts["images"] / max(epoch_time, 1e-9), "epoch_time_s": epoch_time,
            "elapsed_s": time.perf_counter() - start}


def update_best(state: TrainState, row: dict[str, Any]) -> None:
    """Best by validation error; by test error when there is no validation split."""
    split = "val" if row.get("val_error") is not None else "test"
    error = row.get(f"{split}_error")
    row["is_best"] = error is not None and (not state.best or error <= state.best["error"])
    if row["is_best"]:
        state.best = {"error": error, "epoch": state.epoch, "split": split}


def final_result(state: TrainState, output: Path, log: MetricsLog | None) -> dict[str, Any]:
    from .logging import read_metrics

    rows = read_metrics(log.csv_path) if log is not None else []
    result: dict[str, Any] = {"output": str(output), "epochs_done": state.epoch,
                              "iterations": state.iteration, "elapsed_s": state.elapsed_s,
                              "images_per_s": state.train_images / max(state.train_time_s, 1e-9)}
    for split in ("val", "test"):
        evaluated = [r for r in rows if r.get(f"{split}_error") is not None]
        if evaluated:
            best = min(evaluated, key=lambda r: r[f"{split}_error"])
            result[f"final_{split}_error"] = evaluated[-1][f"{split}_error"]
            result[f"best_{split}_error"] = best[f"{split}_error"]
            result[f"best_{split}_epoch"] = best["epoch"]
    return result


def set_epoch(data: Any, epoch: int) -> None:
    """Reshuffle for ``epoch`` (the same order on every process, each taking its shard)."""
    for obj in (data, data.train):
        if callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)
            return
