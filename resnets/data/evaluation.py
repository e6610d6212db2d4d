"""The data a trained run was evaluated on, rebuilt from the records its checkpoint holds.

A checkpoint (a plain dict, as ``checkpoints.load_checkpoint`` returns it) keeps what this needs:
``data`` (``DataBundle.meta()``: dataset, classes, image size, normalisation), ``config`` (the run's
``recipe`` and ``run`` options: val_split, seed, data_dir, how it accepted its inputs) and ``model``
(its spec's ``num_classes`` and ``in_chans``). ``resnets eval`` and the experiments that look inside
trained networks both use ``evaluation_data``, so their numbers match the run's own.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CheckpointError, DataError
from ..runtime import uses_channels_last
from .augment import Normalization
from .datasets import FOLDER_DATASETS, ArrayDataset
from .folders import DataWarning, FolderDataset, FolderLoader
from .images import resize_center_crop
from .loaders import DataBundle, DataConfig, TensorLoader, build_data

# How a run accepted its inputs: the DataConfig fields that are also run options (RunOptions)
INPUT_OPTIONS = ("strict_data", "verify_checksums", "follow_links", "max_image_pixels")


@dataclass
class EvaluationData:
    """A split of the data a checkpoint's run was trained on, prepared as that run evaluated it."""

    loader: Any  # yields (normalised images, labels) on the device
    classes: list[str]
    dataset: str
    image_size: int


def _data_record(ckpt: dict[str, Any], source: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's ``data`` entry (``DataBundle.meta()``), checked for what evaluation needs."""
    meta = ckpt.get("data") or {}
    missing = [k for k in ("dataset", "classes", "in_chans", "image_size", "normalization") if k not in meta]
    if missing:
        raise CheckpointError(
            f"checkpoint {source} has no usable data record (missing "
            f"{', '.join(missing)}); it was not written by `resnets train`"
        )
    return meta


def evaluation_data(
    ckpt: dict[str, Any],
    source: str | os.PathLike,
    device: torch.device,
    *,
    split: str = "test",
    dataset: str | None = None,
    data_dir: str | None = None,
    subset: int | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    tta: str = "none",
    inputs: dict[str, Any] | None = None,
) -> EvaluationData:
    """Rebuild the ``split`` ("test" or "val") of the data a checkpoint was trained on.

    The run's ``val_split`` and seed rebuild the validation images it held out (and its test subset,
    given the same ``subset``); the images are normalised with the statistics stored in the
    checkpoint whatever the dataset. ``tta`` ("10crop", "multiscale") prepares image folders for
    those protocols: the central square of AlexNet's 10-crop, or each image whole at its own
    aspect ratio (one at a time). ``inputs`` overrides how the run accepted its inputs
    (``strict_data``, ``verify_checksums``, ``follow_links``, ``max_image_pixels``; None: the run's).
    """
    meta = _data_record(ckpt, source)
    config = ckpt.get("config") or {}
    recipe, run_options = config.get("recipe") or {}, config.get("run") or {}
    dataset = dataset or meta["dataset"]
    same = dataset == meta["dataset"]
    data_dir = data_dir or (run_options.get("data_dir") if same else None)  # where the run found it
    folder = dataset in FOLDER_DATASETS
    val_split = int(recipe.get("val_split", 0) or 0) if same else 0
    if split == "val" and not val_split:
        raise DataError(
            f"no validation split: the run of {source} held out no images "
            f"(val_split=0) on {dataset}; use --split test"
        )
    norm_record = meta["normalization"]
    accepted = {key: run_options[key] for key in INPUT_OPTIONS if run_options.get(key) is not None}
    accepted |= {key: value for key, value in (inputs or {}).items() if value is not None}
    resize = (meta.get("eval_preprocess") or {}).get("resize") if folder else None  # the run's own
    cfg = DataConfig(
        **accepted,
        eval_resize=int(resize) if resize else None,
        dataset=dataset,
        data_dir=data_dir,
        val_split=val_split,
        seed=int(recipe.get("seed", 0) or 0),
        batch_size=1,
        eval_batch_size=batch_size,
        test_subset=subset,
        normalization=norm_record.get("mode", "per_channel"),
        crop_padding=None if folder else 0,
        hflip=False if not folder else None,
        image_size=int(meta["image_size"]) if folder else None,
        workers=workers,
        channels_last=uses_channels_last(recipe.get("channels_last", False), device),
    )
    bundle = build_data(cfg, device)
    _check_compatible(bundle, meta, ckpt["model"].get("kwargs", {}), source, dataset)
    chosen = bundle.val if split == "val" else bundle.test
    normalization = Normalization.from_dict(norm_record)  # what the model was trained with
    size = int(meta["image_size"])

    if not folder:
        data = ArrayDataset(chosen.images, chosen.labels, bundle.classes, source=dataset)
        loader = TensorLoader(
            data,
            batch_size=batch_size,
            normalization=normalization,
            train=False,
            channels_last=cfg.channels_last,
        )
        return EvaluationData(loader, list(bundle.classes), dataset, size)
    if tta in ("10crop", "multiscale") and normalization.mode == "per_pixel":
        raise DataError(
            "10-crop and multi-scale testing of image folders need per-channel "
            f"normalization; {source} subtracts a {size}x{size} mean image"
        )
    if tta == "10crop":  # AlexNet's central square; ten_crop_logits crops it
        resize = round(256 * size / 224)
        transform, batch = functools.partial(resize_center_crop, resize=resize, crop=resize), batch_size
    elif tta == "multiscale":  # each image at its own aspect ratio: one at a time
        transform, batch = _whole_image, 1
    else:
        transform, batch = chosen.dataset.transform, batch_size
    loader = FolderLoader(
        FolderDataset(chosen.dataset.samples, transform, substitute=False),
        batch_size=batch,
        train=False,
        normalization=normalization,
        device=device,
        workers=chosen.loader.num_workers if workers is None else workers,
        seed=0,
        channels_last=cfg.channels_last,
    )
    return EvaluationData(loader, list(bundle.classes), dataset, size)


def _check_compatible(bundle: DataBundle, meta: dict, model_kwargs: dict, source: Any, dataset: str) -> None:
    name = f"checkpoint {source} (trained on {meta['dataset']})"
    num_classes, in_chans = model_kwargs.get("num_classes"), model_kwargs.get("in_chans")
    if num_classes is not None and bundle.num_classes != num_classes:
        raise DataError(
            f"dataset {dataset} has {bundle.num_classes} classes but {name} has "
            f"{num_classes}; evaluate on a dataset with the same classes"
        )
    if in_chans is not None and bundle.in_chans != in_chans:
        raise DataError(
            f"dataset {dataset} has {bundle.in_chans}-channel images but {name} expects {in_chans} channels"
        )
    if bundle.image_size != int(meta["image_size"]) and meta["normalization"].get("mode") == "per_pixel":
        raise DataError(
            f"dataset {dataset} has {bundle.image_size}-pixel images but {name} subtracts a "
            f"{meta['image_size']}-pixel mean image"
        )
    if list(bundle.classes) != list(meta["classes"]):
        warnings.warn(
            DataWarning(
                f"the class names of {dataset} differ from the checkpoint's; labels are matched by index"
            ),
            stacklevel=3,
        )


def _whole_image(image: torch.Tensor) -> torch.Tensor:  # module level: DataLoader workers pickle it
    return image
