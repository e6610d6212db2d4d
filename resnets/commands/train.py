"""``resnets train``: train a model with a named recipe; every recipe field can be overridden.

Flags follow timm's names (``--model --dataset --data-dir --epochs --batch-size --lr ...``);
``--set key=value`` reaches any recipe field. With no arguments: resnet20 on Fashion-MNIST with
the ``fast-cpu`` recipe. Under ``torchrun`` the same command trains data-parallel.
"""

from __future__ import annotations

import argparse

from ..train.engine import train
from ..train.recipes import DEFAULT_RECIPE, RECIPES, TrainConfig
from ._common import input_flags
from ._config import TrainingCommand
from ._flags import Flag

# The fields with a flag of their own (the others through --set), grouped as --help shows them; the flags'
# names, types and choices come from the fields (_flags.py), what is written here is what the types miss.
FLAGS = {
    "model and data": (
        Flag("model", "model name (see `resnets models`)"),
        Flag("dataset", "mnist, fashion-mnist, cifar10, cifar100, imagenet, imagefolder (with --data-dir)"),
        Flag("data_dir", "where the dataset lives"),
        Flag("download", "download the dataset if missing", switch=True),
        Flag("val_split", "hold out N training images for validation", metavar="N"),
        Flag("train_subset", "train on a stratified subset of N images", metavar="N"),
        Flag("test_subset", "test on a stratified subset of N images", metavar="N"),
        Flag("crop_padding", "random crop from zero padding (0: off)", metavar="PX"),
        Flag("hflip", "random horizontal flip"),
        Flag("normalization"),
        Flag("image_size", "image folders: crop side (default 224)", metavar="PX"),
        Flag("workers", "DataLoader workers (image folders only)"),
        Flag(
            "device_decode",
            "image folders: workers read JPEG bytes and the training device decodes them "
            "(default: on CUDA only)",
        ),
        *input_flags(defaults=""),
        Flag("init_weights", "start from these weights (torchvision, timm, resnets)", metavar="FILE"),
        Flag(
            "freeze_bn",
            "keep BatchNorm statistics frozen (BN layers in eval mode): common for fine-tuning",
            switch=True,
        ),
    ),
    "augmentation (timm's flags)": (
        Flag(
            "auto_augment",
            "rand-m9-mstd0.5 (RandAugment), trivialaugment, v0 / original (AutoAugment), cifar10, svhn",
            aliases=("--aa",),
            metavar="POLICY",
        ),
        Flag("reprob", "random erasing probability", metavar="P"),
        Flag("remode", "random erasing fill: per-pixel noise or 0"),
        Flag("mixup", "mixup alpha (0: off)", metavar="ALPHA"),
        Flag("cutmix", "CutMix alpha (0: off)", metavar="ALPHA"),
        Flag("mixup_prob", "share of batches mixed (default 1)", metavar="P"),
        Flag(
            "mixup_switch_prob",
            "with mixup and CutMix: share of mixed batches that use CutMix (default 0.5)",
            metavar="P",
        ),
        Flag("aug_repeats", "repeated augmentation: K copies per sample", metavar="K"),
    ),
    "optimisation": (
        Flag("epochs"),
        Flag("iterations", "stop after this many iterations (wins over --epochs)"),
        Flag("batch_size", "global batch size (split over processes)", aliases=("-b",)),
        Flag("lr", "peak learning rate"),
        Flag("weight_decay", aliases=("--wd",)),
        Flag("momentum"),
        Flag("nesterov"),
        Flag("label_smoothing", aliases=("--smoothing",)),
        Flag("schedule", aliases=("--sched",)),
        Flag("ema", "keep an exponential moving average of the weights"),
        Flag("ema_decay"),
        Flag("optimizer", "optimiser", aliases=("--opt",)),
        Flag("clip_grad", "clip the gradient norm to NORM", metavar="NORM"),
        Flag("clip_mode", "what --clip-grad bounds (default: norm)"),
        Flag("grad_accum_steps", "accumulate K micro-batches of batch-size/K images per update", metavar="K"),
        Flag("bce_loss", "binary cross-entropy per class instead of softmax cross-entropy (RSB)"),
        Flag("bce_target_thresh", "BCE targets above T count as 1", metavar="T"),
        Flag("drop_path", "stochastic depth rate", metavar="RATE"),
        Flag("tta", "test-time augmentation of per-epoch evaluation"),
        Flag("seed"),
        Flag(
            "deterministic", "deterministic algorithms (bit-identical reruns and resumes on the same machine)"
        ),
    ),
    "speed": (
        Flag("device", "auto (default: CUDA, else MPS, else the CPU), cpu, cuda, cuda:N, mps"),
        Flag("amp", "mixed precision (autocast)"),
        Flag("amp_dtype"),
        Flag("channels_last"),
        Flag("compile", "torch.compile the model"),
        Flag("compile_mode", "torch.compile mode (reduce-overhead: CUDA graphs, for small nets on a GPU)"),
        Flag("sync_bn", "SyncBatchNorm in distributed runs"),
    ),
    "outputs": (
        Flag("output", "run folder (default runs/<time>-<model>-<dataset>)", aliases=("-o",), metavar="DIR"),
        Flag("resume", "continue a run from its newest good checkpoint", metavar="DIR|FILE"),
        Flag("keep_last", "checkpoints kept: last.pt and K-1 older (default 2)"),
        Flag("log_every", "steps between steps.jsonl records (default 50)"),
        Flag("progress"),
        Flag(
            "tensorboard",
            "TensorBoard scalars in RUN/tensorboard (pip install 'resnets[tensorboard]')",
            switch=True,
        ),
    ),
}

COMMAND = TrainingCommand(TrainConfig, RECIPES, DEFAULT_RECIPE, train, FLAGS, set_example="milestones=30,60")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples: resnets train | resnets train --recipe paper-cifar --model resnet56 "
        "--data-dir DIR | resnets train --set warmup=2 --epochs 8 | "
        "torchrun --nproc-per-node 2 -m resnets train ..."
    )
    COMMAND.configure(parser)


def run(args: argparse.Namespace) -> int:
    return COMMAND.run(args)
