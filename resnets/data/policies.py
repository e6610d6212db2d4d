"""Per-sample augmentation policies (RandAugment, TrivialAugment, AutoAugment, random erasing)
through ``torchvision.transforms.v2``, named as timm names them (``--aa``, ``--reprob``).

A v2 transform given a batch draws one set of parameters for the whole batch; these policies
must differ per image, so ``per_sample`` applies them image by image. Its draws come from a
seed (the loaders derive it from the run's seed, the epoch, the rank and the batch), so an
epoch replays the same augmentation when a run resumes in its middle.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torchvision.transforms import v2

from ..errors import ConfigError

AUTO_AUGMENT_HELP = (
    "rand-m<M>[-n<N>][-mstd<S>][-inc1] (RandAugment), trivialaugment (or ta_wide), "
    "v0 / original (AutoAugment's ImageNet policy), cifar10, svhn (AutoAugment's "
    "other policies)"
)
ERASE_MODES = ("pixel", "const")
# timm's magnitude scale: 0..10 (its _LEVEL_DENOM); 101 bins of torchvision's magnitude ranges give
# steps of 0.1 on that scale, so that magnitude noise is not rounded to whole levels
_LEVELS, _BINS = 10.0, 101
POLICY_STREAM, ERASING_STREAM = 5, 6  # the loaders' per-batch seed streams of the two (splits.seed_for)
_RAND = re.compile(r"rand(?P<opts>(-[a-z]+[0-9.]+)*)$")


class RandAugmentTimm:
    """timm's RandAugment (``rand-m9-mstd0.5``) over torchvision's operations.

    As timm (Cubuk et al. 2019, with timm's two additions): ``num_ops`` operations, each applied
    with probability ``op_prob`` (timm 0.5), each at a magnitude drawn from N(``magnitude``,
    ``magnitude_std``) clipped to [0, 10]. The operations and their ranges are torchvision's
    (``v2.RandAugment``): its Posterize and Solarize grow stronger with the magnitude, as timm's
    ``inc1`` variants do; it has Identity where timm has Invert and SolarizeAdd."""

    def __init__(
        self, magnitude: float = 9, num_ops: int = 2, magnitude_std: float = 0.0, op_prob: float = 0.5
    ) -> None:
        self.magnitude, self.num_ops, self.magnitude_std = magnitude, num_ops, magnitude_std
        self.op_prob = op_prob
        self._op = v2.RandAugment(num_ops=1, magnitude=0, num_magnitude_bins=_BINS)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        for _ in range(self.num_ops):
            if self.op_prob < 1 and float(torch.rand(())) >= self.op_prob:
                continue
            level = self.magnitude
            if self.magnitude_std > 0:
                level = level + self.magnitude_std * float(torch.randn(()))
            self._op.magnitude = round(min(max(level, 0.0), _LEVELS) * (_BINS - 1) / _LEVELS)
            image = self._op(image)
        return image

    def __repr__(self) -> str:
        return (
            f"RandAugmentTimm(magnitude={self.magnitude}, num_ops={self.num_ops}, "
            f"magnitude_std={self.magnitude_std}, op_prob={self.op_prob})"
        )


def _rand_augment(spec: str) -> RandAugmentTimm:
    match = _RAND.match(spec)
    if not match:
        raise ConfigError(f"auto_augment {spec!r} is not a RandAugment spec; use {AUTO_AUGMENT_HELP}")
    options = {"m": 9.0, "n": 2.0, "mstd": 0.0, "inc": 1.0}
    for part in filter(None, match["opts"].split("-")):
        key, value = re.match(r"([a-z]+)([0-9.]+)$", part).groups()
        if key not in options:
            raise ConfigError(
                f"auto_augment {spec!r}: unknown RandAugment option {key!r}; use m (magnitude "
                f"0-10), n (operations), mstd (magnitude noise), inc1"
            )
        try:
            options[key] = float(value)
        except ValueError:
            raise ConfigError(f"auto_augment {spec!r}: {part!r} needs a number after {key!r}") from None
    if options["inc"] != 1:
        raise ConfigError(
            f"auto_augment {spec!r}: only inc1 exists here (torchvision's Posterize and "
            f"Solarize always grow with the magnitude); drop -inc0"
        )
    if not 0 <= options["m"] <= _LEVELS or options["n"] < 1 or options["n"] != int(options["n"]):
        raise ConfigError(
            f"auto_augment {spec!r}: the magnitude m must lie in 0-10 and n be a whole number >= 1"
        )
    return RandAugmentTimm(options["m"], int(options["n"]), options["mstd"])


_POLICIES = {
    "v0": v2.AutoAugmentPolicy.IMAGENET,
    "original": v2.AutoAugmentPolicy.IMAGENET,
    "imagenet": v2.AutoAugmentPolicy.IMAGENET,
    "cifar10": v2.AutoAugmentPolicy.CIFAR10,
    "svhn": v2.AutoAugmentPolicy.SVHN,
}


def auto_augment(spec: str | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The uint8 C x H x W -> uint8 policy named by timm's ``--aa`` value (None: no policy).

    ``v0`` and ``original`` both give AutoAugment's ImageNet policy as the paper and torchvision
    write it (timm's ``v0`` is TensorFlow EfficientNet's variant of it)."""
    if spec is None or spec in ("", "none"):
        return None
    name = spec.lower()
    if name.startswith("rand"):
        return _rand_augment(name)
    if name in ("trivialaugment", "trivialaugmentwide", "ta_wide"):
        return v2.TrivialAugmentWide()
    if name in _POLICIES:
        return v2.AutoAugment(_POLICIES[name])
    raise ConfigError(f"unknown auto_augment {spec!r}; use {AUTO_AUGMENT_HELP}")


def random_erasing(prob: float, mode: str = "pixel") -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Random erasing (Zhong et al. 2017) of normalised images with probability ``prob``: a box of
    2-33% of the image, aspect ratio 0.3-3.3 (timm's and torchvision's ranges), filled with
    N(0, 1) noise per pixel (``pixel``, timm's default) or with 0, the mean (``const``,
    torchvision's reference recipe)."""
    if mode not in ERASE_MODES:
        raise ConfigError(f"unknown remode {mode!r}; use one of {', '.join(ERASE_MODES)}")
    if not prob:
        return None
    return v2.RandomErasing(p=prob, value="random" if mode == "pixel" else 0)


def per_sample(
    transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, seed: int
) -> torch.Tensor:
    """``transform`` applied to each image of an N x C x H x W batch with its own random draws,
    all from ``seed``. v2 draws its parameters from the CPU generator (also for images on a GPU);
    it is forked, so the caller's random stream does not move."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return torch.stack([transform(image) for image in images])
