"""Learning-rate schedules, stepped every iteration.

The CIFAR paper counts iterations (lr /10 at 32k and 48k, Sec. 4.2) while most recipes count
epochs; both are converted to iterations here so one epoch loop serves all of them. Schedules
are ``torch.optim.lr_scheduler`` objects (LambdaLR with a callable that carries its own state,
or ReduceLROnPlateau), so their state goes into checkpoints as plain types.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .recipes import Optimization

# torchvision's references/segmentation/train.py: lr * (1 - iteration / total) ** 0.9 (DeepLab's "poly")
POLY_POWER = 0.9


class LRFactor:
    """lr multiplier as a function of the iteration: warm-up, then the recipe's schedule.

    Attributes are plain types: ``LambdaLR.state_dict`` saves them, so resume restores them.
    """

    DYNAMIC = ("error_warmup_active", "error_warmup_ended_at", "window")  # state, not settings

    def __init__(self, recipe: Optimization, steps_per_epoch: int, total_steps: int, depth: int = 0) -> None:
        unit = steps_per_epoch if recipe.schedule_unit == "epoch" else 1
        self.kind = recipe.schedule
        self.total_steps = int(total_steps)
        self.milestones = [int(round(m * unit)) for m in recipe.milestones]
        self.gamma = float(recipe.gamma)
        self.warmup_steps = int(round(recipe.warmup * unit))
        self.warmup_shape = recipe.warmup_shape
        self.start_factor = float(recipe.warmup_start_factor)
        self.final_factor = float(recipe.final_lr_factor)
        # Sec. 4.2: for 110+ layers "we use 0.01 to warm up the training until the training error
        # is below 80% (about 400 iterations), and then go back to 0.1" (classification recipes only).
        error_warmup = recipe.error_warmup
        self.error_warmup_active = error_warmup is not None and depth >= error_warmup.min_depth
        self.error_warmup_threshold = float(error_warmup.threshold if error_warmup else 0.0)
        self.error_warmup_factor = float(error_warmup.factor if error_warmup else 0.1)
        self.error_warmup_ended_at: int | None = None
        self.window: list[float] = []  # training errors of the last iterations (fractions)

    def __call__(self, step: int) -> float:
        factor = self._schedule(step)
        if step < self.warmup_steps:
            if self.warmup_shape == "constant":
                factor *= self.start_factor
            else:
                factor *= self.start_factor + (1 - self.start_factor) * step / self.warmup_steps
        if self.error_warmup_active:
            factor *= self.error_warmup_factor
        return factor

    def _schedule(self, step: int) -> float:
        if self.kind == "step":
            return self.gamma ** sum(step >= m for m in self.milestones)
        if self.kind in ("onecycle", "cosine", "poly"):
            # onecycle: linear up during the warm-up (above), then linear down to final_factor
            # (Smith & Topin 2017 as used by Page and airbench); cosine: Loshchilov & Hutter 2017;
            # poly: torchvision's segmentation reference, over the iterations after the warm-up.
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            if self.kind == "onecycle":
                return 1 - (1 - self.final_factor) * progress
            if self.kind == "poly":
                return (1 - progress) ** POLY_POWER
            return self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0  # constant

    def observe(self, step: int, errors: int, count: int, window: int = 20) -> bool:
        """Feed one iteration's training errors; True when the error-based warm-up just ended."""
        if not self.error_warmup_active or count == 0:
            return False
        self.window = (self.window + [errors / count])[-window:]
        if len(self.window) == window and sum(self.window) / window < self.error_warmup_threshold:
            self.error_warmup_active = False
            self.error_warmup_ended_at = step
            return True
        return False


class LRSchedule:
    """One interface over per-iteration (LambdaLR) and per-epoch (ReduceLROnPlateau) schedules."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        recipe: Optimization,
        steps_per_epoch: int,
        total_steps: int,
        depth: int = 0,
    ) -> None:
        self.optimizer = optimizer
        self.factor: LRFactor | None = None
        if recipe.schedule == "plateau":
            # Sec. 3.4: "divided by 10 when the error plateaus"
            self.scheduler: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=recipe.gamma, patience=recipe.plateau_patience
            )
        else:
            self.factor = LRFactor(recipe, steps_per_epoch, total_steps, depth)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)

    @property
    def needs_errors(self) -> bool:
        """Whether ``step_iteration`` needs this step's error count (the error-based warm-up)."""
        return self.factor is not None and self.factor.error_warmup_active

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step_iteration(self, errors: int = 0, count: int = 0) -> str | None:
        """After each optimiser step. Returns a message when something worth logging happened."""
        if self.factor is None:
            return None
        step = self.scheduler.last_epoch
        ended = self.factor.observe(step, errors, count)
        self.scheduler.step()
        if ended:
            return (
                f"training error below {self.factor.error_warmup_threshold:.0%} at iteration {step + 1}: "
                f"warm-up over, lr {self.lr:g}"
            )
        return None

    def step_epoch(self, monitored_error: float | None) -> None:
        """After each epoch's evaluation (only the plateau schedule uses it)."""
        if self.factor is None and monitored_error is not None:
            self.scheduler.step(monitored_error)

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position and the warm-up progress; milestones and lengths come from the
        current recipe, so a resumed run may be extended (e.g. more --epochs)."""
        state = dict(state)
        if self.factor is not None:
            saved = (state.pop("lr_lambdas", None) or [None])[0] or {}
            state["lr_lambdas"] = [{k: saved[k] for k in LRFactor.DYNAMIC if k in saved}]
        self.scheduler.load_state_dict(state)
        if self.factor is not None:  # the lr of the restored position under the current settings
            factor = self.factor(self.scheduler.last_epoch)
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
                group["lr"] = base * factor
            self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
