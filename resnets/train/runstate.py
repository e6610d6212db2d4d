"""A run's state between processes and restarts: what a checkpoint holds, writing it (rank 0,
finite weights only), and putting a resumed run back exactly where it stopped."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ResnetsError
from . import checkpoint as ckpt_io
from .build import versions
from .recipes import TrainConfig
from .schedule import LRSchedule


class TrainingDiverged(ResnetsError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    iteration: int = 0  # optimiser steps taken
    batch_in_epoch: int = 0  # > 0 only in a checkpoint written by an interrupt in mid-epoch
    partial: list[float] = field(default_factory=lambda: [0.0] * 4)  # its loss sum, errors, images, seconds
    elapsed_s: float = 0.0
    train_images: int = 0
    train_time_s: float = 0.0
    best: dict[str, Any] = field(default_factory=dict)  # {"error": %, "epoch": n, "split": "val"|"test"}


class Saver:
    """Writes checkpoints (rank 0 only), never with non-finite weights."""

    def __init__(self, output: Path, config: TrainConfig, data: Any, is_main: bool, keep: int) -> None:
        self.output, self.config, self.data, self.is_main, self.keep = output, config, data, is_main, keep

    def build(self, state: TrainState, loop: Any, epoch_rng: dict | None, metrics: dict | None) -> dict:
        from ..models.registry import model_spec

        return {
            "format": ckpt_io.FORMAT, "format_version": ckpt_io.FORMAT_VERSION,
            "model": model_spec(loop.raw), "state_dict": loop.raw.state_dict(),
            "optimizer": loop.optimizer.state_dict(), "scheduler": loop.schedule.state_dict(),
            "scaler": loop.scaler.state_dict(),
            "ema": loop.ema.state_dict() if loop.ema is not None else None,
            "eval_weights": "ema" if loop.ema is not None else "model",
            "epoch": state.epoch, "iteration": state.iteration, "batch_in_epoch": state.batch_in_epoch,
            "train_state": {"elapsed_s": state.elapsed_s, "train_images": state.train_images,
                            "train_time_s": state.train_time_s, "best": dict(state.best),
                            "partial": list(state.partial)},
            "rng": ckpt_io.rng_state(loader_state(self.data)), "epoch_rng": epoch_rng,
            "config": self.config.to_dict(), "data": self.data.meta(), "versions": versions(),
            "metrics": metrics,
        }

    def save(self, state: TrainState, loop: Any, epoch_rng: dict | None, metrics: dict | None) -> None:
        if not self.is_main:
            return
        ckpt = self.build(state, loop, epoch_rng, metrics)
        if not ckpt_io.all_finite({"model": ckpt["state_dict"], "ema": ckpt["ema"]}):
            raise TrainingDiverged(f"the weights are no longer finite at iteration {state.iteration}; "
                                   f"no checkpoint written (the last good one stays in {self.output})")
        ckpt_io.save_rotating(ckpt, self.output, self.keep)
        if metrics is not None and metrics.get("is_best"):
            ckpt_io.link_atomic(self.output / ckpt_io.LAST, self.output / ckpt_io.BEST)

    def finish(self, loop: Any, result: dict[str, Any]) -> None:
        """model.safetensors (the evaluated weights), curves.png, summary.json."""
        from ..plots import training_curves
        from ..weights import save_weights
        from .logging import read_metrics, read_steps

        model = loop.ema.module if loop.ema is not None else loop.raw
        save_weights(model, self.output / "model.safetensors", metadata={"data": self.data.meta()})
        if self.config.run.plot:
            # training error from the logged steps (dense, as Fig. 6), test error per epoch
            steps = [{"iteration": s["iteration"], "train_error": s["error"]}
                     for s in read_steps(self.output / "steps.jsonl")]
            epochs = read_metrics(self.output / "metrics.csv")
            rows = (steps or [{"iteration": r["iteration"], "train_error": r["train_error"]} for r in epochs])
            rows = rows + [{"iteration": r["iteration"], "test_error": r["test_error"]} for r in epochs]
            recipe = self.config.recipe
            training_curves({recipe.model: rows}, self.output / "curves.png",
                            title=f"{recipe.model} on {recipe.dataset} ({recipe.name})")
        text = json.dumps(result, indent=2) + "\n"
        ckpt_io.write_atomic(self.output / "summary.json", lambda tmp: tmp.write_text(text))


def check_same_model(ckpt: dict, path: Path, name: str, kwargs: dict[str, Any]) -> None:
    """Before any work: the checkpoint must be of the model this run builds."""
    saved = ckpt["model"]
    same_options = all(saved.get("kwargs", {}).get(k) == json.loads(json.dumps(v)) for k, v in kwargs.items())
    if saved.get("name") != name or not same_options:
        raise CheckpointError(f"{path} is a checkpoint of {saved}, but this run builds {name} with options "
                              f"{kwargs}; resume with the same --model and model_kwargs")


def restore(ckpt: dict, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
            scaler: torch.amp.GradScaler, ema: Any, data: Any) -> TrainState:
    """Put a run back where ``ckpt`` left it: weights, optimiser, schedule, scaler, EMA, RNGs."""
    from ..models.registry import model_spec

    if ckpt["model"] != model_spec(model):
        raise CheckpointError(f"{path} is a checkpoint of {ckpt['model']}, but this run builds "
                              f"{model_spec(model)}; resume with the same --model and options")
    ckpt_io.load_state_into(model, ckpt["state_dict"], source=str(path))
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: optimizer/scheduler state does not fit this run ({exc})") from None
    apply_loader_state(data, ckpt_io.set_rng_state(ckpt["rng"]))
    extra = ckpt.get("train_state", {})
    return TrainState(epoch=ckpt["epoch"], iteration=ckpt["iteration"],
                      batch_in_epoch=ckpt.get("batch_in_epoch", 0),
                      elapsed_s=extra.get("elapsed_s", 0.0), train_images=extra.get("train_images", 0),
                      train_time_s=extra.get("train_time_s", 0.0), best=dict(extra.get("best", {})),
                      partial=list(extra.get("partial", [0.0] * 4)))


def loader_state(data: Any) -> Any:
    get = getattr(data, "state_dict", None)
    return get() if callable(get) else None


def apply_loader_state(data: Any, state: Any) -> None:
    load = getattr(data, "load_state_dict", None)
    if state is not None and callable(load):
        load(state)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer: equal digests mean bit-identical replicas."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
