"""torch.hub entry points: every registered model, as torchvision's hubconf offers its ResNets.

    model = torch.hub.load("path/to/resnets", "resnet50", source="local", num_classes=10)
    model = torch.hub.load("path/to/resnets", "resnet50", source="local", weights="resnet50_tv.pth")

Keywords are the model's options (``resnets.create_model``). ``weights`` is a weights file (a torchvision
or timm state dict, a resnets checkpoint or weights file), checked key by key as ``resnets import-weights``
does; resnets publishes no pretrained weights, so ``pretrained=True`` is an error that says so (as
``resnets.create_model`` says it).
"""

from __future__ import annotations

import os as _os
from collections.abc import Callable as _Callable
from typing import Any as _Any

from torch import nn as _nn

from resnets.errors import ConfigError as _ConfigError
from resnets.models import create_model as _create_model
from resnets.models import list_models as _list_models
from resnets.weights import load_weights_into as _load_weights_into

dependencies = ["torch", "torchvision", "safetensors"]


def _entrypoint(name: str) -> _Callable[..., _nn.Module]:
    def entrypoint(
        pretrained: bool = False, weights: str | _os.PathLike | None = None, **kwargs: _Any
    ) -> _nn.Module:
        if weights is not None and not isinstance(weights, str | _os.PathLike):
            raise _ConfigError(f"{name}: weights={weights!r} names published weights, and resnets has none: "
                               "pass weights=<path of a torchvision or timm weights file>")
        model = _create_model(name, pretrained, **kwargs)
        if weights is not None:
            _load_weights_into(model, weights)
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f"resnets.create_model({name!r}, **kwargs), then the file ``weights`` if given."
    return entrypoint


for _name in _list_models():
    globals()[_name] = _entrypoint(_name)
