"""The normalisation and activation layers a model can be built with (torchvision's and timm's
``norm_layer``, timm's ``act_layer``).

Options should survive a JSON spec, so a layer is best named by a string; the classes those names stand
for are recorded by name. Any other callable is taken as torchvision and timm take it (``norm_layer(
channels)``, ``act_layer()``: a class, a ``functools.partial``, a lambda); the spec then records a
description that ``create_model_from_spec`` refuses, naming the option to pass again.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..errors import ConfigError, unknown_name
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
_ALIASES = {
    "batchnorm2d": "batchnorm",
    "bn": "batchnorm",
    "gn": "groupnorm",
    "frozenbatchnorm2d": "frozen_batchnorm",
    "frozen_bn": "frozen_batchnorm",
}
_CLASSES = {nn.BatchNorm2d: "batchnorm", FrozenBatchNorm2d: "frozen_batchnorm"}

# timm's act_layer names (timm/layers/create_act.py), each called with no arguments
ACT_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "celu": nn.CELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "hard_sigmoid": nn.Hardsigmoid,
    "hard_swish": nn.Hardswish,
    "prelu": nn.PReLU,
    "identity": nn.Identity,
}
_ACT_CLASSES = {cls: name for name, cls in reversed(ACT_LAYERS.items())}
CALLABLE_PREFIX = "callable:"  # how a spec records a callable it cannot name


def norm_name(value: object) -> str:
    """The canonical name of a ``norm_layer`` value (a name, an alias or one of torchvision's classes)."""
    if isinstance(value, type) and value in _CLASSES:
        return _CLASSES[value]
    if isinstance(value, str):
        name = _ALIASES.get(value.lower(), value.lower())
        if name in NORM_LAYERS:
            return name
    raise ConfigError(
        f"invalid norm_layer={value!r}; choose one of: {', '.join(map(repr, NORM_LAYERS))} "
        "(or the classes nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)"
    )


def _refuse_recorded_callable(option: str, value: object) -> None:
    if isinstance(value, str) and value.startswith(CALLABLE_PREFIX):
        raise ConfigError(
            f"{option}={value!r} records a Python callable, which a spec cannot hold: pass "
            f"{option}=<the callable> again (or a name) to rebuild this model"
        )


def norm_factory(value: object) -> Norm:
    """channels -> norm layer: a name, one of the classes above, or any callable (torchvision's
    ``norm_layer``; None is its BatchNorm2d)."""
    if value is None:
        return nn.BatchNorm2d
    _refuse_recorded_callable("norm_layer", value)
    if callable(value) and value not in _CLASSES:
        return value
    return NORM_LAYERS[norm_name(value)]


def act_factory(value: object) -> Callable[[], nn.Module]:
    """() -> activation module: a timm name ("relu", "silu", ...) or any callable (timm's ``act_layer``)."""
    _refuse_recorded_callable("act_layer", value)
    if isinstance(value, str):
        if value.lower() not in ACT_LAYERS:
            raise unknown_name("act_layer", value, ACT_LAYERS)
        return ACT_LAYERS[value.lower()]
    if not callable(value):
        raise ConfigError(
            f"act_layer must be a name ({', '.join(ACT_LAYERS)}) or a callable returning a "
            f"module, got {value!r}"
        )
    return value


def spec_value(value: object) -> object:
    """A norm or activation class becomes its name in a model's JSON spec, another callable a description
    (``callable:...``) that a spec cannot rebuild; anything else is returned as it is."""
    if isinstance(value, type) and (value in _CLASSES or value in _ACT_CLASSES):
        return _CLASSES.get(value) or _ACT_CLASSES[value]
    if callable(value):
        return CALLABLE_PREFIX + getattr(value, "__qualname__", repr(value))
    return value


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.BatchNorm2d | nn.GroupNorm | FrozenBatchNorm2d)
