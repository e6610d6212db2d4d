"""RoR, "Residual Networks of Residual Networks: Multilevel Residual Networks" (Zhang et al., arXiv
1608.02908, IEEE TCSVT).

RoR-3 adds two levels of shortcuts above a CIFAR ResNet's own (level 3, one per block): a level-2 shortcut
across each stage (group of blocks) and a level-1 "root" shortcut from the stem's output to the last
stage's output (their Sec. 3, Fig. 2). Both outer levels end at the last block of their group, where they
are added together with that block's own shortcut, before its final ReLU in post-activation nets (their
Fig. 2). Where the shape changes an outer shortcut is a 1x1 projection (conv-BN; a bare conv in
pre-activation nets, whose next BN follows the addition), elsewhere the identity.

The base nets: the original CIFAR ResNets (``ror3_resnet110``), the pre-activation ResNet-164
(``ror3_preact_resnet164``) and Wide ResNets (``ror3_wrn40_4``, ``ror3_wrn58_4``: RoR-3-WRN58-4 with
stochastic depth is their best CIFAR net, 3.77% on CIFAR-10, 19.73% on CIFAR-100).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import ResNetBase
from .blocks import BasicBlock, BlockConfig, PreActBasicBlock, PreActBottleneck
from .cifar import blocks_per_stage, wrn_blocks_per_stage
from .layers import SHORTCUT_OPTIONS, check_choice, make_shortcut
from .registry import build_model, register_family, register_model
from .stems import StemConfig

# The base nets' own blocks: their ``outer`` input (passed by keyword, so that a lesion patch of the block
# refuses it loudly) joins the last block's addition, before its final ReLU in post-activation nets.
ROR_BLOCKS = {
    ("original", "basic"): BasicBlock,
    ("full_preact", "basic"): PreActBasicBlock,
    ("full_preact", "bottleneck"): PreActBottleneck,
}


@register_family
class RoRNet(ResNetBase):
    """RoR-3 on a CIFAR ResNet: the base net's stem, stages and head (``ResNetBase``), with the level-2
    shortcuts ``stage_shortcuts`` and the level-1 shortcut ``root_shortcut``."""

    family = "RoR"

    def __init__(
        self,
        layers: Sequence[int],
        *,
        widths: Sequence[int],
        block_type: str,
        unit: str,
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str = "A",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = False,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        global_pool: str = "avg",
    ) -> None:
        check_choice("shortcut", shortcut, SHORTCUT_OPTIONS)
        block = ROR_BLOCKS[(unit, block_type)]
        if isinstance(drop_rate, bool) or not isinstance(drop_rate, int | float) or not 0 <= drop_rate < 1:
            raise ConfigError(f"drop_rate must be a number in [0, 1), got {drop_rate!r}")
        if drop_rate and block is not PreActBasicBlock:
            raise ConfigError("drop_rate (WRN dropout) is implemented for pre-activation basic blocks only")
        cfg = BlockConfig(
            shortcut=shortcut, drop_rate=float(drop_rate), stride_in_1x1=block_type == "bottleneck"
        )
        super().__init__(
            block,
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
        norm = None if block.pre_activation else cfg.norm
        chans = [16] + [w * block.expansion for w in widths]
        strides = [1] + [2] * (len(widths) - 1)
        built = len(self.stage_names)
        self.stage_shortcuts = nn.ModuleList(
            [
                make_shortcut("B", chans[i], chans[i + 1], strides[i], norm=norm) or nn.Identity()
                for i in range(built)
            ]
        )
        complete = built == len(layers)
        total_stride = 2 ** (len(widths) - 1)
        root = make_shortcut("B", chans[0], chans[-1], total_stride, norm=norm) if complete else None
        self.root_shortcut = root
        if not next(self.parameters()).is_meta:  # ResNetBase initialised its own layers before these existed
            for m in [*self.stage_shortcuts.modules(), *(self.root_shortcut.modules() if complete else [])]:
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output; the last block of stage i also adds the level-2 shortcut of the stage's
        input, and the last stage's the level-1 shortcut of the stem's output."""
        root = x
        outputs = []
        for i, name in enumerate(self.stage_names):
            stage = getattr(self, name)
            outer = self.stage_shortcuts[i](x)
            if i == len(self.stage_names) - 1 and self.root_shortcut is not None:
                outer = outer + self.root_shortcut(root)
            for j in range(len(stage) - 1):
                x = stage[j](x)
            x = stage[len(stage) - 1](x, outer=outer)
            outputs.append(x)
        return outputs

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self._stem_features(x)
        outputs = self._stage_outputs(self.maxpool(stem))
        outputs[-1] = self.final_act(outputs[-1])
        return [stem, *outputs]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self._stage_outputs(self.forward_stem(x))[-1])


def _ror(
    kwargs: dict[str, Any],
    n: int,
    widths: tuple[int, ...],
    block_type: str,
    unit: str,
    builder_options: tuple[str, ...] = (),
    **defaults: Any,
) -> RoRNet:
    return build_model(
        RoRNet,
        {**defaults, **kwargs},
        builder_options=builder_options,
        layers=(n, n, n),
        widths=widths,
        block_type=block_type,
        unit=unit,
    )


def _ror_wrn(kwargs: dict[str, Any], depth: int, k: object, builder_options: tuple[str, ...] = ()) -> RoRNet:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"widen_factor must be a positive integer, got {k!r}")
    # WRN blocks: pre-activation basic blocks, projections where the shape changes.
    return _ror(
        kwargs,
        wrn_blocks_per_stage(depth),
        (16 * k, 32 * k, 64 * k),
        "basic",
        "full_preact",
        builder_options,
        shortcut="B",
    )


@register_model
def ror3_resnet110(**kwargs: Any) -> RoRNet:
    """RoR-3 on the original ResNet-110 (option A block shortcuts)."""
    return _ror(kwargs, blocks_per_stage(110), (16, 32, 64), "basic", "original")


@register_model
def ror3_preact_resnet164(**kwargs: Any) -> RoRNet:
    """RoR-3 on the pre-activation ResNet-164 ("Pre-RoR-3-164")."""
    return _ror(
        kwargs, blocks_per_stage(164, "bottleneck"), (16, 32, 64), "bottleneck", "full_preact", shortcut="B"
    )


@register_model
def ror3_wrn40_4(**kwargs: Any) -> RoRNet:
    return _ror_wrn(kwargs, 40, 4)


@register_model
def ror3_wrn58_4(**kwargs: Any) -> RoRNet:
    return _ror_wrn(kwargs, 58, 4)


@register_model
def ror3_resnet_cifar(*, depth: int = 110, **kwargs: Any) -> RoRNet:
    """RoR-3 on a 6n+2 original CIFAR ResNet of any valid depth."""
    return _ror(kwargs, blocks_per_stage(depth), (16, 32, 64), "basic", "original", ("depth",))


@register_model
def ror3_wrn(*, depth: int = 58, widen_factor: int = 4, **kwargs: Any) -> RoRNet:
    """RoR-3 on WRN-depth-widen_factor (depth 6n+4)."""
    return _ror_wrn(kwargs, depth, widen_factor, ("depth", "widen_factor"))
