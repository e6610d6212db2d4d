"""The training loop every task runs: ``run(task, config) -> summary``.

One process, or one of several under ``torchrun`` (DDP). A ``Task`` says what is the task's own: its
data, its model, the losses of a step, how it is evaluated, which result is better, its log columns and
summary lines; everything a run promises is here, once: the run folder's lock, checkpoint rotation,
exact resume (also from a SIGTERM in mid-epoch), one host read of the device's counts per logging
interval, DDP, the non-finite loss and out-of-memory explanations, TensorBoard, progress. Classification
(``train.engine``) and detection (``detection.train``) are the two tasks. ``_run`` reads top to bottom:
set-up, the epoch loop with the step in it, the end of each epoch, the summary; what only matters when
something goes wrong sits in small helpers below it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .. import runs
from ..errors import ConfigError, ResnetsError, os_error
from ..io import link_atomic, write_json, write_text
from ..runtime import (
    ExecutionPath,
    autocast,
    compile_module,
    execution_path,
    keep_freed_memory,
    precision_name,
)
from ..weights import save_weights
from . import distributed
from .build import build_optimizer, configure_determinism, seed_everything, weighted_depth
from .logging import MetricsLog, Progress
from .schedule import LRSchedule
from .state import (
    EpochCounts,
    Training,
    TrainingDiverged,
    TrainState,
    check_finite,
    check_resume_entries,
    make_checkpoint,
    restore,
    rng_state,
    set_rng_state,
    weights_digest,
)
from .tensorboard import EPOCH_TAGS, STEP_TAGS, TensorBoardLog, check_available


@dataclasses.dataclass
class StepLosses:
    """What one (micro-)batch's forward pass gives the loop: the loss to minimise, the images it saw,
    the top-1 errors (tasks that count them) and the loss's parts (tasks that log them)."""

    loss: torch.Tensor
    images: int
    errors: torch.Tensor | None = None
    parts: tuple[torch.Tensor, ...] = ()


class Task(ABC):
    """What a kind of training brings to the loop. ``config`` has ``recipe`` (what changes the
    weights: seed, batch, optimiser and schedule fields, amp) and ``run`` (``train.recipes.RunOptions``)."""

    command: str  # the command that continues a run: "resnets train"
    columns: list[str]  # metrics.csv's columns
    counts_errors: bool = False  # the step counts top-1 errors (train_error, the step records' error)
    part_names: tuple[str, ...] = ()  # the loss's parts, logged per step

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def check(self) -> None:
        """Before anything is locked or read: what the config asks for can be done."""

    @abstractmethod
    def default_output(self) -> str:
        """The run folder when --output is not given."""

    @abstractmethod
    def check_resume(self, ckpt: dict[str, Any], path: os.PathLike) -> None:
        """Before any work: ``ckpt`` is a checkpoint of this task's model."""

    @abstractmethod
    def build_data(self, info: distributed.DistInfo, device: torch.device) -> Any:
        """The data; its ``train`` loader has ``set_epoch`` and ``len``."""

    @abstractmethod
    def data_meta(self, data: Any) -> dict[str, Any]:
        """The checkpoint's and the weights' record of the data."""

    @abstractmethod
    def build_model(
        self, data: Any, device: torch.device, resumed: runs.Resumed | None, log: Any
    ) -> nn.Module:
        """The model on ``device``; a resumed run's weights are loaded later, by ``restore``."""

    def build_ema(self, model: nn.Module) -> AveragedModel | None:
        return None

    def execution_path(self, device: torch.device, images: int) -> ExecutionPath:
        """Precision, layout and compilation of a run of ``images`` training images on ``device``
        (``runtime.execution_path``); here the recipe's amp, NCHW and eager."""
        recipe = self.config.recipe
        return execution_path(recipe.amp, recipe.amp_dtype, False, False, device, images)

    def compile_mode(self) -> str:
        """torch.compile's mode, where the execution path compiles the step's forward."""
        return "default"

    def lr_factors(self) -> dict[str, float]:
        """Top-level modules that train at a multiple of the recipe's lr (``build_optimizer``); none here."""
        return {}

    @abstractmethod
    def describe(self, data: Any) -> str:
        """The first line's "training ... on ...", before the length, device and folder."""

    def train_mode(self, model: nn.Module) -> None:
        model.train()

    @abstractmethod
    def epoch_batches(
        self, data: Any, start: int, epoch_rng: dict | None, resume_rng: dict | None
    ) -> Iterator[tuple[int, Any]]:
        """``(index, batch)`` of the epoch from batch ``start`` on (a resumed epoch), in the order and
        with the augmentation the whole epoch would have had."""

    def prepare(self, batch: Any, epoch: int, index: int) -> Any:
        """The batch as the step takes it (outside autocast)."""
        return batch

    @abstractmethod
    def losses(self, forward: nn.Module, batch: Any) -> StepLosses:
        """The forward pass and its loss (under autocast)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: Any, last: bool) -> dict[str, Any]:
        """An evaluated epoch's columns (under autocast; every ``eval_every`` epochs and the last)."""

    @abstractmethod
    def monitored_error(self, row: dict[str, Any]) -> float | None:
        """What the plateau schedule watches (an error in %, lower is better), None: not evaluated."""

    @abstractmethod
    def update_best(self, state: TrainState, row: dict[str, Any]) -> None:
        """Set ``row["is_best"]`` (best.pt links to that epoch's checkpoint) and ``state.best``."""

    @abstractmethod
    def epoch_line(self, row: dict[str, Any]) -> str: ...

    @abstractmethod
    def summary(
        self, state: TrainState, rows: list[dict[str, Any]], folder: runs.RunFolder
    ) -> dict[str, Any]:
        """The summary from the epochs' metrics rows (empty on processes other than rank 0)."""

    @abstractmethod
    def summary_lines(self, result: dict[str, Any]) -> list[str]: ...

    @abstractmethod
    def plot(self, folder: runs.RunFolder) -> None:
        """curves.png from the run folder's logs."""


def run(task: Task, resumed: runs.Resumed | None = None) -> dict[str, Any]:
    """Train ``task`` as its config says; returns the summary. ``resumed``: the checkpoint of
    ``config.run.resume`` when the caller has read it already.

    The process that writes (rank 0) holds the run folder's lock from before any data is read until
    the run ends, so that a second writer, or an output that cannot be written, fails at once."""
    task.check()
    if task.config.run.tensorboard:
        check_available()
    if not task.config.run.output:  # one folder name, chosen once
        run_options = dataclasses.replace(task.config.run, output=task.default_output())
        task.config = dataclasses.replace(task.config, run=run_options)
    writer = distributed.env_info().is_main
    with runs.RunFolder(task.config.run.output).lock() if writer else contextlib.nullcontext():
        if writer:  # the other ranks write nothing, and would find rank 0's lock held
            check_output(task.config)
        info, device = distributed.setup(task.config.run.device)
        try:
            with StopRequest().installed() as stop:
                result = _run(task, info, device, stop, resumed)
        finally:
            distributed.cleanup()
    if stop.signum is not None and not result.get("interrupted"):
        # the signal came while the last epoch was evaluated or saved: the run is complete, and the
        # caller (the command line, a reproduction's next run) still stops, as it was asked to
        signal.raise_signal(stop.signum)
    return result


def _run(
    task: Task,
    info: distributed.DistInfo,
    device: torch.device,
    stop: StopRequest,
    resumed: runs.Resumed | None,
) -> dict[str, Any]:
    config = task.config
    recipe, run = config.recipe, config.run
    progress = Progress(run.progress, enabled=info.is_main)
    folder = runs.RunFolder(run.output)
    resume_path, resume = None, None
    if run.resume:
        resumed = resumed or runs.read_for_resume(run.resume)
        for warning in resumed.warnings:
            progress.message(warning)
        resume_path, resume = resumed.path, resumed.checkpoint
        check_resume_entries(resume, resume_path)
        task.check_resume(resume, resume_path)
        folder.metrics()  # the logs that resuming trims: validated before anything is written
        if info.is_main:  # out of the rotation, so that no damaged file ever moves over a good one
            for moved in folder.set_aside(resumed.damaged):
                progress.message(f"set the damaged checkpoint aside as {moved}")

    # --- set-up: data, model, optimiser, schedule, precision, EMA, and where a resumed run was
    configure_determinism(recipe.deterministic, device)
    seed_everything(recipe.seed)
    data = task.build_data(info, device)
    model = task.build_model(data, device, resumed if resume is not None else None, progress.message)
    seed_everything(recipe.seed + info.rank)  # different augmentation per process, same init weights

    accum = getattr(recipe, "grad_accum_steps", 1)  # micro-batches per update; the loader yields those
    steps_per_epoch = len(data.train) // accum
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch size {recipe.batch_size} is larger than the training set; lower --batch-size"
        )
    total_steps = recipe.iterations or recipe.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = build_optimizer(model, recipe, device, task.lr_factors())
    schedule = LRSchedule(optimizer, recipe, steps_per_epoch, total_steps, depth=weighted_depth(model))
    path = task.execution_path(device, total_steps * recipe.batch_size)
    if path.keeps_freed_memory:
        keep_freed_memory()
    amp_dtype = path.precision
    # GradScaler only for float16 on CUDA: bfloat16 has float32's range and needs no loss scaling
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16 and device.type == "cuda")
    training = Training(model, optimizer, schedule, scaler, task.build_ema(model))
    state = TrainState()
    if resume is not None:
        state = restore(resume, resume_path, training)
        progress.message(f"resumed from {resume_path} at epoch {state.epoch}, iteration {state.iteration}")

    forward: nn.Module = model  # what the step runs: the model, wrapped for DDP and/or compiled
    if info.enabled:
        forward = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if path.compile:
        if device.type == "cpu":  # inductor's C++ build warns "No CUDA runtime is found" on every CPU
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        forward = compile_module(forward, mode=task.compile_mode())

    log = board = None
    if info.is_main:
        folder.path.mkdir(parents=True, exist_ok=True)
        write_text(folder.config_path, config.to_json() + "\n")
        log = MetricsLog(
            folder,
            task.columns,
            resume_epoch=state.epoch if resume else None,
            resume_iteration=state.iteration if resume else None,
        )
        if run.tensorboard:
            board = TensorBoardLog(folder.path, purge_step=state.iteration + 1 if resume else None)
        progress.message(
            f"{task.describe(data)}: {epochs} epochs of {steps_per_epoch} iterations, {device} "
            f"({path.describe()}), world size {info.world_size} -> {folder.path}"
        )

    def save(epoch_rng: dict | None, metrics: dict | None) -> None:
        if info.is_main:
            ckpt = make_checkpoint(state, training, config, task.data_meta(data), epoch_rng, metrics)
            save_checkpoint(folder, ckpt, run.keep_last, task.command)

    # --- the epoch loop
    # The step never waits for the device: loss, error and non-finite counts stay on it, and the
    # host reads them (with the stop request, in one collective under DDP) every log_every steps.
    stopping = False  # under DDP: some process was signalled, seen at the last read
    start = time.perf_counter() - state.elapsed_s
    if resume is not None and (state.epoch >= epochs or state.iteration >= total_steps):
        progress.message(
            f"the run already finished ({state.iteration} of {total_steps} iterations); "
            f"give more --epochs or --iterations to train longer"
        )
    while state.epoch < epochs and state.iteration < total_steps:
        data.train.set_epoch(state.epoch)  # the order and augmentation follow (seed, epoch) only
        first = state.batch_in_epoch  # > 0: resuming an interrupted epoch
        epoch_rng = resume["epoch_rng"] if first else rng_state()
        batches = task.epoch_batches(data, first, epoch_rng, resume["rng"] if first else None)
        task.train_mode(model)
        # loss sum, errors, images, non-finite losses (and the loss's parts in the window) of the epoch
        # and of the logging window; an epoch resumed in the middle starts from the counts saved with it
        counted = state.partial if info.is_main else EpochCounts()
        sums = torch.tensor(
            [counted.loss_sum, counted.errors, counted.images, 0.0], dtype=torch.float64, device=device
        )
        window = torch.zeros(4 + len(task.part_names), dtype=torch.float64, device=device)
        epoch_start = window_start = time.perf_counter()
        for index, batch in progress.epoch(
            batches, state.epoch + 1, epochs, total=accum * steps_per_epoch - first
        ):
            micro = index % accum  # an update every accum micro-batches; stops fall between updates
            if micro == 0:
                if state.iteration >= total_steps or index + accum > accum * steps_per_epoch:
                    break
                if stopping or (not info.enabled and stop.signum is not None):
                    state.stop_signal = stop.signum or signal.SIGTERM  # another process was signalled
                    state.batch_in_epoch = index
                    break

            # the step: forward, loss, backward (each micro-batch), then the update
            batch = task.prepare(batch, state.epoch, index)
            last_micro = micro == accum - 1
            with explained_failures(device, len(batch[0])), no_sync(forward, info.enabled and not last_micro):
                with autocast(device, amp_dtype):
                    out = task.losses(forward, batch)
                scaler.scale(out.loss / accum if accum > 1 else out.loss).backward()
                if last_micro:
                    clip_gradients(
                        model,
                        optimizer,
                        scaler,
                        getattr(recipe, "clip_grad", None),
                        getattr(recipe, "clip_mode", "norm"),
                    )
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)

            n = out.images
            loss_value = out.loss.detach().double()
            errors = out.errors.double() if out.errors is not None else torch.zeros_like(loss_value)
            step = torch.stack(
                (
                    loss_value * n,
                    errors,
                    torch.full_like(loss_value, n),
                    (~torch.isfinite(loss_value)).double(),
                )
            )
            sums += step
            window += (
                torch.cat((step, torch.stack([p.detach().double() * n for p in out.parts])))
                if out.parts
                else step
            )
            if not last_micro:
                continue
            if training.ema is not None and (state.iteration + 1) % recipe.ema_every == 0:
                training.ema.update_parameters(model)
            state.iteration += 1
            # the paper's error-based warm-up (Sec. 4.2) needs each step's errors: a host read per
            # step while it lasts (about 400 iterations of the 110+-layer nets), none otherwise
            message = schedule.step_iteration(int(out.errors) if schedule.needs_errors else 0, n)
            if message:
                progress.message(message)
            if state.iteration % run.log_every == 0:
                counts = read_counts(window, stop, device)
                loss_sum, err, count, nonfinite = counts[:4]
                check_finite_loss(nonfinite, state.iteration, run.log_every, schedule.lr)
                stopping = counts[-1] > 0
                record = {
                    "iteration": state.iteration,
                    "epoch": state.epoch + (index + 1) / (accum * steps_per_epoch),
                    "loss": loss_sum / count,
                }
                if task.counts_errors:
                    record["error"] = 100 * err / count
                record["lr"] = schedule.lr
                record.update(
                    {name: value / count for name, value in zip(task.part_names, counts[4:-1], strict=True)}
                )
                record["images_per_s"] = count / (time.perf_counter() - window_start)
                if log is not None:
                    log.log_step(record)
                if board is not None:
                    board.log(STEP_TAGS, record, state.iteration)
                progress.update(**{key: record[key] for key in ("loss", "error", "lr") if key in record})
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
            progress.message(
                f"{signal.Signals(state.stop_signal).name}: saved a resumable checkpoint at "
                f"iteration {state.iteration} in {folder.path}; continue with: "
                f"{task.command} --resume {folder.path}"
            )
            return {
                "interrupted": state.stop_signal,
                "output": str(folder.path),
                "iteration": state.iteration,
            }

        # --- end of epoch: metrics, evaluation, schedule, checkpoint
        state.epoch += 1
        state.batch_in_epoch, state.partial = 0, EpochCounts()
        state.train_images += int(images)
        state.train_time_s += epoch_time
        row = {
            "epoch": state.epoch,
            "iteration": state.iteration,
            "lr": schedule.lr,
            "train_loss": loss_sum / max(images, 1),
        }
        if task.counts_errors:
            row["train_error"] = 100 * errors / max(images, 1)
        row.update({"images_per_s": images / max(epoch_time, 1e-9), "epoch_time_s": epoch_time})
        last = state.epoch >= epochs or state.iteration >= total_steps
        # DDP gives every rank rank 0's buffers at the start of a forward, so after the epoch's last
        # step each rank holds BN statistics of its own shard: make them rank 0's, so that every rank
        # evaluates (and rank 0 saves) the same model
        distributed.broadcast_buffers(model, training.ema)
        if state.epoch % recipe.eval_every == 0 or last:
            with autocast(device, amp_dtype):
                row.update(task.evaluate(training.evaluated, data, last))
        schedule.step_epoch(task.monitored_error(row))
        task.update_best(state, row)
        state.elapsed_s = row["elapsed_s"] = time.perf_counter() - start
        if log is not None:
            log.log_epoch(row)
        if board is not None:
            board.log(EPOCH_TAGS, row, state.iteration)
        progress.epoch_line(task.epoch_line(row))
        save(None, row)

    # --- the summary
    result = task.summary(state, folder.metrics() if info.is_main else [], folder)
    result["world_size"] = info.world_size
    # what "auto" resolved to on this device (it differs by machine)
    result["precision"] = precision_name(amp_dtype)
    result["execution_path"] = path.to_dict()
    if info.enabled:  # DDP keeps replicas equal; check it, since a silent divergence wastes a run
        digests = distributed.gather_objects(weights_digest(model))
        result["ranks_in_sync"] = len(set(digests)) == 1
        if not result["ranks_in_sync"]:
            progress.message(f"warning: the {info.world_size} processes ended with different weights")
    if board is not None:
        board.close()
    if info.is_main:
        save_weights(training.evaluated, folder.weights_path, metadata={"data": task.data_meta(data)})
        if run.plot:
            task.plot(folder)
        write_json(folder.summary_path, result)  # last: marks the run finished
        for line in task.summary_lines(result):
            progress.message(line)
    distributed.barrier()
    return result


def replayed(
    batches: Iterable[Any], start: int, epoch_rng: dict | None, resume_rng: dict | None
) -> Iterator[tuple[int, Any]]:
    """``(index, batch)`` from ``start`` on. A resumed epoch (``start`` > 0) starts from the random
    generators' state at the start of the epoch and draws the batches before ``start`` (their
    augmentation draws the same random numbers) without a step; the generators then continue as they
    were saved at ``start``."""
    if start:
        set_rng_state(epoch_rng)
    for index, batch in enumerate(batches):
        if index < start:
            if index == start - 1 and resume_rng is not None:
                set_rng_state(resume_rng)
            continue
        yield index, batch


def check_output(config: Any) -> None:
    """A run writes only into its own folder: a new run not into a folder holding another run, a
    resumed one only into the run it resumes (or a folder without any run)."""
    run = config.run
    if not run.output:
        return
    folder = runs.RunFolder(run.output)
    written = [folder.path / name for name in runs.RUN_FILES] + folder.checkpoints()
    if run.init_weights and any(runs.same_file(run.init_weights, path) for path in written if path.exists()):
        raise ConfigError(
            f"--init-weights {run.init_weights} is a file this run would write over in "
            f"{run.output}; copy it elsewhere or choose another --output"
        )
    if not run.resume:
        if folder.holds_results():  # a checkpoint, best.pt, the weights or the summary: another run's
            found = [p.name for p in folder.checkpoints()]
            found += [name for name in runs.RESULTS if (folder.path / name).exists()]
            resume = f"continue it with --resume {run.output}, " if folder.checkpoints() else ""
            raise ConfigError(
                f"{run.output} already holds a run ({', '.join(sorted(set(found)))}); "
                f"{resume}choose another --output, or move those files away"
            )
        runs.check_output(folder.path, "--output", folder=True, own_run=folder.path)
        return
    runs.check_output(folder.path, "--output", folder=True, own_run=folder.path)
    source = runs.run_folder_of(run.resume)
    if not runs.same_file(source, folder.path) and folder.holds_run():
        raise ConfigError(
            f"--resume {run.resume} continues the run in {source}, but --output "
            f"{run.output} holds another run; drop --output to continue in {source}, or give "
            f"an empty folder"
        )


def save_checkpoint(folder: runs.RunFolder, ckpt: dict[str, Any], keep: int, command: str) -> None:
    """Rotate in a new ``last.pt`` (finite weights only); link ``best.pt`` to it on a best epoch. A full
    disk replaces nothing: the previous checkpoint stays, and the error says how to go on."""
    check_finite(ckpt, folder.path)
    try:
        folder.save_checkpoint(ckpt, keep)
    except OSError as exc:
        if not folder.checkpoints():  # the first one: there is nothing to resume from
            raise os_error(
                exc,
                "write the checkpoint",
                "no checkpoint was saved yet: free some "
                "space, then run the same command again (it starts over)",
            ) from None
        raise os_error(
            exc,
            "write the checkpoint",
            "nothing was lost (the previous checkpoint is "
            f"kept): free some space, then continue with: {command} --resume "
            f"{folder.path}",
        ) from None
    if ckpt["metrics"] is not None and ckpt["metrics"].get("is_best"):
        link_atomic(folder.last, folder.best)


def no_sync(forward: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` on micro-batches before the last of an update: their gradients add up
    locally and are all-reduced once, with the last one's backward."""
    module = getattr(forward, "_orig_mod", forward)  # a compiled DDP module
    return module.no_sync() if skip and hasattr(module, "no_sync") else contextlib.nullcontext()


def clip_gradients(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    limit: float | None,
    mode: str,
) -> None:
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
            f"(--set warmup=...), or --amp-dtype bfloat16."
        )


@contextlib.contextmanager
def explained_failures(device: torch.device, batch: int) -> Iterator[None]:
    """Out of memory, torch.compile failures and operators MPS lacks as one line that says what to
    change."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise ResnetsError(
            f"out of memory on {device} with {batch} images per step; use a smaller "
            f"--batch-size (e.g. {max(1, batch // 2)} per process), --amp, or a smaller "
            f"model"
        ) from None
    except NotImplementedError as exc:
        if device.type != "mps":
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ResnetsError(
            f"{first} (on MPS); start again with PYTORCH_ENABLE_MPS_FALLBACK=1 set in the environment "
            f"(such operators then run on the CPU) or use --device cpu"
        ) from None
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
            raise ResnetsError(
                f"out of memory on {device} with {batch} images per step; use a "
                f"smaller --batch-size (e.g. {max(1, batch // 2)})"
            ) from None
        if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ResnetsError(
                f"torch.compile failed ({first}); train without --compile (on CPU it "
                f"needs a working C++ compiler, on CUDA Triton)"
            ) from None
        raise
