"""``resnets segment``: semantic segmentation (FCN, DeepLabV3) on the zoo's backbones.

``resnets segment make-data DIR`` writes the Fashion-MNIST segmentation set; ``train`` trains a segmenter on
a COCO or Pascal VOC folder (run folders, resume, torchrun as ``resnets train``); ``eval`` gives mean IoU,
pixel accuracy and per-class IoU; ``predict`` prints (and draws) the classes found in images; ``export``
writes an ONNX file checked in onnxruntime. The structure is ``resnets detect``'s.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from ..detection.predict import read_images
from ..errors import ConfigError, DataError, ResnetsError
from ..runtime import select_device
from ..segmentation.data import open_segmentation_data
from ..segmentation.evaluate import evaluate_segmenter
from ..segmentation.export import export_segmenter_onnx
from ..segmentation.loader import Augmentation, SegmentationLoader
from ..segmentation.predict import draw_mask, load_segmenter, normalization, predict_masks
from ..segmentation.recipes import DEFAULT_SEGMENTATION_RECIPE, SEGMENTATION_RECIPES, SegmentationConfig
from ..segmentation.synthetic import make_fashion_segmentation
from ..segmentation.train import train_segmenter
from ._common import (
    add_checkpoint_argument,
    add_eval_arguments,
    add_synthetic_flags,
    drawing_scale,
    drawing_targets,
    export_output,
    resolve_checkpoint,
    synthetic_spec,
)
from ._config import TrainingCommand
from ._flags import Flag
from .detect import FLAGS as DETECT_FLAGS

WHAT = "a segmentation run or checkpoint"
# The fields with a flag of their own (the others through --set); the run's flags are `resnets detect`'s.
FLAGS = {
    "recipe": (
        Flag("model", "torchvision's FCN or DeepLabV3 head"),
        Flag("backbone", "a registered model with stage features (resnets models)"),
        Flag(
            "output_stride",
            "8 or 16: the last stages dilated (--set output_stride=none: the backbone's own strides)",
        ),
        Flag(
            "init_weights",
            "start the backbone from a resnets classification run, or torchvision/timm weights",
            name="backbone_weights",
            metavar="FILE|RUN",
        ),
        Flag(
            "data_dir",
            "the segmentation data: a COCO folder (annotations/instances_SPLIT.json and SPLIT/) or a Pascal "
            "VOC year folder (ImageSets/Segmentation, JPEGImages, SegmentationClass)",
        ),
        Flag("train_split", "default: the recipe's (train)"),
        Flag("eval_split", "evaluated after each epoch (none: never)"),
        Flag("train_subset", metavar="N"),
        Flag("eval_subset", metavar="N"),
        Flag("epochs"),
        Flag("iterations"),
        Flag("batch_size", "global batch of images", aliases=("-b",)),
        Flag("lr"),
        Flag("seed"),
        Flag("amp"),
        Flag("deterministic"),
    ),
    "run": DETECT_FLAGS["run"],
}

COMMAND = TrainingCommand(
    SegmentationConfig,
    SEGMENTATION_RECIPES,
    DEFAULT_SEGMENTATION_RECIPE,
    train_segmenter,
    FLAGS,
    "crop_size=480",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples: resnets segment make-data data/fashion-seg | resnets segment train --data-dir "
        "data/fashion-seg | resnets segment eval RUN | resnets segment predict RUN image.png --draw "
        "mask.png | resnets segment export RUN"
    )
    sub = parser.add_subparsers(dest="segment_command", metavar="ACTION")

    p = sub.add_parser("make-data", help="write the Fashion-MNIST segmentation set (COCO and mask PNGs)")
    add_synthetic_flags(p)
    p.set_defaults(_segment=run_make_data)

    p = sub.add_parser("train", help="train a segmenter (a COCO or VOC folder as --data-dir)")
    COMMAND.configure(p)
    p.set_defaults(_segment=run_train)

    p = sub.add_parser("eval", help="mean IoU, pixel accuracy and per-class IoU of a segmentation run")
    add_checkpoint_argument(p, WHAT)
    add_eval_arguments(p)
    p.set_defaults(_segment=run_eval)

    p = sub.add_parser("predict", help="the class of every pixel of images, counted (and drawn)")
    add_checkpoint_argument(p, WHAT)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--draw", metavar="PNG|DIR", help="draw the masks: a PNG (one image) or a folder (one PNG per image)"
    )
    p.add_argument("--device")
    p.set_defaults(_segment=run_predict)

    p = sub.add_parser("export", help="an ONNX file of a segmenter, checked in onnxruntime")
    add_checkpoint_argument(p, WHAT)
    p.add_argument("-o", "--output", metavar="FILE", help="default: the checkpoint's path with .onnx")
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="IMAGE",
        help="check images (default: two of the run's validation images, or random ones)",
    )
    p.set_defaults(_segment=run_export)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_segment", None) is None:
        raise ConfigError("name what to do: resnets segment make-data|train|eval|predict|export (see --help)")
    resolve_checkpoint(args, WHAT)
    return args._segment(args)


# --- make-data -------------------------------------------------------------------------------------


def run_make_data(args: argparse.Namespace) -> int:
    root = make_fashion_segmentation(args.folder, synthetic_spec(args), data_dir=args.fashion_dir)
    for split in ("train", "val"):
        data = open_segmentation_data(root, split, task="instance")
        objects = sum(len(r.boxes) for r in data.records)
        print(
            f"{split}: {len(data)} images, {objects} objects, "
            f"{data.num_classes + 1} classes with the background"
        )
    print(f"wrote {root} (COCO format and mask PNGs); train with: resnets segment train --data-dir {root}")
    return 0


# --- train -----------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    return COMMAND.run(args)


# --- eval ------------------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    device = select_device(args.device)
    model, ckpt = load_segmenter(args.checkpoint, device)
    meta = ckpt["data"]
    data_dir = args.data_dir or meta.get("data_dir")
    split = args.split or meta.get("eval_split")
    if not data_dir or not split:
        raise ConfigError(f"{args.checkpoint} records no validation data; give --data-dir and --split")
    dataset = open_segmentation_data(data_dir, split, strict=args.strict_data, in_chans=meta["in_chans"])
    if dataset.classes != meta["classes"]:
        raise DataError(f"{data_dir} ({split}) has other classes than the run was trained on")
    if args.subset is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(args.subset, len(dataset))))
    mean, std = meta["image_mean"], meta["image_std"]
    loader = SegmentationLoader(
        dataset,
        batch_size=args.batch_size,
        train=False,
        device=device,
        mean=mean,
        std=std,
        augment=Augmentation(base_size=meta.get("base_size")),
    )
    scores, matrix = evaluate_segmenter(model, loader.batches(), len(meta["classes"]))
    iou = {
        name: None if math.isnan(v) else 100 * v for name, v in zip(meta["classes"], scores.iou, strict=True)
    }
    result = {
        "images": len(dataset),
        "miou": 100 * scores.mean_iou,
        "pixel_accuracy": 100 * scores.pixel_accuracy,
        "iou": iou,
        "pixels": int(matrix.sum()),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.checkpoint} on {data_dir} ({split}): {len(dataset)} images, {result['pixels']} pixels")
    print(f"  mean IoU        {result['miou']:6.2f}")
    print(f"  pixel accuracy  {result['pixel_accuracy']:6.2f}")
    for name, value in iou.items():
        print(f"  IoU {name:<16} {'-' if value is None else f'{value:6.2f}'}")
    return 0


# --- predict ---------------------------------------------------------------------------------------


def run_predict(args: argparse.Namespace) -> int:
    targets = drawing_targets(args.draw, args.images)
    model, ckpt = load_segmenter(args.checkpoint, select_device(args.device))
    classes = ckpt["data"]["classes"]
    images = read_images(args.images, model.resnets_spec["kwargs"]["in_chans"])
    masks = predict_masks(model, images, ckpt)
    for path, image, mask, target in zip(args.images, images, masks, targets, strict=True):
        counts = torch.bincount(mask.flatten(), minlength=len(classes))
        found = [(classes[k], int(n)) for k, n in enumerate(counts.tolist()) if n and k > 0]
        print(f"{path}: {len(found)} classes besides the background")
        for name, pixels in sorted(found, key=lambda item: -item[1]):
            print(f"  {name:<16} {pixels} pixels ({100 * pixels / mask.numel():.1f}%)")
        if target is not None:
            draw_mask(image, mask, target, scale=drawing_scale(image))
            print(f"  drawn: {target}")
    return 0


# --- export ----------------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    output = export_output(args)
    model, ckpt = load_segmenter(args.checkpoint, "cpu")
    in_chans = model.resnets_spec["kwargs"]["in_chans"]
    images = (
        [image.float() / 255 for image in read_images(args.image, in_chans)]
        if args.image
        else _run_images(ckpt, in_chans)
    )
    mean, std = normalization(ckpt)
    difference = export_segmenter_onnx(model, mean, std, output, images)
    print(
        f"wrote {output} (images B x C x H x W in [0, 1] -> out, class scores B x K x H x W); onnxruntime "
        f"vs PyTorch on {len(images)} images: scores within {difference:.2g}"
    )
    return 0


def _run_images(ckpt: dict, in_chans: int) -> list[torch.Tensor]:
    """Two of the run's validation images, or two random 64 x 64 ones."""
    meta = ckpt.get("data") or {}
    try:
        data = open_segmentation_data(
            meta["data_dir"], meta.get("eval_split") or meta["train_split"], in_chans=in_chans
        )
        return [data.image(i).float() / 255 for i in range(min(2, len(data)))]
    except (KeyError, TypeError, ResnetsError):  # no record, or the data moved: random images
        generator = torch.Generator().manual_seed(0)
        return [torch.rand(in_chans, 64, 64, generator=generator) for _ in range(2)]
