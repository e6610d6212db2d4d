"""Multi-ResNet (Abdi and Nahavandi, "Multi-Residual Networks: Improving the Speed and Accuracy of Residual
Networks", arXiv 1609.05672, 2016).

A multi-residual block adds k residual functions to its shortcut, y = x + F_1(x) + ... + F_k(x) (their
Eq. 3), so that a net of n blocks unravels into (k + 1)^n paths instead of 2^n (the ensemble view of Veit
et al. 2016): a shallower, wider network with as many paths. The functions are the full pre-activation
basic branch of Identity Mappings (conv3x3-BN-ReLU-conv3x3 after the block's BN-ReLU), on CIFAR nets of
depth 6n+2 and widths 16k', 32k', 64k' (WRN's widening factor k'; 1 for the plain widths).

Here the k functions share the block's opening BN-ReLU (``bn1``, as one pre-activation block), and a
projection shortcut where the shape changes reads it, as the Identity Mappings authors' code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import ResNetBase
from .blocks import BlockConfig, PreActBlock
from .cifar import blocks_per_stage
from .layers import SHORTCUT_OPTIONS, check_choice, conv3x3
from .registry import build_model, register_family, register_model
from .stems import StemConfig


@dataclass(frozen=True)
class MultiResConfig(BlockConfig):
    functions: int = 2  # k, the residual functions of each block


class MultiResBlock(PreActBlock):
    """relu(bn1(x)) feeds k branches conv3x3-BN-ReLU-conv3x3; y = sum of the branches + shortcut."""

    def __init__(
        self,
        in_chans: int,
        planes: int,
        stride: int,
        cfg: MultiResConfig,
        *,
        first: bool = False,
        first_dilation: int = 1,
        dilation: int = 1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(in_chans, cfg, first, drop_path)
        self.branches = nn.ModuleList(
            [
                nn.Sequential(
                    conv3x3(in_chans, planes, stride, dilation=first_dilation),
                    cfg.norm(planes),
                    nn.ReLU(),
                    conv3x3(planes, planes, dilation=dilation),
                )
                for _ in range(cfg.functions)
            ]
        )
        self.add_shortcut(in_chans, planes, stride, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preact(x)
        out = self.branches[0](pre)
        for i in range(1, len(self.branches)):
            out = out + self.branches[i](pre)
        return self.join(x, out, pre)

    def zero_init_last(self) -> None:
        for branch in self.branches:
            nn.init.zeros_(branch[-1].weight)


@register_family
class MultiResNet(ResNetBase):
    """A CIFAR Multi-ResNet: conv1-BN-ReLU (16 maps), three stages of multi-residual blocks, the final
    BN-ReLU of pre-activation nets, global average pooling, ``fc``."""

    family = "Multi-ResNet"

    def __init__(
        self,
        layers: Sequence[int],
        *,
        functions: int,
        widths: Sequence[int] = (16, 32, 64),
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str = "B",
        drop_path_rate: float = 0.0,
        zero_init_last: bool = False,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        global_pool: str = "avg",
    ) -> None:
        check_choice("shortcut", shortcut, SHORTCUT_OPTIONS)
        if isinstance(functions, bool) or not isinstance(functions, int) or functions < 1:
            raise ConfigError(
                f"k (residual functions per block) must be a positive integer, got {functions!r}"
            )
        cfg = MultiResConfig(shortcut=shortcut, functions=functions)
        super().__init__(
            MultiResBlock,
            layers,
            widths,
            cfg,
            num_classes=num_classes,
            in_chans=in_chans,
            stem=StemConfig(imagenet=False, width=16),
            zero_init_last=zero_init_last,
            drop_path_rate=drop_path_rate,
            features_only=features_only,
            out_indices=out_indices,
            global_pool=global_pool,
        )


@register_model
def multiresnet_cifar(*, depth: int = 20, k: int = 2, widen_factor: int = 1, **kwargs: Any) -> MultiResNet:
    """A Multi-ResNet of depth 6n+2 with ``k`` residual functions per block and widths 16, 32, 64 times
    ``widen_factor``."""
    if isinstance(widen_factor, bool) or not isinstance(widen_factor, int) or widen_factor < 1:
        raise ConfigError(f"widen_factor must be a positive integer, got {widen_factor!r}")
    n = blocks_per_stage(depth)
    widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    return build_model(
        MultiResNet,
        kwargs,
        builder_options=("depth", "k", "widen_factor"),
        layers=(n, n, n),
        functions=k,
        widths=widths,
    )


@register_model
def multiresnet20_k4(**kwargs: Any) -> MultiResNet:
    """Depth 20 with k = 4: 9 blocks of 4 functions (5^9 ~ 2M paths, 1.08M parameters), the survey's
    Multi-ResNet at CIFAR scale."""
    return build_model(MultiResNet, kwargs, layers=(3, 3, 3), functions=4)
