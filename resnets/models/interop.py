"""What timm's tools expect of a model besides its layers: ``pretrained_cfg`` and the key names of timm's
pre-activation ``resnetv2`` models, which load into ours through ``timm_v2_state_dict``.
"""

from __future__ import annotations

import re

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _per_channel(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    # Other channel counts (grey images ...): the RGB average on every channel.
    return values if in_chans == 3 else (round(sum(values) / 3, 4),) * in_chans


def pretrained_cfg(*, imagenet: bool, in_chans: int, num_classes: int, first_conv: str) -> dict:
    """timm's ``pretrained_cfg`` for a model of the zoo, so that ``timm.data.resolve_data_config`` works.

    ImageNet family: 224x224 crops of 0.875 of the resized image, bilinear (torchvision's evaluation
    transform: resize 256, crop 224), ImageNet mean/std. CIFAR nets: 32x32 images, no crop, CIFAR-10's.
    Our models come without pretrained weights, so ``url`` is empty; ``resnets train`` records the
    statistics it trained with in each checkpoint.
    """
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else (CIFAR10_MEAN, CIFAR10_STD)
    side = 224 if imagenet else 32
    return {
        "url": "",
        "num_classes": num_classes,
        "input_size": (in_chans, side, side),
        "pool_size": (7, 7) if imagenet else (8, 8),
        "crop_pct": 0.875 if imagenet else 1.0,
        "crop_mode": "center",
        "interpolation": "bilinear",
        "mean": _per_channel(mean, in_chans),
        "std": _per_channel(std, in_chans),
        "first_conv": first_conv,
        "classifier": "fc",
    }


# timm resnetv2 name -> ours. Blocks: norm1/2/3 are our bn1/2/3 (the BN opening each conv), convs keep their
# names, the projection is downsample.conv; stem.conv is conv1, the final norm our final_bn, head.fc our fc.
_V2_BLOCK = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)")
_V2_STEM_DEEP = {
    "stem.conv1.": "conv1.0.",
    "stem.norm1.": "conv1.1.",
    "stem.conv2.": "conv1.3.",
    "stem.norm2.": "conv1.4.",
    "stem.conv3.": "conv1.6.",
}
_V2_OTHER = {"stem.conv.": "conv1.", "norm.": "final_bn.", "head.fc.": "fc."}


def is_timm_v2_state_dict(keys: object, prefix: str = "") -> bool:
    return any(isinstance(k, str) and k.startswith(prefix + "stages.") for k in keys)


def _v2_name(key: str, targets: set[str]) -> str:
    match = _V2_BLOCK.fullmatch(key)
    if match:
        stage, block, rest = match.groups()
        rest = re.sub(r"^norm(\d)\.", r"bn\1.", rest)
        if rest.startswith("downsample.conv."):  # avg_down puts a pool at index 0, the conv at 1
            block_name = f"layer{int(stage) + 1}.{block}"
            index = 1 if f"{block_name}.downsample.1.weight" in targets else 0
            rest = f"downsample.{index}." + rest[len("downsample.conv.") :]
        return f"layer{int(stage) + 1}.{block}.{rest}"
    for table in (_V2_STEM_DEEP, _V2_OTHER):
        for old, new in table.items():
            if key.startswith(old):
                return new + key[len(old) :]
    return key


def timm_v2_state_dict(state: dict[str, torch.Tensor], targets: set[str]) -> dict[str, torch.Tensor]:
    """timm ``resnetv2_*`` (pre-activation, BatchNorm) keys renamed to ours; its 1x1-conv classifier
    becomes our Linear. ``targets`` are the model's own keys (they decide where avg_down's conv sits)."""
    out = {}
    for key, value in state.items():
        name = _v2_name(key, targets)
        if name == "fc.weight" and value.dim() == 4:
            value = value.flatten(1)
        out[name] = value
    return out
