"""DenseNet (Huang, Liu, van der Maaten and Weinberger, "Densely Connected Convolutional Networks",
CVPR 2017).

Each layer of a dense block receives the concatenation of every earlier map of the block and adds k
("growth rate") maps of its own (Sec. 3, Eq. 2). The composite layer is BN-ReLU-Conv3x3; DenseNet-B adds a
BN-ReLU-Conv1x1 bottleneck of 4k maps before it, DenseNet-C compresses at each transition (1x1 conv to
floor(theta m) maps, theta = 0.5, then 2x2 average pooling), DenseNet-BC does both (Sec. 3).

The layer names are torchvision's (``features.conv0``, ``features.denseblock1.denselayer1.norm1``,
``features.transition1``, ``features.norm5``, ``classifier``), so torchvision's ``densenet121`` ...
``densenet161`` state dicts load with ``strict=True`` and compute the same outputs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .classifier import Classifier, check_rate, is_meta
from .layers import check_choice
from .registry import build_model, register_family, register_model


class DenseLayer(nn.Module):
    """[BN-ReLU-Conv1x1(bn_size k)]-BN-ReLU-Conv3x3(k) on the concatenation of the block's maps so far.

    Without a bottleneck (``bn_size=None``, the basic DenseNet) the layer is ``norm1``-``relu1``-``conv1``
    with a 3x3 conv (the authors' CIFAR code); with one, torchvision's names for both halves.
    """

    def __init__(self, in_chans: int, growth_rate: int, bn_size: int | None, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_chans)
        self.relu1 = nn.ReLU(inplace=True)
        if bn_size is None:
            self.conv1 = nn.Conv2d(in_chans, growth_rate, 3, padding=1, bias=False)
            self.norm2 = self.relu2 = self.conv2 = None
        else:
            self.conv1 = nn.Conv2d(in_chans, bn_size * growth_rate, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        out = self.conv1(self.relu1(self.norm1(x)))
        if self.conv2 is not None:
            out = self.conv2(self.relu2(self.norm2(out)))
        # torchvision's dropout after the layer's last conv (Sec. 4.2: 0.2 on CIFAR without augmentation).
        return F.dropout(out, p=self.drop_rate, training=self.training) if self.drop_rate > 0 else out


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers (``denselayer1`` ...); outputs the input and every layer's maps."""

    def __init__(
        self, num_layers: int, in_chans: int, growth_rate: int, bn_size: int | None, drop_rate: float
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(
                f"denselayer{i + 1}", DenseLayer(in_chans + i * growth_rate, growth_rate, bn_size, drop_rate)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1 to ``out_chans`` maps, 2x2 average pool (Sec. 3, "transition layers")."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(
            OrderedDict(
                norm=nn.BatchNorm2d(in_chans),
                relu=nn.ReLU(inplace=True),
                conv=nn.Conv2d(in_chans, out_chans, 1, bias=False),
                pool=nn.AvgPool2d(2, 2),
            )
        )


@register_family
class DenseNet(Classifier):
    """A DenseNet; builders fix ``growth_rate``, ``block_config``, ``num_init_features``, ``bn_size``,
    ``compression`` and ``stem``.

    ``stem="imagenet"``: 7x7/2 conv, BN, ReLU, 3x3/2 max pool (Table 1); ``"cifar"``: one 3x3 conv of
    ``num_init_features`` maps (16, or 2k for DenseNet-BC; Sec. 3 "Implementation Details"). The network
    ends with BN (``norm5`` on ImageNet, ``norm4`` after three blocks), ReLU and global average pooling.
    """

    family = "DenseNet"

    def __init__(
        self,
        *,
        growth_rate: int,
        block_config: Sequence[int],
        num_init_features: int,
        bn_size: int | None,
        compression: float,
        stem: str,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
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
        check_choice("stem", stem, ("imagenet", "cifar"))
        drop_rate = check_rate("drop_rate", drop_rate)
        imagenet = stem == "imagenet"
        if imagenet:
            layers = OrderedDict(
                conv0=nn.Conv2d(in_chans, num_init_features, 7, stride=2, padding=3, bias=False),
                norm0=nn.BatchNorm2d(num_init_features),
                relu0=nn.ReLU(inplace=True),
                pool0=nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            layers = OrderedDict(conv0=nn.Conv2d(in_chans, num_init_features, 3, padding=1, bias=False))
        chans = num_init_features
        for i, num_layers in enumerate(block_config):
            layers[f"denseblock{i + 1}"] = DenseBlock(num_layers, chans, growth_rate, bn_size, drop_rate)
            chans += num_layers * growth_rate
            if i != len(block_config) - 1:
                out_chans = int(chans * compression)  # floor(theta m), Sec. 3 "Compression"
                layers[f"transition{i + 1}"] = Transition(chans, out_chans)
                chans = out_chans
        last_norm = f"norm{len(block_config) + 1}"
        layers[last_norm] = nn.BatchNorm2d(chans)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(chans, num_classes) if num_classes else nn.Identity()
        self.relu = nn.ReLU()

        f = self.features
        stem_modules = [f.conv0, f.norm0, f.relu0] if imagenet else [f.conv0]
        stages, info = (
            [],
            [
                {
                    "module": "features.relu0" if imagenet else "features.conv0",
                    "num_chs": num_init_features,
                    "reduction": 2 if imagenet else 1,
                }
            ],
        )
        reduction = 4 if imagenet else 1
        for i in range(len(block_config)):
            entry = [f.pool0] if imagenet and i == 0 else []
            if i:
                entry = [getattr(f, f"transition{i}")]
                reduction *= 2
            block = getattr(f, f"denseblock{i + 1}")
            last = i == len(block_config) - 1
            stages.append((f"layer{i + 1}", [*entry, block, *([getattr(f, last_norm)] if last else [])]))
            width = chans if last else getattr(f, f"transition{i + 1}").norm.num_features
            info.append(
                {
                    "module": f"features.{last_norm}" if last else f"features.denseblock{i + 1}",
                    "num_chs": width,
                    "reduction": reduction,
                }
            )
        self.set_layout(
            stem=stem_modules,
            stages=stages,
            feature_info=info,
            num_features=chans,
            classifier="classifier",
            first_conv="features.conv0",
            input_size=224 if imagenet else 32,
            imagenet=imagenet,
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's DenseNet initialisation (He normal, fan_in; the authors' code uses He too).
        if is_meta(self):
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def final_act(self, x: torch.Tensor) -> torch.Tensor:
        """The ReLU after the last BN (torchvision's ``F.relu`` after ``features``)."""
        return self.relu(x)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's (its layer-wise lr decay reads it): the stem, one group per dense layer, each transition
        joining the group before it ((99999,) is timm's MATCH_PREV_GROUP)."""
        blocks: str | list = (
            r"^features\.(?:denseblock|transition)(\d+)"
            if coarse
            else [
                (r"^features\.denseblock(\d+)\.denselayer(\d+)", None),
                (r"^features\.transition(\d+)", (99999,)),
            ]
        )
        return {"stem": r"^features\.conv[012]|features\.norm[012]|features\.pool[012]", "blocks": blocks}

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if torch.jit.is_scripting():  # torchvision's forward (TorchScript takes no views, no super())
            x = self.relu(self.features(x))
            if self.global_pool is not None:
                x = torch.flatten(self.global_pool(x), 1)
            return self.classifier(x)
        if self.features_only:
            maps = self.feature_maps(x)
            return [maps[i] for i in self.out_indices]
        return self.forward_head(self.forward_features(x))


def _imagenet(kwargs: dict[str, Any], growth_rate: int, block_config: tuple[int, ...], init: int) -> DenseNet:
    # Table 1: DenseNet-BC with k = 32 (161: k = 48), 4k-map bottlenecks and theta = 0.5.
    return build_model(
        DenseNet,
        kwargs,
        growth_rate=growth_rate,
        block_config=block_config,
        num_init_features=init,
        bn_size=4,
        compression=0.5,
        stem="imagenet",
    )


def cifar_layers_per_block(depth: object, bottleneck: bool) -> int:
    """Layers per dense block of a 3-block CIFAR DenseNet of ``depth`` L: (L - 4) / 3 composite layers, or
    (L - 4) / 6 bottleneck layers of two convs each (the first conv, two transitions and fc make the 4)."""
    per = 6 if bottleneck else 3
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < per + 4 or (depth - 4) % per:
        kind = "DenseNet-BC" if bottleneck else "DenseNet"
        raise ConfigError(
            f"invalid depth {depth!r} for a CIFAR {kind}: it must be {per}n+4 "
            f"(e.g. {'100, 190, 250' if bottleneck else '40, 100'})"
        )
    return (depth - 4) // per


def _cifar(
    kwargs: dict[str, Any], depth: int, growth_rate: int, bc: bool, builder_options: tuple[str, ...] = ()
) -> DenseNet:
    n = cifar_layers_per_block(depth, bc)
    kwargs = {"num_classes": 10, **kwargs}
    return build_model(
        DenseNet,
        kwargs,
        builder_options=builder_options,
        growth_rate=growth_rate,
        block_config=(n, n, n),
        num_init_features=2 * growth_rate if bc else 16,
        bn_size=4 if bc else None,
        compression=0.5 if bc else 1.0,
        stem="cifar",
    )


# --- ImageNet (Table 1), torchvision's configurations ------------------------------------------------------
@register_model
def densenet121(**kwargs: Any) -> DenseNet:
    return _imagenet(kwargs, 32, (6, 12, 24, 16), 64)


@register_model
def densenet169(**kwargs: Any) -> DenseNet:
    return _imagenet(kwargs, 32, (6, 12, 32, 32), 64)


@register_model
def densenet201(**kwargs: Any) -> DenseNet:
    return _imagenet(kwargs, 32, (6, 12, 48, 32), 64)


@register_model
def densenet161(**kwargs: Any) -> DenseNet:
    return _imagenet(kwargs, 48, (6, 12, 36, 24), 96)


# --- CIFAR (Table 2) -----------------------------------------------------------------------------------
@register_model
def densenet40_k12(**kwargs: Any) -> DenseNet:
    return _cifar(kwargs, 40, 12, bc=False)


@register_model
def densenet100_k12(**kwargs: Any) -> DenseNet:
    return _cifar(kwargs, 100, 12, bc=False)


@register_model
def densenet100_k24(**kwargs: Any) -> DenseNet:
    return _cifar(kwargs, 100, 24, bc=False)


@register_model
def densenet_bc100_k12(**kwargs: Any) -> DenseNet:
    return _cifar(kwargs, 100, 12, bc=True)


@register_model
def densenet_bc250_k24(**kwargs: Any) -> DenseNet:
    return _cifar(kwargs, 250, 24, bc=True)


@register_model
def densenet_bc190_k40(**kwargs: Any) -> DenseNet:
    return _cifar(kwargs, 190, 40, bc=True)


@register_model
def densenet_cifar(*, depth: int = 100, growth_rate: int = 12, bc: bool = True, **kwargs: Any) -> DenseNet:
    """A 3-block CIFAR DenseNet(-BC) of any valid depth and growth rate."""
    if isinstance(growth_rate, bool) or not isinstance(growth_rate, int) or growth_rate < 1:
        raise ConfigError(f"growth_rate must be a positive integer, got {growth_rate!r}")
    check_choice("bc", bc, (False, True))
    return _cifar(kwargs, depth, growth_rate, bc, ("depth", "growth_rate", "bc"))
