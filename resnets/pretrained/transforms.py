"""The inference transform of a weights entry, as torchvision's ``Weights.transforms()`` and timm's
``resolve_data_config`` + ``create_transform`` give it: resize the shorter side (antialiased), centre crop,
scale to [0, 1], normalise.

timm states the crop as a fraction (``crop_pct``): the shorter side is resized to ``floor(crop /
crop_pct)``; torchvision states both sizes. An entry keeps both: ``resize_size`` and ``crop_size`` are what
is applied, ``crop_pct`` is timm's (for torchvision's entries, ``crop_size / resize_size`` to 4 decimals,
which gives back the same resize).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms import v2

from ..errors import ConfigError

INTERPOLATIONS = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class InferenceTransforms:
    resize_size: int  # the shorter side, before the crop
    crop_size: int
    interpolation: str  # "bilinear" | "bicubic" | "nearest"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float  # timm's: resize_size == floor(crop_size / crop_pct)
    test_input_size: int | None = None  # timm's larger test-time size (``use_test_size=True``)
    test_crop_pct: float | None = None

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation {self.interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}"
            )
        if not 1 <= self.crop_size <= self.resize_size or len(self.mean) != len(self.std):
            raise ConfigError(
                f"transforms: crop {self.crop_size} must be within resize {self.resize_size}, and "
                "mean and std of one length"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InferenceTransforms:
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})

    @classmethod
    def from_pretrained_cfg(cls, cfg: dict[str, Any]) -> InferenceTransforms:
        """A model's own ``pretrained_cfg`` (the zoo's defaults when no weights entry says otherwise)."""
        crop, crop_pct = int(cfg["input_size"][-1]), float(cfg.get("crop_pct") or 1.0)
        return cls(
            resize_size=math.floor(crop / crop_pct),
            crop_size=crop,
            interpolation=cfg["interpolation"],
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            crop_pct=crop_pct,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}

    def sizes(self, use_test_size: bool = False) -> tuple[int, int]:
        """(resize, crop): timm's test-time size when asked and stated."""
        if use_test_size and self.test_input_size:
            crop_pct = self.test_crop_pct or self.crop_pct
            return math.floor(self.test_input_size / crop_pct), self.test_input_size
        return self.resize_size, self.crop_size

    def build(self, use_test_size: bool = False) -> v2.Compose:
        """Resize (shorter side, antialiased), centre crop, float in [0, 1], normalise; for PIL images and
        uint8 tensors (one image or a batch)."""
        resize, crop = self.sizes(use_test_size)
        return v2.Compose(
            [
                v2.Resize(resize, interpolation=INTERPOLATIONS[self.interpolation], antialias=True),
                v2.CenterCrop(crop),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean=list(self.mean), std=list(self.std)),
            ]
        )

    def pretrained_cfg(self, in_chans: int) -> dict[str, Any]:
        """timm's data-config keys for these transforms."""
        cfg = {
            "input_size": (in_chans, self.crop_size, self.crop_size),
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
        }
        if self.test_input_size:
            cfg |= {
                "test_input_size": (in_chans, self.test_input_size, self.test_input_size),
                "test_crop_pct": self.test_crop_pct,
            }
        return cfg
