"""Training: recipes (the papers' setups), the loop, checkpoints, metrics, DDP under torchrun.

``train(TrainConfig(...))`` runs one training; ``resnets train`` is its command line.
"""

from __future__ import annotations

from typing import Any

from .recipes import RECIPES, Recipe, RunOptions, TrainConfig, apply_overrides, get_recipe


def train(config: TrainConfig) -> dict[str, Any]:
    """Train as ``config`` says and return the summary (see ``resnets.train.engine.train``)."""
    from .engine import train as _train  # torch is imported only when training starts

    return _train(config)


__all__ = ["RECIPES", "Recipe", "RunOptions", "TrainConfig", "apply_overrides", "get_recipe", "train"]
