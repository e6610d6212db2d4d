"""resnets: Deep Residual Networks (He et al., 2015) and their family.

Public API: ``create_model``, ``list_models``, ``list_pretrained``, ``summary``; the ``resnets`` command
(see cli.py).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .models.registry import list_models
from .pretrained import create_pretrained, list_pretrained
from .summary import summary

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "list_pretrained", "summary", "__version__"]


def create_model(
    name: str,
    pretrained: bool | str | os.PathLike = False,
    *,
    weights: Any = None,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``resnets.models.create_model(name, **kwargs)`` (the options, timm's and torchvision's keywords) with
    weights, as timm's and torchvision's constructors give them (docs/weights.md):

    - ``pretrained=True``: the model's default weights (torchvision's ``DEFAULT`` for torchvision's models,
      timm's default tag for timm's, ours for the CIFAR-style nets we ship); ``pretrained="a1_in1k"`` (a
      tag, ``"IMAGENET1K_V2"``, or a file path); ``name="resnet50.a1_in1k"`` with ``pretrained=True``;
    - ``weights="IMAGENET1K_V2"`` / ``"DEFAULT"`` / a torchvision ``Weights`` member / a file path;
    - ``checkpoint_path``: a weights file loaded last (a torchvision or timm state dict, a resnets
      checkpoint or weights file).

    Registry weights are found in torch's hub cache or the Hugging Face cache, or downloaded with a hash
    check (``resnets.pretrained.weights_file``); every file is checked key by key
    (``resnets.weights.load_weights_into``). The weights set the class count and input channels unless
    given: another ``num_classes`` keeps a fresh head for fine-tuning.
    """
    return create_pretrained(name, pretrained, weights=weights, checkpoint_path=checkpoint_path, **kwargs)
