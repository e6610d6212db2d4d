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
"""

from __future__ import annotations

import argparse

TTA_CHOICES = ("none", "flip", "10crop", "multiscale")  # resnets.evaluate.TTA_NAMES, without torch


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a resnets training checkpoint (.pt)")
    parser.add_argument("--dataset", default=None, help="dataset to evaluate on (default: the checkpoint's)")
    parser.add_argument("--data-dir", default=None,
                        help="where the dataset lives (default: where the training run found it)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="test set, or the validation images the training run held out")
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none", help="test-time augmentation")
    parser.add_argument("--scales", type=int, nargs="+", default=None, metavar="SIDE",
                        help="multi-scale shorter sides in pixels (default: the paper's, scaled to the "
                        "image size)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch (default 256)")
    parser.add_argument("--subset", type=int, default=None, metavar="N",
                        help="test on a seeded stratified subset of N images (the one `resnets train "
                        "--test-subset N` used)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available)")
    parser.add_argument("--workers", type=int, default=None, help="image folders: DataLoader workers")
    parser.add_argument("--precision", choices=("run", "float32"), default="run",
                        help="run (default): the autocast the training run evaluated with, so the numbers "
                        "match its metrics.csv; float32: full precision")
    parser.add_argument("--json", action="store_true",
                        help="also print the results as one JSON object on the last line")
    parser.add_argument("--per-class", action="store_true", help="print the accuracy of every class")
    parser.add_argument("--confusion-matrix", default=None, metavar="PNG",
                        help="write a confusion-matrix figure")


def run(args: argparse.Namespace) -> int:
    import json

    from ..evaluate import evaluate, make_tta, per_class_accuracy, save_confusion_matrix
    from ..runtime import autocast, autocast_dtype, precision_name, select_device
    from ..train.checkpoint import load_model

    _check_args(args)
    device = select_device(args.device)
    model, ckpt = load_model(args.checkpoint, device)
    meta = _data_record(ckpt, args.checkpoint)
    dataset = args.dataset or meta["dataset"]
    batches, classes = _eval_batches(args, ckpt, meta, model, dataset, device)

    image_size = int(meta["image_size"])
    tta = make_tta(args.tta, image_size=image_size, scales=args.scales)
    want_confusion = args.per_class or args.confusion_matrix is not None
    recipe = ckpt.get("config", {}).get("recipe", {})
    amp_dtype = None
    if args.precision == "run":  # resolved on this device, as the run resolved it on its own
        amp_dtype = autocast_dtype(recipe.get("amp", False), recipe.get("amp_dtype", "bfloat16"), device)
    with autocast(device, amp_dtype):
        result = evaluate(model, _progress(batches, args), tta=tta, confusion=want_confusion)

    name = ckpt["model"].get("name", type(model).__name__)
    record = {k: result[k] for k in ("top1_error", "top5_error", "top5_k", "loss", "images")}
    record |= {"model": name, "dataset": dataset, "split": args.split, "tta": args.tta,
               "precision": precision_name(amp_dtype), "checkpoint": str(args.checkpoint)}
    if args.tta == "10crop":
        record["ten_crop"] = dict(tta.keywords)
    elif args.tta == "multiscale":
        record["scales"] = list(tta.keywords["scales"])
    print(f"{name} on {dataset} {args.split} ({result['images']} images, tta {args.tta}"
          f"{_tta_sizes(record)}, {record['precision']})")
    print(f"top-1 error  {result['top1_error']:6.2f} %")
    k = result["top5_k"]
    label = "top-5 error " if k == 5 else f"top-{k} error "
    clamped = "" if k == 5 else f"  (only {k} classes: top-5 is top-{k})"
    print(f"{label} {result['top5_error']:6.2f} %{clamped}")
    print(f"loss         {result['loss']:.4f}")

    if want_confusion:
        confusion = result["confusion"]
        rows = [{"class": c, "accuracy": None if a != a else 100 * a, "images": n}  # a != a: NaN, no images
                for c, a, n in zip(classes, per_class_accuracy(confusion).tolist(), confusion.sum(1).tolist(),
                                   strict=True)]
        record["per_class"] = rows  # a list: ImageNet has duplicate readable names ("crane", "maillot")
        if args.per_class:
            width = max(len(c) for c in classes)
            print(f"{'class':<{width}}  accuracy  images")
            for row in rows:
                accuracy = "   -   " if row["accuracy"] is None else f"{row['accuracy']:6.2f} %"
                print(f"{row['class']:<{width}}  {accuracy}  {row['images']:6d}")
        if args.confusion_matrix:
            save_confusion_matrix(confusion, classes, args.confusion_matrix,
                                  title=f"{name} on {dataset} {args.split} (tta {args.tta})")
            print(f"wrote {args.confusion_matrix}")
            record["confusion_matrix"] = str(args.confusion_matrix)
    if args.json:
        print(json.dumps(record))
    return 0


def _check_args(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.subset is not None and (args.subset < 1 or args.split != "test"):
        raise ConfigError(f"--subset N takes N >= 1 and applies to the test split, got {args.subset} "
                          f"with --split {args.split}")
    if args.scales is not None:
        if args.tta != "multiscale":  # no silently ignored option
            raise ConfigError("--scales applies to --tta multiscale only")
        if any(s < 1 for s in args.scales):
            raise ConfigError(f"--scales must be positive pixel sizes, got {args.scales}")


def _data_record(ckpt: dict, path: str) -> dict:
    from ..errors import CheckpointError

    meta = ckpt.get("data") or {}
    missing = [k for k in ("dataset", "classes", "in_chans", "image_size", "normalization") if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {path} has no usable data record (missing "
                              f"{', '.join(missing)}); it was not written by `resnets train`")
    return meta


def _eval_batches(args, ckpt: dict, meta: dict, model, dataset: str, device):
    """Batches of the split, normalised with the checkpoint's statistics, and the class names."""
    import functools

    from ..data import ArrayDataset, DataConfig, Normalization, build_data
    from ..data.datasets import FOLDER_DATASETS
    from ..data.folders import FolderDataset, FolderLoader
    from ..data.images import resize_center_crop
    from ..data.loaders import TensorLoader
    from ..errors import DataError

    config = ckpt.get("config") or {}
    recipe, run_options = config.get("recipe") or {}, config.get("run") or {}
    same = dataset == meta["dataset"]
    data_dir = args.data_dir or (run_options.get("data_dir") if same else None)  # where the run found it
    folder = dataset in FOLDER_DATASETS
    # The run's val_split and seed rebuild the validation images it held out.
    val_split = int(recipe.get("val_split", 0) or 0) if same else 0
    if args.split == "val" and not val_split:
        raise DataError(f"no validation split: the run of {args.checkpoint} held out no images "
                        f"(val_split=0) on {dataset}; use --split test")
    norm_record = meta["normalization"]
    cfg = DataConfig(
        dataset=dataset, data_dir=data_dir, val_split=val_split, seed=int(recipe.get("seed", 0) or 0),
        batch_size=1, eval_batch_size=args.batch_size, test_subset=args.subset,
        normalization=norm_record.get("mode", "per_channel"),
        crop_padding=None if folder else 0, hflip=False if not folder else None,
        image_size=int(meta["image_size"]) if folder else None, workers=args.workers,
    )
    bundle = build_data(cfg, device)
    _check_compatible(bundle, meta, model, args.checkpoint, dataset)
    split = bundle.val if args.split == "val" else bundle.test
    normalization = Normalization.from_dict(norm_record)  # what the model was trained with

    if not folder:
        data = ArrayDataset(split.images, split.labels, bundle.classes, source=dataset)
        loader = TensorLoader(data, batch_size=args.batch_size, normalization=normalization, train=False)
    else:
        size = int(meta["image_size"])
        if args.tta in ("10crop", "multiscale") and normalization.mode == "per_pixel":
            raise DataError("10-crop and multi-scale testing of image folders need per-channel "
                            f"normalization; {args.checkpoint} subtracts a {size}x{size} mean image")
        if args.tta == "10crop":  # AlexNet's central square; ten_crop_logits crops it
            resize = round(256 * size / 224)
            transform = functools.partial(resize_center_crop, resize=resize, crop=resize)
            batch = args.batch_size
        elif args.tta == "multiscale":  # each image at its own aspect ratio: one at a time
            transform, batch = _identity, 1
        else:
            transform, batch = split.dataset.transform, args.batch_size
        workers = split.loader.num_workers if args.workers is None else args.workers
        loader = FolderLoader(FolderDataset(split.dataset.samples, transform, substitute=False),
                              batch_size=batch, train=False, normalization=normalization, device=device,
                              workers=workers, seed=0)
    return loader, bundle.classes


def _check_compatible(bundle, meta: dict, model, checkpoint: str, dataset: str) -> None:
    from ..errors import DataError

    name = f"checkpoint {checkpoint} (trained on {meta['dataset']})"
    if bundle.num_classes != model.num_classes:
        raise DataError(f"dataset {dataset} has {bundle.num_classes} classes but {name} has "
                        f"{model.num_classes}; evaluate on a dataset with the same classes")
    if bundle.in_chans != model.in_chans:
        raise DataError(f"dataset {dataset} has {bundle.in_chans}-channel images but {name} expects "
                        f"{model.in_chans} channels")
    if bundle.image_size != int(meta["image_size"]) and meta["normalization"].get("mode") == "per_pixel":
        raise DataError(f"dataset {dataset} has {bundle.image_size}-pixel images but {name} subtracts a "
                        f"{meta['image_size']}-pixel mean image")
    if list(bundle.classes) != list(meta["classes"]):
        print(f"note: the class names of {dataset} differ from the checkpoint's; labels are matched by index")


def _progress(batches, args):
    import sys

    if args.json or not sys.stderr.isatty():
        return batches
    from tqdm import tqdm

    return tqdm(batches, desc="eval", unit="batch", leave=False)


def _tta_sizes(record: dict) -> str:
    if "ten_crop" in record:
        return f": shorter side {record['ten_crop']['resize']}, crops {record['ten_crop']['crop']}"
    if "scales" in record:
        return f": shorter sides {', '.join(map(str, record['scales']))}"
    return ""


def _identity(image):  # a module-level function: DataLoader workers pickle the transform
    return image
