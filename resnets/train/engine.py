"""The training loop: ``train(config) -> summary``.

One process, or one of several under ``torchrun`` (DDP). Everything that changes the weights comes
from ``config.recipe``; ``config.run`` says where to write and how to show progress. ``_train``
reads top to bottom: set-up, then the epoch loop with the step in it, then the summary. What only
matters when something goes wrong (signals, a diverging loss, out of memory) sits in small helpers
below it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .. import runs
from ..data import DataBundle
from ..data.mixing import MIXING_STREAM, MixupCutmix
from ..data.splits import seed_for
from ..errors import ConfigError, ResnetsError, os_error
from ..evaluate import evaluate
from ..io import link_atomic, write_json, write_text
from ..plots import training_curves
from ..runtime import autocast, autocast_dtype, precision_name
from ..weights import save_weights
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
from .losses import error_count, make_criterion
from .recipes import TrainConfig
from .schedule import LRSchedule
from .state import (
    EpochCounts,
    Training,
    TrainingDiverged,
    TrainState,
    check_finite,
    check_resume_entries,
    check_same_model,
    make_checkpoint,
    restore,
    rng_state,
    set_rng_state,
    weights_digest,
)
from .tensorboard import EPOCH_TAGS, STEP_TAGS, TensorBoardLog, check_available


def train(config: TrainConfig, resumed: runs.Resumed | None = None) -> dict[str, Any]:
    """Train as ``config`` says; returns the summary (errors, time, throughput, output folder).
    ``resumed``: the checkpoint of ``config.run.resume`` when the caller has read it already.

    The process that writes (rank 0) holds the run folder's lock from before any data is read until
    the run ends, so that a second writer, or an output that cannot be written, fails at once."""
    check_names(config.recipe)  # unknown model/dataset: an error before any work starts
    if config.run.tensorboard:
        check_available()
    if not config.run.output:  # one folder name, chosen once
        config = dataclasses.replace(config, run=dataclasses.replace(config.run,
                                                                     output=default_output(config.recipe)))
    writer = distributed.env_info().is_main
    with runs.RunFolder(config.run.output).lock() if writer else contextlib.nullcontext():
        if writer:  # the other ranks write nothing, and would find rank 0's lock held
            check_output(config)
        info, device = distributed.setup(config.run.device)
        try:
            with StopRequest().installed() as stop:
                result = _train(config, info, device, stop, resumed)
        finally:
            distributed.cleanup()
    if stop.signum is not None and not result.get("interrupted"):
        # the signal came while the last epoch was evaluated or saved: the run is complete, and the
        # caller (the command line, a reproduction's next run) still stops, as it was asked to
        signal.raise_signal(stop.signum)
    return result


def _train(config: TrainConfig, info: distributed.DistInfo, device: torch.device,
           stop: StopRequest, resumed: runs.Resumed | None) -> dict[str, Any]:
    recipe, run = config.recipe, config.run
    progress = Progress(run.progress, enabled=info.is_main)
    resume_path, resume = None, None
    folder = runs.RunFolder(run.output or default_output(recipe))
    if run.resume:
        resumed = resumed or runs.read_for_resume(run.resume)
        for warning in resumed.warnings:
            progress.message(warning)
        resume_path, resume, damaged = resumed.path, resumed.checkpoint, resumed.damaged
        check_resume_entries(resume, resume_path)
        check_same_model(resume, resume_path, recipe.model, recipe.model_options)
        folder.metrics()  # the logs that resuming trims: validated before anything is written
        if info.is_main:  # out of the rotation, so that no damaged file ever moves over a good one
            for moved in folder.set_aside(damaged):
                progress.message(f"set the damaged checkpoint aside as {moved}")

    # --- set-up: data, model, optimiser, schedule, precision, EMA, and where a resumed run was
    configure_determinism(recipe.deterministic, device)
    seed_everything(recipe.seed)
    data = build_data_bundle(recipe, run, device, info)
    model = build_model(recipe, run, data, device, progress.message)
    if info.enabled and recipe.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    seed_everything(recipe.seed + info.rank)  # different augmentation per process, same init weights

    accum = recipe.grad_accum_steps  # micro-batches per update; the loader yields micro-batches
    steps_per_epoch = len(data.train) // accum
    if steps_per_epoch == 0:
        raise ConfigError(f"batch size {recipe.batch_size} is larger than the training set; "
                          "lower --batch-size")
    total_steps = recipe.iterations or recipe.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = build_optimizer(model, recipe, device)
    schedule = LRSchedule(optimizer, recipe, steps_per_epoch, total_steps, depth=weighted_depth(model))
    amp_dtype = autocast_dtype(recipe.amp, recipe.amp_dtype, device)
    # GradScaler only for float16 on CUDA: bfloat16 has float32's range and needs no loss scaling
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16 and device.type == "cuda")
    training = Training(model, optimizer, schedule, scaler, build_ema(model, recipe))
    criterion = make_criterion(recipe.bce_loss, recipe.label_smoothing, recipe.bce_target_thresh)
    mixing = MixupCutmix(data.num_classes, recipe.mixup, recipe.cutmix, recipe.mixup_prob,
                         recipe.mixup_switch_prob)
    state = TrainState()
    if resume is not None:
        state = restore(resume, resume_path, training)
        progress.message(f"resumed from {resume_path} at epoch {state.epoch}, iteration {state.iteration}")

    forward: nn.Module = model  # what the step runs: the model, wrapped for DDP and/or compiled
    if info.enabled:
        forward = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if recipe.compile:
        forward = torch.compile(forward, mode=recipe.compile_mode)

    precision = precision_name(amp_dtype)
    log = board = None
    if info.is_main:
        folder.path.mkdir(parents=True, exist_ok=True)
        write_text(folder.config_path, config.to_json() + "\n")
        log = MetricsLog(folder, resume_epoch=state.epoch if resume else None,
                         resume_iteration=state.iteration if resume else None)
        if run.tensorboard:
            board = TensorBoardLog(folder.path, purge_step=state.iteration + 1 if resume else None)
        progress.message(f"training {recipe.model} on {recipe.dataset} with recipe {recipe.name}: "
                         f"{epochs} epochs of {steps_per_epoch} iterations, {device} ({precision}), "
                         f"world size {info.world_size} -> {folder.path}")

    def save(epoch_rng: dict | None, metrics: dict | None) -> None:
        if info.is_main:
            ckpt = make_checkpoint(state, training, config, data.meta(), epoch_rng, metrics)
            try:
                save_checkpoint(folder, ckpt, run.keep_last)
            except OSError as exc:  # a full disk: nothing was replaced, the previous checkpoint stays
                if not folder.checkpoints():  # the first one: there is nothing to resume from
                    raise os_error(exc, "write the checkpoint", "no checkpoint was saved yet: free some "
                                   "space, then run the same command again (it starts over)") from None
                raise os_error(exc, "write the checkpoint", "nothing was lost (the previous checkpoint is "
                               f"kept): free some space, then continue with: resnets train --resume "
                               f"{folder.path}") from None

    # --- the epoch loop
    # The step never waits for the device: loss, error and non-finite counts stay on it, and the
    # host reads them (with the stop request, in one collective under DDP) every log_every steps.
    stopping = False  # under DDP: some process was signalled, seen at the last read
    start = time.perf_counter() - state.elapsed_s
    if resume is not None and (state.epoch >= epochs or state.iteration >= total_steps):
        progress.message(f"the run already finished ({state.iteration} of {total_steps} iterations); "
                         f"give more --epochs or --iterations to train longer")
    while state.epoch < epochs and state.iteration < total_steps:
        data.train.set_epoch(state.epoch)  # the order and augmentation follow (seed, epoch) only
        resume_rng = None
        if state.batch_in_epoch:  # resuming an interrupted epoch: replay its data order up to there
            epoch_rng, resume_rng = resume["epoch_rng"], resume["rng"]
            set_rng_state(epoch_rng)
        else:
            epoch_rng = rng_state()
        set_train_mode(model, run.freeze_bn)
        # loss sum, errors, images, non-finite losses of the epoch and of the logging window; an epoch
        # resumed in the middle starts from the (global) counts saved with it
        counted = state.partial if info.is_main else EpochCounts()
        sums = torch.tensor([counted.loss_sum, counted.errors, counted.images, 0.0], dtype=torch.float64,
                            device=device)
        window = torch.zeros(4, dtype=torch.float64, device=device)
        epoch_start = window_start = time.perf_counter()
        batches = progress.epoch(data.train, state.epoch + 1, epochs, total=accum * steps_per_epoch)
        for index, (x, y) in enumerate(batches):
            if index < state.batch_in_epoch:  # replayed: same augmentation RNG draws, no step
                if index == state.batch_in_epoch - 1 and resume_rng is not None:
                    set_rng_state(resume_rng)
                continue
            micro = index % accum  # an update every accum micro-batches; stops fall between updates
            if micro == 0:
                if state.iteration >= total_steps or index + accum > accum * steps_per_epoch:
                    break
                if stopping or (not info.enabled and stop.signum is not None):
                    state.stop_signal = stop.signum or signal.SIGTERM  # another process was signalled
                    state.batch_in_epoch = index
                    break

            # the step: forward, loss, backward (each micro-batch), then the update
            if mixing.enabled:  # seeded by (seed, epoch, rank, batch): a resumed epoch mixes alike
                x, y = mixing(x, y, seed_for(recipe.seed, state.epoch, info.rank, MIXING_STREAM, index))
            if recipe.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            last_micro = micro == accum - 1
            with explained_failures(device, x.shape[0]), no_sync(forward, info.enabled and not last_micro):
                with autocast(device, amp_dtype):
                    logits = forward(x)
                    loss = criterion(logits, y)
                scaler.scale(loss / accum if accum > 1 else loss).backward()
                if last_micro:
                    clip_gradients(model, optimizer, scaler, recipe.clip_grad, recipe.clip_mode)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)

            errors, n = error_count(logits, y), y.shape[0]
            loss_value = loss.detach().double()
            step = torch.stack((loss_value * n, errors.double(), torch.full_like(loss_value, n),
                                (~torch.isfinite(loss_value)).double()))
            sums += step
            window += step
            if not last_micro:
                continue
            if training.ema is not None and (state.iteration + 1) % recipe.ema_every == 0:
                training.ema.update_parameters(model)
            state.iteration += 1
            # the paper's error-based warm-up (Sec. 4.2) needs each step's errors: a host read per
            # step while it lasts (about 400 iterations of the 110+-layer nets), none otherwise
            message = schedule.step_iteration(int(errors) if schedule.needs_errors else 0, n)
            if message:
                progress.message(message)
            if state.iteration % run.log_every == 0:
                loss_sum, err, count, nonfinite, stop_flags = read_counts(window, stop, device)
                check_finite_loss(nonfinite, state.iteration, run.log_every, schedule.lr)
                stopping = stop_flags > 0
                record = {"iteration": state.iteration,
                          "epoch": state.epoch + (index + 1) / (accum * steps_per_epoch),
                          "loss": loss_sum / count, "error": 100 * err / count, "lr": schedule.lr,
                          "images_per_s": count / (time.perf_counter() - window_start)}
                if log is not None:
                    log.log_step(record)
                if board is not None:
                    board.log(STEP_TAGS, record, state.iteration)
                progress.update(loss=record["loss"], err=record["error"], lr=record["lr"])
                window.zero_()
                window_start = time.perf_counter()

        loss_sum, errors, images, nonfinite, stop_flags = read_counts(sums, stop, device)
        check_finite_loss(nonfinite, state.iteration, run.log_every, schedule.lr)
        stopping = stopping or stop_flags > 0
        epoch_time = time.perf_counter() - epoch_start + state.partial.seconds
        if state.stop_signal is not None:  # interrupted: save where we are and leave
            state.partial = EpochCounts(loss_sum, errors, images, epoch_time)
            state.elapsed_s = time.perf_counter() - start
            save(epoch_rng, None)
            distributed.barrier()
            progress.message(f"{signal.Signals(state.stop_signal).name}: saved a resumable checkpoint at "
                             f"iteration {state.iteration} in {folder.path}; continue with: "
                             f"resnets train --resume {folder.path}")
            return {"interrupted": state.stop_signal, "output": str(folder.path),
                    "iteration": state.iteration}

        # --- end of epoch: metrics, evaluation, schedule, checkpoint
        state.epoch += 1
        state.batch_in_epoch, state.partial = 0, EpochCounts()
        state.train_images += int(images)
        state.train_time_s += epoch_time
        row = {"epoch": state.epoch, "iteration": state.iteration, "lr": schedule.lr,
               "train_loss": loss_sum / max(images, 1), "train_error": 100 * errors / max(images, 1),
               "images_per_s": images / max(epoch_time, 1e-9), "epoch_time_s": epoch_time}
        last = state.epoch >= epochs or state.iteration >= total_steps
        if state.epoch % recipe.eval_every == 0 or last:
            splits = ("val", "test") if last or not recipe.final_test_only else ("val",)
            row.update(evaluate_splits(training.evaluated, data, recipe.tta, device, amp_dtype, splits))
        schedule.step_epoch(row.get("val_error", row.get("test_error")))
        update_best(state, row)
        state.elapsed_s = row["elapsed_s"] = time.perf_counter() - start
        if log is not None:
            log.log_epoch(row)
        if board is not None:
            board.log(EPOCH_TAGS, row, state.iteration)
        progress.epoch_line(row)
        save(None, row)

    # --- the summary
    result = final_result(state, folder.metrics() if info.is_main else [], folder)
    result["world_size"] = info.world_size
    result["precision"] = precision  # what amp resolved to on this device ("auto" differs by machine)
    if info.enabled:  # DDP keeps replicas equal; check it, since a silent divergence wastes a run
        digests = distributed.gather_objects(weights_digest(model))
        result["ranks_in_sync"] = len(set(digests)) == 1
        if not result["ranks_in_sync"]:
            progress.message(f"warning: the {info.world_size} processes ended with different weights")
    if board is not None:
        board.close()
    if info.is_main:
        finish_run(folder, training, config, data, result)
        for line in summary_lines(result):
            progress.message(line)
    distributed.barrier()
    return result


def check_output(config: TrainConfig) -> None:
    """A run writes only into its own folder: a new run not into a folder holding another run, a
    resumed one only into the run it resumes (or a folder without any run)."""
    run = config.run
    if not run.output:
        return
    folder = runs.RunFolder(run.output)
    written = [folder.path / name for name in runs.RUN_FILES] + folder.checkpoints()
    if run.init_weights and any(_same_folder(run.init_weights, path) for path in written if path.exists()):
        raise ConfigError(f"--init-weights {run.init_weights} is a file this run would write over in "
                          f"{run.output}; copy it elsewhere or choose another --output")
    if not run.resume:
        if folder.holds_results():  # a checkpoint, best.pt, the weights or the summary: another run's
            found = [p.name for p in folder.checkpoints()]
            found += [name for name in runs.RESULTS if (folder.path / name).exists()]
            resume = (f"continue it with --resume {run.output}, " if folder.checkpoints() else "")
            raise ConfigError(f"{run.output} already holds a run ({', '.join(sorted(set(found)))}); "
                              f"{resume}choose another --output, or move those files away")
        runs.check_output(folder.path, "--output", folder=True, own_run=folder.path)
        return
    runs.check_output(folder.path, "--output", folder=True, own_run=folder.path)
    source = runs.run_folder_of(run.resume)
    if not _same_folder(source, folder.path) and folder.holds_run():
        raise ConfigError(f"--resume {run.resume} continues the run in {source}, but --output "
                          f"{run.output} holds another run; drop --output to continue in {source}, or give "
                          f"an empty folder")


def _same_folder(a: Any, b: Any) -> bool:  # or the same file
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def evaluate_splits(model: nn.Module, data: DataBundle, tta: str, device: torch.device,
                    amp_dtype: torch.dtype | None,
                    splits: tuple[str, ...] = ("val", "test")) -> dict[str, float]:
    """Validation and test error (%) and loss, reduced over processes as counts."""
    out = {}
    for split in splits:
        loader = getattr(data, split)
        if loader is None:
            continue
        with autocast(device, amp_dtype):
            m = evaluate(model, loader, tta=tta)
        loss_sum, errors, images = distributed.sum_counts(
            [m["loss"] * m["images"], m["top1_error"] * m["images"] / 100, m["images"]], device)
        out[f"{split}_loss"] = loss_sum / images
        out[f"{split}_error"] = 100 * round(errors) / images
    return out


def update_best(state: TrainState, row: dict[str, Any]) -> None:
    """Best by validation error; by test error when there is no validation split."""
    split = "val" if row.get("val_error") is not None else "test"
    error = row.get(f"{split}_error")
    row["is_best"] = error is not None and (not state.best or error <= state.best["error"])
    if row["is_best"]:
        state.best = {"error": error, "epoch": state.epoch, "split": split}


def save_checkpoint(folder: runs.RunFolder, ckpt: dict[str, Any], keep: int) -> None:
    """Rotate in a new ``last.pt`` (finite weights only); link ``best.pt`` to it on a best epoch."""
    check_finite(ckpt, folder.path)
    folder.save_checkpoint(ckpt, keep)
    if ckpt["metrics"] is not None and ckpt["metrics"].get("is_best"):
        link_atomic(folder.last, folder.best)


def finish_run(folder: runs.RunFolder, training: Training, config: TrainConfig, data: DataBundle,
               result: dict[str, Any]) -> None:
    """model.safetensors (the evaluated weights), curves.png, then summary.json (marks the run done)."""
    save_weights(training.evaluated, folder.weights_path, metadata={"data": data.meta()})
    if config.run.plot:
        # training error from the logged steps (dense, as Fig. 6), test error per epoch
        steps = [{"iteration": s["iteration"], "train_error": s["error"]} for s in folder.steps()]
        epochs = folder.metrics()
        rows = steps or [{"iteration": r["iteration"], "train_error": r["train_error"]} for r in epochs]
        rows = rows + [{"iteration": r["iteration"], "test_error": r["test_error"]} for r in epochs]
        recipe = config.recipe
        training_curves({recipe.model: rows}, folder.curves_path,
                        title=f"{recipe.model} on {recipe.dataset} ({recipe.name})")
    write_json(folder.summary_path, result)


def final_result(state: TrainState, rows: list[dict[str, Any]], folder: runs.RunFolder) -> dict[str, Any]:
    """The summary from the epochs' metrics rows (empty on processes other than rank 0)."""
    result: dict[str, Any] = {"output": str(folder.path), "epochs_done": state.epoch,
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


def no_sync(forward: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` on micro-batches before the last of an update: their gradients add up
    locally and are all-reduced once, with the last one's backward."""
    module = getattr(forward, "_orig_mod", forward)  # a compiled DDP module
    return module.no_sync() if skip and hasattr(module, "no_sync") else contextlib.nullcontext()


def clip_gradients(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   limit: float | None, mode: str) -> None:
    """Clip the gradients (their global 2-norm, or each value) to ``limit`` before the update; with
    float16 loss scaling they are unscaled first, so the limit is in the gradients' own units."""
    if limit is None:
        return
    scaler.unscale_(optimizer)
    if mode == "value":
        nn.utils.clip_grad_value_(model.parameters(), limit)
    else:
        nn.utils.clip_grad_norm_(model.parameters(), limit)


# --- when something goes wrong --------------------------------------------------------------------

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


def read_counts(counts: torch.Tensor, stop: StopRequest, device: torch.device) -> list[float]:
    """The host read of a logging interval: ``counts`` summed over processes, then whether any
    process was asked to stop, in one collective (this is where the host waits for the device)."""
    flag = torch.full((1,), 1.0 if stop.signum is not None else 0.0, dtype=counts.dtype, device=device)
    return distributed.sum_tensor(torch.cat((counts, flag))).tolist()


def check_finite_loss(nonfinite: float, iteration: int, log_every: int, lr: float) -> None:
    """Stop once a non-finite loss has been seen; checkpoints are only written after this check,
    so none holds the weights it produced."""
    if nonfinite:
        raise TrainingDiverged(
            f"the loss is not finite (NaN or inf) in {int(nonfinite)} of the steps up to iteration "
            f"{iteration} (checked every {log_every} steps; lr {lr:g}); training stopped and no "
            f"checkpoint was written with these weights. Try a lower --lr, a longer warm-up "
            f"(--set warmup=...), or --amp-dtype bfloat16.")


@contextlib.contextmanager
def explained_failures(device: torch.device, batch: int) -> Iterator[None]:
    """Out of memory and torch.compile failures as one line that says what to change."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise ResnetsError(f"out of memory on {device} with {batch} images per step; use a smaller "
                           f"--batch-size (e.g. {max(1, batch // 2)} per process), --amp, or a smaller "
                           f"model") from None
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
            raise ResnetsError(f"out of memory on {device} with {batch} images per step; use a "
                               f"smaller --batch-size (e.g. {max(1, batch // 2)})") from None
        if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ResnetsError(f"torch.compile failed ({first}); train without --compile (on CPU it "
                               f"needs a working C++ compiler, on CUDA Triton)") from None
        raise
