"""ImageNet ResNets ("Deep Residual Learning" Table 1) and their family: plain, ResNeXt, wide, pre-activation.

7x7/2 conv + 3x3/2 max pool, stages conv2_x..conv5_x (layer1..layer4, strides 4/8/16/32), global
average pool, fc. State_dict keys are torchvision's, so its weights load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .base import ResNetBase
from .blocks import BasicBlock, BlockConfig, Bottleneck, PreActBasicBlock, PreActBottleneck, ResidualBlock
from .layers import SHORTCUT_OPTIONS, check_choice
from .registry import build_model, register_model


class ResNet(ResNetBase):
    """An ImageNet-style ResNet. Builders fix ``block`` (a block class, as torchvision's ``ResNet``),
    ``layers``, ``residual``, ``groups`` and ``width_per_group``; users set the keyword options (see
    ``resnets.create_model``)."""

    def __init__(
        self, block: type[ResidualBlock], layers: Sequence[int], *, num_classes: int = 1000,
        in_chans: int = 3, shortcut: str = "B", stride_in_1x1: bool = False, zero_init_last: bool = False,
        residual: bool = True, groups: int = 1, width_per_group: int = 64,
    ) -> None:
        check_choice("shortcut", shortcut, SHORTCUT_OPTIONS)
        check_choice("stride_in_1x1", stride_in_1x1, (False, True))
        check_choice("zero_init_last", zero_init_last, (False, True))
        if len(layers) != 4 or any(not isinstance(n, int) or n < 1 for n in layers):
            raise ConfigError(f"layers must be 4 positive block counts, got {layers!r}")
        cfg = BlockConfig(shortcut=shortcut, residual=residual, groups=groups, base_width=width_per_group,
                          stride_in_1x1=stride_in_1x1)
        super().__init__(
            block, layers, (64, 128, 256, 512), cfg, num_classes=num_classes, in_chans=in_chans,
            imagenet_stem=True, stem_width=64, zero_init_last=zero_init_last,
        )


def _resnet(
    kwargs: dict[str, Any], block: type[ResidualBlock], layers: Sequence[int], **fixed: Any
) -> ResNet:
    fixed = {"residual": True, "groups": 1, "width_per_group": 64, **fixed}
    return build_model(ResNet, kwargs, block=block, layers=tuple(layers), **fixed)


def _plain(kwargs: dict[str, Any], block: type[ResidualBlock], layers: Sequence[int]) -> ResNet:
    # "Plain" baselines (paper Sec. 4.1): the same stacks without shortcuts, so nothing to choose.
    return _resnet(kwargs, block, layers, residual=False, shortcut="A", zero_init_last=False)


# --- "Deep Residual Learning" Table 1 ---------------------------------------------------------------
@register_model
def resnet18(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, BasicBlock, (2, 2, 2, 2))


@register_model
def resnet34(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, BasicBlock, (3, 4, 6, 3))


@register_model
def resnet50(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 6, 3))


@register_model
def resnet101(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 23, 3))


@register_model
def resnet152(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 8, 36, 3))


@register_model
def resnet200(**kwargs: Any) -> ResNet:  # Identity Mappings Table 5
    return _resnet(kwargs, Bottleneck, (3, 24, 36, 3))


# --- plain baselines --------------------------------------------------------------------------------
@register_model
def plain18(**kwargs: Any) -> ResNet:
    return _plain(kwargs, BasicBlock, (2, 2, 2, 2))


@register_model
def plain34(**kwargs: Any) -> ResNet:
    return _plain(kwargs, BasicBlock, (3, 4, 6, 3))


@register_model
def plain50(**kwargs: Any) -> ResNet:
    return _plain(kwargs, Bottleneck, (3, 4, 6, 3))


@register_model
def plain101(**kwargs: Any) -> ResNet:
    return _plain(kwargs, Bottleneck, (3, 4, 23, 3))


@register_model
def plain152(**kwargs: Any) -> ResNet:
    return _plain(kwargs, Bottleneck, (3, 8, 36, 3))


# --- ResNeXt (Xie et al. 2017) and Wide ResNet-50/101 (torchvision's: bottleneck width doubled) -----
@register_model
def resnext50_32x4d(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4)


@register_model
def resnext101_32x8d(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 23, 3), groups=32, width_per_group=8)


@register_model
def resnext101_64x4d(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 23, 3), groups=64, width_per_group=4)


@register_model
def wide_resnet50_2(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 6, 3), width_per_group=128)


@register_model
def wide_resnet101_2(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 23, 3), width_per_group=128)


# --- full pre-activation ("Identity Mappings", ImageNet models as in fb.resnet.torch preresnet) -----
@register_model
def preact_resnet18(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, PreActBasicBlock, (2, 2, 2, 2))


@register_model
def preact_resnet34(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, PreActBasicBlock, (3, 4, 6, 3))


@register_model
def preact_resnet50(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, PreActBottleneck, (3, 4, 6, 3))


@register_model
def preact_resnet101(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, PreActBottleneck, (3, 4, 23, 3))


@register_model
def preact_resnet152(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, PreActBottleneck, (3, 8, 36, 3))


@register_model
def preact_resnet200(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, PreActBottleneck, (3, 24, 36, 3))
