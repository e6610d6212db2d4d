"""resnets: Deep Residual Networks (He et al., 2015) and their family.

Public API: ``create_model``, ``list_models``, ``summary``; the ``resnets`` command (see cli.py).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .models.registry import create_model as _create_model
from .models.registry import list_models
from .summary import summary
from .weights import load_weights_into

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "summary", "__version__"]


def create_model(
    name: str, pretrained: bool | str = False, *, checkpoint_path: str | os.PathLike | None = None,
    **kwargs: Any
) -> nn.Module:
    """``resnets.models.create_model(name, pretrained, **kwargs)`` (the options, timm's and torchvision's
    keywords), then, as timm's ``create_model``, the weights file ``checkpoint_path`` if given (a torchvision
    or timm state dict, a resnets checkpoint or weights file; checked key by key, see
    ``resnets.weights.load_weights_into``)."""
    model = _create_model(name, pretrained, **kwargs)
    if checkpoint_path:
        load_weights_into(model, checkpoint_path)
    return model
