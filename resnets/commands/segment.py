"""``resnets segment``: semantic segmentation (FCN, DeepLabV3) and instance segmentation (Mask R-CNN) on the
zoo's backbones.

``resnets segment make-data DIR`` writes the Fashion-MNIST segmentation set; ``train`` trains a segmenter on
a COCO or Pascal VOC folder (run folders, resume, torchrun as ``resnets train``), Mask R-CNN with
``--model mask_rcnn`` or one of its recipes (a COCO folder with instance masks); ``eval`` gives mean IoU,
pixel accuracy and per-class IoU, or a Mask R-CNN's box AP and mask AP; ``predict`` prints (and draws) the
classes, or the objects and their masks, found in images; ``export`` writes an ONNX file checked in
onnxruntime. The structure is ``resnets detect``'s; a Mask R-CNN run is read as a detector's, with masks.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Literal

import torch

from ..detection.evaluate import METRICS, percent
from ..detection.export import export_detector_onnx
from ..detection.loader import DetectionLoader
from ..detection.plots import draw_boxes
from ..detection.predict import predict, read_images
from ..errors import ConfigError, DataError, ResnetsError
from ..runs import Resumed, read_for_resume
from ..runtime import select_device
from ..segmentation.data import open_segmentation_data
from ..segmentation.evaluate import evaluate_instances, evaluate_segmenter
from ..segmentation.export import export_segmenter_onnx
from ..segmentation.instance_train import open_instance_data, train_mask_rcnn
from ..segmentation.loader import Augmentation, SegmentationLoader
from ..segmentation.predict import draw_mask, is_mask_rcnn, load_segmenter, normalization, predict_masks
from ..segmentation.recipes import (
    DEFAULT_MASK_RCNN_RECIPE,
    DEFAULT_SEGMENTATION_RECIPE,
    MASK_RCNN_RECIPES,
    MODELS,
    SEGMENTATION_RECIPES,
    MaskRCNNConfig,
    SegmentationConfig,
)
from ..segmentation.synthetic import make_fashion_segmentation
from ..segmentation.train import train_segmenter
from ._common import (
    add_checkpoint_argument,
    add_eval_arguments,
    add_synthetic_flags,
    drawing_scale,
    drawing_targets,
    export_output,
    parse_set_args,
    resolve_checkpoint,
    synthetic_spec,
)
from ._config import TrainingCommand
from ._flags import Flag
from .detect import FLAGS as DETECT_FLAGS
from .detect import METRIC_NAMES

WHAT = "a segmentation run or checkpoint"
MASK_RCNN = "mask_rcnn"
# The fields with a flag of their own (the others through --set); the run's flags are `resnets detect`'s.
FLAGS = {
    "recipe": (
        Flag(
            "model",
            f"torchvision's FCN or DeepLabV3 head (semantic), or Mask R-CNN (instances; its recipes: "
            f"{', '.join(MASK_RCNN_RECIPES)})",
        ),
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

# One parser, two configs: FCN/DeepLabV3's (COMMAND configures the flags) and Mask R-CNN's, whose recipe is a
# detection recipe (the same flags but --output-stride; its other fields through --set).
COMMAND = TrainingCommand(
    SegmentationConfig,
    SEGMENTATION_RECIPES,
    DEFAULT_SEGMENTATION_RECIPE,
    train_segmenter,
    FLAGS,
    "crop_size=480",
    other_recipes=tuple(MASK_RCNN_RECIPES),
    other_default=f"{DEFAULT_MASK_RCNN_RECIPE} with --model {MASK_RCNN}",
    flag_types={"model": Literal[(*MODELS, MASK_RCNN)]},
)
MASK_RCNN_COMMAND = TrainingCommand(  # resolves only: its flags are the ones COMMAND configures
    MaskRCNNConfig,
    MASK_RCNN_RECIPES,
    DEFAULT_MASK_RCNN_RECIPE,
    train_mask_rcnn,
    FLAGS,
    "mask_head_width=64",
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

    p = sub.add_parser(
        "train", help="train a segmenter (a COCO or VOC folder as --data-dir; Mask R-CNN: --model mask_rcnn)"
    )
    COMMAND.configure(p)
    p.set_defaults(_segment=run_train)

    p = sub.add_parser(
        "eval",
        help="mean IoU, pixel accuracy and per-class IoU of a segmentation run (Mask R-CNN: box and mask AP)",
    )
    add_checkpoint_argument(p, WHAT)
    add_eval_arguments(p)
    p.set_defaults(_segment=run_eval)

    p = sub.add_parser(
        "predict",
        help="the class of every pixel of images, counted (and drawn); Mask R-CNN: objects and masks",
    )
    add_checkpoint_argument(p, WHAT)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--draw", metavar="PNG|DIR", help="draw the masks: a PNG (one image) or a folder (one PNG per image)"
    )
    p.add_argument(
        "--score", type=float, help="Mask R-CNN: keep objects of at least this score (default 0.5)"
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
    print(
        f"wrote {root} (COCO format and mask PNGs); train with: resnets segment train --data-dir {root} "
        f"(Mask R-CNN: add --model mask_rcnn)"
    )
    return 0


# --- train -----------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    resumed = read_for_resume(args.resume) if args.resume else None
    command = MASK_RCNN_COMMAND if trains_mask_rcnn(args, resumed) else COMMAND
    return command.run(args, resumed)


def trains_mask_rcnn(args: argparse.Namespace, resumed: Resumed | None) -> bool:
    """Whether `segment train` trains a Mask R-CNN: a resumed run's task, else --model (or --set model=) or
    --recipe; flags of the other kind of segmenter are refused."""
    model = args.model or parse_set_args(args.set_items).get("model")
    if resumed is not None:
        config = resumed.checkpoint.get("config")
        instance = isinstance(config, dict) and config.get("task") == MaskRCNNConfig.TASK
        source = f"the resumed run ({'Mask R-CNN' if instance else 'FCN or DeepLabV3'})"
    else:
        instance = model == MASK_RCNN or args.recipe in MASK_RCNN_RECIPES
        source = f"--recipe {args.recipe}" if args.recipe in MASK_RCNN_RECIPES else f"--model {model}"
    if instance and model not in (None, MASK_RCNN) or not instance and model == MASK_RCNN:
        raise ConfigError(f"--model {model} does not go with {source}: give one model")
    recipes = MASK_RCNN_RECIPES if instance else SEGMENTATION_RECIPES
    if args.recipe and args.recipe not in recipes and (args.recipe in MASK_RCNN_RECIPES or instance):
        raise ConfigError(
            f"--recipe {args.recipe} does not go with {source}; its recipes: {', '.join(recipes)}"
        )
    if instance and args.output_stride is not None:
        raise ConfigError("--output-stride is FCN and DeepLabV3's; Mask R-CNN keeps its backbone's strides")
    return instance


# --- eval ------------------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    device = select_device(args.device)
    model, ckpt = load_segmenter(args.checkpoint, device)
    meta = ckpt["data"]
    data_dir = args.data_dir or meta.get("data_dir")
    split = args.split or meta.get("eval_split")
    if not data_dir or not split:
        raise ConfigError(f"{args.checkpoint} records no validation data; give --data-dir and --split")
    if is_mask_rcnn(ckpt):
        return eval_mask_rcnn(args, model, ckpt, data_dir, split, device)
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


def eval_mask_rcnn(
    args: argparse.Namespace,
    model: torch.nn.Module,
    ckpt: dict,
    data_dir: str,
    split: str,
    device: torch.device,
) -> int:
    """A Mask R-CNN's COCOeval numbers on the split: box AP and mask AP side by side."""
    meta = ckpt["data"]
    dataset = open_instance_data(
        data_dir, split, strict=args.strict_data, in_chans=meta.get("in_chans"), classes=meta["classes"]
    ).subset(args.subset)
    loader = DetectionLoader(dataset, batch_size=args.batch_size, train=False, device=device)
    metrics = evaluate_instances(model, loader)
    result = {
        "images": len(dataset),
        "detections": int(metrics["box"]["detections"]),
        "box": {key: percent(metrics["box"])[key] for key in METRICS},
        "mask": {key: percent(metrics["mask"])[key] for key in METRICS},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.checkpoint} on {data_dir} ({split}): {len(dataset)} images, {result['detections']} detections"
    )
    print(f"  {'':<14} {'box':>6} {'mask':>6}")
    for key in METRICS:
        values = [result[kind][key] for kind in ("box", "mask")]
        print(
            f"  {METRIC_NAMES[key]:<14} " + " ".join("     -" if v is None else f"{v:6.2f}" for v in values)
        )
    return 0


# --- predict ---------------------------------------------------------------------------------------


def run_predict(args: argparse.Namespace) -> int:
    targets = drawing_targets(args.draw, args.images)
    model, ckpt = load_segmenter(args.checkpoint, select_device(args.device))
    classes = ckpt["data"]["classes"]
    images = read_images(args.images, model.resnets_spec["kwargs"]["in_chans"])
    if is_mask_rcnn(ckpt):
        return predict_mask_rcnn(args, model, classes, images, targets)
    if args.score is not None:
        raise ConfigError("--score is Mask R-CNN's (its objects' scores); FCN and DeepLabV3 score pixels")
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


def predict_mask_rcnn(
    args: argparse.Namespace, model: torch.nn.Module, classes: list[str], images: list[torch.Tensor], targets
) -> int:
    """Each image's objects (class, score, box, mask pixels), drawn with their masks where asked."""
    score = 0.5 if args.score is None else args.score
    if not 0 <= score <= 1:
        raise ConfigError(f"--score must be in [0, 1], got {score}")
    found_all = predict(model, images, score_threshold=score)
    for path, image, found, target in zip(args.images, images, found_all, targets, strict=True):
        print(f"{path}: {len(found['boxes'])} objects")
        pixels = (found["masks"][:, 0] > 0.5).sum((1, 2)).tolist()
        for box, label, value, area in zip(
            found["boxes"].tolist(), found["labels"].tolist(), found["scores"].tolist(), pixels, strict=True
        ):
            print(
                f"  {classes[label - 1]:<16} {value:.3f}  box {' '.join(f'{v:.1f}' for v in box)}  "
                f"mask {area} pixels"
            )
        if target is not None:
            draw_boxes(
                image,
                found["boxes"],
                found["labels"].tolist(),
                found["scores"].tolist(),
                classes,
                target,
                scale=drawing_scale(image),
                masks=found["masks"],
            )
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
    if is_mask_rcnn(ckpt):
        differences = export_detector_onnx(model, output, images)
        print(
            f"wrote {output} (one image C x H x W in [0, 1] -> boxes, labels, scores, masks N x 1 x H x W); "
            f"onnxruntime vs PyTorch on {len(images)} images: boxes within {differences['boxes']:.2g} px, "
            f"scores within {differences['scores']:.2g}, masks within {differences['masks']:.2g}"
        )
        return 0
    mean, std = normalization(ckpt)
    difference = export_segmenter_onnx(model, mean, std, output, images)
    print(
        f"wrote {output} (images B x C x H x W in [0, 1] -> out, class scores B x K x H x W); onnxruntime "
        f"vs PyTorch on {len(images)} images: scores within {difference:.2g}"
    )
    return 0


def _run_images(ckpt: dict, in_chans: int) -> list[torch.Tensor]:
    """Two of the run's validation images, or two random ones (64 x 64; a Mask R-CNN's input size)."""
    meta = ckpt.get("data") or {}
    instance = is_mask_rcnn(ckpt)
    try:
        split = meta.get("eval_split") or meta["train_split"]
        if instance:
            data = open_instance_data(meta["data_dir"], split, in_chans=in_chans, classes=meta["classes"])
        else:
            data = open_segmentation_data(meta["data_dir"], split, in_chans=in_chans)
        return [data.image(i).float() / 255 for i in range(min(2, len(data)))]
    except (KeyError, TypeError, ResnetsError):  # no record, or the data moved: random images
        size = ckpt["model"]["kwargs"]["min_size"] if instance else 64
        generator = torch.Generator().manual_seed(0)
        return [torch.rand(in_chans, size, size, generator=generator) for _ in range(2)]
