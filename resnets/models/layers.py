"""Convolutions, shortcut mappings and the ways a block merges its shortcut with its branch.

Shortcut options follow "Deep Residual Learning" Sec. 3.3 / Table 3:
A = identity, with zero-padded channels and stride-2 subsampling when dimensions grow (no parameters);
B = 1x1 projection only where dimensions change; C = 1x1 projection on every block.
The merge kinds are the shortcut ablations of "Identity Mappings in Deep Residual Networks" (Fig. 2).
Also here: the squeeze-and-excitation module of SE-ResNets (Hu et al. 2018) and the stochastic-depth
drop of a residual branch (Huang et al. 2016), both torchvision's modules.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation, StochasticDepth

from ..errors import ConfigError

Norm = Callable[[int], nn.Module]  # channels -> normalisation layer (nn.BatchNorm2d, GroupNorm, ...)
ATTN_LAYERS = (None, "se")

SHORTCUT_OPTIONS = ("A", "B", "C")
SHORTCUT_KINDS = (
    "identity",
    "constant_scaling",
    "exclusive_gating",
    "shortcut_only_gating",
    "conv1x1",
    "dropout",
)


def conv3x3(in_chans: int, out_chans: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    # No bias: every conv is followed by BN (or, in pre-activation blocks, feeds an addition then a BN).
    # padding = dilation keeps the map size of a dilated conv (torchvision's replace_stride_with_dilation).
    return nn.Conv2d(
        in_chans, out_chans, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups, bias=False
    )


def conv1x1(in_chans: int, out_chans: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False)


def check_choice(option: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"invalid {option}={value!r}; choose one of: {', '.join(map(repr, choices))}")


class ShortcutA(nn.Module):
    """Option A: stride-2 subsampling and zero-padded extra channels; no parameters.

    Subsampling keeps the top-left sample of each 2x2 window, the positions a 1x1 stride-2
    projection would read. The paper does not say where the zeros go; they go after the input channels.
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        if out_chans < in_chans:
            raise ConfigError(f"option A shortcut cannot reduce channels ({in_chans} -> {out_chans})")
        self.in_chans, self.out_chans, self.stride = in_chans, out_chans, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_chans - self.in_chans))

    def extra_repr(self) -> str:
        return f"{self.in_chans}, {self.out_chans}, stride={self.stride}"


def make_shortcut(
    option: str,
    in_chans: int,
    out_chans: int,
    stride: int,
    *,
    norm: Norm | None = nn.BatchNorm2d,
    avg_down: bool = False,
) -> nn.Module | None:
    """The shortcut of one block; ``None`` means identity.

    ``norm=None`` for pre-activation blocks: their projection is a bare 1x1 conv because the next
    block's BN follows the addition (as in the Identity Mappings and WRN authors' code).
    ``avg_down``: ResNet-D ("Bag of Tricks", He et al. 2019, Sec. 4.1): a 1x1 conv of stride 2 ignores
    three quarters of its input, so a 2x2 average pool does the striding and the conv has stride 1.
    """
    same_shape = in_chans == out_chans and stride == 1
    if option == "A":
        return None if same_shape else ShortcutA(in_chans, out_chans, stride)
    if option == "B" and same_shape:
        return None
    # torchvision's "downsample": conv then BN, state_dict keys downsample.0 / downsample.1; with
    # avg_down timm's: pool (an Identity at stride 1, so the keys stay put), conv, BN.
    layers: list[nn.Module] = []
    if avg_down:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else None
        layers += [pool or nn.Identity(), conv1x1(in_chans, out_chans)]
    else:
        layers.append(conv1x1(in_chans, out_chans, stride))
    if norm is not None:
        layers.append(norm(out_chans))
    return nn.Sequential(*layers)


def squeeze_channels(channels: int) -> int:
    """The squeezed width of an SE module: channels / 16 (Hu et al. 2018, reduction ratio r = 16), rounded
    to a multiple of 8 and at least 8 as timm does, so that its SE-ResNet weights fit."""
    return max(8, int(channels / 16 + 4) // 8 * 8)


def make_attention(attn_layer: str | None, channels: int) -> nn.Module | None:
    """The channel attention on a block's branch: None, or "se" (squeeze-and-excitation, Hu et al. 2018).

    torchvision's ``SqueezeExcitation`` (global average pool, 1x1 conv, ReLU, 1x1 conv, sigmoid, scale)
    has timm's parameter names, ``fc1`` and ``fc2``.
    """
    check_choice("attn_layer", attn_layer, ATTN_LAYERS)
    return None if attn_layer is None else SqueezeExcitation(channels, squeeze_channels(channels))


def make_drop_path(drop_prob: float) -> nn.Module:
    """Stochastic depth (Huang et al. 2016): in training, each sample's residual branch is dropped with
    probability ``drop_prob`` (kept ones are scaled by 1 / survival probability, so evaluation is the
    identity instead of the paper's test-time scaling; same expectation)."""
    return StochasticDepth(drop_prob, mode="row") if drop_prob > 0 else NoDropPath()


class NoDropPath(nn.Module):
    """The identity, where a block drops no paths. Unlike ``nn.Identity`` it is no leaf of torch.fx, so a
    traced block has torchvision's graph (no ``drop_path`` node), while a forward hook on it still sees
    the branch (the refinement analysis records it there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ShortcutMerge(nn.Module):
    """Combines shortcut h(x) and branch F(x) for the Identity Mappings shortcut ablations (Fig. 2).

    - constant_scaling: 0.5 h(x) + 0.5 F(x) (their Table 1 row with lambda = 0.5 on both paths).
    - exclusive_gating: (1 - g(x)) h(x) + g(x) F(x), g(x) = sigmoid(W_g x + b_g), W_g a 1x1 conv.
    - shortcut_only_gating: (1 - g(x)) h(x) + F(x).
      Both gates start with b_g = -6 (g ~ 0, near-identity shortcut): their best initialisation
      (Table 1: 8.70% for exclusive gating, 6.91% for shortcut-only gating on ResNet-110; b_g = 0
      gave 12.86% for shortcut-only gating and exclusive gating failed for 0..-5). ``gate_bias`` sets it.
    - dropout: dropout with ratio 0.5 on h(x), no rescaling, so that it imposes a scale of 0.5 in
      expectation as the paper describes (test time: 0.5 h(x)).
    ``identity`` and ``conv1x1`` add plainly (conv1x1 is a projection shortcut on every block).
    """

    def __init__(
        self,
        kind: str,
        in_chans: int,
        out_chans: int,
        stride: int,
        *,
        gate_bias: float = -6.0,
        scale: float = 0.5,
        drop_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        check_choice("shortcut_kind", kind, SHORTCUT_KINDS)
        self.kind, self.scale, self.drop_ratio, self.gate_bias = kind, scale, drop_ratio, gate_bias
        # The gate sees the block's input x and must match the output's shape, hence in -> out, stride.
        self.gate = (
            nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=True) if kind.endswith("gating") else None
        )

    def init_weights(self) -> None:
        if self.gate is not None:
            nn.init.constant_(self.gate.bias, self.gate_bias)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        if self.kind == "constant_scaling":
            return self.scale * shortcut + self.scale * branch
        if self.kind == "exclusive_gating":
            g = torch.sigmoid(self.gate(x))
            return (1 - g) * shortcut + g * branch
        if self.kind == "shortcut_only_gating":
            g = torch.sigmoid(self.gate(x))
            return (1 - g) * shortcut + branch
        if self.kind == "dropout":
            keep = 1 - self.drop_ratio
            return keep * F.dropout(shortcut, self.drop_ratio, self.training) + branch
        return shortcut + branch

    def extra_repr(self) -> str:
        return self.kind
