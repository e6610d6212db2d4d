"""Pretrained weights (docs/weights.md): the registry of torchvision's and timm's ResNet-family weights our
zoo loads and of our own shipped weights, their inference transforms, and where their files are found.

    from resnets.pretrained import list_pretrained, get_weights
    list_pretrained("resnet50.*")  # ['resnet50.tv_in1k', 'resnet50.tv2_in1k', 'resnet50.a1_in1k', ...]
    entry = get_weights("resnet50.IMAGENET1K_V2")  # == get_weights("resnet50.tv2_in1k")
    preprocess = entry.transform()  # Resize(232) + CenterCrop(224) + ToImage/ToDtype + Normalize
    model = resnets.create_model("resnet50", pretrained=True)
"""

from __future__ import annotations

from .load import create_pretrained, load_requested, requested_weights
from .registry import (
    WeightsEntry,
    class_names,
    default_weights,
    entries,
    find_file,
    get_weights,
    list_pretrained,
)
from .resolve import cache_path, check_file, weights_file
from .transforms import InferenceTransforms

__all__ = [
    "InferenceTransforms",
    "WeightsEntry",
    "cache_path",
    "class_names",
    "check_file",
    "create_pretrained",
    "default_weights",
    "entries",
    "find_file",
    "get_weights",
    "list_pretrained",
    "load_requested",
    "requested_weights",
    "weights_file",
]
