"""``resnets detect``: Faster R-CNN detectors on the zoo's backbones (paper Sec. 4.3, appendix A).

``resnets detect make-data DIR`` writes the Fashion-MNIST detection set; ``train`` trains a detector on a
COCO or VOC folder (run folders, resume, torchrun as ``resnets train``); ``eval`` gives COCOeval's AP,
AP50, AP75, APs/m/l and AR; ``predict`` prints (and draws) the boxes found in images; ``export`` writes an
ONNX file checked in onnxruntime.
"""

from __future__ import annotations

import argparse
import json

import torch

from ..detection.data import open_detection_data
from ..detection.evaluate import METRICS, evaluate_detector, percent
from ..detection.export import export_detector_onnx
from ..detection.loader import DetectionLoader
from ..detection.models import class_names, load_detector
from ..detection.plots import draw_boxes
from ..detection.predict import predict, read_images
from ..detection.recipes import DEFAULT_DETECTION_RECIPE, DETECTION_RECIPES, DetectionConfig
from ..detection.synthetic import make_fashion_detection
from ..detection.train import train_detector
from ..errors import ConfigError, ResnetsError
from ..runtime import select_device
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

# The fields with a flag of their own (the others through --set); names, types and choices come from the
# fields (_flags.py). --backbone-weights is RunOptions.init_weights.
FLAGS = {
    "recipe": (
        Flag("backbone", "a registered model with stage features (resnets models)"),
        Flag("head", "torchvision's FPN, or the paper's C4 (appendix A)"),
        Flag(
            "init_weights",
            "start the backbone from a resnets classification run, or torchvision/timm weights",
            name="backbone_weights",
            metavar="FILE|RUN",
        ),
        Flag(
            "data_dir",
            "the detection data: a COCO folder (annotations/instances_SPLIT.json and SPLIT/) or a Pascal VOC "
            "folder",
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
    "run": (
        Flag("device"),
        Flag("workers", "image-decoding processes"),
        Flag(
            "strict_data", "stop at the first bad annotation instead of skipping and counting it", switch=True
        ),
        Flag("max_image_pixels", metavar="N"),
        Flag("output", aliases=("-o",), metavar="DIR"),
        Flag("resume", metavar="DIR|FILE"),
        Flag("keep_last"),
        Flag("log_every"),
        Flag("progress"),
    ),
}

# COCOeval's numbers as eval prints them (segment eval too)
METRIC_NAMES = {
    "AP": "AP @[.50:.95]",
    "AP50": "AP @.50",
    "AP75": "AP @.75",
    "APs": "AP small",
    "APm": "AP medium",
    "APl": "AP large",
    "AR1": "AR 1 det",
    "AR10": "AR 10 dets",
    "AR100": "AR 100 dets",
    "ARs": "AR small",
    "ARm": "AR medium",
    "ARl": "AR large",
}

COMMAND = TrainingCommand(
    DetectionConfig,
    DETECTION_RECIPES,
    DEFAULT_DETECTION_RECIPE,
    train_detector,
    FLAGS,
    "anchor_sizes=16,32,64",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples: resnets detect make-data data/fashion-det | resnets detect train --data-dir "
        "data/fashion-det --backbone-weights runs/my-resnet20 | resnets detect eval RUN | "
        "resnets detect predict RUN image.png --draw boxes.png | resnets detect export RUN"
    )
    sub = parser.add_subparsers(dest="detect_command", metavar="ACTION")

    p = sub.add_parser("make-data", help="write the Fashion-MNIST detection set (COCO format)")
    add_synthetic_flags(p)
    p.set_defaults(_detect=run_make_data)

    p = sub.add_parser("train", help="train a detector (a COCO or VOC folder as --data-dir)")
    COMMAND.configure(p)
    p.set_defaults(_detect=run_train)

    p = sub.add_parser("eval", help="COCOeval AP, AP50, AP75, APs/m/l and AR of a detection run")
    _add_checkpoint(p)
    add_eval_arguments(p)
    p.set_defaults(_detect=run_eval)

    p = sub.add_parser("predict", help="boxes, class names and scores in images")
    _add_checkpoint(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--score", type=float, default=0.5, help="keep boxes of at least this score (default 0.5)")
    p.add_argument(
        "--draw", metavar="PNG|DIR", help="draw the boxes: a PNG (one image) or a folder (one PNG per image)"
    )
    p.add_argument("--device")
    p.set_defaults(_detect=run_predict)

    p = sub.add_parser("export", help="an ONNX file of a detector, checked in onnxruntime")
    _add_checkpoint(p)
    p.add_argument("-o", "--output", metavar="FILE", help="default: the checkpoint's path with .onnx")
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="IMAGE",
        help="check images (default: two of the run's validation images, or random ones)",
    )
    p.set_defaults(_detect=run_export)


def _add_checkpoint(p: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(p, "a detection run or checkpoint")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_detect", None) is None:
        raise ConfigError("name what to do: resnets detect make-data|train|eval|predict|export (see --help)")
    resolve_checkpoint(args, "a detection run or checkpoint")
    return args._detect(args)


# --- make-data -------------------------------------------------------------------------------------


def run_make_data(args: argparse.Namespace) -> int:
    root = make_fashion_detection(args.folder, synthetic_spec(args), data_dir=args.fashion_dir)
    for split in ("train", "val"):
        data = open_detection_data(root, split)
        boxes = sum(len(r.boxes) for r in data.records)
        print(f"{split}: {len(data)} images, {boxes} boxes, {data.num_classes} classes")
    print(f"wrote {root} (COCO format); train with: resnets detect train --data-dir {root}")
    return 0


# --- train -----------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    return COMMAND.run(args)


# --- eval ------------------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    device = select_device(args.device)
    detector, ckpt = load_detector(args.checkpoint, device)
    meta = ckpt.get("data") or {}
    data_dir = args.data_dir or meta.get("data_dir")
    split = args.split or meta.get("eval_split")
    if not data_dir or not split:
        raise ConfigError(f"{args.checkpoint} records no validation data; give --data-dir and --split")
    dataset = open_detection_data(
        data_dir, split, strict=args.strict_data, in_chans=meta.get("in_chans"), classes=class_names(ckpt)
    ).subset(args.subset)
    loader = DetectionLoader(dataset, batch_size=args.batch_size, train=False, device=device)
    metrics = percent(evaluate_detector(detector, loader))
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(
        f"{args.checkpoint} on {data_dir} ({split}): {len(dataset)} images, {int(metrics['detections'])} "
        f"detections"
    )
    for key in METRICS:
        value = metrics[key]
        print(f"  {METRIC_NAMES[key]:<14} {'-' if value is None else f'{value:6.2f}'}")
    return 0


# --- predict ---------------------------------------------------------------------------------------


def run_predict(args: argparse.Namespace) -> int:
    if not 0 <= args.score <= 1:
        raise ConfigError(f"--score must be in [0, 1], got {args.score}")
    targets = drawing_targets(args.draw, args.images)
    detector, ckpt = load_detector(args.checkpoint, select_device(args.device))
    classes = class_names(ckpt)
    images = read_images(args.images, detector.resnets_spec["kwargs"]["in_chans"])
    found_all = predict(detector, images, score_threshold=args.score)
    for path, image, found, target in zip(args.images, images, found_all, targets, strict=True):
        print(f"{path}: {len(found['boxes'])} objects")
        for box, label, score in zip(
            found["boxes"].tolist(), found["labels"].tolist(), found["scores"].tolist(), strict=True
        ):
            print(f"  {classes[label - 1]:<16} {score:.3f}  box {' '.join(f'{v:.1f}' for v in box)}")
        if target is not None:
            draw_boxes(
                image,
                found["boxes"],
                found["labels"].tolist(),
                found["scores"].tolist(),
                classes,
                target,
                scale=drawing_scale(image),
            )
            print(f"  drawn: {target}")
    return 0


# --- export ----------------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    output = export_output(args)
    detector, ckpt = load_detector(args.checkpoint, "cpu")
    in_chans = detector.resnets_spec["kwargs"]["in_chans"]
    images = (
        [image.float() / 255 for image in read_images(args.image, in_chans)]
        if args.image
        else _run_images(ckpt, in_chans)
    )
    differences = export_detector_onnx(detector, output, images)
    print(
        f"wrote {output} (one image C x H x W in [0, 1] -> boxes, labels, scores); onnxruntime vs PyTorch on "
        f"{len(images)} images: boxes within {differences['boxes']:.2g} px, scores within "
        f"{differences['scores']:.2g}"
    )
    return 0


def _run_images(ckpt: dict, in_chans: int) -> list[torch.Tensor]:
    """Two of the run's validation images, or two random ones of the detector's input size."""
    meta = ckpt.get("data") or {}
    try:
        data = open_detection_data(
            meta["data_dir"],
            meta.get("eval_split") or meta["train_split"],
            in_chans=in_chans,
            classes=meta["classes"],
        )
        return [data.image(i).float() / 255 for i in range(min(2, len(data)))]
    except (KeyError, TypeError, ResnetsError):  # no record, or the data moved: random images
        size = ckpt["model"]["kwargs"]["min_size"]
        generator = torch.Generator().manual_seed(0)
        return [torch.rand(in_chans, size, size, generator=generator) for _ in range(2)]
