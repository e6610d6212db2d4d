"""Residual units: basic and bottleneck, post- and pre-activation, and the Identity Mappings unit ablations.

Every unit has ``residual`` (False in plain nets), ``forward_shortcut(x)`` (what the unit computes with its
branch deleted) and ``response_norms()`` (the BNs right after each 3x3 conv of the branch, whose outputs
"Deep Residual Learning" Fig. 7 measures). Layer names are torchvision's (conv1/bn1/.../downsample).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import ShortcutA, ShortcutMerge, conv1x1, conv3x3, make_shortcut


@dataclass(frozen=True)
class UnitConfig:
    """Options shared by every unit of a network."""

    shortcut: str = "B"  # "A" | "B" | "C", see layers.py
    residual: bool = True  # False: the paper's "plain" nets, no shortcut at all
    shortcut_kind: str = "identity"  # Identity Mappings Fig. 2 ablations (CIFAR nets)
    groups: int = 1  # ResNeXt cardinality
    base_width: int = 64  # ResNeXt width per group; 128 for wide_resnet50_2 / 101_2
    stride_in_1x1: bool = False
    drop_rate: float = 0.0  # WRN dropout between the two 3x3 convs
    gate_bias: float = -6.0  # initial b_g of the gated shortcut kinds


class ResidualUnit(nn.Module):
    """What all units share: the shortcut, the merge, and the plain-net switch."""

    expansion = 1
    preactivated_shortcut = False  # pre-activation units project their BN-ReLU'd input
    shortcut_bn = True  # projection conv followed by BN (False where a BN follows the addition)

    def __init__(self, cfg: UnitConfig) -> None:
        super().__init__()
        self.residual = cfg.residual
        self.act = nn.ReLU()

    def add_shortcut(self, in_chs: int, out_chs: int, stride: int, cfg: UnitConfig) -> None:
        """Create ``downsample`` and ``merge``; called last so state_dict order is torchvision's."""
        option = "C" if cfg.shortcut_kind == "conv1x1" else cfg.shortcut
        if cfg.residual:
            self.downsample = make_shortcut(option, in_chs, out_chs, stride, with_bn=self.shortcut_bn)
        else:  # plain unit: no shortcut; forward_shortcut still gives the parameter-free mapping
            same_shape = in_chs == out_chs and stride == 1
            self.downsample = None if same_shape else ShortcutA(in_chs, out_chs, stride)
        plain_add = cfg.shortcut_kind in ("identity", "conv1x1") or not cfg.residual
        self.merge = None if plain_add else ShortcutMerge(
            cfg.shortcut_kind, in_chs, out_chs, stride, gate_bias=cfg.gate_bias
        )

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_shortcut(self, x: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
        """The unit's output with its residual branch deleted (identity, projection or option A).

        ``pre`` is ``self.preact(x)`` when the caller has it (so BN statistics update once per forward).
        """
        if self.downsample is None:
            return x
        if self.preactivated_shortcut:
            x = self.preact(x) if pre is None else pre
        return self.downsample(x)

    def add(self, x: torch.Tensor, branch: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
        """shortcut(x) + branch: the residual equation (only the branch in a plain unit)."""
        if not self.residual:
            return branch
        shortcut = self.forward_shortcut(x, pre)
        return shortcut + branch if self.merge is None else self.merge(x, shortcut, branch)

    def response_norms(self) -> list[nn.BatchNorm2d]:
        return []

    def zero_init_last(self) -> None:
        """Zero the last BN gamma (or, without one, the last conv) of the branch: the unit starts as its
        shortcut (Goyal et al. 2017)."""
        raise NotImplementedError


class BasicBlock(ResidualUnit):
    """Two 3x3 convs ("Deep Residual Learning" Fig. 5 left): relu(x + bn2(conv2(relu(bn1(conv1(x))))))."""

    def __init__(self, in_chs: int, planes: int, stride: int, cfg: UnitConfig, first: bool = False) -> None:
        super().__init__(cfg)
        self.conv1 = conv3x3(in_chs, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.add_shortcut(in_chs, planes, stride, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.act(self.add(x, branch))

    def response_norms(self) -> list[nn.BatchNorm2d]:
        return [self.bn1, self.bn2]

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(ResidualUnit):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand ("Deep Residual Learning" Fig. 5 right).

    stride_in_1x1=False puts the stride on the 3x3 conv, as torchvision does ("ResNet v1.5", needed for
    its weights, slightly more accurate and costlier); True puts it on the first 1x1 as the paper does.
    """

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int, cfg: UnitConfig, first: bool = False) -> None:
        out_chs = planes * self.expansion
        super().__init__(cfg)
        width = int(planes * cfg.base_width / 64) * cfg.groups
        s1, s3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_chs, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups=cfg.groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_chs)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.add_shortcut(in_chs, out_chs, stride, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        branch = self.bn3(self.conv3(out))
        return self.act(self.add(x, branch))

    def response_norms(self) -> list[nn.BatchNorm2d]:
        return [self.bn2]

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActUnit(ResidualUnit):
    """Full pre-activation ("Identity Mappings" Fig. 4e): BN-ReLU open the branch, nothing follows the add.

    The first unit of a network follows conv1-BN-ReLU, so it has no BN-ReLU of its own ("we adopt the
    first activation right after conv1 and before splitting into two paths", Identity Mappings Sec. 4.1).
    Where the shape changes the shortcut projects the pre-activated input, as the authors' code does.
    """

    preactivated_shortcut = True
    shortcut_bn = False

    def __init__(self, in_chs: int, cfg: UnitConfig, first: bool) -> None:
        super().__init__(cfg)
        self.bn1 = None if first else nn.BatchNorm2d(in_chs)

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.bn1 is None else self.act(self.bn1(x))


class PreActBasicBlock(PreActUnit):
    """x + conv2(drop(relu(bn2(conv1(relu(bn1(x)))))))."""

    def __init__(self, in_chs: int, planes: int, stride: int, cfg: UnitConfig, first: bool = False) -> None:
        super().__init__(in_chs, cfg, first)
        self.conv1 = conv3x3(in_chs, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        # WRN puts dropout between the two convs, after the ReLU (Zagoruyko & Komodakis Sec. 2.4).
        self.drop = nn.Dropout(cfg.drop_rate) if cfg.drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self.add_shortcut(in_chs, planes, stride, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preact(x)
        branch = self.conv2(self.drop(self.act(self.bn2(self.conv1(pre)))))
        return self.add(x, branch, pre)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(PreActUnit):
    """x + conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x))))))))), the unit of ResNet-164/1001."""

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int, cfg: UnitConfig, first: bool = False) -> None:
        out_chs = planes * self.expansion
        super().__init__(in_chs, cfg, first)
        width = int(planes * cfg.base_width / 64) * cfg.groups
        s1, s3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_chs, width, s1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups=cfg.groups)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_chs)
        self.add_shortcut(in_chs, out_chs, stride, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preact(x)
        out = self.conv1(pre)
        out = self.conv2(self.act(self.bn2(out)))
        branch = self.conv3(self.act(self.bn3(out)))
        return self.add(x, branch, pre)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


# --- The other unit placements of "Identity Mappings" Fig. 4 (basic units, for the CIFAR ablations) ---


class BNAfterAddBlock(ResidualUnit):
    """Fig. 4b: relu(bn2(x + conv2(relu(bn1(conv1(x))))))."""

    shortcut_bn = False  # bn2 follows the addition

    def __init__(self, in_chs: int, planes: int, stride: int, cfg: UnitConfig, first: bool = False) -> None:
        super().__init__(cfg)
        self.conv1 = conv3x3(in_chs, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.add_shortcut(in_chs, planes, stride, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.conv2(self.act(self.bn1(self.conv1(x))))
        return self.act(self.bn2(self.add(x, branch)))

    def response_norms(self) -> list[nn.BatchNorm2d]:
        return [self.bn1]

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class ReLUBeforeAddBlock(BasicBlock):
    """Fig. 4c: x + relu(bn2(conv2(relu(bn1(conv1(x)))))); the branch can only add non-negative values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.act(self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))))
        return self.add(x, branch)


class ReLUOnlyPreActBlock(BasicBlock):
    """Fig. 4d: x + bn2(conv2(relu(bn1(conv1(relu(x)))))); the ReLU moves before the weights, BN stays."""

    preactivated_shortcut = True

    def __init__(self, in_chs: int, planes: int, stride: int, cfg: UnitConfig, first: bool = False) -> None:
        super().__init__(in_chs, planes, stride, cfg)
        self.first = first  # the first unit's input is already ReLU'd by the stem

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.first else self.act(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preact(x)
        branch = self.bn2(self.conv2(self.act(self.bn1(self.conv1(pre)))))
        return self.add(x, branch, pre)


def make_stage(
    block: type[ResidualUnit], in_chs: int, planes: int, num_blocks: int, stride: int, cfg: UnitConfig,
    *, first_of_net: bool = False,
) -> nn.Sequential:
    """``num_blocks`` units; the first one carries the stride and any change of width."""
    units = []
    for i in range(num_blocks):
        units.append(block(in_chs, planes, stride if i == 0 else 1, cfg, first=first_of_net and i == 0))
        in_chs = planes * block.expansion
    return nn.Sequential(*units)


UNIT_BLOCKS: dict[str, type[ResidualUnit]] = {
    "original": BasicBlock,
    "bn_after_add": BNAfterAddBlock,
    "relu_before_add": ReLUBeforeAddBlock,
    "relu_only_preact": ReLUOnlyPreActBlock,
    "full_preact": PreActBasicBlock,
}
