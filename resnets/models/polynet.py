"""PolyNet (Zhang, Li, Loy and Lin, "PolyNet: A Pursuit of Structural Diversity in Very Deep Networks",
CVPR 2017).

A residual unit computes (I + F) x; a PolyInception module a polynomial of Inception blocks (their Sec. 3,
Fig. 4): poly-n, I + F + F^2 + ... + F^n (F applied again to its own output, weights shared); mpoly-n,
I + F + GF + HGF ... (a new block each order); n-way, I + F + G + ... (parallel blocks). Every term is
scaled (``scale``) before the sum and a ReLU follows the sum; between orders the block's output passes
through a ReLU.

``polynet``: the paper's Very Deep PolyNet for 331x331 ImageNet images (their Sec. 6, Table 4), as the
authors released it (CUHK-MMLAB's Caffe model, ported to PyTorch in Cadene's pretrainedmodels,
``polynet.py``, whose module names these are): the Inception-v4 stem, 10 2-way Inception-ResNet-A modules
(35x35x384), Reduction-A, 10 pairs (poly-3, 2-way) of Inception-ResNet-B modules (17x17x1152),
Reduction-B, 5 pairs of Inception-ResNet-C modules (8x8x2048), global average pooling, dropout 0.2 and
the classifier. The released poly-3 shares each conv between its three orders but not the BNs nor the
final 1x1 projection. The residual scales fall linearly from 1 to 0.7 over the 40 modules (the
released scales).

Stochastic paths (their Sec. 6.2): in training each term of a module is dropped per sample with a
probability that grows linearly over the modules to ``drop_path_rate`` (the stochastic-depth rule of
Huang et al. 2016, which they adopt); default 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .classifier import check_rate
from .inception import BasicConv, InceptionClassifier
from .layers import make_drop_path
from .registry import build_model, register_family, register_model

POLY_EPS = 1e-5  # the released model's BN (PyTorch's default eps, unlike TF-slim's 1e-3)


def conv(
    in_chans: int,
    out_chans: int,
    kernel_size: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    act: bool = True,
) -> BasicConv:
    return BasicConv(in_chans, out_chans, kernel_size, stride, padding, eps=POLY_EPS, act=act)


class Stem(nn.Module):
    """Inception-v4's stem (Inception-v4 Fig. 3): 35x35x384 from 299x299 (39x39 from 331x331)."""

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(conv(in_chans, 32, 3, 2), conv(32, 32, 3), conv(32, 64, 3, padding=1))
        self.conv1_pool_branch = nn.MaxPool2d(3, stride=2)
        self.conv1_branch = conv(64, 96, 3, 2)
        self.conv2_short = nn.Sequential(conv(160, 64, 1), conv(64, 96, 3))
        self.conv2_long = nn.Sequential(
            conv(160, 64, 1),
            conv(64, 64, (7, 1), padding=(3, 0)),
            conv(64, 64, (1, 7), padding=(0, 3)),
            conv(64, 96, 3),
        )
        self.conv2_pool_branch = nn.MaxPool2d(3, stride=2)
        self.conv2_branch = conv(192, 192, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = torch.cat((self.conv1_pool_branch(x), self.conv1_branch(x)), 1)
        x = torch.cat((self.conv2_short(x), self.conv2_long(x)), 1)
        return torch.cat((self.conv2_pool_branch(x), self.conv2_branch(x)), 1)


class BlockA(nn.Module):
    """Inception-ResNet-A on 384 maps: 1x1 32, 3x3 48, 3x3 64 | 1x1 32, 3x3 32 | 1x1 32 -> 1x1 384 (BN)."""

    def __init__(self) -> None:
        super().__init__()
        self.path0 = nn.Sequential(conv(384, 32, 1), conv(32, 48, 3, padding=1), conv(48, 64, 3, padding=1))
        self.path1 = nn.Sequential(conv(384, 32, 1), conv(32, 32, 3, padding=1))
        self.path2 = conv(384, 32, 1)
        self.conv2d = conv(128, 384, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(torch.cat((self.path0(x), self.path1(x), self.path2(x)), 1))


class BlockB(nn.Module):
    """Inception-ResNet-B on 1152 maps: 1x1 128, 1x7 160, 7x1 192 | 1x1 192 -> 1x1 1152 (BN)."""

    def __init__(self) -> None:
        super().__init__()
        self.path0 = nn.Sequential(
            conv(1152, 128, 1), conv(128, 160, (1, 7), padding=(0, 3)), conv(160, 192, (7, 1), padding=(3, 0))
        )
        self.path1 = conv(1152, 192, 1)
        self.conv2d = conv(384, 1152, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(torch.cat((self.path0(x), self.path1(x)), 1))


class BlockC(nn.Module):
    """Inception-ResNet-C on 2048 maps: 1x1 192, 1x3 224, 3x1 256 | 1x1 192 -> 1x1 2048 (BN)."""

    def __init__(self) -> None:
        super().__init__()
        self.path0 = nn.Sequential(
            conv(2048, 192, 1), conv(192, 224, (1, 3), padding=(0, 1)), conv(224, 256, (3, 1), padding=(1, 0))
        )
        self.path1 = conv(2048, 192, 1)
        self.conv2d = conv(448, 2048, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(torch.cat((self.path0(x), self.path1(x)), 1))


class PolyInception(nn.Module):
    """What the modules share: ``scale``, the term drop (stochastic paths), the final ReLU and the unit
    contract of the lesion study (``forward_shortcut`` is the identity)."""

    residual = True
    pre_activation = False
    merge = None
    downsample = None

    def __init__(self, scale: float, drop_path: float) -> None:
        super().__init__()
        self.scale = scale
        self.drop_path = make_drop_path(drop_path)
        self.relu = nn.ReLU()

    @property
    def act(self) -> nn.Module:
        return self.relu

    def forward_shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def response_norms(self) -> list[nn.Module]:
        return []

    def terms(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.forward_shortcut(x)
        for term in self.terms(x):
            out = out + self.drop_path(term * self.scale)
        return self.relu(out)


class MultiWay(PolyInception):
    """n-way: I + F + G + ... (independent blocks, each on x); the released 2-way modules."""

    def __init__(self, block: Callable[[], nn.Module], n: int, scale: float, drop_path: float = 0.0) -> None:
        super().__init__(scale, drop_path)
        self.blocks = nn.ModuleList([block() for _ in range(n)])

    def terms(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [block(x) for block in self.blocks]


class MultiPoly(PolyInception):
    """mpoly-n: I + F + GF + HGF ... (a new block for each order, each on the previous ReLU'd output)."""

    def __init__(self, block: Callable[[], nn.Module], n: int, scale: float, drop_path: float = 0.0) -> None:
        super().__init__(scale, drop_path)
        self.blocks = nn.ModuleList([block() for _ in range(n)])

    def terms(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
            x = self.relu(x)
        return out


class PolyConv(nn.Module):
    """A conv shared by the orders of a poly-n module, with one BN per order (the released model)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int | tuple[int, int],
        orders: int,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, padding=padding, bias=False)
        self.bn_blocks = nn.ModuleList([nn.BatchNorm2d(out_chans, eps=POLY_EPS) for _ in range(orders)])
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, order: int) -> torch.Tensor:
        return self.relu(self.bn_blocks[order](self.conv(x)))


class Poly(PolyInception):
    """poly-n on the B (1152 maps) or C (2048 maps) block: I + F + F^2 + ... + F^n, the Inception convs
    shared between the orders, the BNs and the final 1x1 projection (``conv2d_blocks``) not."""

    def __init__(self, kind: str, n: int, scale: float, drop_path: float = 0.0) -> None:
        super().__init__(scale, drop_path)
        chans, k1, mid, (ka, kb), (pa, pb) = {
            "B": (1152, 128, 160, ((1, 7), (7, 1)), ((0, 3), (3, 0))),
            "C": (2048, 192, 224, ((1, 3), (3, 1)), ((0, 1), (1, 0))),
        }[kind]
        out = 192 if kind == "B" else 256
        self.kind = kind
        self.path0_1x1 = PolyConv(chans, k1, 1, n)
        self.add_module("path0_1x7" if kind == "B" else "path0_1x3", PolyConv(k1, mid, ka, n, padding=pa))
        self.add_module("path0_7x1" if kind == "B" else "path0_3x1", PolyConv(mid, out, kb, n, padding=pb))
        self.path1 = PolyConv(chans, 192, 1, n)
        self.conv2d_blocks = nn.ModuleList([conv(out + 192, chans, 1, act=False) for _ in range(n)])

    def block(self, x: torch.Tensor, order: int) -> torch.Tensor:
        a, b = ("path0_1x7", "path0_7x1") if self.kind == "B" else ("path0_1x3", "path0_3x1")
        x0 = getattr(self, b)(getattr(self, a)(self.path0_1x1(x, order), order), order)
        return self.conv2d_blocks[order](torch.cat((x0, self.path1(x, order)), 1))

    def terms(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for order in range(len(self.conv2d_blocks)):
            x = self.block(x, order)
            out.append(x)
            x = self.relu(x)
        return out


class ReductionA(nn.Module):
    """35x35x384 -> 17x17x1152: 1x1 256, 3x3 256, 3x3/2 384 | 3x3/2 384 | max pool."""

    def __init__(self) -> None:
        super().__init__()
        self.path0 = nn.Sequential(conv(384, 256, 1), conv(256, 256, 3, padding=1), conv(256, 384, 3, 2))
        self.path1 = conv(384, 384, 3, 2)
        self.path2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.path0(x), self.path1(x), self.path2(x)), 1)


class ReductionB(nn.Module):
    """17x17x1152 -> 8x8x2048: 1x1 256, 3x3 256, 3x3/2 256 | 1x1 256, 3x3/2 256 | 1x1 256, 3x3/2 384 | max
    pool."""

    def __init__(self) -> None:
        super().__init__()
        self.path0 = nn.Sequential(conv(1152, 256, 1), conv(256, 256, 3, padding=1), conv(256, 256, 3, 2))
        self.path1 = nn.Sequential(conv(1152, 256, 1), conv(256, 256, 3, 2))
        self.path2 = nn.Sequential(conv(1152, 256, 1), conv(256, 384, 3, 2))
        self.path3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.path0(x), self.path1(x), self.path2(x), self.path3(x)), 1)


BLOCKS: dict[str, Callable[[], nn.Module]] = {"A": BlockA, "B": BlockB, "C": BlockC}
MODULE_KINDS = ("2-way", "3-way", "mpoly-2", "mpoly-3", "poly-2", "poly-3")


def make_module(kind: str, stage: str, scale: float, drop_path: float) -> PolyInception:
    """One PolyInception module of ``kind`` (e.g. "poly-3") on the ``stage`` ("A", "B", "C") block."""
    first, second = kind.split("-")
    if second == "way":
        return MultiWay(BLOCKS[stage], int(first), scale, drop_path)
    if first == "mpoly":
        return MultiPoly(BLOCKS[stage], int(second), scale, drop_path)
    if stage == "A":
        raise ConfigError(
            "poly-n shares the Inception-ResNet-B/C convs between orders (the released model); "
            "on stage A use mpoly-n or n-way"
        )
    return Poly(stage, int(second), scale, drop_path)


@register_family
class PolyNet(InceptionClassifier):
    """A PolyNet: the stem, ``stage_a`` / ``stage_b`` / ``stage_c`` of PolyInception modules
    (``modules[s]`` lists their kinds, e.g. ("2-way",) * 10), the two reductions and the head."""

    family = "PolyNet"

    def __init__(
        self,
        modules: Sequence[Sequence[str]],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
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
        drop_path_rate = check_rate("drop_path_rate", drop_path_rate)
        total = sum(len(m) for m in modules)
        index = 0
        stages = []
        for stage, kinds in zip("ABC", modules, strict=True):
            built = []
            for kind in kinds:
                if kind not in MODULE_KINDS:
                    raise ConfigError(
                        f"unknown PolyInception module {kind!r}; choose from {', '.join(MODULE_KINDS)}"
                    )
                # The released scales: 1 down to 0.7, linear over all modules.
                scale = 1 - 0.3 * index / max(total - 1, 1)
                index += 1
                built.append(make_module(kind, stage, round(scale, 6), drop_path_rate * index / total))
            stages.append(nn.Sequential(*built))
        self.stem = Stem(in_chans)
        self.stage_a = stages[0]
        self.reduction_a = ReductionA()
        self.stage_b = stages[1]
        self.reduction_b = ReductionB()
        self.stage_c = stages[2]
        self.head_drop, self.last_linear = self.make_head(2048, num_classes, drop_rate)
        layout = [
            ("layer1", [self.stage_a]),
            ("layer2", [self.reduction_a, self.stage_b]),
            ("layer3", [self.reduction_b, self.stage_c]),
        ]
        info = [
            {"module": m, "num_chs": c, "reduction": r}
            for m, c, r in (
                ("stem", 384, 8),
                ("stage_a", 384, 8),
                ("stage_b", 1152, 16),
                ("stage_c", 2048, 32),
            )
        ]
        # 331x331 inputs with ImageNet's mean and std, as the released model (Cadene's settings).
        self.finish_inception(
            input_size=331,
            stem=[self.stem],
            stages=layout,
            feature_info=info,
            num_features=2048,
            classifier="last_linear",
            first_conv="stem.conv1.0.conv",
        )
        self.pretrained_cfg["pool_size"] = (9, 9)

    def residual_blocks(self) -> list[tuple[str, nn.Module]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, PolyInception)]


# Sec. 6 / the released model: A 10 x 2-way; B 10 x (poly-3, 2-way); C 5 x (poly-3, 2-way).
VERY_DEEP_POLYNET = (("2-way",) * 10, ("poly-3", "2-way") * 10, ("poly-3", "2-way") * 5)


@register_model
def polynet(**kwargs: Any) -> PolyNet:
    return build_model(PolyNet, kwargs, modules=VERY_DEEP_POLYNET)
