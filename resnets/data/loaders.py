"""The input pipeline as the training engine sees it: ``DataConfig`` -> ``build_data`` -> loaders.

Every loader yields ``(x, y)`` already on the device: ``x`` float32 normalised N x C x H x W,
``y`` int64. ``set_epoch(epoch)`` fixes the order (from the seed and the epoch only, so a run
resumed at an epoch boundary sees the same batches); ``len()`` counts batches and
``num_samples`` the samples this rank visits. Training loaders shuffle and drop the last partial
batch; evaluation loaders keep every sample. Under ``world_size > 1`` each rank gets its own
shard: equal-sized for training, disjoint and unpadded for evaluation (combine metrics as counts).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..errors import ConfigError, DataError, unknown_name
from . import datasets, folders
from .augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATION_MODES,
    Normalization,
    default_crop_padding,
    pad_images,
    random_crop_flip,
)
from .datasets import DATASET_NAMES, FOLDER_DATASETS, ArrayDataset
from .device_decode import decodes_on_device
from .images import (
    MAX_SIDE,
    preprocess_image,  # noqa: F401  (part of this module's interface)
    set_max_image_pixels,
)
from .policies import ERASE_MODES, ERASING_STREAM, POLICY_STREAM, auto_augment, per_sample, random_erasing
from .splits import (
    repeated_shard_indices,
    seed_for,
    shard_indices,
    shard_size,
    stratified_split,
    stratified_subset,
)

TRAIN_TRANSFORMS = ("paper", "rrc")
NO_HFLIP = ("mnist",)  # digits are not mirror-symmetric; clothes, objects and scenes are
# Independent random streams derived from cfg.seed, one per use.
_VAL_SPLIT, _TRAIN_SUBSET, _TEST_SUBSET, _TEST_SPLIT = 10, 11, 12, 13


@dataclass(frozen=True)
class DataConfig:
    """What data to load and how to feed it. ``None`` means the dataset's default."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    val_split: int = 0  # images held out of the training set (seeded, stratified); 0 = none
    # seed of the held-out split and the subsets; None: ``seed``. Fixed, it keeps one validation set
    # for runs of several seeds (the reproductions' paired comparisons).
    split_seed: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 512
    crop_padding: int | None = None  # zero padding of the random crop: 4 at 32x32 (paper), 3 at 28x28
    hflip: bool | None = None  # random horizontal flip: on except for mnist
    normalization: str = "per_channel"  # or "per_pixel": the paper's per-pixel mean subtraction
    train_subset: int | None = None  # seeded stratified subsets, for quick runs and smoke tests
    test_subset: int | None = None
    image_size: int | None = None  # image folders: the crop side (224)
    # the training crop side (None: image folders image_size, in-memory datasets their native side);
    # in-memory datasets crop it at random from the (padded) image and test on the whole image (FixRes)
    train_crop_size: int | None = None
    eval_resize: int | None = None  # image folders: shorter side before the eval crop (None: 256/224 x)
    # per-sample augmentation of training images (resnets.data.policies): timm's --aa, --reprob,
    # --remode; repeated augmentation (--aug-repeats, 0 or 1: off)
    auto_augment: str | None = None
    reprob: float = 0.0
    remode: str = "pixel"
    aug_repeats: int = 0
    train_transform: str = "paper"  # image folders: "paper" (scale aug. + PCA lighting) or "rrc"
    workers: int | None = None  # image folders: DataLoader workers (None: up to 8, one per core)
    strict_data: bool = False  # unreadable images stop the run instead of being skipped
    verify_checksums: bool = True  # MD5 of the official files (mnist, fashion-mnist, cifar)
    test_fraction: float = 0.2  # image folders without train/ and val/: share held out for test
    channels_last: bool = False  # batches in channels-last memory format
    device_decode: bool | None = None  # image folders: decode JPEGs on the device (None: on CUDA only)
    follow_links: bool = False  # image folders: follow symbolic links that point out of data_dir
    max_image_pixels: int | None = None  # image folders: larger images refused (None: PIL's; 0: no limit)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise unknown_name("dataset", self.dataset, DATASET_NAMES)
        if self.normalization not in NORMALIZATION_MODES:
            raise unknown_name("normalization", self.normalization, NORMALIZATION_MODES)
        if self.train_transform not in TRAIN_TRANSFORMS:
            raise unknown_name("train_transform", self.train_transform, TRAIN_TRANSFORMS)
        for name in ("batch_size", "eval_batch_size", "train_subset", "test_subset", "image_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size is not None and isinstance(self.image_size, int) and self.image_size > MAX_SIDE:
            raise ConfigError(f"image_size must be at most {MAX_SIDE} pixels, got {self.image_size}")
        auto_augment(self.auto_augment)  # a bad spec is a ConfigError here, before any data loads
        if self.remode not in ERASE_MODES:
            raise unknown_name("remode", self.remode, ERASE_MODES)
        if not 0 <= self.reprob <= 1:
            raise ConfigError(f"reprob is a probability in [0, 1], got {self.reprob!r}")
        if self.eval_resize is not None and self.dataset not in FOLDER_DATASETS:
            raise ConfigError(f"eval_resize applies to image folders; {self.dataset} keeps its native size")
        for name in ("train_crop_size", "eval_resize"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if (
            self.dataset in FOLDER_DATASETS
            and self.train_crop_size not in (None, self.image_size or 224)
            and self.normalization == "per_pixel"
        ):
            raise ConfigError(
                "train_crop_size differs from image_size, but per_pixel normalization "
                "subtracts an image_size mean image; use normalization='per_channel'"
            )
        for name in ("val_split", "crop_padding", "workers", "max_image_pixels", "aug_repeats"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.workers is not None and self.workers > max_workers():  # each one a process
            raise ConfigError(
                f"workers={self.workers} is more DataLoader processes than this machine can "
                f"use: it has {os.cpu_count() or 1} CPU cores; use at most {max_workers()} "
                f"(--workers)"
            )
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction must lie between 0 and 1, got {self.test_fraction!r}")
        # 0 (no pad-and-crop, as fast-cpu sets it) is true of folders too; a padding is not
        if self.dataset in FOLDER_DATASETS and self.crop_padding not in (None, 0):
            raise ConfigError(
                "crop_padding applies to the in-memory datasets; image folders crop with "
                "train_transform ('paper' or 'rrc')"
            )
        if self.dataset not in FOLDER_DATASETS and self.train_transform != "paper":
            raise ConfigError(
                f"train_transform={self.train_transform!r} applies to image folders; "
                f"{self.dataset} uses the paper's pad-and-crop (see crop_padding, hflip)"
            )


def max_workers() -> int:
    """The most DataLoader workers a run may ask for: four per CPU core, at least 8."""
    return max(8, 4 * (os.cpu_count() or 1))


class Loader(Protocol):
    num_samples: int
    channels_last: bool

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...


class TensorLoader:
    """Batches of an in-memory dataset, augmented on its device (no per-sample Python)."""

    def __init__(
        self,
        data: ArrayDataset,
        *,
        batch_size: int,
        normalization: Normalization,
        train: bool,
        padding: int = 0,
        hflip: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        policy: Callable | None = None,
        erasing: Callable | None = None,
        repeats: int = 0,
        crop_size: int | None = None,
    ) -> None:
        self.batch_size, self.normalization, self.train = batch_size, normalization, train
        # per-sample policy on uint8 images before normalisation, erasing after it (as timm)
        self.policy, self.erasing, self.repeats = policy, erasing, repeats
        self.seed, self.rank, self.world_size, self.channels_last = seed, rank, world_size, channels_last
        self.crop_size = None if crop_size == data.images.shape[-1] else crop_size
        self.augment = train and (padding > 0 or hflip or self.crop_size is not None)
        self.padding, self.hflip = padding, hflip
        self.images = pad_images(data.images, padding) if self.augment else data.images
        self.labels = data.labels
        self.epoch = 0
        self.num_samples = shard_size(len(data), drop_last=train, rank=rank, world_size=world_size)

    def __len__(self) -> int:
        if self.train:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batch_seed(self, stream: int, start: int) -> int:
        return seed_for(self.seed, self.epoch, self.rank, stream, start)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.labels.device
        if self.train:
            indices = train_indices(
                len(self.labels), self.repeats, self.seed, self.epoch, self.rank, self.world_size
            ).to(device)
            generator = torch.Generator(device).manual_seed(seed_for(self.seed, self.epoch, self.rank, 2))
        else:  # a strided view: no copy before the float conversion
            images, labels = (
                self.images[self.rank :: self.world_size],
                self.labels[self.rank :: self.world_size],
            )
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            if not self.train:
                x = images[start : start + self.batch_size]
                y = labels[start : start + self.batch_size].clone()  # callers may modify y; keep the data
            else:
                batch = indices[start : start + self.batch_size]
                y = self.labels[batch]
                if self.augment:
                    x = random_crop_flip(
                        self.images, batch, self.padding, self.hflip, generator, self.crop_size
                    )
                else:
                    x = self.images[batch]
                if self.policy is not None:
                    x = per_sample(self.policy, x, self._batch_seed(POLICY_STREAM, start))
            x = self.normalization(x)
            if self.train and self.erasing is not None:
                x = per_sample(self.erasing, x, self._batch_seed(ERASING_STREAM, start))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def train_indices(n: int, repeats: int, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's training order of the epoch: shuffled shards, or repeated augmentation's."""
    where = dict(seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    if repeats > 1:
        return repeated_shard_indices(n, repeats=repeats, **where)
    return shard_indices(n, shuffle=True, drop_last=True, **where)


@dataclass
class DataBundle:
    """The loaders of a run and what a checkpoint must remember about its data."""

    dataset: str
    train: Loader
    val: Loader | None
    test: Loader
    classes: list[str]
    in_chans: int
    image_size: int
    normalization: Normalization
    eval_preprocess: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def meta(self) -> dict:
        """Plain types only (goes into checkpoints; ``preprocess_image`` reads it back)."""
        return {
            "dataset": self.dataset,
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "image_size": self.image_size,
            "normalization": self.normalization.to_dict(),
            "eval_preprocess": dict(self.eval_preprocess),
        }


def _eval_preprocess(resize: int, crop: int, mode: str) -> dict:
    return {
        "resize": resize,
        "crop": crop,
        "interpolation": "bilinear",
        "description": f"shorter side resized to {resize} (bilinear, antialiased), centre crop "
        f"{crop}x{crop}, {mode} normalization",
    }


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _check_batches(loader: Loader, what: str, batch_size: int) -> None:
    if len(loader) == 0:
        raise ConfigError(
            f"the {what} set has {loader.num_samples} images per process, fewer than one batch "
            f"of {batch_size}; lower batch_size or enlarge the subset"
        )


def _select(
    cfg: DataConfig, train_labels: torch.Tensor, test_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Indices of (train, held-out validation or None, test) after ``val_split`` and the subsets.
    The validation split comes first, so it does not change with ``train_subset``."""
    train_idx, val_idx = torch.arange(len(train_labels)), None
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    if cfg.val_split:
        train_idx, val_idx = stratified_split(
            train_labels, cfg.val_split, seed_for(split_seed, _VAL_SPLIT), "val_split"
        )
    if cfg.train_subset:
        seed = seed_for(split_seed, _TRAIN_SUBSET)
        train_idx = train_idx[stratified_subset(train_labels[train_idx], cfg.train_subset, seed)]
    test_idx = torch.arange(len(test_labels))
    if cfg.test_subset:
        test_idx = stratified_subset(test_labels, cfg.test_subset, seed_for(split_seed, _TEST_SUBSET))
    return train_idx, val_idx, test_idx


def _build_arrays(cfg: DataConfig, device: torch.device, rank: int, world_size: int) -> DataBundle:
    if cfg.image_size is not None:
        raise ConfigError(f"image_size applies to image folders; {cfg.dataset} keeps its native size")
    download = cfg.download
    if download and world_size > 1 and _distributed():  # rank 0 fetches, the others wait
        if rank == 0:
            datasets.ensure_downloaded(cfg.dataset, cfg.data_dir, cfg.verify_checksums)
        torch.distributed.barrier()
        download = False
    load = dict(data_dir=cfg.data_dir, download=download, verify=cfg.verify_checksums)
    train = datasets.load_arrays(cfg.dataset, "train", **load)
    test = datasets.load_arrays(cfg.dataset, "test", **load)
    if train.image_shape != test.image_shape:
        raise DataError(
            f"images of inconsistent size: the training images ({train.source}) are "
            f"{'x'.join(map(str, train.image_shape))} but the test images ({test.source}) are "
            f"{'x'.join(map(str, test.image_shape))}"
        )
    train_idx, val_idx, test_idx = _select(cfg, train.labels, test.labels)
    val = train.subset(val_idx) if val_idx is not None else None
    train, test = train.subset(train_idx), test.subset(test_idx)
    train, test = train.to(device), test.to(device)
    normalization = Normalization.fit(train.images, cfg.normalization)  # training split only
    size = train.image_shape[-1]
    padding = default_crop_padding(size) if cfg.crop_padding is None else cfg.crop_padding
    hflip = cfg.dataset not in NO_HFLIP if cfg.hflip is None else cfg.hflip
    _check_train_crop(cfg, size, padding)
    common = dict(
        normalization=normalization,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        channels_last=cfg.channels_last,
    )
    train_loader = TensorLoader(
        train,
        batch_size=cfg.batch_size,
        train=True,
        padding=padding,
        hflip=hflip,
        crop_size=cfg.train_crop_size,
        policy=auto_augment(cfg.auto_augment),
        repeats=cfg.aug_repeats,
        erasing=random_erasing(cfg.reprob, cfg.remode),
        **common,
    )
    _check_batches(train_loader, "training", cfg.batch_size)
    val_loader = None
    if val is not None:
        val_loader = TensorLoader(val.to(device), batch_size=cfg.eval_batch_size, train=False, **common)
    return DataBundle(
        dataset=cfg.dataset,
        train=train_loader,
        val=val_loader,
        test=TensorLoader(test, batch_size=cfg.eval_batch_size, train=False, **common),
        classes=list(train.classes),
        in_chans=train.image_shape[0],
        image_size=size,
        normalization=normalization,
        eval_preprocess=_eval_preprocess(size, size, normalization.mode),
    )


def _check_train_crop(cfg: DataConfig, size: int, padding: int) -> None:
    crop = cfg.train_crop_size
    if crop is not None and crop > size + 2 * padding:
        raise ConfigError(
            f"train_crop_size={crop} is larger than {cfg.dataset}'s {size}x{size} images padded by "
            f"crop_padding={padding}; use at most {size + 2 * padding}"
        )
    if crop not in (None, size) and cfg.normalization == "per_pixel":
        raise ConfigError(
            f"train_crop_size={crop} differs from the {size}x{size} images, but per_pixel normalization "
            f"subtracts a {size}x{size} mean image; use normalization='per_channel'"
        )


def _folder_root(cfg: DataConfig) -> str:
    if cfg.data_dir:
        return cfg.data_dir
    if cfg.dataset == "imagenet":
        candidates = [root / "imagenet" for root in datasets.search_roots()]
        for candidate in candidates:
            if candidate.is_dir():
                return str(candidate)
        raise DataError(
            f"ImageNet not found in {', '.join(map(str, candidates))}; it cannot be downloaded "
            f"automatically: get ILSVRC-2012 from image-net.org and pass --data-dir DIR "
            f"(DIR/train and DIR/val holding class folders)"
        )
    raise DataError(
        "dataset 'imagefolder' needs --data-dir: a folder of class subfolders (optionally split "
        "into train/ and val/)"
    )


def _labels(samples: list[folders.Sample]) -> torch.Tensor:
    return torch.tensor([label for _, label in samples])


def _pick(samples: list[folders.Sample], indices: torch.Tensor) -> list[folders.Sample]:
    return [samples[i] for i in indices.tolist()]


def _build_folders(cfg: DataConfig, device: torch.device, rank: int, world_size: int) -> DataBundle:
    if cfg.download:
        raise ConfigError(f"{cfg.dataset} cannot be downloaded; drop --download and pass --data-dir")
    set_max_image_pixels(cfg.max_image_pixels)  # every decode of this process and its workers
    splits = folders.scan_layout(
        _folder_root(cfg),
        cfg.dataset,
        cfg.test_fraction,
        seed_for(cfg.seed, _TEST_SPLIT),
        cfg.strict_data,
        cfg.follow_links,
    )
    if cfg.val_split and splits.val is not None:
        raise ConfigError(
            f"{splits.root} has both val/ and test/, and val/ is the validation set; drop val_split"
        )
    train_idx, val_idx, test_idx = _select(cfg, _labels(splits.train), _labels(splits.test))
    train, test = _pick(splits.train, train_idx), _pick(splits.test, test_idx)
    val = _pick(splits.train, val_idx) if val_idx is not None else splits.val
    size = cfg.image_size or 224
    if cfg.dataset == "imagenet" and cfg.normalization == "per_channel":
        normalization = Normalization.constant(IMAGENET_MEAN, IMAGENET_STD)  # what pretrained weights expect
    else:
        normalization = folders.fit_folder_normalization(train, cfg.normalization, size, cfg.seed)
    workers = min(8, os.cpu_count() or 1) if cfg.workers is None else cfg.workers
    hflip = True if cfg.hflip is None else cfg.hflip
    common = dict(
        normalization=normalization,
        device=device,
        workers=workers,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        strict=cfg.strict_data,
        channels_last=cfg.channels_last,
    )
    resize = cfg.eval_resize or folders.eval_resize(size)
    evaluation = folders.eval_transform(size, resize)
    encoded = decodes_on_device(cfg.device_decode, device)

    def eval_loader(samples):
        dataset = folders.FolderDataset(samples, evaluation, substitute=False, encoded=encoded)
        return folders.FolderLoader(dataset, batch_size=cfg.eval_batch_size, train=False, **common)

    geometry = folders.train_transform(
        cfg.train_transform, cfg.train_crop_size or size, hflip, auto_augment(cfg.auto_augment)
    )
    train_set = folders.FolderDataset(train, geometry, substitute=not cfg.strict_data, encoded=encoded)
    train_loader = folders.FolderLoader(
        train_set,
        batch_size=cfg.batch_size,
        train=True,
        lighting=cfg.train_transform == "paper",
        repeats=cfg.aug_repeats,
        erasing=random_erasing(cfg.reprob, cfg.remode),
        **common,
    )
    _check_batches(train_loader, "training", cfg.batch_size)
    return DataBundle(
        dataset=cfg.dataset,
        train=train_loader,
        val=eval_loader(val) if val else None,
        test=eval_loader(test),
        classes=list(splits.classes),
        in_chans=3,
        image_size=size,
        normalization=normalization,
        eval_preprocess=_eval_preprocess(resize, size, normalization.mode),
    )


def build_data(cfg: DataConfig, device: torch.device | str, rank: int = 0, world_size: int = 1) -> DataBundle:
    """Locate, verify and load the data of ``cfg``; loaders for this rank's shard on ``device``."""
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside a world of size {world_size}")
    device = torch.device(device)
    build = _build_folders if cfg.dataset in FOLDER_DATASETS else _build_arrays
    return build(cfg, device, rank, world_size)
