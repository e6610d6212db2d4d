"""Layer responses, He et al. 2015, Sec. 4.2 "Analysis of Layer Responses" and Fig. 7.

"The responses are the outputs of each 3x3 layer, after BN and before other nonlinearity (ReLU/addition)."
Each block names those BN layers through ``response_norms()``; a forward hook on each accumulates the sum
and the sum of squares of its output over a whole loader (float64, so millions of values lose nothing),
and the standard deviation is taken over every value of the layer's output (images, channels, positions).
The paper's finding: ResNets respond more weakly than their plain counterparts, so residual functions are
closer to zero than non-residual ones, and deeper ResNets respond more weakly still.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError


@dataclass
class LayerResponses:
    """Standard deviation of each 3x3 layer's response, in forward (layer) order."""

    names: list[str]
    stds: list[float]

    def sorted_descending(self) -> list[float]:
        """The same values sorted from the largest down (Fig. 7 bottom)."""
        return sorted(self.stds, reverse=True)

    def mean(self) -> float:
        return sum(self.stds) / len(self.stds)

    def to_dict(self) -> dict:
        return {
            "names": self.names,
            "stds": self.stds,
            "sorted": self.sorted_descending(),
            "mean": self.mean(),
        }


class _Moments:
    """Running count, sum and sum of squares of every value a layer outputs."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0

    def __call__(self, _module: nn.Module, _inputs, output: torch.Tensor) -> None:
        values = output.detach().double()
        self.count += values.numel()
        self.total += values.sum().item()
        self.total_sq += values.square().sum().item()

    def std(self) -> float:
        mean = self.total / self.count
        # Population std of all values; clamp tiny negative rounding error.
        return math.sqrt(max(self.total_sq / self.count - mean * mean, 0.0))


def response_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, BN module) of every response layer of ``model``, in forward order."""
    module_names = {id(module): name for name, module in model.named_modules()}
    layers = []
    for _, block in model.residual_blocks():
        for norm in block.response_norms():
            layers.append((module_names[id(norm)], norm))
    return layers


@torch.no_grad()
def layer_responses(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], max_batches: int | None = None
) -> LayerResponses:
    """Std of each 3x3 layer's output after BN over ``loader`` (e.g. the test set), ``model`` in eval mode.

    Pre-activation blocks have no BN right after a 3x3 conv (their ``response_norms()`` is empty); a model
    made only of them has nothing to measure and raises ``ConfigError``.
    """
    layers = response_layers(model)
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} has no BN layer right after a 3x3 conv (pre-activation blocks?): "
            "layer responses (paper Fig. 7) are defined for original and plain blocks only"
        )
    moments = [_Moments() for _ in layers]
    hooks = [norm.register_forward_hook(m) for (_, norm), m in zip(layers, moments, strict=True)]
    was_training = model.training
    model.eval()
    try:
        for i, (x, _) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            model(x)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    if moments[0].count == 0:
        raise ConfigError("layer_responses got an empty loader: give it at least one batch")
    return LayerResponses([name for name, _ in layers], [m.std() for m in moments])
