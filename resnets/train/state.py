"""A run's state between processes and restarts: where it is (``TrainState``), the checkpoint that
records it, and putting a resumed run back exactly where it stopped (weights, optimiser, schedule,
every random number generator, the data order)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .. import __version__, checkpoints
from ..errors import CheckpointError, ResnetsError
from ..models.registry import model_spec
from .recipes import TrainConfig
from .schedule import LRSchedule


class TrainingDiverged(ResnetsError):
    """The loss or the weights became NaN or infinite."""


@dataclass
class EpochCounts:
    """Sums over the training steps of one epoch so far, over every process."""

    loss_sum: float = 0.0
    errors: float = 0.0
    images: float = 0.0
    seconds: float = 0.0

    @classmethod
    def from_saved(cls, saved: Any) -> EpochCounts:
        if isinstance(saved, Mapping):
            return cls(**{k: float(saved.get(k, 0.0)) for k in ("loss_sum", "errors", "images", "seconds")})
        return cls(*map(float, saved or [0.0] * 4))  # format 1 wrote [loss_sum, errors, images, seconds]


@dataclass
class TrainState:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    iteration: int = 0  # optimiser steps taken
    batch_in_epoch: int = 0  # > 0 only when an interrupt stopped the run in mid-epoch
    partial: EpochCounts = field(default_factory=EpochCounts)  # the interrupted epoch's counts
    stop_signal: int | None = None  # the signal that interrupted the run, None while it runs
    elapsed_s: float = 0.0
    train_images: int = 0
    train_time_s: float = 0.0
    best: dict[str, Any] = field(default_factory=dict)  # {"error": %, "epoch": n, "split": "val"|"test"}


def run_summary(state: TrainState, output: object) -> dict[str, Any]:
    """What every task's summary holds: the run folder, its length, time and training throughput."""
    return {
        "output": str(output),
        "epochs_done": state.epoch,
        "iterations": state.iteration,
        "elapsed_s": state.elapsed_s,
        "images_per_s": state.train_images / max(state.train_time_s, 1e-9),
    }


@dataclass
class Training:
    """The objects a checkpoint is made of."""

    model: nn.Module  # the plain model: its state_dict has no DDP/compile prefixes
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None

    @property
    def evaluated(self) -> nn.Module:
        """The weights the run evaluates and publishes: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model


def make_checkpoint(
    state: TrainState,
    training: Training,
    config: TrainConfig,
    data_meta: dict,
    epoch_rng: dict | None,
    metrics: dict | None,
) -> dict[str, Any]:
    """The checkpoint dict (plain types only, loadable with ``weights_only=True``)."""
    ema = training.ema
    return {
        "format": checkpoints.FORMAT,
        "format_version": checkpoints.FORMAT_VERSION,
        "model": model_spec(training.model),
        "state_dict": training.model.state_dict(),
        "optimizer": training.optimizer.state_dict(),
        "scheduler": training.schedule.state_dict(),
        "scaler": training.scaler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "eval_weights": "ema" if ema is not None else "model",
        "epoch": state.epoch,
        "iteration": state.iteration,
        "batch_in_epoch": state.batch_in_epoch,
        "train_state": {
            "elapsed_s": state.elapsed_s,
            "train_images": state.train_images,
            "train_time_s": state.train_time_s,
            "best": dict(state.best),
            "partial": dataclasses.asdict(state.partial),
        },
        "rng": rng_state(),
        "epoch_rng": epoch_rng,
        "config": config.to_dict(),
        "data": data_meta,
        "versions": versions(),
        "metrics": metrics,
    }


def check_finite(ckpt: dict[str, Any], folder: Path) -> None:
    """Never write a checkpoint whose weights are no longer finite."""
    if not checkpoints.all_finite({"model": ckpt["state_dict"], "ema": ckpt["ema"]}):
        raise TrainingDiverged(
            f"the weights are no longer finite at iteration {ckpt['iteration']}; "
            f"no checkpoint written (the last good one stays in {folder})"
        )


def check_same_model(ckpt: dict, path: Path, name: str, kwargs: dict[str, Any]) -> None:
    """Before any work: the checkpoint must be of the model this run builds."""
    saved = ckpt["model"]
    same_options = all(saved.get("kwargs", {}).get(k) == json.loads(json.dumps(v)) for k, v in kwargs.items())
    if saved.get("name") != name or not same_options:
        raise CheckpointError(
            f"{path} is a checkpoint of {saved}, but this run builds {name} with options "
            f"{kwargs}; resume with the same --model and model_kwargs"
        )


def check_same_options(saved: dict[str, Any], wanted: dict[str, Any], path: os.PathLike, what: str) -> None:
    """Before any work: each option this run gives that the checkpoint records has the recorded value
    (a detector's or segmenter's ``resnets_spec`` kwargs)."""
    differ = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in wanted.items() if k in saved and saved[k] != v]
    if differ:
        raise CheckpointError(
            f"{path} holds another {what} ({'; '.join(differ[:4])}); resume with the same {what} options, "
            f"or start a new run"
        )


def check_resume_entries(ckpt: dict, path: Path) -> None:
    """Before any work: the checkpoint holds everything resuming restores."""
    missing = [key for key in checkpoints.RESUME_ENTRIES if key not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} cannot be resumed: it has no {', '.join(missing)} entry "
            f"(a weights-only file? start from it with --init-weights)"
        )


def restore(ckpt: dict, path: Path, training: Training) -> TrainState:
    """Put a run back where ``ckpt`` left it: weights, optimiser, schedule, scaler, EMA and RNGs (its
    entries were checked by ``check_resume_entries`` before any work)."""
    if ckpt["model"] != model_spec(training.model):
        raise CheckpointError(
            f"{path} is a checkpoint of {ckpt['model']}, but this run builds "
            f"{model_spec(training.model)}; resume with the same --model and options"
        )
    checkpoints.load_state_into(training.model, ckpt["state_dict"], source=str(path))
    try:
        training.optimizer.load_state_dict(ckpt["optimizer"])
        training.schedule.load_state_dict(ckpt["scheduler"])
        training.scaler.load_state_dict(ckpt["scaler"])
        if training.ema is not None and ckpt.get("ema") is not None:
            training.ema.load_state_dict(ckpt["ema"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: optimizer/scheduler state does not fit this run ({exc})") from None
    set_rng_state(ckpt["rng"])
    extra = ckpt.get("train_state") or {}
    try:
        state = TrainState(
            epoch=ckpt["epoch"],
            iteration=ckpt["iteration"],
            batch_in_epoch=ckpt.get("batch_in_epoch", 0),
            partial=EpochCounts.from_saved(extra.get("partial")),
            elapsed_s=float(extra.get("elapsed_s", 0.0)),
            train_images=int(extra.get("train_images", 0)),
            train_time_s=float(extra.get("train_time_s", 0.0)),
            best=dict(extra.get("best", {})),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its train_state is malformed ({exc})") from None
    return state


def versions() -> dict[str, str]:
    return {
        "resnets": __version__,
        "torch": str(torch.__version__),  # TorchVersion is not a plain str
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer: equal digests mean bit-identical replicas."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- random number generators ------------------------------------------------------------------


def rng_state(loader_state: Any = None) -> dict[str, Any]:
    """Every RNG state a run depends on, as plain types: torch CPU and CUDA, numpy, Python, and a
    data loader's own generator state for a loader that keeps one (today's loaders draw from torch's)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
        "loader": loader_state,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():  # MPS has a generator of its own (dropout, drop-path there)
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> Any:
    """Restore what ``rng_state`` captured; returns the loader's part for the caller to apply.
    A state that does not fit (a crafted or damaged checkpoint) is a ``CheckpointError``."""
    try:
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        if "mps" in state and torch.backends.mps.is_available():
            torch.mps.set_rng_state(state["mps"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise CheckpointError(
            f"the checkpoint's random number generator state does not fit "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    return state.get("loader")
