"""Inception-v4 (Szegedy, Ioffe, Vanhoucke and Alemi, "Inception-v4, Inception-ResNet and the Impact of
Residual Connections on Learning", AAAI 2017): "branch and merge" without identity shortcuts, 299x299 inputs.

The stem (their Fig. 3), 4 Inception-A (Fig. 4), Reduction-A (Fig. 7 with k, l, m, n = 192, 224, 256,
384), 7 Inception-B (Fig. 5), Reduction-B (Fig. 8), 3 Inception-C (Fig. 6), global average pooling,
dropout (keep 0.8, Fig. 9) and the classifier: their Fig. 9. The modules and names are timm's
``inception_v4`` (a port of the authors' released TF-slim model: ``features.0 .. features.21``,
``last_linear``; each conv is ``conv`` + ``bn`` (eps 1e-3) + ReLU), so timm's state dict loads with
``strict=True`` and gives the same outputs. "V" convs of the figures have no padding.

``BasicConv`` is also the unit of the Inception-ResNets (inception_resnet.py) and PolyNet (polynet.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .classifier import Classifier, check_rate, is_meta
from .registry import build_model, register_family, register_model

Size = int | tuple[int, int]


class BasicConv(nn.Module):
    """conv (no bias) - BN - ReLU, timm's ``ConvNormAct`` names (``conv``, ``bn``); ``act=False`` for a
    linear conv-BN (PolyNet's residual projections)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: Size,
        stride: int = 1,
        padding: Size = 0,
        *,
        eps: float = 1e-3,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chans, eps=eps)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def avg_pool_branch(in_chans: int, out_chans: int) -> nn.Sequential:
    """3x3 average pool (stride 1, padding not counted), then a 1x1 conv: the pooling branch of Fig. 4-6."""
    return nn.Sequential(
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), BasicConv(in_chans, out_chans, 1)
    )


class Mixed3a(nn.Module):
    """Stem, after the three convs: 3x3/2 max pool | 3x3/2 conv 96 (Fig. 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv = BasicConv(64, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.maxpool(x), self.conv(x)), 1)


class Mixed4a(nn.Module):
    """Stem: 1x1 64, 3x3 96 V | 1x1 64, 7x1 64, 1x7 64, 3x3 96 V (Fig. 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv(160, 64, 1), BasicConv(64, 96, 3))
        self.branch1 = nn.Sequential(
            BasicConv(160, 64, 1),
            BasicConv(64, 64, (1, 7), padding=(0, 3)),
            BasicConv(64, 64, (7, 1), padding=(3, 0)),
            BasicConv(64, 96, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x)), 1)


class Mixed5a(nn.Module):
    """Stem: 3x3/2 conv 192 V | 3x3/2 max pool (Fig. 3): 35x35x384."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = BasicConv(192, 192, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.conv(x), self.maxpool(x)), 1)


class InceptionA(nn.Module):
    """Fig. 4 (35x35): 1x1 96 | 1x1 64, 3x3 96 | 1x1 64, 3x3 96, 3x3 96 | avg pool, 1x1 96."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv(384, 96, 1)
        self.branch1 = nn.Sequential(BasicConv(384, 64, 1), BasicConv(64, 96, 3, padding=1))
        self.branch2 = nn.Sequential(
            BasicConv(384, 64, 1), BasicConv(64, 96, 3, padding=1), BasicConv(96, 96, 3, padding=1)
        )
        self.branch3 = avg_pool_branch(384, 96)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class ReductionA(nn.Module):
    """Fig. 7: 3x3/2 conv n V | 1x1 k, 3x3 l, 3x3/2 m V | 3x3/2 max pool (k, l, m, n of Table 1)."""

    def __init__(self, in_chans: int, k: int, l: int, m: int, n: int) -> None:  # noqa: E741  (the paper's names)
        super().__init__()
        self.branch0 = BasicConv(in_chans, n, 3, stride=2)
        self.branch1 = nn.Sequential(
            BasicConv(in_chans, k, 1), BasicConv(k, l, 3, padding=1), BasicConv(l, m, 3, stride=2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class InceptionB(nn.Module):
    """Fig. 5 (17x17): 1x1 384 | 1x1 192, 1x7 224, 7x1 256 | 1x1 192, 7x1 192, 1x7 224, 7x1 224, 1x7 256 |
    avg pool, 1x1 128."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv(1024, 384, 1)
        self.branch1 = nn.Sequential(
            BasicConv(1024, 192, 1),
            BasicConv(192, 224, (1, 7), padding=(0, 3)),
            BasicConv(224, 256, (7, 1), padding=(3, 0)),
        )
        self.branch2 = nn.Sequential(
            BasicConv(1024, 192, 1),
            BasicConv(192, 192, (7, 1), padding=(3, 0)),
            BasicConv(192, 224, (1, 7), padding=(0, 3)),
            BasicConv(224, 224, (7, 1), padding=(3, 0)),
            BasicConv(224, 256, (1, 7), padding=(0, 3)),
        )
        self.branch3 = avg_pool_branch(1024, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class ReductionB(nn.Module):
    """Fig. 8: 1x1 192, 3x3/2 192 V | 1x1 256, 1x7 256, 7x1 320, 3x3/2 320 V | 3x3/2 max pool."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv(1024, 192, 1), BasicConv(192, 192, 3, stride=2))
        self.branch1 = nn.Sequential(
            BasicConv(1024, 256, 1),
            BasicConv(256, 256, (1, 7), padding=(0, 3)),
            BasicConv(256, 320, (7, 1), padding=(3, 0)),
            BasicConv(320, 320, 3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class InceptionC(nn.Module):
    """Fig. 6 (8x8): 1x1 256 | 1x1 384, (1x3 256 | 3x1 256) | 1x1 384, 3x1 448, 1x3 512, (1x3 256 | 3x1
    256) | avg pool, 1x1 256 (timm's names for the split branches)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv(1536, 256, 1)
        self.branch1_0 = BasicConv(1536, 384, 1)
        self.branch1_1a = BasicConv(384, 256, (1, 3), padding=(0, 1))
        self.branch1_1b = BasicConv(384, 256, (3, 1), padding=(1, 0))
        self.branch2_0 = BasicConv(1536, 384, 1)
        self.branch2_1 = BasicConv(384, 448, (3, 1), padding=(1, 0))
        self.branch2_2 = BasicConv(448, 512, (1, 3), padding=(0, 1))
        self.branch2_3a = BasicConv(512, 256, (1, 3), padding=(0, 1))
        self.branch2_3b = BasicConv(512, 256, (3, 1), padding=(1, 0))
        self.branch3 = avg_pool_branch(1536, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.branch1_0(x)
        x1 = torch.cat((self.branch1_1a(x1), self.branch1_1b(x1)), 1)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        x2 = torch.cat((self.branch2_3a(x2), self.branch2_3b(x2)), 1)
        return torch.cat((self.branch0(x), x1, x2, self.branch3(x)), 1)


def init_inception(model: nn.Module) -> None:
    """Convs: He normal (fan_out); BN: 1 and 0; classifier: PyTorch's default (timm's models keep
    PyTorch's default conv init too; the authors train from truncated normals in TF-slim)."""
    if is_meta(model):
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class InceptionClassifier(Classifier):
    """What the 299x299 nets share: ImageNet preprocessing, dropout before the classifier."""

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_drop(x)

    def make_head(self, num_features: int, num_classes: int, drop_rate: float) -> tuple[nn.Module, nn.Module]:
        head_drop = nn.Dropout(check_rate("drop_rate", drop_rate))
        return head_drop, nn.Linear(num_features, num_classes) if num_classes else nn.Identity()

    def finish_inception(self, input_size: int = 299, **layout: Any) -> None:
        self.set_layout(input_size=input_size, imagenet=True, head=("head_drop",), **layout)
        if input_size == 299:
            # timm's Inception configs: 299 crops of 0.875, bicubic, the Inception mean and std (0.5).
            self.pretrained_cfg.update(
                interpolation="bicubic",
                pool_size=(8, 8),
                mean=(0.5,) * self.in_chans,
                std=(0.5,) * self.in_chans,
            )
        init_inception(self)


@register_family
class InceptionV4(InceptionClassifier):
    """Inception-v4 (Fig. 9), timm's ``inception_v4`` layer for layer."""

    family = "Inception"

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
        layers: list[nn.Module] = [
            BasicConv(in_chans, 32, 3, stride=2),
            BasicConv(32, 32, 3),
            BasicConv(32, 64, 3, padding=1),
            Mixed3a(),
            Mixed4a(),
            Mixed5a(),
        ]
        layers += [InceptionA() for _ in range(4)]
        layers += [ReductionA(384, 192, 224, 256, 384)]  # Mixed_6a
        layers += [InceptionB() for _ in range(7)]
        layers += [ReductionB()]  # Mixed_7a
        layers += [InceptionC() for _ in range(3)]
        self.features = nn.Sequential(*layers)
        self.head_drop, self.last_linear = self.make_head(1536, num_classes, drop_rate)
        f = list(self.features)
        ends = (2, 3, 9, 17, 21)  # timm's feature_info taps
        stages = [(f"layer{i}", f[ends[i - 1] + 1 : ends[i] + 1]) for i in range(1, 5)]
        info = [
            {"module": f"features.{e}", "num_chs": c, "reduction": 2 ** (i + 1)}
            for i, (e, c) in enumerate(zip(ends, (64, 160, 384, 1024, 1536), strict=True))
        ]
        self.finish_inception(
            stem=f[:3],
            stages=stages,
            feature_info=info,
            num_features=1536,
            classifier="last_linear",
            first_conv="features.0.conv",
        )

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's (its layer-wise lr decay reads it): the three stem convs, then one group per module."""
        return {"stem": r"^features\.[012]\.", "blocks": r"^features\.(\d+)"}

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if torch.jit.is_scripting():  # timm's forward (TorchScript takes no views, no super())
            x = self.features(x)
            if self.global_pool is not None:
                x = torch.flatten(self.global_pool(x), 1)
            return self.last_linear(self.head_drop(x))
        if self.features_only:
            maps = self.feature_maps(x)
            return [maps[i] for i in self.out_indices]
        return self.forward_head(self.forward_features(x))


@register_model
def inception_v4(**kwargs: Any) -> InceptionV4:
    return build_model(InceptionV4, kwargs)
