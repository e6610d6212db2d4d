"""``resnets train``: train a model with a named recipe; every recipe field can be overridden.

Flags follow timm's names (``--model --dataset --data-dir --epochs --batch-size --lr ...``);
``--set key=value`` reaches any recipe field. With no arguments: resnet20 on Fashion-MNIST with
the ``fast-cpu`` recipe. Under ``torchrun`` the same command trains data-parallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from ..errors import CheckpointError, ConfigError, unknown_name
from ..runs import load_for_resume
from ..train.engine import train
from ..train.recipes import (
    DEFAULT_RECIPE,
    RECIPES,
    RunOptions,
    TrainConfig,
    apply_overrides,
    convert,
    get_recipe,
)
from ..train.state import check_resume_entries
from ._common import add_input_flags, input_options, parse_set_args

# flag dest -> Recipe field (flags left at None are not given and leave the recipe's value)
RECIPE_FLAGS = {
    "model": "model",
    "dataset": "dataset",
    "epochs": "epochs",
    "iterations": "iterations",
    "batch_size": "batch_size",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "momentum": "momentum",
    "nesterov": "nesterov",
    "label_smoothing": "label_smoothing",
    "amp": "amp",
    "amp_dtype": "amp_dtype",
    "channels_last": "channels_last",
    "compile": "compile",
    "compile_mode": "compile_mode",
    "seed": "seed",
    "deterministic": "deterministic",
    "val_split": "val_split",
    "ema": "ema",
    "ema_decay": "ema_decay",
    "train_subset": "train_subset",
    "test_subset": "test_subset",
    "tta": "tta",
    "schedule": "schedule",
    "crop_padding": "crop_padding",
    "hflip": "hflip",
    "normalization": "normalization",
    "image_size": "image_size",
    "sync_bn": "sync_bn",
    "optimizer": "optimizer",
    # timm's augmentation and regularisation flags
    "auto_augment": "auto_augment",
    "reprob": "reprob",
    "remode": "remode",
    "mixup": "mixup",
    "cutmix": "cutmix",
    "mixup_prob": "mixup_prob",
    "mixup_switch_prob": "mixup_switch_prob",
    "aug_repeats": "aug_repeats",
    "drop_path": "drop_path",
    "bce_loss": "bce_loss",
    "bce_target_thresh": "bce_target_thresh",
    "clip_grad": "clip_grad",
    "clip_mode": "clip_mode",
    "grad_accum_steps": "grad_accum_steps",
}
# flag dest -> RunOptions field
RUN_FLAGS = {
    "output": "output",
    "resume": "resume",
    "device": "device",
    "data_dir": "data_dir",
    "download": "download",
    "workers": "workers",
    "device_decode": "device_decode",
    "init_weights": "init_weights",
    "freeze_bn": "freeze_bn",
    "keep_last": "keep_last",
    "log_every": "log_every",
    "progress": "progress",
    "strict_data": "strict_data",
    "verify_checksums": "verify_checksums",
    "follow_links": "follow_links",
    "max_image_pixels": "max_image_pixels",
    "tensorboard": "tensorboard",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples: resnets train | resnets train --recipe paper-cifar --model resnet56 "
        "--data-dir DIR | resnets train --set warmup=2 --epochs 8 | "
        "torchrun --nproc-per-node 2 -m resnets train ..."
    )
    bool_flag = argparse.BooleanOptionalAction
    g = parser.add_argument_group("recipe")
    g.add_argument(
        "--recipe",
        default=None,
        metavar="NAME",
        help=f"{', '.join(RECIPES)} (default: {DEFAULT_RECIPE}, or the resumed run's recipe)",
    )
    g.add_argument(
        "--set",
        dest="set_items",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="override any recipe field, e.g. --set milestones=30,60 (repeatable)",
    )
    g.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    g = parser.add_argument_group("model and data")
    g.add_argument("--model", help="model name (see `resnets models`)")
    g.add_argument(
        "--dataset", help="mnist, fashion-mnist, cifar10, cifar100, imagenet, imagefolder (with --data-dir)"
    )
    g.add_argument("--data-dir", help="where the dataset lives")
    g.add_argument("--download", action="store_true", default=None, help="download the dataset if missing")
    g.add_argument("--val-split", type=int, metavar="N", help="hold out N training images for validation")
    g.add_argument("--train-subset", type=int, metavar="N", help="train on a stratified subset of N images")
    g.add_argument("--test-subset", type=int, metavar="N", help="test on a stratified subset of N images")
    g.add_argument("--crop-padding", type=int, metavar="PX", help="random crop from zero padding (0: off)")
    g.add_argument("--hflip", action=bool_flag, default=None, help="random horizontal flip")
    g.add_argument("--normalization", choices=["per_channel", "per_pixel"])
    g.add_argument("--image-size", type=int, metavar="PX", help="image folders: crop side (default 224)")
    g.add_argument("--workers", type=int, help="DataLoader workers (image folders only)")
    g.add_argument(
        "--device-decode",
        action=bool_flag,
        default=None,
        help="image folders: workers read JPEG bytes and the training device decodes them "
        "(default: on CUDA only)",
    )
    add_input_flags(g, defaults="")
    g.add_argument(
        "--init-weights", metavar="FILE", help="start from these weights (torchvision, timm, resnets)"
    )
    g.add_argument(
        "--freeze-bn",
        action="store_true",
        default=None,
        help="keep BatchNorm statistics frozen (BN layers in eval mode): common for fine-tuning",
    )
    g = parser.add_argument_group("augmentation (timm's flags)")
    g.add_argument(
        "--aa",
        dest="auto_augment",
        metavar="POLICY",
        help="rand-m9-mstd0.5 (RandAugment), trivialaugment, v0 / original (AutoAugment), cifar10, svhn",
    )
    g.add_argument("--reprob", type=float, metavar="P", help="random erasing probability")
    g.add_argument("--remode", choices=["pixel", "const"], help="random erasing fill: per-pixel noise or 0")
    g.add_argument("--mixup", type=float, metavar="ALPHA", help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, metavar="ALPHA", help="CutMix alpha (0: off)")
    g.add_argument("--mixup-prob", type=float, metavar="P", help="share of batches mixed (default 1)")
    g.add_argument(
        "--mixup-switch-prob",
        type=float,
        metavar="P",
        help="with mixup and CutMix: share of mixed batches that use CutMix (default 0.5)",
    )
    g.add_argument("--aug-repeats", type=int, metavar="K", help="repeated augmentation: K copies per sample")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--iterations", type=int, help="stop after this many iterations (wins over --epochs)")
    g.add_argument("-b", "--batch-size", type=int, help="global batch size (split over processes)")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--weight-decay", "--wd", type=float)
    g.add_argument("--momentum", type=float)
    g.add_argument("--nesterov", action=bool_flag, default=None)
    g.add_argument("--label-smoothing", "--smoothing", type=float)
    g.add_argument("--schedule", "--sched", choices=["step", "plateau", "onecycle", "cosine", "constant"])
    g.add_argument(
        "--ema", action=bool_flag, default=None, help="keep an exponential moving average of the weights"
    )
    g.add_argument("--ema-decay", type=float)
    g.add_argument("--opt", dest="optimizer", choices=["sgd", "adamw", "lamb"], help="optimiser")
    g.add_argument("--clip-grad", type=float, metavar="NORM", help="clip the gradient norm to NORM")
    g.add_argument("--clip-mode", choices=["norm", "value"], help="what --clip-grad bounds (default: norm)")
    g.add_argument(
        "--grad-accum-steps",
        type=int,
        metavar="K",
        help="accumulate K micro-batches of batch-size/K images per update",
    )
    g.add_argument(
        "--bce-loss",
        action=bool_flag,
        default=None,
        help="binary cross-entropy per class instead of softmax cross-entropy (RSB)",
    )
    g.add_argument("--bce-target-thresh", type=float, metavar="T", help="BCE targets above T count as 1")
    g.add_argument("--drop-path", type=float, metavar="RATE", help="stochastic depth rate")
    g.add_argument("--tta", choices=["none", "flip"], help="test-time augmentation of per-epoch evaluation")
    g.add_argument("--seed", type=int)
    g.add_argument(
        "--deterministic",
        action=bool_flag,
        default=None,
        help="deterministic algorithms (bit-identical reruns and resumes on the same machine)",
    )
    g = parser.add_argument_group("speed")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--amp", action=bool_flag, default=None, help="mixed precision (autocast)")
    g.add_argument("--amp-dtype", choices=["bfloat16", "float16"])
    g.add_argument("--channels-last", action=bool_flag, default=None)
    g.add_argument("--compile", action=bool_flag, default=None, help="torch.compile the model")
    g.add_argument(
        "--compile-mode",
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="torch.compile mode (reduce-overhead: CUDA graphs, for small nets on a GPU)",
    )
    g.add_argument("--sync-bn", action=bool_flag, default=None, help="SyncBatchNorm in distributed runs")
    g = parser.add_argument_group("outputs")
    g.add_argument("--output", "-o", metavar="DIR", help="run folder (default runs/<time>-<model>-<dataset>)")
    g.add_argument("--resume", metavar="DIR|FILE", help="continue a run from its newest good checkpoint")
    g.add_argument("--keep-last", type=int, help="checkpoints kept: last.pt and K-1 older (default 2)")
    g.add_argument("--log-every", type=int, help="steps between steps.jsonl records (default 50)")
    g.add_argument("--progress", choices=["auto", "bar", "line", "none"])
    g.add_argument(
        "--tensorboard",
        action="store_true",
        default=None,
        help="TensorBoard scalars in RUN/tensorboard (pip install 'resnets[tensorboard]')",
    )


def build_config(args: argparse.Namespace):
    """The resolved TrainConfig: recipe (or the resumed run's), then flags, then --set."""
    input_options(args)  # checks them
    set_items = parse_set_args(args.set_items)
    given_run = {dest for dest in RUN_FLAGS if getattr(args, dest) is not None}
    run_values = {RUN_FLAGS[dest]: getattr(args, dest) for dest in given_run}
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    recipe_fields = {f.name for f in dataclasses.fields(TrainConfig().recipe)} - {"name"}
    recipe_sets = {}
    for key, value in set_items.items():
        if key in recipe_fields:
            recipe_sets[key] = value
        elif key in run_fields:
            run_values[key] = convert(value, _run_field_type(key), key)
        else:
            raise unknown_name("recipe field", key, sorted(recipe_fields | run_fields))

    if args.resume:
        # continue the run as it was configured; flags given now override (e.g. more --epochs)
        path, ckpt = load_for_resume(args.resume, log=lambda m: None)
        check_resume_entries(ckpt, path)
        try:
            base = TrainConfig.from_dict(ckpt["config"])
        except ConfigError as exc:  # a crafted or damaged checkpoint: say which file
            raise CheckpointError(f"checkpoint {path} holds no usable run config: {exc}") from None
        recipe = get_recipe(args.recipe) if args.recipe else base.recipe
        # the checkpoint holds the weights: starting weights (--init-weights) no longer apply
        run_values = {
            **dataclasses.asdict(base.run),
            "init_weights": None,
            "resume": args.resume,
            **run_values,
        }
        if "output" not in given_run:
            run_values["output"] = _resume_folder(args.resume)
    else:
        recipe = get_recipe(args.recipe or DEFAULT_RECIPE)
    flag_values = {
        field: getattr(args, dest) for dest, field in RECIPE_FLAGS.items() if getattr(args, dest) is not None
    }
    recipe = apply_overrides(recipe, flag_values)
    recipe = apply_overrides(recipe, recipe_sets)
    return TrainConfig(recipe=recipe, run=RunOptions(**run_values))


def _run_field_type(key: str):
    return typing.get_type_hints(RunOptions)[key]


def _resume_folder(resume: str) -> str:
    path = Path(resume)
    return str(path if path.is_dir() else path.parent)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    if args.print_config:
        print(config.to_json())
        return 0

    result = train(config)
    if result.get("interrupted"):  # a resumable checkpoint was saved; the shell's code for the signal
        return 128 + int(result["interrupted"])
    return 0
