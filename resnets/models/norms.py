"""The normalisation layers a model can be built with (torchvision's and timm's ``norm_layer`` option).

Options must survive a JSON spec, so a norm layer is named by a string; torchvision's classes
``nn.BatchNorm2d`` and ``torchvision.ops.FrozenBatchNorm2d`` are accepted too and recorded by name.
"""

from __future__ import annotations

import math

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..errors import ConfigError
from .layers import Norm

GROUP_NORM_GROUPS = 32  # Wu & He 2018 ("Group Normalization") use G = 32, as timm's resnet50_gn does


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or the largest divisor of 32 that divides ``channels`` for narrow layers."""
    return nn.GroupNorm(math.gcd(GROUP_NORM_GROUPS, channels), channels)


NORM_LAYERS: dict[str, Norm] = {
    "batchnorm": nn.BatchNorm2d,
    "groupnorm": group_norm,
    # Batch statistics and affine parameters fixed (buffers): detection backbones (torchvision's
    # FrozenBatchNorm2d), where batches are too small for BN statistics.
    "frozen_batchnorm": FrozenBatchNorm2d,
}
_ALIASES = {"batchnorm2d": "batchnorm", "bn": "batchnorm", "gn": "groupnorm",
            "frozenbatchnorm2d": "frozen_batchnorm", "frozen_bn": "frozen_batchnorm"}
_CLASSES = {nn.BatchNorm2d: "batchnorm", FrozenBatchNorm2d: "frozen_batchnorm"}


def norm_name(value: object) -> str:
    """The canonical name of a ``norm_layer`` value (a name, an alias or one of torchvision's classes)."""
    if isinstance(value, type) and value in _CLASSES:
        return _CLASSES[value]
    if isinstance(value, str):
        name = _ALIASES.get(value.lower(), value.lower())
        if name in NORM_LAYERS:
            return name
    raise ConfigError(f"invalid norm_layer={value!r}; choose one of: {', '.join(map(repr, NORM_LAYERS))} "
                      "(or the classes nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)")


def norm_factory(value: object) -> Norm:
    return NORM_LAYERS[norm_name(value)]


def spec_value(value: object) -> object:
    """A norm class becomes its name in a model's JSON spec; anything else is returned as it is."""
    return _CLASSES.get(value, value) if isinstance(value, type) else value


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.BatchNorm2d | nn.GroupNorm | FrozenBatchNorm2d)
