"""CIFAR ResNeXt, "Aggregated Residual Transformations for Deep Neural Networks" (Xie et al. 2017), Sec. 5.3.

A 3x3 conv with 64 filters, three stages of 9n+2 layers' bottleneck blocks with output widths 256, 512 and
1024 on 32x32 / 16x16 / 8x8 maps, global average pool, fc. Each block's 3x3 conv is grouped into
``cardinality`` groups of ``base_width`` channels in the first stage (doubling per stage): ResNeXt-29,
8x64d has 34.4M parameters and 16x64d 68.1M (their Table 7). As in the authors' code
(facebookresearch/ResNeXt, ``models/resnext.lua``), the 3x3 conv strides and the shortcuts project where
the shape changes (option B).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .base import ResNetBase, check_positive_int
from .blocks import BlockConfig, Bottleneck
from .cifar import blocks_per_stage
from .registry import build_model, register_family, register_model
from .stems import StemConfig


@register_family
class CifarResNeXt(ResNetBase):
    """A CIFAR ResNeXt of ``layers`` bottleneck blocks per stage, ``cardinality`` x ``base_width`` d."""

    family = "CIFAR ResNeXt"

    def __init__(
        self,
        layers: Sequence[int],
        *,
        cardinality: int = 8,
        base_width: int = 64,
        widths: Sequence[int] = (64, 128, 256),
        stem_width: int = 64,
        num_classes: int = 10,
        in_chans: int = 3,
        zero_init_last: bool = False,
        drop_path_rate: float = 0.0,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        global_pool: str = "avg",
    ) -> None:
        check_positive_int("cardinality", cardinality)
        check_positive_int("base_width", base_width)
        if any(int(w * base_width / 64) < 1 for w in widths):
            raise ConfigError(
                f"base_width {base_width} leaves groups of no channels at widths "
                f"{tuple(widths)}: use a base_width of at least 1"
            )
        cfg = BlockConfig(shortcut="B", groups=cardinality, base_width=base_width, stride_in_1x1=False)
        super().__init__(
            Bottleneck,
            layers,
            widths,
            cfg,
            num_classes=num_classes,
            in_chans=in_chans,
            stem=StemConfig(imagenet=False, width=stem_width),
            zero_init_last=zero_init_last,
            drop_path_rate=drop_path_rate,
            features_only=features_only,
            out_indices=out_indices,
            global_pool=global_pool,
        )


def _resnext(
    kwargs: dict[str, Any], depth: object, builder_options: tuple[str, ...] = (), **fixed: Any
) -> CifarResNeXt:
    n = blocks_per_stage(depth, "bottleneck")
    return build_model(CifarResNeXt, kwargs, builder_options=builder_options, layers=(n, n, n), **fixed)


@register_model
def resnext29_8x64d(**kwargs: Any) -> CifarResNeXt:
    return _resnext(kwargs, 29, cardinality=8, base_width=64)


@register_model
def resnext29_16x64d(**kwargs: Any) -> CifarResNeXt:
    return _resnext(kwargs, 29, cardinality=16, base_width=64)


@register_model
def resnext_cifar(*, depth: int = 29, **kwargs: Any) -> CifarResNeXt:
    """A 9n+2 CIFAR ResNeXt of any valid depth, cardinality and base width (default 29, 8x64d)."""
    return _resnext(kwargs, depth, ("depth",))
