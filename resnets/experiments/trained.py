"""A finished run's network and the test data it was evaluated on, for analyses that look inside it."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..checkpoints import load_checkpoint, load_model
from ..data.evaluation import evaluation_data
from .base import Context, RunRecord


class TrainedNets:
    """Loads each run's final weights; builds each distinct test set once (runs usually share it)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._data: dict[str, Any] = {}

    def model(self, record: RunRecord) -> nn.Module:
        """The run's network with its final weights (``last.pt``), in eval mode on the context's device."""
        model, _ = load_model(record.checkpoint, self.ctx.device)
        return model

    def test_loader(self, record: RunRecord) -> Any:
        """The run's test split exactly as the engine evaluated it (same subset, same normalisation)."""
        ckpt = load_checkpoint(record.checkpoint)
        recipe = ckpt["config"]["recipe"]
        options = {
            "data_dir": self.ctx.data_dir,
            "subset": recipe["test_subset"],
            "batch_size": recipe["eval_batch_size"],
        }
        key = repr((ckpt["data"], recipe["seed"], options))
        if key not in self._data:
            self._data[key] = evaluation_data(ckpt, record.checkpoint, self.ctx.device, **options).loader
        return self._data[key]
