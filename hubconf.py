"""torch.hub entry points: every registered model, as torchvision's hubconf offers its ResNets.

    model = torch.hub.load("path/to/resnets", "resnet50", source="local", pretrained=True)
    model = torch.hub.load("path/to/resnets", "resnet50", source="local", weights="IMAGENET1K_V2")
    model = torch.hub.load("path/to/resnets", "resnet20", source="local", pretrained="fashion_mnist")
    model = torch.hub.load("path/to/resnets", "resnet50", source="local", weights="resnet50_tv.pth")

Keywords are the model's options and ``resnets.create_model``'s: ``pretrained`` (True: the model's default
weights; a tag such as ``"a1_in1k"``), ``weights`` (torchvision's enum names, ``"DEFAULT"``, or a weights
file: a torchvision or timm state dict, a resnets checkpoint or weights file, checked key by key as
``resnets import-weights`` does). docs/weights.md lists the weights (``resnets models --pretrained``).
"""

from __future__ import annotations

import os as _os
from collections.abc import Callable as _Callable
from typing import Any as _Any

from torch import nn as _nn

import resnets as _resnets

dependencies = ["torch", "torchvision", "safetensors"]


def _entrypoint(name: str) -> _Callable[..., _nn.Module]:
    def entrypoint(
        pretrained: bool | str = False, weights: str | _os.PathLike | None = None, **kwargs: _Any
    ) -> _nn.Module:
        return _resnets.create_model(name, pretrained, weights=weights, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (
        f"resnets.create_model({name!r}, pretrained, weights=weights, **kwargs): the "
        "model, with the weights asked for (docs/weights.md)."
    )
    return entrypoint


for _name in _resnets.list_models():
    globals()[_name] = _entrypoint(_name)
