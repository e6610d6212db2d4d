"""``resnets eval --checkpoint PATH``: top-1/top-5 error, loss and images, as the paper reports them.

Test-time augmentation (``--tta``): ``flip``; ``10crop`` and ``multiscale`` (paper Sec. 3.4).
The paper's sizes belong to 224-pixel ImageNet crops: image folders (ImageNet layout) use them
as they are (10-crop: shorter side 256, crops 224; multi-scale: shorter sides 224, 256, 384,
480, 640, each image at its own aspect ratio). The small in-memory datasets (28x28, 32x32) scale
them by ``image size / 224``: at 32 pixels 10-crop resizes to 37 and crops 32, and multi-scale
uses 32, 37, 55, 69, 91. ``--scales`` sets the multi-scale sizes in pixels.
Multi-scale testing pays off for nets trained with scale augmentation (the paper's ImageNet
models, shorter side sampled in [256, 480]); the paper tests its CIFAR nets on a single view, and
a net trained at one scale scores upscaled views poorly.
The images are normalised with the statistics stored in the checkpoint, whatever the dataset.
By default eval uses the run's own evaluation settings (its test-time augmentation, its autocast,
how it accepted its inputs), so that it reproduces the numbers the run reported.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

from tqdm import tqdm

from ..checkpoints import load_model
from ..data.evaluation import evaluation_data
from ..errors import ConfigError
from ..evaluate import TTA_NAMES, evaluate, make_tta, per_class_accuracy
from ..plots import confusion_matrix_figure
from ..runtime import autocast, autocast_dtype, precision_name, select_device
from ._common import add_input_flags, check_output_file, input_options, printable

MAX_SCALE = 2048  # pixels: --scales is bounded before any image is resized (3.2 x the paper's 640)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a resnets training checkpoint (.pt)")
    parser.add_argument("--dataset", default=None, help="dataset to evaluate on (default: the checkpoint's)")
    parser.add_argument(
        "--data-dir", default=None, help="where the dataset lives (default: where the training run found it)"
    )
    parser.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="test set, or the validation images the training run held out",
    )
    parser.add_argument(
        "--tta",
        choices=("run", *TTA_NAMES),
        default="run",
        help="test-time augmentation (default run: what the training run evaluated with, "
        "e.g. flip for the fast-cpu recipe)",
    )
    parser.add_argument(
        "--scales",
        type=int,
        nargs="+",
        default=None,
        metavar="SIDE",
        help="multi-scale shorter sides in pixels (default: the paper's, scaled to the image size)",
    )
    parser.add_argument("-b", "--batch-size", type=int, default=256, help="images per batch (default 256)")
    parser.add_argument(
        "--test-subset",
        type=int,
        default=None,
        metavar="N",
        help="test on a seeded stratified subset of N images (the one `resnets train --test-subset N` used)",
    )
    parser.add_argument("--subset", type=int, default=None, help=argparse.SUPPRESS)  # deprecated spelling
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N, mps (default: CUDA, else MPS, else the CPU)"
    )
    parser.add_argument("--workers", type=int, default=None, help="image folders: DataLoader workers")
    parser.add_argument(
        "--precision",
        choices=("run", "float32"),
        default="run",
        help="run (default): the autocast the training run evaluated with, so the numbers "
        "match its metrics.csv; float32: full precision",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results as one JSON object and nothing else on stdout"
    )
    parser.add_argument("--per-class", action="store_true", help="print the accuracy of every class")
    parser.add_argument(
        "--confusion-matrix", default=None, metavar="PNG", help="write a confusion-matrix figure"
    )
    add_input_flags(parser.add_argument_group("inputs"), defaults="the run's")


def run(args: argparse.Namespace) -> int:
    inputs = input_options(args)
    if args.subset is not None:
        print(
            "note: eval --subset is deprecated; its name is --test-subset, as in resnets train",
            file=sys.stderr,
        )
        args.test_subset = args.test_subset if args.test_subset is not None else args.subset
    _check_args(args)
    if args.confusion_matrix is not None:  # before any work, and never over the checkpoint it reads
        check_output_file(args.confusion_matrix, "--confusion-matrix", reads=[args.checkpoint, args.data_dir])
    device = select_device(args.device)
    model, ckpt = load_model(args.checkpoint, device)
    recipe = (ckpt.get("config") or {}).get("recipe") or {}
    if args.confusion_matrix is not None and args.data_dir is None:  # nor into the run's data folder
        run_data = ((ckpt.get("config") or {}).get("run") or {}).get("data_dir")
        check_output_file(
            args.confusion_matrix,
            "--confusion-matrix",
            reads=[run_data if isinstance(run_data, str) else None],
        )
    if args.tta == "run":  # what the run evaluated with, so that the numbers match its metrics.csv
        args.tta = recipe.get("tta") if recipe.get("tta") in TTA_NAMES else "none"
    data = evaluation_data(
        ckpt,
        args.checkpoint,
        device,
        split=args.split,
        dataset=args.dataset,
        data_dir=args.data_dir,
        subset=args.test_subset,
        batch_size=args.batch_size,
        workers=args.workers,
        tta=args.tta,
        inputs=inputs,
    )
    dataset, classes = data.dataset, data.classes
    tta = make_tta(args.tta, image_size=data.image_size, scales=args.scales)
    want_confusion = args.per_class or args.confusion_matrix is not None
    amp_dtype = None
    if args.precision == "run":  # resolved on this device, as the run resolved it on its own
        amp_dtype = autocast_dtype(recipe.get("amp", False), recipe.get("amp_dtype", "bfloat16"), device)
    with autocast(device, amp_dtype):
        result = evaluate(model, _progress(data.loader, args), tta=tta, confusion=want_confusion)

    name = ckpt["model"].get("name", type(model).__name__)
    record = {k: result[k] for k in ("top1_error", "top5_error", "top5_k", "loss", "images")}
    record |= {
        "model": name,
        "dataset": dataset,
        "split": args.split,
        "tta": args.tta,
        "precision": precision_name(amp_dtype),
        "checkpoint": str(args.checkpoint),
    }
    if args.tta == "10crop":
        record["ten_crop"] = dict(tta.keywords)
    elif args.tta == "multiscale":
        record["scales"] = list(tta.keywords["scales"])
    # --json: stdout carries the JSON object alone; the table is left out, notes go to stderr
    say = functools.partial(print, file=sys.stderr) if args.json else print
    table = (lambda *_: None) if args.json else print
    table(
        f"{name} on {dataset} {args.split} ({result['images']} images, tta {args.tta}"
        f"{_tta_sizes(record)}, {record['precision']})"
    )
    table(f"top-1 error  {result['top1_error']:6.2f} %")
    k = result["top5_k"]
    label = "top-5 error " if k == 5 else f"top-{k} error "
    clamped = "" if k == 5 else f"  (only {k} classes: top-5 is top-{k})"
    table(f"{label} {result['top5_error']:6.2f} %{clamped}")
    table(f"loss         {result['loss']:.4f}")

    if want_confusion:
        confusion = result["confusion"]
        rows = [
            {"class": c, "accuracy": None if a != a else 100 * a, "images": n}  # a != a: NaN, no images
            for c, a, n in zip(
                classes, per_class_accuracy(confusion).tolist(), confusion.sum(1).tolist(), strict=True
            )
        ]
        record["per_class"] = rows  # a list: ImageNet has duplicate readable names ("crane", "maillot")
        if args.per_class:
            width = max(len(printable(c)) for c in classes)
            table(f"{'class':<{width}}  accuracy  images")
            for row in rows:
                accuracy = "   -   " if row["accuracy"] is None else f"{row['accuracy']:6.2f} %"
                table(f"{printable(row['class']):<{width}}  {accuracy}  {row['images']:6d}")
        if args.confusion_matrix:
            confusion_matrix_figure(
                confusion,
                classes,
                args.confusion_matrix,
                title=f"{name} on {dataset} {args.split} (tta {args.tta})",
            )
            say(f"wrote {args.confusion_matrix}")
            record["confusion_matrix"] = str(args.confusion_matrix)
    if args.json:
        print(json.dumps(record))
    return 0


def _check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.test_subset is not None and (args.test_subset < 1 or args.split != "test"):
        raise ConfigError(
            f"--test-subset N takes N >= 1 and applies to the test split, got "
            f"{args.test_subset} with --split {args.split}"
        )
    if args.scales is not None:
        if args.tta != "multiscale":  # no silently ignored option
            raise ConfigError("--scales applies to --tta multiscale only")
        if any(not 1 <= s <= MAX_SCALE for s in args.scales):
            raise ConfigError(
                f"--scales takes shorter sides of 1 to {MAX_SCALE} pixels (the paper's largest "
                f"is 640), got {' '.join(map(str, args.scales))}"
            )


def _progress(batches, args):
    if args.json or not sys.stderr.isatty():
        return batches
    return tqdm(batches, desc="eval", unit="batch", leave=False)


def _tta_sizes(record: dict) -> str:
    if "ten_crop" in record:
        return f": shorter side {record['ten_crop']['resize']}, crops {record['ten_crop']['crop']}"
    if "scales" in record:
        return f": shorter sides {', '.join(map(str, record['scales']))}"
    return ""
