"""The first convolution(s) of a network: the paper's 7x7 conv, the CIFAR 3x3 conv, and the deep stems of
ResNet-C/D ("Bag of Tricks", He et al. 2019, Sec. 4.1), with timm's names so that its weights load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from .layers import Norm, check_choice, conv3x3

STEM_TYPES = ("", "deep", "deep_tiered")  # timm's names


@dataclass(frozen=True)
class StemConfig:
    """What a network's stem is; ``ResNetBase`` builds conv1 (-bn1-relu) (-maxpool) from it."""

    imagenet: bool  # True: stride 4 (conv of stride 2, then a 3x3/2 max pool); False: the CIFAR 3x3 conv
    stem_type: str = ""  # "": one conv; "deep"/"deep_tiered": three 3x3 convs (ResNet-C)
    width: int = 64  # output channels of the one-conv stems; the deep stems' inner width (timm's stem_width)
    norm_act: bool = True  # False: no BN-ReLU after conv1, every block pre-activates (ResNet v2 as in timm)

    @property
    def out_chans(self) -> int:
        return 2 * self.width if self.stem_type else self.width

    def check(self) -> None:
        check_choice("stem_type", self.stem_type, STEM_TYPES)
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 4:
            raise ConfigError(f"stem_width must be an integer >= 4, got {self.width!r}")
        if self.stem_type == "" and self.imagenet and self.width != 64:
            raise ConfigError(
                "stem_width sets the width of a deep stem (stem_type='deep' or 'deep_tiered'); "
                "the 7x7 stem is 64 wide"
            )


def make_stem_conv(
    cfg: StemConfig, in_chans: int, norm: Norm, act: Callable[[], nn.Module] = nn.ReLU
) -> nn.Module:
    """``conv1``: a single conv, or (deep stems) three 3x3 convs with BN-ReLU between them.

    ResNet-C replaces the 7x7 conv by three 3x3 convs of widths w, w, 2w, the first of stride 2 (Bag of
    Tricks Sec. 4.1 and Fig. 2b, with w = 32); "deep_tiered" is timm's 3w/4, w, 2w. The indices of the
    nn.Sequential (conv1.0, conv1.1, conv1.3, conv1.4, conv1.6) are timm's.
    """
    if not cfg.imagenet:  # CIFAR: "the first layer is 3x3 convolutions" (Deep Residual Learning Sec. 4.2)
        return nn.Conv2d(in_chans, cfg.width, 3, stride=1, padding=1, bias=False)
    if not cfg.stem_type:  # conv1: 7x7, 64, stride 2 (Deep Residual Learning Table 1)
        return nn.Conv2d(in_chans, cfg.width, 7, stride=2, padding=3, bias=False)
    first = 3 * (cfg.width // 4) if cfg.stem_type == "deep_tiered" else cfg.width
    second = cfg.width
    return nn.Sequential(
        conv3x3(in_chans, first, stride=2),
        norm(first),
        act(),
        conv3x3(first, second),
        norm(second),
        act(),
        conv3x3(second, cfg.out_chans),
    )
