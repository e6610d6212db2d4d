"""The network skeleton every ResNet here shares.

conv1-bn1-relu stem (7x7/2 + 3x3/2 max pool for ImageNet, 3x3 for CIFAR), stages ``layer1..layerN``,
a final BN-ReLU in pre-activation nets, global average pooling and ``fc`` (the only head layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .blocks import BlockConfig, ResidualBlock, make_stage


def check_positive_int(option: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be a positive integer, got {value!r}")
    return value


class ResNetBase(nn.Module):
    """Stem, stages, pooling and classifier; see the module docstring."""

    def __init__(
        self, block: type[ResidualBlock], layers: Sequence[int], widths: Sequence[int], cfg: BlockConfig, *,
        num_classes: int, in_chans: int, imagenet_stem: bool, stem_width: int, zero_init_last: bool,
    ) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_chans = check_positive_int("in_chans", in_chans)
        if zero_init_last and not cfg.residual:
            raise ConfigError("zero_init_last needs residual blocks: a plain net would output zeros")
        if imagenet_stem:  # conv1: 7x7, 64, stride 2; then 3x3 max pool, stride 2 (paper Table 1)
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        else:  # CIFAR: "the first layer is 3x3 convolutions" with 16 filters (paper Sec. 4.2)
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if imagenet_stem else nn.Identity()
        reduction = 4 if imagenet_stem else 1
        chans = stem_width  # entering the next stage
        self.stage_names: list[str] = []
        self.feature_info: list[dict] = []
        for i, (num_blocks, width) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            stage = make_stage(block, chans, width, num_blocks, stride, cfg, first_of_net=i == 0)
            chans = width * block.expansion
            name = f"layer{i + 1}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.feature_info.append({"module": name, "num_chs": chans, "reduction": reduction})
        self.num_features = chans
        # Pre-activation nets end with BN-ReLU: "for the last Residual Unit ... we adopt an extra
        # activation right after its element-wise addition" (Identity Mappings Sec. 4.1).
        self.final_bn = nn.BatchNorm2d(chans) if block.pre_activation else None
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans, num_classes)
        self.default_input_size = (in_chans, 224, 224) if imagenet_stem else (in_chans, 32, 32)
        self.resnets_spec: dict | None = None  # set by the registry: {"name", "kwargs"}
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        # He et al. initialisation ("Delving Deep into Rectifiers"), which the paper cites; fc keeps
        # PyTorch's default, as torchvision does.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for _, block in self.residual_blocks():
            if block.merge is not None:
                block.merge.init_weights()
            if zero_init_last:
                block.zero_init_last()

    # --- forward pieces -------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            name = self.resnets_spec["name"] if self.resnets_spec else type(self).__name__
            raise ConfigError(
                f"{name} expects input of shape (batch, {self.in_chans}, height, width), got "
                f"{tuple(x.shape)}; create the model with in_chans={x.shape[1] if x.ndim == 4 else '?'} "
                "or convert the images"
            )

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def final_act(self, x: torch.Tensor) -> torch.Tensor:
        """The final BN-ReLU of pre-activation nets (identity for the others)."""
        return x if self.final_bn is None else self.relu(self.final_bn(x))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output (strides in ``feature_info``), for use as a detection backbone.

        The last one includes the final BN-ReLU of pre-activation nets, so it equals forward_features(x).
        """
        outs = []
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outs.append(x)
        outs[-1] = self.final_act(outs[-1])
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, batch x num_features x h x w."""
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.final_act(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(features).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # --- introspection --------------------------------------------------------------------------

    def residual_blocks(self) -> list[tuple[str, ResidualBlock]]:
        """Every block in forward order, with its qualified name (``layer2.0`` ...)."""
        return [
            (f"{name}.{i}", block) for name in self.stage_names for i, block in enumerate(getattr(self, name))
        ]

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh ``fc`` for ``num_classes`` (fine-tuning); the recorded spec follows."""
        self.num_classes = check_positive_int("num_classes", num_classes)
        ref = self.fc.weight
        self.fc = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
        if self.resnets_spec is not None:
            self.resnets_spec["kwargs"]["num_classes"] = num_classes
