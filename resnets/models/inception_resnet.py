"""Inception-ResNet-v1 and -v2 (Szegedy, Ioffe, Vanhoucke and Alemi, "Inception-v4, Inception-ResNet and
the Impact of Residual Connections on Learning", AAAI 2017), 299x299 inputs.

Each Inception-ResNet module is a residual unit: its Inception branches are concatenated, a linear 1x1
conv (bias, no BN: "batch-normalization only on top of the traditional layers, but not on top of the
summations", their Sec. 3.2) restores the width, and the result is scaled before it is added to the
shortcut: "scaling down the residuals before adding them ... seemed to stabilize the training" with factors
between 0.1 and 0.3 (their Sec. 3.3, Fig. 20). The scales are the released model's: 0.17 (35x35 modules),
0.10 (17x17), 0.20 (8x8).

``inception_resnet_v2``: timm's ``inception_resnet_v2`` layer for layer (its names, a port of the authors'
released TF-slim model, 55.8M parameters), so timm's state dict loads with ``strict=True`` and gives the
same outputs. That released network departs from the paper's Fig. 15: its stem is Inception-v3's (1x1 80,
3x3 192, max pool, the "Mixed_5b" module: 35x35x320) instead of Fig. 3's, and it repeats its modules 10,
20 and 10 times (the paper: 5, 10, 5), the last 8x8 module without ReLU and unscaled, then a 1x1 conv
to 1536 maps.

``inception_resnet_v1``: the paper's own Fig. 15 network (no released reference): the stem of Fig. 14
(35x35x256), 5 Inception-ResNet-A (Fig. 10), Reduction-A (Fig. 7 with k, l, m, n = 192, 192, 256, 384),
10 Inception-ResNet-B (Fig. 11), Reduction-B (Fig. 12), 5 Inception-ResNet-C (Fig. 13): 1792 maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .inception import BasicConv, InceptionClassifier, ReductionA, avg_pool_branch
from .registry import build_model, register_family, register_model


class InceptionResidual(nn.Module):
    """The residual-unit contract for the lesion study: ``forward_shortcut`` (the identity), no
    projection, no merge, ``act`` (None in v2's last module)."""

    residual = True
    pre_activation = False
    merge = None
    downsample = None

    def forward_shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def response_norms(self) -> list[nn.Module]:
        return []

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(self.branch(x))
        out = out * self.scale
        out = out + self.forward_shortcut(x)
        return out if self.act is None else self.act(out)


class Block35(InceptionResidual):
    """35x35 Inception-ResNet-A. v2 (timm's ``Block35``): 1x1 32 | 1x1 32, 3x3 32 | 1x1 32, 3x3 48, 3x3 64
    -> 1x1 320. v1 (Fig. 10): the same with 3x3 32, 3x3 32 in the third branch -> 1x1 256."""

    def __init__(self, chans: int = 320, third: tuple[int, int] = (48, 64), scale: float = 0.17) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv(chans, 32, 1)
        self.branch1 = nn.Sequential(BasicConv(chans, 32, 1), BasicConv(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(
            BasicConv(chans, 32, 1),
            BasicConv(32, third[0], 3, padding=1),
            BasicConv(third[0], third[1], 3, padding=1),
        )
        self.conv2d = nn.Conv2d(64 + third[1], chans, 1)
        self.act = nn.ReLU()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Block17(InceptionResidual):
    """17x17 Inception-ResNet-B: 1x1 b0 | 1x1 c, 1x7 d, 7x1 b0 -> 1x1 ``chans``. v2 (timm's): b0 192,
    (128, 160); v1 (Fig. 11): b0 128, (128, 128)."""

    def __init__(
        self, chans: int = 1088, b0: int = 192, mid: tuple[int, int] = (128, 160), scale: float = 0.10
    ) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv(chans, b0, 1)
        self.branch1 = nn.Sequential(
            BasicConv(chans, mid[0], 1),
            BasicConv(mid[0], mid[1], (1, 7), padding=(0, 3)),
            BasicConv(mid[1], b0, (7, 1), padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(2 * b0, chans, 1)
        self.act = nn.ReLU()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x)), 1)


class Block8(InceptionResidual):
    """8x8 Inception-ResNet-C: 1x1 192 | 1x1 192, 1x3 m, 3x1 out -> 1x1 ``chans``. v2 (timm's): m 224, out
    256; v1 (Fig. 13): 192, 192. ``no_relu``: v2's last module."""

    def __init__(
        self, chans: int = 2080, mid: int = 224, out: int = 256, scale: float = 0.20, no_relu: bool = False
    ) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv(chans, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv(chans, 192, 1),
            BasicConv(192, mid, (1, 3), padding=(0, 1)),
            BasicConv(mid, out, (3, 1), padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(192 + out, chans, 1)
        # timm's name for this ReLU is ``relu`` (None in the last module)
        self.relu = None if no_relu else nn.ReLU()

    __jit_unused_properties__ = ["act"]

    @property
    def act(self) -> nn.Module | None:
        return self.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # as InceptionResidual's, for TorchScript (no act)
        out = self.conv2d(self.branch(x))
        out = out * self.scale
        out = out + self.forward_shortcut(x)
        return out if self.relu is None else self.relu(out)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x)), 1)


class Mixed5b(nn.Module):
    """v2's 35x35 entry (Inception-v3's module): 1x1 96 | 1x1 48, 5x5 64 | 1x1 64, 3x3 96, 3x3 96 | avg
    pool, 1x1 64: 320 maps."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv(192, 96, 1)
        self.branch1 = nn.Sequential(BasicConv(192, 48, 1), BasicConv(48, 64, 5, padding=2))
        self.branch2 = nn.Sequential(
            BasicConv(192, 64, 1), BasicConv(64, 96, 3, padding=1), BasicConv(96, 96, 3, padding=1)
        )
        self.branch3 = avg_pool_branch(192, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class Mixed7a(nn.Module):
    """Reduction-B. v2 (timm's ``Mixed_7a``, Fig. 18): 1x1 256, 3x3/2 384 | 1x1 256, 3x3/2 288 | 1x1 256,
    3x3 288, 3x3/2 320 | max pool. v1 (Fig. 12): 384 | 256 | 256, 256."""

    def __init__(self, chans: int = 1088, widths: tuple[int, int, int, int] = (384, 288, 288, 320)) -> None:
        super().__init__()
        a, b, c, d = widths
        self.branch0 = nn.Sequential(BasicConv(chans, 256, 1), BasicConv(256, a, 3, stride=2))
        self.branch1 = nn.Sequential(BasicConv(chans, 256, 1), BasicConv(256, b, 3, stride=2))
        self.branch2 = nn.Sequential(
            BasicConv(chans, 256, 1), BasicConv(256, c, 3, padding=1), BasicConv(c, d, 3, stride=2)
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class Mixed6a(ReductionA):
    """v2's Reduction-A (Fig. 7 with k, l, m, n = 256, 256, 384, 384), timm's ``Mixed_6a``."""

    def __init__(self) -> None:
        super().__init__(320, 256, 256, 384, 384)


class InceptionResNetBase(InceptionClassifier):
    family = "Inception-ResNet"

    def residual_blocks(self) -> list[tuple[str, nn.Module]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, InceptionResidual)]


@register_family
class InceptionResNetV2(InceptionResNetBase):
    """timm's ``inception_resnet_v2`` layer for layer (see the module docstring)."""

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_chans=in_chans,
            features_only=features_only,
            out_indices=out_indices,
            global_pool=global_pool,
        )
        self.conv2d_1a = BasicConv(in_chans, 32, 3, stride=2)
        self.conv2d_2a = BasicConv(32, 32, 3)
        self.conv2d_2b = BasicConv(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv(64, 80, 1)
        self.conv2d_4a = BasicConv(80, 192, 3)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        self.mixed_5b = Mixed5b()
        self.repeat = nn.Sequential(*[Block35() for _ in range(10)])
        self.mixed_6a = Mixed6a()
        self.repeat_1 = nn.Sequential(*[Block17() for _ in range(20)])
        self.mixed_7a = Mixed7a()
        self.repeat_2 = nn.Sequential(*[Block8() for _ in range(9)])
        self.block8 = Block8(scale=1.0, no_relu=True)
        self.conv2d_7b = BasicConv(2080, 1536, 1)
        self.head_drop, self.classif = self.make_head(1536, num_classes, drop_rate)
        stages = [
            ("layer1", [self.maxpool_3a, self.conv2d_3b, self.conv2d_4a]),
            ("layer2", [self.maxpool_5a, self.mixed_5b, self.repeat]),
            ("layer3", [self.mixed_6a, self.repeat_1]),
            ("layer4", [self.mixed_7a, self.repeat_2, self.block8, self.conv2d_7b]),
        ]
        info = [
            {"module": m, "num_chs": c, "reduction": r}
            for m, c, r in (
                ("conv2d_2b", 64, 2),
                ("conv2d_4a", 192, 4),
                ("repeat", 320, 8),
                ("repeat_1", 1088, 16),
                ("conv2d_7b", 1536, 32),
            )
        ]
        self.finish_inception(
            stem=[self.conv2d_1a, self.conv2d_2a, self.conv2d_2b],
            stages=stages,
            feature_info=info,
            num_features=1536,
            classifier="classif",
            first_conv="conv2d_1a.conv",
        )
        self.pretrained_cfg["crop_pct"] = 0.8975  # timm's evaluation crop for this net

    def group_matcher(self, coarse: bool = False) -> Callable[[str], float]:
        """timm's (its layer-wise lr decay reads it): a function of the parameter name, one group per
        top-level module (each of ``repeat*``'s blocks its own), conv2d_1/2 and conv2d_3/4 grouped, block8
        and conv2d_7b last."""
        order: dict[tuple[str, ...], int] = {}
        for name, module in self.named_children():
            if isinstance(module, nn.Sequential):  # timm's flatten_modules, one level deep
                for child, _ in module.named_children():
                    order[(name, child)] = len(order)
            elif name not in ("classif", "global_pool", "head_drop"):
                order[(name,)] = len(order)

        def matcher(name: str) -> float:
            if name.startswith(("conv2d_1", "conv2d_2")):
                return 0
            if name.startswith(("conv2d_3", "conv2d_4")):
                return 1
            if name.startswith(("block8", "conv2d_7")):
                return len(order) + 1
            parts = tuple(name.split("."))
            return next((i for key, i in order.items() if parts[: len(key)] == key), float("inf"))

        return matcher

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if torch.jit.is_scripting():  # timm's forward (TorchScript takes no views, no super())
            x = self.maxpool_3a(self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x))))
            x = self.maxpool_5a(self.conv2d_4a(self.conv2d_3b(x)))
            x = self.repeat_1(self.mixed_6a(self.repeat(self.mixed_5b(x))))
            x = self.conv2d_7b(self.block8(self.repeat_2(self.mixed_7a(x))))
            if self.global_pool is not None:
                x = torch.flatten(self.global_pool(x), 1)
            return self.classif(self.head_drop(x))
        if self.features_only:
            maps = self.feature_maps(x)
            return [maps[i] for i in self.out_indices]
        return self.forward_head(self.forward_features(x))


@register_family
class InceptionResNetV1(InceptionResNetBase):
    """The paper's Inception-ResNet-v1 (Fig. 15 with Figs. 14, 10, 7, 11, 12, 13); ``repeats``: the
    numbers of 35x35, 17x17 and 8x8 modules (5, 10, 5)."""

    def __init__(
        self,
        repeats: Sequence[int] = (5, 10, 5),
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_chans=in_chans,
            features_only=features_only,
            out_indices=out_indices,
            global_pool=global_pool,
        )
        # Fig. 14: 3x3/2 32 V, 3x3 32 V, 3x3 64, 3x3/2 max pool V, 1x1 80, 3x3 192 V, 3x3/2 256 V.
        self.conv2d_1a = BasicConv(in_chans, 32, 3, stride=2)
        self.conv2d_2a = BasicConv(32, 32, 3)
        self.conv2d_2b = BasicConv(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv(64, 80, 1)
        self.conv2d_4a = BasicConv(80, 192, 3)
        self.conv2d_4b = BasicConv(192, 256, 3, stride=2)
        self.repeat = nn.Sequential(*[Block35(256, third=(32, 32)) for _ in range(repeats[0])])
        self.mixed_6a = ReductionA(256, 192, 192, 256, 384)
        self.repeat_1 = nn.Sequential(*[Block17(896, b0=128, mid=(128, 128)) for _ in range(repeats[1])])
        self.mixed_7a = Mixed7a(896, widths=(384, 256, 256, 256))
        self.repeat_2 = nn.Sequential(*[Block8(1792, mid=192, out=192) for _ in range(repeats[2])])
        self.head_drop, self.classif = self.make_head(1792, num_classes, drop_rate)
        stages = [
            ("layer1", [self.maxpool_3a, self.conv2d_3b, self.conv2d_4a]),
            ("layer2", [self.conv2d_4b, self.repeat]),
            ("layer3", [self.mixed_6a, self.repeat_1]),
            ("layer4", [self.mixed_7a, self.repeat_2]),
        ]
        info = [
            {"module": m, "num_chs": c, "reduction": r}
            for m, c, r in (
                ("conv2d_2b", 64, 2),
                ("conv2d_4a", 192, 4),
                ("repeat", 256, 8),
                ("repeat_1", 896, 16),
                ("repeat_2", 1792, 32),
            )
        ]
        self.finish_inception(
            stem=[self.conv2d_1a, self.conv2d_2a, self.conv2d_2b],
            stages=stages,
            feature_info=info,
            num_features=1792,
            classifier="classif",
            first_conv="conv2d_1a.conv",
        )


@register_model
def inception_resnet_v1(**kwargs: Any) -> InceptionResNetV1:
    return build_model(InceptionResNetV1, kwargs, repeats=(5, 10, 5))


@register_model
def inception_resnet_v2(**kwargs: Any) -> InceptionResNetV2:
    return build_model(InceptionResNetV2, kwargs)
