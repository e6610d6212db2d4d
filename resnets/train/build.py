"""What a run is made of, built from its config: seeds, data, model, optimiser, EMA.

Each builder is a small function of the recipe so the loop in engine.py reads top to bottom.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..data import DATASET_NAMES, DataBundle, DataConfig, build_data
from ..errors import ConfigError, unknown_name
from ..models.registry import create_model
from ..runtime import uses_channels_last
from ..weights import load_weights_into
from .distributed import DistInfo
from .lamb import Lamb
from .recipes import Optimization, Recipe, RunOptions


def check_names(recipe: Recipe) -> None:
    """Unknown model, model option or dataset: a ConfigError before any data is read."""
    if recipe.dataset not in DATASET_NAMES:
        raise unknown_name("dataset", recipe.dataset, DATASET_NAMES)
    with torch.device("meta"):  # checks the name and every option without allocating weights
        create_model(recipe.model, **recipe.model_options)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """--deterministic: the same inputs give bit-identical results on the same machine (and a
    resumed run matches an uninterrupted one). Otherwise let cuDNN pick the fastest kernels."""
    if device.type == "cuda":
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS for determinism
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic)


def data_config(recipe: Recipe, run: RunOptions, info: DistInfo, device: torch.device) -> DataConfig:
    """The data pipeline's DataConfig for this recipe (batch sizes are global; build_data shards). The
    training loader yields micro-batches: batch_size / (processes x grad_accum_steps) images."""
    if recipe.micro_batch_size % info.world_size:
        raise ConfigError(
            f"batch size {recipe.batch_size} in {recipe.grad_accum_steps} micro-batches does "
            f"not divide among {info.world_size} processes"
        )
    return DataConfig(
        dataset=recipe.dataset,
        data_dir=run.data_dir,
        download=run.download,
        val_split=recipe.val_split,
        batch_size=recipe.micro_batch_size // info.world_size,
        eval_batch_size=recipe.eval_batch_size,
        train_crop_size=recipe.train_crop_size,
        eval_resize=recipe.eval_resize,
        auto_augment=recipe.auto_augment,
        reprob=recipe.reprob,
        remode=recipe.remode,
        aug_repeats=recipe.aug_repeats,
        crop_padding=recipe.crop_padding,
        hflip=recipe.hflip,
        normalization=recipe.normalization,
        train_subset=recipe.train_subset,
        test_subset=recipe.test_subset,
        image_size=recipe.image_size,
        train_transform=recipe.train_transform,
        workers=run.workers,
        channels_last=uses_channels_last(recipe.channels_last, device),
        device_decode=run.device_decode,
        seed=recipe.seed,
        split_seed=recipe.split_seed,
        strict_data=run.strict_data,
        verify_checksums=run.verify_checksums,
        follow_links=run.follow_links,
        max_image_pixels=run.max_image_pixels,
    )


def build_data_bundle(recipe: Recipe, run: RunOptions, device: torch.device, info: DistInfo) -> DataBundle:
    config = data_config(recipe, run, info, device)
    return build_data(config, device, rank=info.rank, world_size=info.world_size)


def build_model(
    recipe: Recipe, run: RunOptions, data: DataBundle, device: torch.device, log: Callable[[str], None]
) -> nn.Module:
    """The recipe's model for the data's classes and channels, optionally from pretrained weights."""
    options = dict(recipe.model_options)
    for key, value in (("num_classes", len(data.classes)), ("in_chans", data.in_chans)):
        if key in options and options.pop(key) != value:  # the data sets them; an equal value is harmless
            what = "classes" if key == "num_classes" else "channels"
            raise ConfigError(
                f"model_kwargs sets {key}={recipe.model_options[key]!r} but the data has "
                f"{value} {what}; drop {key} from model_kwargs (the data sets it)"
            )
    model = create_model(recipe.model, num_classes=len(data.classes), in_chans=data.in_chans, **options)
    if run.init_weights:
        report = load_weights_into(model, run.init_weights, replace_head=True)
        for line in report.lines():
            log(line)
    model = model.to(device)
    if uses_channels_last(recipe.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def fused_optimizer(device: torch.device) -> bool:
    """One fused kernel for the whole optimiser step on CUDA (launch overhead matters there);
    the default multi-tensor step on CPU, where fusing gains nothing measurable."""
    return device.type == "cuda"


def build_optimizer(
    model: nn.Module,
    recipe: Optimization,
    device: torch.device,
    lr_factors: Mapping[str, float] | None = None,
) -> torch.optim.Optimizer:
    """SGD, AdamW or LAMB with weight decay; BN weights and biases get ``norm_weight_decay`` when set.
    ``lr_factors``: the parameters under a module of that name (e.g. ``"aux_classifier"``) train at
    ``recipe.lr`` times its factor (their own parameter groups, after the others: group 0, whose lr is
    logged, is at ``recipe.lr``)."""
    factors = dict(lr_factors or {})
    by_setting: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, False): []}
    for module_name, module in model.named_modules():
        factor = factors.get(module_name.split(".")[0], 1.0)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(module, nn.modules.batchnorm._NormBase) or name == "bias"
            no_decay = is_norm and recipe.norm_weight_decay is not None
            by_setting.setdefault((factor, no_decay), []).append(p)
    groups: list[dict[str, Any]] = []
    for (factor, no_decay), params in sorted(by_setting.items(), key=lambda kv: (kv[0][0] != 1.0, kv[0])):
        if not params and groups:
            continue
        group = {
            "params": params,
            "weight_decay": recipe.norm_weight_decay if no_decay else recipe.weight_decay,
        }
        if factor != 1.0:
            group["lr"] = recipe.lr * factor
        groups.append(group)
    if recipe.optimizer == "lamb":
        return Lamb(groups, lr=recipe.lr)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, fused=fused_optimizer(device) or None)
    return torch.optim.SGD(
        groups,
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        fused=fused_optimizer(device) or None,
    )


def build_ema(model: nn.Module, recipe: Recipe) -> AveragedModel | None:
    """An exponential moving average of the weights, BN running statistics included
    (``use_buffers=True``), or None."""
    if not recipe.ema:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` the BN layers stay in eval mode, so they normalise with
    (and do not update) their running statistics. Their affine weights still train."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def weighted_depth(model: nn.Module) -> int:
    """Layers with weights on the main path (convs and fc, not projection shortcuts or gates), as
    the paper counts depth: 110 for ResNet-110 (WRN-28-10 gives 26: WRN counts its shortcuts)."""
    return sum(
        1
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
        and not any(part in name for part in ("downsample", "shortcut", "merge"))
    )


def default_output(recipe: Recipe) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{stamp}-{recipe.model}-{recipe.dataset}")
