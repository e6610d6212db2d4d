"""VGG (Simonyan and Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image Recognition"):
the ResNet paper's baseline (He et al. 2015, Fig. 3, Tables 3-4 and the detection baseline of Sec. 4.3).

``vgg11`` ... ``vgg19_bn``: configurations A, B, D and E of VGG's Table 1, with torchvision's layer names
(``features.N``, ``classifier.0/3/6``), so ``torchvision.models.vgg16().state_dict()`` loads with
``strict=True`` and computes the same outputs. The stem (feature map 0) is the first group of 3x3 convs
and its max pool (stride 2), and the four later groups are the stages, so the reductions (2, 4, 8, 16,
32) are the ResNets'.

``vgg_cifar``: a VGG-style CIFAR net (3x3 conv-BN-ReLU layers, max-pool downsampling, no shortcut) for
the lesion study's plain contrast (Veit et al. 2016, Fig. 3): every layer is a deletable unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .classifier import Classifier, check_rate, is_meta
from .layers import ShortcutA
from .registry import build_model, register_family, register_model

# VGG Table 1: convolution widths, "M" a 2x2 max pool (torchvision's cfgs A, B, D, E).
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ),
}


@register_family
class VGG(Classifier):
    """VGG with torchvision's modules; ``batch_norm`` adds BN after each conv (torchvision's ``*_bn``).

    Head (VGG Sec. 2.1, torchvision's ``VGG``): 7x7 adaptive average pool, fc6 (25088 -> 4096), ReLU,
    dropout, fc7 (4096 -> 4096), ReLU, dropout, fc8 = ``fc``. ``pre_logits`` are fc7's 4096 outputs, as
    timm's VGG; ``num_classes=0`` returns them.
    """

    family = "VGG"
    global_pools = ("avg",)

    def __init__(
        self,
        config: Sequence[int | str],
        *,
        batch_norm: bool,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes, in_chans=in_chans, features_only=features_only, out_indices=out_indices
        )
        dropout = check_rate("dropout", dropout)
        layers: list[nn.Module] = []
        groups: list[list[nn.Module]] = [[]]
        chans = in_chans
        for width in config:
            if width == "M":
                groups[-1].append(nn.MaxPool2d(kernel_size=2, stride=2))
                layers.append(groups[-1][-1])
                groups.append([])
                continue
            group = [nn.Conv2d(chans, width, kernel_size=3, padding=1)]
            if batch_norm:
                group.append(nn.BatchNorm2d(width))
            group.append(nn.ReLU(inplace=True))
            groups[-1] += group
            layers += group
            chans = width
        groups.pop()  # nothing after the last pool
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes or 1),  # replaced by nn.Identity for num_classes=0
        )
        ends = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
        widths = [[m for m in g if isinstance(m, nn.Conv2d)][-1].out_channels for g in groups]
        info = [
            {"module": f"features.{end}", "num_chs": width, "reduction": 2 ** (k + 1)}
            for k, (end, width) in enumerate(zip(ends, widths, strict=True))
        ]
        self.set_layout(
            stem=groups[0],
            stages=[(f"layer{k}", g) for k, g in enumerate(groups[1:], start=1)],
            feature_info=info,
            num_features=chans,
            classifier="classifier.6",
            first_conv="features.0",
            input_size=224,
            imagenet=True,
            head=("avgpool", "classifier"),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG initialisation: He (fan_out) for convs, N(0, 0.01) for the fc layers.
        if is_meta(self):
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def head_features(self) -> int:
        return 4096

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """7x7 average pool, flatten, fc6-fc7 (``pre_logits=True`` stops there), fc8."""
        if self.features_only:
            raise ConfigError(f"{self._model_name()} was built with features_only=True: it has no head")
        x = torch.flatten(self.avgpool(features), 1)
        for i in range(6):  # fc6, ReLU, dropout, fc7, ReLU, dropout (indexing keeps torch.fx's module names)
            x = self.classifier[i](x)
        return x if pre_logits else self.classifier[6](x)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        super().reset_classifier(num_classes, "avg" if global_pool is None else global_pool)
        self.global_pool = None  # VGG pools to 7x7 in forward_head, never globally

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's (its layer-wise lr decay reads it): the first conv, then one group per feature layer."""
        return {"stem": r"^features\.0", "blocks": r"^features\.(\d+)"}

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if torch.jit.is_scripting():  # torchvision's forward (TorchScript takes no views, no super())
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
        if self.features_only:
            maps = self.feature_maps(x)
            return [maps[i] for i in self.out_indices]
        return self.forward_head(self.forward_features(x))


def _vgg(kwargs: dict[str, Any], config: str, batch_norm: bool) -> VGG:
    return build_model(VGG, kwargs, config=VGG_CONFIGS[config], batch_norm=batch_norm)


@register_model
def vgg11(**kwargs: Any) -> VGG:
    return _vgg(kwargs, "A", False)


@register_model
def vgg11_bn(**kwargs: Any) -> VGG:
    return _vgg(kwargs, "A", True)


@register_model
def vgg13(**kwargs: Any) -> VGG:
    return _vgg(kwargs, "B", False)


@register_model
def vgg13_bn(**kwargs: Any) -> VGG:
    return _vgg(kwargs, "B", True)


@register_model
def vgg16(**kwargs: Any) -> VGG:
    return _vgg(kwargs, "D", False)


@register_model
def vgg16_bn(**kwargs: Any) -> VGG:
    return _vgg(kwargs, "D", True)


@register_model
def vgg19(**kwargs: Any) -> VGG:
    return _vgg(kwargs, "E", False)


@register_model
def vgg19_bn(**kwargs: Any) -> VGG:
    return _vgg(kwargs, "E", True)


# --- the VGG-style CIFAR net of the lesion study -------------------------------------------------------


class PlainLayer(nn.Module):
    """conv3x3-BN-ReLU, a unit the lesion study can delete: with its layer gone it passes its input on,
    zero-padded to its width where it widens (the parameter-free option-A mapping of the plain ResNets,
    so the next layer still receives its shape)."""

    residual = False
    pre_activation = False
    merge = None

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        self.act = nn.ReLU()
        self.downsample = None if in_chans == out_chans else ShortcutA(in_chans, out_chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def forward_shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)

    def response_norms(self) -> list[nn.Module]:
        return [self.bn]


@register_family
class VGGCifar(Classifier):
    """A VGG-style CIFAR net of depth 3n+2: a 3x3 conv (16 channels), three stages of n conv-BN-ReLU
    layers of 16, 32 and 64 channels (the CIFAR ResNet's widths, Deep Residual Learning Sec. 4.2), the
    second and third opened by a 2x2 max pool as in VGG (instead of the plain nets' stride-2 convs),
    global average pooling and ``fc``. Veit et al. (2016, Fig. 3) contrast a VGG net's collapse under the
    deletion of any layer with a ResNet's graceful degradation; this is that net at CIFAR scale."""

    family = "VGG-style CIFAR"

    def __init__(
        self,
        layers: int,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
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
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        chans, info = 16, [{"module": "stem", "num_chs": 16, "reduction": 1}]
        for i, width in enumerate((16, 32, 64)):
            pool = [nn.MaxPool2d(2, 2)] if i else []
            units = [PlainLayer(chans if j == 0 else width, width) for j in range(layers)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*pool, *units))
            chans = width
            info.append({"module": f"layer{i + 1}", "num_chs": width, "reduction": 2**i})
        self.fc = self.make_classifier_for(chans, num_classes)
        stages = [(f"layer{i}", [getattr(self, f"layer{i}")]) for i in (1, 2, 3)]
        self.set_layout(
            stem=[self.stem],
            stages=stages,
            feature_info=info,
            num_features=chans,
            classifier="fc",
            first_conv="stem.0",
            input_size=32,
            imagenet=False,
        )
        if not is_meta(self):
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def make_classifier_for(chans: int, num_classes: int) -> nn.Module:
        return nn.Linear(chans, num_classes) if num_classes else nn.Identity()

    def residual_blocks(self) -> list[tuple[str, nn.Module]]:
        return [
            (f"{stage}.{i}", unit)
            for stage in self.stage_names
            for i, unit in enumerate(getattr(self, stage))
            if isinstance(unit, PlainLayer)
        ]


def vgg_cifar_layers(depth: object) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 5 or (depth - 2) % 3:
        raise ConfigError(
            f"invalid depth {depth!r} for a VGG-style CIFAR net: it must be 3n+2 with n >= 1 "
            "(e.g. 8, 14, 20, 56)"
        )
    return (depth - 2) // 3


@register_model
def vgg_cifar(*, depth: int = 20, **kwargs: Any) -> VGGCifar:
    """A VGG-style CIFAR net of depth 3n+2 (convs and fc)."""
    return build_model(VGGCifar, kwargs, builder_options=("depth",), layers=vgg_cifar_layers(depth))


@register_model
def vgg20_cifar(**kwargs: Any) -> VGGCifar:
    return build_model(VGGCifar, kwargs, layers=vgg_cifar_layers(20))
