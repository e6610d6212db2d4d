"""The accuracy of weights on their real test set, as ``resnets predict`` computes it: one view per image
(the entry's inference transform of the uint8 image), float32, on the CPU. The model cards of our shipped
weights hold it for all test images and for the first ``SUBSET`` (what the tests check, in seconds)."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..data import load_arrays
from ..errors import ConfigError
from ..evaluate import topk_correct
from .registry import WeightsEntry

SUBSET = 1000  # the fixed subset of the test set: its first 1,000 images
_BATCH = 500


def accuracy_on_test_set(
    model: nn.Module,
    entry: WeightsEntry,
    *,
    first: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, float]:
    """``{"images", "acc@1", "acc@5"}`` (percent) of ``model`` on the first ``first`` test images (all: None)
    of the entry's dataset (``metadata["data"]``, a ``load_arrays`` name), in order."""
    name = entry.metadata.get("data")
    if not name:
        raise ConfigError(f"weights {entry.name}: no test set known to resnets (metadata 'data')")
    test = load_arrays(str(name), "test", data_dir=data_dir)
    images, labels = test.images[:first], test.labels[:first]
    transform = entry.transform()
    was_training = model.training
    model.eval()
    correct, n = [0, 0], len(labels)
    try:
        with torch.inference_mode():
            for start in range(0, n, _BATCH):
                x = transform(images[start : start + _BATCH]).as_subclass(torch.Tensor)
                logits = model(x.float())
                for i, c in enumerate(topk_correct(logits.float(), labels[start : start + _BATCH])):
                    correct[i] += c
    finally:
        model.train(was_training)
    return {"images": n, "acc@1": 100.0 * correct[0] / n, "acc@5": 100.0 * correct[1] / n}
