"""Training: recipes (the papers' setups), the loop, checkpoints, metrics, DDP under torchrun.

``train(TrainConfig(...))`` runs one training; ``resnets train`` is its command line.
"""

from .engine import train
from .recipes import RECIPES, Recipe, RunOptions, TrainConfig, apply_overrides, get_recipe

__all__ = ["RECIPES", "Recipe", "RunOptions", "TrainConfig", "apply_overrides", "get_recipe", "train"]
