"""Residual blocks: basic and bottleneck, post- and pre-activation, and the Identity Mappings block ablations.

The papers call a block a "residual unit"; torchvision's word is "block", and so is ours. Every block has
``residual`` (False in plain nets), ``forward_shortcut(x)`` (what the block computes with its branch
deleted), ``response_norms()`` (the BNs right after each 3x3 conv of the branch, whose outputs
"Deep Residual Learning" Fig. 7 measures), ``merge``, ``downsample``, ``relu`` (torchvision's name) and
``zero_init_last()``.
Layer names are torchvision's (conv1/bn1/.../downsample), so are ``planes`` (a block's base width) and
``expansion`` (it outputs ``planes * expansion`` channels).

Each ``forward`` reads as the residual equation y = F(x) + h(x) ("Deep Residual Learning" Eq. 1): the
branch F one op per line (ending, where the net has them, in squeeze-and-excitation, Hu et al. 2018, and
the stochastic-depth drop, Huang et al. 2016), then the shortcut h (``forward_shortcut``) and the addition,
which ``merge`` replaces for the Identity Mappings Fig. 2 shortcut kinds, then the final ReLU where the
block has one. A plain block ("Deep Residual Learning" Sec. 4.1) computes the branch alone.

Per block, ``make_stage`` passes ``first_dilation`` / ``dilation`` (torchvision's
replace_stride_with_dilation: the first block of a dilated stage keeps the previous dilation) and
``drop_path``, the probability of dropping this block's branch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .layers import (
    Norm,
    ShortcutA,
    ShortcutMerge,
    conv1x1,
    conv3x3,
    make_attention,
    make_drop_path,
    make_shortcut,
)


@dataclass(frozen=True)
class BlockConfig:
    """Options shared by every block of a network."""

    shortcut: str = "B"  # "A" | "B" | "C", see layers.py
    residual: bool = True  # False: the paper's "plain" nets, no shortcut at all
    shortcut_kind: str = "identity"  # Identity Mappings Fig. 2 ablations (CIFAR nets)
    groups: int = 1  # ResNeXt cardinality
    base_width: int = 64  # ResNeXt width per group; 128 for wide_resnet50_2 / 101_2
    stride_in_1x1: bool = False
    drop_rate: float = 0.0  # WRN dropout between the two 3x3 convs
    gate_bias: float = -6.0  # initial b_g of the gated shortcut kinds
    norm: Norm = nn.BatchNorm2d  # channels -> norm layer (norms.py: BN, GroupNorm, FrozenBatchNorm2d)
    act: Callable[[], nn.Module] = nn.ReLU  # () -> activation module (timm's act_layer)
    attn_layer: str | None = None  # "se": squeeze-and-excitation on the branch (Hu et al. 2018)
    avg_down: bool = False  # ResNet-D projection shortcuts: 2x2 average pool, then a stride-1 1x1 conv


class ResidualBlock(nn.Module):
    """What all blocks share: the shortcut, the merge, the plain-net switch and the ``preact`` hook."""

    expansion = 1
    # Pre-activation blocks (Identity Mappings Fig. 4d, 4e) open the branch with the activation and
    # leave the addition alone; the network's first one takes ``first=True`` and the net ends in BN-ReLU.
    pre_activation = False
    shortcut_bn = True  # projection conv followed by BN (False where a BN follows the addition)

    def __init__(self, cfg: BlockConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.residual = cfg.residual
        self.relu = cfg.act()
        self.se: nn.Module | None = None  # squeeze-and-excitation (SE-ResNets), set by blocks that have one
        # Stochastic depth (Huang et al. 2016): the branch is dropped per sample in training, kept in eval;
        # ``make_stage`` gives each block its drop probability.
        self.drop_path = make_drop_path(drop_path)

    def add_shortcut(self, in_chans: int, out_chans: int, stride: int, cfg: BlockConfig) -> None:
        """Create ``downsample`` and ``merge``; called last so state_dict order is torchvision's."""
        option = "C" if cfg.shortcut_kind == "conv1x1" else cfg.shortcut
        if cfg.residual:
            self.downsample = make_shortcut(
                option,
                in_chans,
                out_chans,
                stride,
                avg_down=cfg.avg_down,
                norm=cfg.norm if self.shortcut_bn else None,
            )
        else:  # plain block: no shortcut; forward_shortcut still gives the parameter-free mapping
            same_shape = in_chans == out_chans and stride == 1
            self.downsample = None if same_shape else ShortcutA(in_chans, out_chans, stride)
        plain_add = cfg.shortcut_kind in ("identity", "conv1x1") or not cfg.residual
        self.merge = (
            None
            if plain_add
            else ShortcutMerge(cfg.shortcut_kind, in_chans, out_chans, stride, gate_bias=cfg.gate_bias)
        )

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        """The activation a pre-activation block applies before its weights; none in the others."""
        return x

    def forward_shortcut(self, x: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output with its residual branch deleted (identity, projection or option A).

        The identity passes ``x`` itself; a projection reads the pre-activated input, as the Identity
        Mappings authors' code does. ``forward`` passes ``pre = self.preact(x)`` so that BN statistics
        update once per forward.
        """
        if self.downsample is None:
            return x
        return self.downsample(self.preact(x) if pre is None else pre)

    def join(
        self,
        x: torch.Tensor,
        out: torch.Tensor,
        pre: torch.Tensor | None = None,
        outer: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The branch ``out`` added to the shortcut of ``x`` (after the branch's drop-path, through the merge
        of a gated or scaled shortcut); ``outer`` (RoR's level-1/2 shortcuts ending here) joins the same
        addition."""
        if self.residual:
            out = self.drop_path(out)
            identity = self.forward_shortcut(x, pre)
            out = out + identity if self.merge is None else self.merge(x, identity, out)
        return out if outer is None else out + outer

    def response_norms(self) -> list[nn.Module]:
        return []

    def zero_init_last(self) -> None:
        """Zero the last BN gamma (or, without one, the last conv) of the branch: the block starts as its
        shortcut (Goyal et al. 2017)."""
        raise NotImplementedError


class BasicBlock(ResidualBlock):
    """Two 3x3 convs ("Deep Residual Learning" Fig. 5 left): relu(bn2(conv2(relu(bn1(conv1(x))))) + x)."""

    def __init__(
        self,
        in_chans: int,
        planes: int,
        stride: int,
        cfg: BlockConfig,
        *,
        first_dilation: int = 1,
        dilation: int = 1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(cfg, drop_path)
        self.conv1 = conv3x3(in_chans, planes, stride, dilation=first_dilation)
        self.bn1 = cfg.norm(planes)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = cfg.norm(planes)
        self.se = make_attention(cfg.attn_layer, planes)
        self.add_shortcut(in_chans, planes, stride, cfg)

    def forward(self, x: torch.Tensor, outer: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.se is not None:
            out = self.se(out)
        out = self.join(x, out, outer=outer)
        return self.relu(out)

    def response_norms(self) -> list[nn.Module]:
        return [self.bn1, self.bn2]

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand ("Deep Residual Learning" Fig. 5 right).

    stride_in_1x1=False puts the stride on the 3x3 conv, as torchvision does ("ResNet v1.5", needed for
    its weights, slightly more accurate and costlier); True puts it on the first 1x1 as the paper does.
    """

    expansion = 4

    def __init__(
        self,
        in_chans: int,
        planes: int,
        stride: int,
        cfg: BlockConfig,
        *,
        first_dilation: int = 1,
        dilation: int = 1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(cfg, drop_path)
        out_chans = planes * self.expansion
        width = int(planes * cfg.base_width / 64) * cfg.groups
        s1, s3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_chans, width, s1)
        self.bn1 = cfg.norm(width)
        # torchvision dilates the 3x3 conv of a stage's first block with the previous stage's dilation.
        self.conv2 = conv3x3(width, width, s3, groups=cfg.groups, dilation=first_dilation)
        self.bn2 = cfg.norm(width)
        self.conv3 = conv1x1(width, out_chans)
        self.bn3 = cfg.norm(out_chans)
        self.se = make_attention(cfg.attn_layer, out_chans)
        self.add_shortcut(in_chans, out_chans, stride, cfg)

    def forward(self, x: torch.Tensor, outer: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv3(out)
        out = self.bn3(out)
        if self.se is not None:
            out = self.se(out)
        out = self.join(x, out, outer=outer)
        return self.relu(out)

    def response_norms(self) -> list[nn.Module]:
        return [self.bn2]

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBlock(ResidualBlock):
    """Full pre-activation ("Identity Mappings" Fig. 4e): BN-ReLU open the branch, nothing follows the add.

    The first block of a network follows conv1-BN-ReLU, so it has no BN-ReLU of its own ("we adopt the
    first activation right after conv1 and before splitting into two paths", Identity Mappings Sec. 4.1).
    Where the shape changes the shortcut projects the pre-activated input, as the authors' code does.
    """

    pre_activation = True
    shortcut_bn = False  # the next block's bn1 (or the net's final BN) follows the addition

    def __init__(self, in_chans: int, cfg: BlockConfig, first: bool, drop_path: float) -> None:
        super().__init__(cfg, drop_path)
        self.bn1 = None if first else cfg.norm(in_chans)

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.bn1 is None else self.relu(self.bn1(x))


class PreActBasicBlock(PreActBlock):
    """conv2(drop(relu(bn2(conv1(relu(bn1(x))))))) + x."""

    def __init__(
        self,
        in_chans: int,
        planes: int,
        stride: int,
        cfg: BlockConfig,
        *,
        first: bool = False,
        first_dilation: int = 1,
        dilation: int = 1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(in_chans, cfg, first, drop_path)
        self.conv1 = conv3x3(in_chans, planes, stride, dilation=first_dilation)
        self.bn2 = cfg.norm(planes)
        # WRN puts dropout between the two convs, after the ReLU (Zagoruyko & Komodakis Sec. 2.4).
        self.drop = nn.Dropout(cfg.drop_rate) if cfg.drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.add_shortcut(in_chans, planes, stride, cfg)

    def forward(self, x: torch.Tensor, outer: torch.Tensor | None = None) -> torch.Tensor:
        pre = self.preact(x)
        out = self.conv1(pre)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.drop(out)
        out = self.conv2(out)
        return self.join(x, out, pre, outer=outer)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(PreActBlock):
    """conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x))))))))) + x, the block of ResNet-164/1001."""

    expansion = 4

    def __init__(
        self,
        in_chans: int,
        planes: int,
        stride: int,
        cfg: BlockConfig,
        *,
        first: bool = False,
        first_dilation: int = 1,
        dilation: int = 1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(in_chans, cfg, first, drop_path)
        out_chans = planes * self.expansion
        width = int(planes * cfg.base_width / 64) * cfg.groups
        s1, s3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_chans, width, s1)
        self.bn2 = cfg.norm(width)
        self.conv2 = conv3x3(width, width, s3, groups=cfg.groups, dilation=first_dilation)
        self.bn3 = cfg.norm(width)
        self.conv3 = conv1x1(width, out_chans)
        self.add_shortcut(in_chans, out_chans, stride, cfg)

    def forward(self, x: torch.Tensor, outer: torch.Tensor | None = None) -> torch.Tensor:
        pre = self.preact(x)
        out = self.conv1(pre)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        out = self.relu(out)
        out = self.conv3(out)
        return self.join(x, out, pre, outer=outer)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


# --- The other BN/ReLU placements of "Identity Mappings" Fig. 4 (basic blocks, for the CIFAR ablations) ---


class BNAfterAddBlock(BasicBlock):
    """Fig. 4b: relu(bn2(conv2(relu(bn1(conv1(x)))) + x)); BasicBlock's layers, bn2 moved after the add."""

    shortcut_bn = False  # bn2 follows the addition

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.join(x, out)
        out = self.bn2(out)
        return self.relu(out)

    def response_norms(self) -> list[nn.Module]:
        return [self.bn1]

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class ReLUBeforeAddBlock(BasicBlock):
    """Fig. 4c: relu(bn2(conv2(relu(bn1(conv1(x)))))) + x; the branch can only add non-negative values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        return self.join(x, out)


class ReLUOnlyPreActBlock(BasicBlock):
    """Fig. 4d: bn2(conv2(relu(bn1(conv1(relu(x)))))) + x; the ReLU moves before the weights, BN stays."""

    pre_activation = True

    def __init__(
        self,
        in_chans: int,
        planes: int,
        stride: int,
        cfg: BlockConfig,
        *,
        first: bool = False,
        first_dilation: int = 1,
        dilation: int = 1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(
            in_chans,
            planes,
            stride,
            cfg,
            first_dilation=first_dilation,
            dilation=dilation,
            drop_path=drop_path,
        )
        self.first = first  # the first block's input is already ReLU'd by the stem

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.first else self.relu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preact(x)
        out = self.conv1(pre)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        return self.join(x, out, pre)


# The CIFAR nets' ``unit`` option: where BN and ReLU sit (Identity Mappings Fig. 4a-e), per block type.
BLOCK_PLACEMENTS: dict[str, dict[str, type[ResidualBlock]]] = {
    "original": {"basic": BasicBlock, "bottleneck": Bottleneck},
    "bn_after_add": {"basic": BNAfterAddBlock},
    "relu_before_add": {"basic": ReLUBeforeAddBlock},
    "relu_only_preact": {"basic": ReLUOnlyPreActBlock},
    "full_preact": {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck},
}


def make_stage(
    block: type[ResidualBlock],
    in_chans: int,
    planes: int,
    num_blocks: int,
    stride: int,
    cfg: BlockConfig,
    *,
    first_of_net: bool = False,
    dilation: int = 1,
    previous_dilation: int = 1,
    drop_path: Sequence[float] | None = None,
) -> nn.Sequential:
    """``num_blocks`` blocks; the first one carries the stride and any change of width.

    ``dilation`` replaces the stage's stride (torchvision's replace_stride_with_dilation: the first block
    still reads its input with ``previous_dilation``); ``drop_path`` holds each block's drop probability.
    """
    drop_path = [0.0] * num_blocks if drop_path is None else list(drop_path)
    blocks = []
    for i in range(num_blocks):
        # Only pre-activation blocks take ``first``: the net's first one reads the stem's BN-ReLU output
        # and has no activation of its own (Identity Mappings Sec. 4.1).
        first = {"first": first_of_net and i == 0} if block.pre_activation else {}
        blocks.append(
            block(
                in_chans,
                planes,
                stride if i == 0 else 1,
                cfg,
                dilation=dilation,
                drop_path=drop_path[i],
                first_dilation=previous_dilation if i == 0 else dilation,
                **first,
            )
        )
        in_chans = planes * block.expansion
    return nn.Sequential(*blocks)
