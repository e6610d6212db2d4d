"""ImageNet ResNets ("Deep Residual Learning" Table 1) and their family: plain, ResNeXt, wide, pre-activation,
the "Bag of Tricks" stems and shortcuts (ResNet-C/D), SE-ResNets and timm's ResNet v2 layout.

7x7/2 conv (or a deep stem) + 3x3/2 max pool, stages conv2_x..conv5_x (layer1..layer4, strides 4/8/16/32),
global average pool, fc. State_dict keys are torchvision's (timm's for the variants timm names, which
add ``se.fc1``/``se.fc2`` and the deep stem ``conv1.0 ... conv1.6``), so their weights load as they are;
timm's ``resnetv2_*`` keys are renamed on loading (interop.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError
from .base import ResNetBase, check_positive_int
from .blocks import BasicBlock, BlockConfig, Bottleneck, PreActBasicBlock, PreActBottleneck, ResidualBlock
from .layers import ATTN_LAYERS, SHORTCUT_OPTIONS, check_choice
from .norms import act_factory, norm_factory
from .registry import build_model, register_family, register_model
from .stems import StemConfig

OUTPUT_STRIDES = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


def dilation_choice(replace_stride_with_dilation: object, output_stride: object) -> tuple[bool, bool, bool]:
    """torchvision's ``replace_stride_with_dilation`` (3 booleans: layer2..4) or timm's ``output_stride``."""
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"invalid output_stride={output_stride!r}; choose one of: 32, 16, 8")
    if replace_stride_with_dilation is None:
        return OUTPUT_STRIDES[output_stride]
    value = replace_stride_with_dilation
    if not isinstance(value, list | tuple) or len(value) != 3 or any(not isinstance(v, bool) for v in value):
        raise ConfigError(
            f"replace_stride_with_dilation must be None or 3 booleans (layer2, layer3, layer4), got {value!r}"
        )
    if output_stride != 32:
        raise ConfigError("set one of replace_stride_with_dilation (torchvision) and output_stride (timm)")
    return tuple(value)


@register_family
class ResNet(ResNetBase):
    """An ImageNet-style ResNet. Builders fix ``block`` (a block class, as torchvision's ``ResNet``) and
    ``layers``, and whatever else defines the architecture (``groups`` of a ResNeXt, ``stem_type`` of a
    ResNet-D ...); users set the other keyword options (see ``resnets.create_model`` and docs/models.md)."""

    family = "ImageNet-family"

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        shortcut: str = "B",
        stride_in_1x1: bool = False,
        zero_init_last: bool = False,
        residual: bool = True,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Sequence[bool] | None = None,
        output_stride: int = 32,
        norm_layer: object = "batchnorm",
        act_layer: object = "relu",
        stem_type: str = "",
        stem_width: int = 64,
        stem_norm: bool = True,
        avg_down: bool = False,
        attn_layer: str | None = None,
        drop_path_rate: float = 0.0,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        global_pool: str = "avg",
    ) -> None:
        check_choice("shortcut", shortcut, SHORTCUT_OPTIONS)
        for option, value in (
            ("stride_in_1x1", stride_in_1x1),
            ("zero_init_last", zero_init_last),
            ("stem_norm", stem_norm),
            ("avg_down", avg_down),
        ):
            check_choice(option, value, (False, True))
        check_choice("attn_layer", attn_layer, ATTN_LAYERS)
        if len(layers) != 4 or any(not isinstance(n, int) or n < 1 for n in layers):
            raise ConfigError(f"layers must be 4 positive block counts, got {layers!r}")
        check_positive_int("groups", groups)
        check_positive_int("width_per_group", width_per_group)
        if block.expansion == 1 and (groups, width_per_group) != (1, 64):  # as torchvision's BasicBlock
            raise ConfigError(
                "basic blocks have no grouped conv: groups=1 and width_per_group=64 only "
                "(use a bottleneck net such as resnet50 for ResNeXt widths)"
            )
        if avg_down and shortcut == "A":
            raise ConfigError("avg_down changes projection shortcuts; shortcut='A' has none")
        if attn_layer and block.pre_activation:
            raise ConfigError(
                "attn_layer='se' is implemented for post-activation blocks (SE-ResNets, "
                "Hu et al. 2018), not for pre-activation ones"
            )
        dilate = dilation_choice(replace_stride_with_dilation, output_stride)
        cfg = BlockConfig(
            shortcut=shortcut,
            residual=residual,
            groups=groups,
            base_width=width_per_group,
            stride_in_1x1=stride_in_1x1,
            norm=norm_factory(norm_layer),
            attn_layer=attn_layer,
            avg_down=avg_down,
            act=act_factory(act_layer),
        )
        stem = StemConfig(imagenet=True, stem_type=stem_type, width=stem_width, norm_act=stem_norm)
        super().__init__(
            block,
            layers,
            (64, 128, 256, 512),
            cfg,
            num_classes=num_classes,
            in_chans=in_chans,
            stem=stem,
            zero_init_last=zero_init_last,
            drop_path_rate=drop_path_rate,
            dilate=dilate,
            features_only=features_only,
            out_indices=out_indices,
            global_pool=global_pool,
        )


class TimmResNet(ResNet):
    """A ResNet that torchvision does not have, under timm's name: timm's module names for the stem's
    activation (``act1``) and the pool (``global_pool``), as timm's own model has them."""

    stem_act_name, pool_name = "act1", "global_pool"
    foreign_names = {"relu": "act1", "avgpool": "global_pool"}

    def stem_act(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.global_pool is None else self.global_pool(x).flatten(1)


def _resnet(
    kwargs: dict[str, Any], block: type[ResidualBlock], layers: Sequence[int], **fixed: Any
) -> ResNet:
    return build_model(ResNet, kwargs, block=block, layers=tuple(layers), **{"residual": True, **fixed})


def _timm(
    kwargs: dict[str, Any], block: type[ResidualBlock], layers: Sequence[int], **fixed: Any
) -> TimmResNet:
    return build_model(TimmResNet, kwargs, block=block, layers=tuple(layers), **{"residual": True, **fixed})


_NO_RESIDUALS = "plain nets have no residual branches and no shortcuts"


def _plain(kwargs: dict[str, Any], block: type[ResidualBlock], layers: Sequence[int]) -> ResNet:
    # "Plain" baselines (paper Sec. 4.1): the same stacks without shortcuts, so nothing to choose about them.
    refused = {
        "drop_path_rate": f"stochastic depth drops residual branches; {_NO_RESIDUALS}",
        "avg_down": f"avg_down changes projection shortcuts; {_NO_RESIDUALS}",
    }
    return build_model(
        ResNet,
        kwargs,
        refused=refused,
        block=block,
        layers=tuple(layers),
        residual=False,
        shortcut="A",
        zero_init_last=False,
        groups=1,
        width_per_group=64,
    )


# The variants' fixed options, with timm's names for them ("Bag of Tricks", He et al. 2019, Sec. 4.1: B =
# stride on the 3x3 conv, our default; C = deep stem; D = C + average-pool projections).
RESNET_C = {"stem_type": "deep", "stem_width": 32}
RESNET_D = {**RESNET_C, "avg_down": True}
RESNET_S = {"stem_type": "deep", "stem_width": 64}  # timm's "S": the deep stem 64 wide
RESNET_T = {"stem_type": "deep_tiered", "stem_width": 32, "avg_down": True}  # timm's tiered stem
SE = {"attn_layer": "se"}  # SE-ResNet (Hu et al. 2018)
RESNEXT_32X4D = {"groups": 32, "width_per_group": 4}
RESNET_V2 = {"stem_norm": False}  # timm's resnetv2: conv1 and max pool, every block pre-activates


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
def resnet200(**kwargs: Any) -> ResNet:  # Identity Mappings Table 5; timm's (torchvision has none)
    return _timm(kwargs, Bottleneck, (3, 24, 36, 3))


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
    return _resnet(kwargs, Bottleneck, (3, 4, 6, 3), **RESNEXT_32X4D)


@register_model
def resnext101_32x8d(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 23, 3), groups=32, width_per_group=8)


@register_model
def resnext101_64x4d(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 23, 3), groups=64, width_per_group=4)


@register_model
def wide_resnet50_2(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 6, 3), groups=1, width_per_group=128)


@register_model
def wide_resnet101_2(**kwargs: Any) -> ResNet:
    return _resnet(kwargs, Bottleneck, (3, 4, 23, 3), groups=1, width_per_group=128)


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


# --- "Bag of Tricks" (He et al. 2019) ResNet-C/D, with timm's names and keys -----------------------------
@register_model
def resnet18d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, BasicBlock, (2, 2, 2, 2), **RESNET_D)


@register_model
def resnet34d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, BasicBlock, (3, 4, 6, 3), **RESNET_D)


@register_model
def resnet26(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (2, 2, 2, 2))


@register_model
def resnet26d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (2, 2, 2, 2), **RESNET_D)


@register_model
def resnet50c(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 6, 3), **RESNET_C)


@register_model
def resnet50d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 6, 3), **RESNET_D)


@register_model
def resnet50s(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 6, 3), **RESNET_S)


@register_model
def resnet50t(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 6, 3), **RESNET_T)


@register_model
def resnet101c(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 23, 3), **RESNET_C)


@register_model
def resnet101d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 23, 3), **RESNET_D)


@register_model
def resnet152c(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 8, 36, 3), **RESNET_C)


@register_model
def resnet152d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 8, 36, 3), **RESNET_D)


@register_model
def resnet200d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 24, 36, 3), **RESNET_D)


# --- GroupNorm (Wu & He 2018), timm's resnet50_gn -----------------------------------------------------------
@register_model
def resnet50_gn(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 6, 3), norm_layer="groupnorm")


# --- Squeeze-and-Excitation (Hu et al. 2018): SE-ResNet, SE-ResNeXt -----------------------------------------
@register_model
def seresnet18(**kwargs: Any) -> ResNet:
    return _timm(kwargs, BasicBlock, (2, 2, 2, 2), **SE)


@register_model
def seresnet34(**kwargs: Any) -> ResNet:
    return _timm(kwargs, BasicBlock, (3, 4, 6, 3), **SE)


@register_model
def seresnet50(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 6, 3), **SE)


@register_model
def seresnet101(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 23, 3), **SE)


@register_model
def seresnet152(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 8, 36, 3), **SE)


@register_model
def seresnet152d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 8, 36, 3), **SE, **RESNET_D)


@register_model
def seresnext26d_32x4d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (2, 2, 2, 2), **SE, **RESNEXT_32X4D, **RESNET_D)


@register_model
def seresnext50_32x4d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 6, 3), **SE, **RESNEXT_32X4D)


@register_model
def seresnext101_32x4d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, Bottleneck, (3, 4, 23, 3), **SE, **RESNEXT_32X4D)


# --- timm's pre-activation ResNet v2 (its resnetv2_* keys load through interop.py) -------------------------
@register_model
def resnetv2_50(**kwargs: Any) -> ResNet:
    return _timm(kwargs, PreActBottleneck, (3, 4, 6, 3), **RESNET_V2)


@register_model
def resnetv2_50d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, PreActBottleneck, (3, 4, 6, 3), **RESNET_V2, **RESNET_D)


@register_model
def resnetv2_101(**kwargs: Any) -> ResNet:
    return _timm(kwargs, PreActBottleneck, (3, 4, 23, 3), **RESNET_V2)


@register_model
def resnetv2_101d(**kwargs: Any) -> ResNet:
    return _timm(kwargs, PreActBottleneck, (3, 4, 23, 3), **RESNET_V2, **RESNET_D)
