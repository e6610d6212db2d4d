"""Highway networks (Srivastava, Greff and Schmidhuber, "Training Very Deep Networks", NIPS 2015).

A highway layer computes y = H(x) T(x) + x (1 - T(x)) (their Eq. 3): a transform H (here a 3x3 conv and
ReLU) gated by a transform gate T = sigmoid(conv(x)) whose bias starts negative, so that each layer starts
close to passing its input through ("carry" behaviour, their Sec. 2.2). The ResNet paper compares its
CIFAR-10 ResNets with their 19-layer net (He et al. 2015, Table 6: 2.3M parameters, 7.54% (7.72 +- 0.16)).

``highway19``: the convolutional 19-layer CIFAR-10 network of their Table 1 ("Highway Network", 19 layers,
~2.3M parameters, FitNet B's layout with highway layers), exactly as the authors' released Caffe definition
(flukeskywalker/highway-networks, examples/highways/cifar10-19layers/cifar10_network.prototxt): 20% dropout
on the input and after each max pool; a plain 3x3 conv opens each of the three stages (32, 80, 128 maps),
followed by 4, 5 and 5 highway layers; a 1x1 conv to 100 maps, global average pooling, 20% dropout and the
classifier. Every conv has a bias and there is no batch normalisation (the paper predates its use here).
The authors train it with Nesterov SGD at lr 0.025 (their cifar10_solver.prototxt); without BN it does not
take the BN nets' lr 0.1 well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .classifier import Classifier, check_rate, is_meta
from .registry import build_model, register_family, register_model


class HighwayConv(nn.Module):
    """y = relu(conv_h x) * T + x * (1 - T), T = sigmoid(conv_t x): a 3x3 convolutional highway layer."""

    def __init__(self, chans: int, gate_bias: float) -> None:
        super().__init__()
        self.transform = nn.Conv2d(chans, chans, 3, padding=1)
        self.gate = nn.Conv2d(chans, chans, 3, padding=1)
        self.act = nn.ReLU()
        self.gate_bias = gate_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.transform(x))
        t = torch.sigmoid(self.gate(x))
        return h * t + x * (1 - t)


def _conv_relu(in_chans: int, out_chans: int, kernel_size: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(in_chans, out_chans, kernel_size, padding=kernel_size // 2), nn.ReLU()]


@register_family
class HighwayNet(Classifier):
    """A convolutional highway net: ``widths[i]`` maps and ``layers[i]`` highway layers in stage i, a max
    pool between stages, ``head_chans`` 1x1-conv maps before global average pooling.

    ``gate_bias``: the transform gates' initial bias (-2 in the authors' CIFAR-10 definition; their Sec. 2.2
    suggests -1 to -3 for convolutional nets); ``drop_rate``: the dropout of the authors' definition.
    """

    family = "Highway"

    def __init__(
        self,
        layers: Sequence[int],
        widths: Sequence[int],
        head_chans: int,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        gate_bias: float = -2.0,
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
        if isinstance(gate_bias, bool) or not isinstance(gate_bias, int | float):
            raise ConfigError(f"gate_bias must be a number, got {gate_bias!r}")
        drop_rate = check_rate("drop_rate", drop_rate)
        self.stem = nn.Sequential(nn.Dropout(drop_rate), *_conv_relu(in_chans, widths[0]))
        info = [{"module": "stem", "num_chs": widths[0], "reduction": 1}]
        chans = widths[0]
        for i, (n, width) in enumerate(zip(layers, widths, strict=True)):
            entry = [] if i == 0 else [nn.MaxPool2d(2, 2), nn.Dropout(drop_rate), *_conv_relu(chans, width)]
            tail = _conv_relu(width, head_chans, 1) if i == len(layers) - 1 else []
            self.add_module(
                f"layer{i + 1}",
                nn.Sequential(*entry, *(HighwayConv(width, gate_bias) for _ in range(n)), *tail),
            )
            chans = head_chans if tail else width
            info.append({"module": f"layer{i + 1}", "num_chs": chans, "reduction": 2**i})
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(chans, num_classes) if num_classes else nn.Identity()
        self.set_layout(
            stem=[self.stem],
            stages=[(f"layer{i + 1}", []) for i in range(len(layers))],
            feature_info=info,
            num_features=chans,
            classifier="fc",
            first_conv="stem.1",
            input_size=32,
            imagenet=False,
            head=("head_drop",),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation for every conv (zero biases) and the gates' bias at gate_bias. The authors'
        # definition uses Xavier fillers, for GCN-whitened inputs and 200k iterations; on the normalised
        # inputs here its signal shrinks about 6x through the net (no BN to restore it) and the net stays
        # at chance (measured: 60 iterations at lr 0.025 on Fashion-MNIST), while He's learns at once.
        if is_meta(self):
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.05)  # the authors' classifier filler
                nn.init.zeros_(m.bias)
        for layer in self.highway_layers():  # after the loop above, which zeroes every bias
            nn.init.constant_(layer.gate.bias, layer.gate_bias)

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.features_only else self.head_drop(x)

    def highway_layers(self) -> list[HighwayConv]:
        return [m for m in self.modules() if isinstance(m, HighwayConv)]


@register_model
def highway19(**kwargs: Any) -> HighwayNet:
    """Their Table 1's 19-layer CIFAR-10 highway net (~2.3M parameters): 1 + 4, 1 + 5, 1 + 5 convolutional
    layers in the three stages, the 1x1 conv and the classifier."""
    return build_model(HighwayNet, kwargs, layers=(4, 5, 5), widths=(32, 80, 128), head_chans=100)


@register_model
def highway_cifar(*, depth: int = 14, width: int = 16, **kwargs: Any) -> HighwayNet:
    """A highway net of the CIFAR ResNets' shape: three stages of ``width``, 2x and 4x maps, each a plain
    3x3 conv and n highway layers, then the 1x1 conv (4x ``width`` maps) and the classifier: depth 3n + 5
    (14: n = 3, about 0.3M parameters, ResNet-20's size). Srivastava et al.'s design at another size."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 5) % 3:
        raise ConfigError(f"depth must be 3n + 5 with n >= 1 (8, 11, 14, 17, ...), got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"width must be a positive integer, got {width!r}")
    n = (depth - 5) // 3
    return build_model(
        HighwayNet,
        kwargs,
        builder_options=("depth", "width"),
        layers=(n, n, n),
        widths=(width, 2 * width, 4 * width),
        head_chans=4 * width,
    )
