"""A finished run's network and the test data it was evaluated on, for analyses that look inside it."""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import Context, RunRecord


class TrainedNets:
    """Loads each run's final weights; builds each distinct test set once (runs usually share it)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._data: dict[str, Any] = {}

    def model(self, record: RunRecord) -> nn.Module:
        """The run's network with its final weights (``last.pt``), in eval mode on the context's device."""
        from ..train.checkpoint import load_model

        model, _ = load_model(record.checkpoint, self.ctx.device)
        return model

    def test_loader(self, record: RunRecord) -> Any:
        """The run's test split exactly as the engine evaluated it (same subset, same normalisation)."""
        from ..data.loaders import build_data
        from ..train.build import data_config
        from ..train.distributed import DistInfo
        from ..train.recipes import RunOptions, apply_overrides, get_recipe

        recipe = apply_overrides(get_recipe(record.spec.recipe), dict(record.spec.overrides))
        cfg = data_config(recipe, RunOptions(data_dir=self.ctx.data_dir), DistInfo())
        key = repr(cfg)
        if key not in self._data:
            self._data[key] = build_data(cfg, self.ctx.device)
        return self._data[key].test
