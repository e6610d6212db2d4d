"""Training recipes: the papers' setups as frozen dataclasses, plus a fast CPU recipe.

A ``Recipe`` holds everything that changes the trained weights (model, data, optimiser,
schedule, precision, seed); its optimiser and schedule fields are ``Optimization``'s, which the
detection recipes share. ``RunOptions`` holds where and how a run happens (output folder,
device, resume, logging), which must not change the result. Every recipe field can be set
from the command line (``--epochs 3`` or ``--set epochs=3``); values are checked against the
field's type and unknown keys are rejected with the closest names.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, Self, TypeVar

from ..data.policies import auto_augment
from ..errors import ConfigError, unknown_name

# --- type checking -------------------------------------------------------------------------------


def parse_literal(value: str) -> Any:
    """A --set value as Python would read it: int, float, bool, None, or the string itself."""
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's fields and their types (annotations resolved; class variables left out)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _holds_tuple(tp: Any) -> bool:
    """Whether a value of type ``tp`` may be a tuple (``tuple[int, ...]``, ``tuple[float, ...] | None``)."""
    return typing.get_origin(tp) is tuple or any(_holds_tuple(a) for a in typing.get_args(tp))


def check_types(obj: Any) -> None:
    """Raise ConfigError if a dataclass field holds a value of the wrong type."""
    for name, tp in field_types(type(obj)).items():
        value = getattr(obj, name)
        if not _matches(value, tp):
            raise ConfigError(f"{name}={value!r} is not {_describe(tp)}")


def convert(text: str, tp: Any, key: str = "value") -> Any:
    """Parse a command-line string into type ``tp`` (int, float, bool, str, Literal, X | None,
    tuple[int, ...], dict), or raise ConfigError saying what was expected."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("none", "null", "") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(text, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}={text!r} is not {_describe(tp)}")
    if origin is tuple:
        items = [s for s in text.strip("()[] ").replace(",", " ").split() if s]
        return tuple(convert(s, args[0], key) for s in items)
    if origin is dict or tp is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ConfigError(f'{key} expects a JSON object such as \'{{"shortcut": "B"}}\', got {text!r}')
        return value
    value = parse_literal(text)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is str or (origin is Literal and text in args):  # "none" is a Literal choice, not None
        value = text
    if not _matches(value, tp):
        raise ConfigError(f"{key}={text!r} is not {_describe(tp)}")
    return value


def _matches(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, tuple) and all(_matches(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if tp is type(None):
        return "None"
    if origin is tuple:
        return f"a comma-separated list of {_describe(args[0])}"
    if origin is dict or tp is dict:
        return "a JSON object"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(tp, f"a {getattr(tp, '__name__', tp)}")


Schedule = Literal["step", "plateau", "onecycle", "cosine", "poly", "constant"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class ErrorWarmup(NamedTuple):
    """He et al. 2015, Sec. 4.2: for nets of ``min_depth`` layers or more, the lr is ``factor`` x lr until
    the training error falls below ``threshold`` (a fraction)."""

    threshold: float
    factor: float
    min_depth: int


@dataclass(frozen=True)
class Optimization:
    """What every recipe family shares: the training length, the batch, the optimiser, the learning-rate
    schedule and the seed, with their checks. ``train.build.build_optimizer`` and
    ``train.schedule.LRSchedule`` take it; ``Recipe`` (classifiers) and ``detection.recipes.DetectionRecipe``
    derive from it, each adding its own fields, defaults and checks (``problems``). Defaults are plain SGD
    values."""

    KIND: ClassVar[str] = "recipe"  # how the error messages name this family

    name: str = "custom"

    # length: ``iterations`` wins when set (the CIFAR paper counts iterations, Sec. 4.2)
    epochs: int = 90
    iterations: int | None = None
    batch_size: int = 128  # global batch: divided between the processes of a distributed run

    # optimiser
    optimizer: Literal["sgd", "adamw", "lamb"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # SGD only
    nesterov: bool = False
    weight_decay: float = 1e-4
    # None: same as weight_decay. 0 excludes BN weights and all biases from decay (Goyal et al. 2017).
    norm_weight_decay: float | None = None

    # learning-rate schedule, evaluated every iteration so iteration-based schedules work in an epoch loop
    schedule: Schedule = "step"
    schedule_unit: Literal["epoch", "iteration"] = "epoch"  # unit of milestones and warmup
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    plateau_patience: int = 5  # epochs without improvement of the validation error before lr /= 10
    warmup: float = 0.0  # length of the warm-up, in schedule_unit
    warmup_shape: Literal["linear", "constant"] = "linear"  # linear: from lr * warmup_start_factor to lr
    warmup_start_factor: float = 0.1
    final_lr_factor: float = 0.0  # onecycle/cosine end at lr * final_lr_factor

    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        problems = self.problems()
        if problems:
            raise ConfigError(f"{self.KIND} {self.name!r}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with the settings (empty: nothing); a subclass adds its own fields' problems."""
        problems = [
            f"{f.name} must be a finite number, got {getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name))
        ]
        for name in ("epochs", "iterations", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1")
        if not self.lr > 0:
            problems.append("lr must be > 0")
        for name in ("weight_decay", "momentum", "warmup", "final_lr_factor"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.nesterov and (self.momentum == 0 or self.optimizer != "sgd"):
            problems.append("nesterov needs optimizer 'sgd' with momentum > 0")
        if list(self.milestones) != sorted(self.milestones):
            problems.append(f"milestones must increase, got {list(self.milestones)}")
        return problems

    @property
    def error_warmup(self) -> ErrorWarmup | None:
        """The warm-up until the training error is low enough (``Recipe``'s ``warmup_until_error``); None
        where the family has none."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON types (tuples as lists): what config.json and checkpoints hold."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The recipe of ``to_dict``'s output (JSON's lists back to the tuples of tuple fields)."""
        types = field_types(cls)
        return cls(
            **{
                k: tuple(v) if isinstance(v, list) and _holds_tuple(types.get(k)) else v
                for k, v in data.items()
            }
        )


@dataclass(frozen=True)
class Recipe(Optimization):
    """One classifier's training setup; the named recipes below set the values."""

    model: str = "resnet20"
    dataset: str = "fashion-mnist"
    # model options passed to create_model (e.g. {"shortcut": "B"}); --set model_kwargs='{"k": v}'
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    # data
    eval_batch_size: int = 512
    val_split: int = 0  # images held out of the training set for validation
    # seed of the validation split and the subsets (None: ``seed``): fixed, runs of several seeds share
    # one validation set and one test subset
    split_seed: int | None = None
    # augmentation and preprocessing (None: the dataset's default; see resnets.data.DataConfig)
    crop_padding: int | None = None  # random crop from zero padding: 4 px at 32x32 (Sec. 4.2), 3 at 28x28
    hflip: bool | None = None  # random horizontal flip (default: on, except for digits)
    normalization: Literal["per_channel", "per_pixel"] = "per_channel"
    image_size: int | None = None  # image folders: crop side (224)
    train_transform: Literal["paper", "rrc"] = "paper"  # image folders: Sec. 3.4 scale aug., or timm's RRC
    train_subset: int | None = None  # a stratified subset of N training images (quick runs and tests)
    test_subset: int | None = None
    # training crop side (None: image_size, or an in-memory dataset's own side), tested on the whole
    # image (FixRes); in-memory datasets crop it at random from the padded image
    train_crop_size: int | None = None
    eval_resize: int | None = None  # image folders: shorter side before the eval crop (None: 256/224 x)

    # modern augmentation and regularisation, named as timm's flags (docs/training.md, "Modern training")
    auto_augment: str | None = None  # --aa: rand-m9-mstd0.5, trivialaugment, v0 ... (resnets.data.policies)
    reprob: float = 0.0  # random erasing probability (Zhong et al. 2017)
    remode: Literal["pixel", "const"] = "pixel"  # erase with N(0, 1) per pixel (timm) or 0 (torchvision)
    mixup: float = 0.0  # mixup's Beta alpha (0: off)
    cutmix: float = 0.0  # CutMix's Beta alpha (0: off)
    mixup_prob: float = 1.0  # share of batches mixed
    mixup_switch_prob: float = 0.5  # with both alphas: share of mixed batches that use CutMix
    aug_repeats: int = 0  # repeated augmentation: each sample k times per epoch (0 or 1: off)
    drop_path: float | None = None  # stochastic depth rate (the model's drop_path_rate; None: leave it)
    bce_loss: bool = False  # binary cross-entropy (RSB) instead of softmax cross-entropy
    bce_target_thresh: float | None = None  # BCE targets above this become 1, the others 0
    clip_grad: float | None = None  # clip the gradient's global norm (or each value) to this
    clip_mode: Literal["norm", "value"] = "norm"
    grad_accum_steps: int = 1  # micro-batches per update: batch_size / this images per forward
    label_smoothing: float = 0.0

    # Sec. 4.2: "for 110 layers we use 0.01 to warm up until the training error is below 80%"
    warmup_until_error: float | None = None  # fraction, e.g. 0.8
    warmup_until_error_factor: float = 0.1
    warmup_until_error_min_depth: int = 110

    # evaluation during training
    tta: Literal["none", "flip"] = "none"  # test-time augmentation of the per-epoch val/test evaluation
    eval_every: int = 1  # epochs
    # True: the test split is evaluated once, after the last epoch; the epochs evaluate only the
    # validation split (val_split), so no choice can be made on the test set
    final_test_only: bool = False

    # weight averaging
    ema: bool = False
    ema_decay: float = 0.999
    ema_every: int = 1  # update the average every k steps (torchvision's --model-ema-steps)

    # precision and speed: "auto" takes the fastest path measured for the processor at hand
    # (resnets.runtime.execution_path: bfloat16 autocast where the device computes it natively,
    # channels-last on CPU and CUDA, torch.compile on a long float32 CPU run); True/False force a choice
    amp: bool | Literal["auto"] = "auto"
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool | Literal["auto"] = "auto"
    # torch.compile's mode: "reduce-overhead" replays CUDA graphs, which pays off where the step is a
    # few milliseconds of GPU work (the CIFAR-sized nets) and launch overhead dominates
    compile_mode: CompileMode = "default"
    sync_bn: bool = False  # SyncBatchNorm in distributed runs

    deterministic: bool = False

    def problems(self) -> list[str]:
        problems = super().problems()
        for name in (
            "eval_batch_size",
            "eval_every",
            "warmup_until_error_min_depth",
            "image_size",
            "train_crop_size",
            "eval_resize",
            "grad_accum_steps",
            "ema_every",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("val_split", "crop_padding"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            problems.append("label_smoothing must be in [0, 1)")
        for name in ("reprob", "mixup_prob", "mixup_switch_prob"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} is a probability in [0, 1]")
        for name in ("mixup", "cutmix", "aug_repeats"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (0: off)")
        if self.drop_path is not None and not 0 <= self.drop_path < 1:
            problems.append("drop_path must be in [0, 1)")
        if (
            self.drop_path is not None
            and self.model_kwargs.get("drop_path_rate", self.drop_path) != self.drop_path
        ):
            problems.append("drop_path and model_kwargs' drop_path_rate disagree; set one of them")
        if self.bce_target_thresh is not None and not 0 <= self.bce_target_thresh < 1:
            problems.append("bce_target_thresh must be in [0, 1)")
        if self.bce_target_thresh is not None and not self.bce_loss:
            problems.append("bce_target_thresh needs bce_loss=True (--bce-loss)")
        if self.clip_grad is not None and not self.clip_grad > 0:
            problems.append("clip_grad must be > 0 (or None: no clipping)")
        if self.batch_size % self.grad_accum_steps:
            problems.append(
                f"batch_size {self.batch_size} does not divide into grad_accum_steps "
                f"{self.grad_accum_steps} micro-batches"
            )
        try:
            auto_augment(self.auto_augment)
        except ConfigError as exc:
            problems.append(str(exc))
        if not 0 < self.ema_decay < 1:
            problems.append("ema_decay must be in (0, 1)")
        if self.compile_mode != "default" and self.compile is not True:  # "auto" may not compile
            problems.append(f"compile_mode {self.compile_mode!r} needs compile=True (--compile)")
        if self.final_test_only and not self.val_split:
            problems.append(
                "final_test_only needs a validation split (val_split > 0) to evaluate the epochs on"
            )
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1 (or None for the whole set)")
        return problems

    @property
    def error_warmup(self) -> ErrorWarmup | None:
        if self.warmup_until_error is None:
            return None
        return ErrorWarmup(
            self.warmup_until_error, self.warmup_until_error_factor, self.warmup_until_error_min_depth
        )

    @property
    def model_options(self) -> dict[str, Any]:
        """The model's keyword options: ``model_kwargs`` with ``drop_path`` as ``drop_path_rate``."""
        if self.drop_path is None:
            return dict(self.model_kwargs)
        return {**self.model_kwargs, "drop_path_rate": self.drop_path}

    @property
    def micro_batch_size(self) -> int:
        """Images per forward pass (all processes together)."""
        return self.batch_size // self.grad_accum_steps


# --- the papers' recipes -------------------------------------------------------------------------

PAPER_CIFAR = Recipe(
    # He et al. 2015, Sec. 4.2: SGD, batch 128, weight decay 1e-4, momentum 0.9, lr 0.1 divided by
    # 10 at 32k and 48k iterations, stop at 64k, 45k/5k train/val split, 4-pixel pad + 32x32 crop +
    # flip; lr 0.01 until training error < 80% (~400 iterations) for 110+ layers, then 0.1.
    name="paper-cifar",
    model="resnet20",
    dataset="cifar10",
    iterations=64_000,
    epochs=182,
    batch_size=128,
    val_split=5000,
    normalization="per_pixel",
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="step",
    schedule_unit="iteration",
    milestones=(32_000, 48_000),
    gamma=0.1,
    warmup_until_error=0.8,
    warmup_until_error_factor=0.1,
    warmup_until_error_min_depth=110,
)

PAPER_IMAGENET = Recipe(
    # Sec. 3.4: SGD, batch 256, lr 0.1 divided by 10 when the error plateaus, weight decay 1e-4,
    # momentum 0.9, up to 60e4 iterations (~120 epochs; 90 is the common budget), no dropout,
    # scale augmentation, 224 crop, flip, per-pixel mean subtraction, PCA colour lighting.
    name="paper-imagenet",
    model="resnet50",
    dataset="imagenet",
    epochs=90,
    batch_size=256,
    normalization="per_pixel",
    train_transform="paper",
    eval_batch_size=256,
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="plateau",
    gamma=0.1,
    plateau_patience=5,
    val_split=10_000,
)

PAPER_IMAGENET_STEP = dataclasses.replace(
    # The fixed variant everybody uses (torchvision's reference recipe): /10 every 30 epochs, 90 epochs.
    PAPER_IMAGENET,
    name="paper-imagenet-step",
    schedule="step",
    schedule_unit="epoch",
    milestones=(30, 60),
    val_split=0,
)

PREACT_CIFAR = dataclasses.replace(
    # He et al. 2016 (Identity Mappings), appendix: as the first paper's CIFAR recipe (lr 0.1 /10
    # at 32k and 48k, stop at 64k, batch 128, wd 1e-4, momentum 0.9) but "for all CIFAR experiments
    # we warm up ... using a smaller learning rate of 0.01 at the beginning 400 iterations".
    # The authors' Torch code normalises per channel (mean and std).
    PAPER_CIFAR,
    name="preact-cifar",
    model="preact_resnet164",
    val_split=0,
    normalization="per_channel",
    warmup=400,
    warmup_shape="constant",
    warmup_start_factor=0.1,
    warmup_until_error=None,
)

WRN = Recipe(
    # Zagoruyko and Komodakis 2016, Sec. 3: SGD with Nesterov momentum 0.9, lr 0.1, weight decay
    # 5e-4, lr x0.2 at epochs 60, 120, 160 of 200, batch 128, standard CIFAR augmentation.
    name="wrn",
    model="wrn28_10",
    dataset="cifar10",
    epochs=200,
    batch_size=128,
    lr=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    schedule="step",
    schedule_unit="epoch",
    milestones=(60, 120, 160),
    gamma=0.2,
    normalization="per_channel",
)

FAST_CPU = Recipe(
    # Time-to-accuracy on a 2-core CPU: resnet20 on Fashion-MNIST to >= 92% test accuracy in under
    # 10 minutes (why each value, with its measurements: docs/training.md, "The fast-cpu recipe").
    name="fast-cpu",
    model="resnet20",
    dataset="fashion-mnist",
    # 4 epochs at batch 128 (1,872 steps): on a 5,000-image validation split it matched the former 5
    # epochs at batch 256 (5.86% against 6.04% validation error, mean of 2 seeds) for 0.82 of its cost
    # on float32 CPUs; 3 epochs at batch 64 (0.67) lost 0.5 points of test accuracy (docs/training.md,
    # "The fast-cpu recipe").
    epochs=4,
    batch_size=128,
    # No validation split: with a short budget every training image counts; nothing is selected on
    # the test set (the last epoch's weights are the result).
    val_split=0,
    # Flip only, no translation: a short schedule needs little regularisation, and flipping
    # clothes keeps the class (airbench: flip is the augmentation worth having on short runs).
    crop_padding=0,
    hflip=True,
    # Nesterov SGD with a one-cycle (linear up, linear down to 0) schedule: the "super-convergence"
    # recipe of Smith & Topin 2017, used by Page's "How to train your ResNet" (DAWNBench) and
    # airbench; a higher peak lr than the paper's 0.1 since the run is short.
    optimizer="sgd",
    lr=0.2,
    momentum=0.9,
    nesterov=True,
    schedule="onecycle",
    schedule_unit="epoch",
    warmup=1.0,
    warmup_start_factor=0.1,
    final_lr_factor=0.0,
    # Page used 5e-4 for short runs: stronger decay helps when there are few epochs.
    weight_decay=5e-4,
    norm_weight_decay=0.0,
    # Label smoothing 0.1 (Szegedy et al. 2016; airbench uses 0.2): better calibrated and more
    # accurate after few epochs.
    label_smoothing=0.1,
    # Flip test-time augmentation (airbench): averages the predictions for the image and its mirror.
    tta="flip",
    # Precision, layout and compilation stay "auto" (the fastest path measured for the processor):
    # bfloat16 autocast and channels-last on CPUs with bfloat16 arithmetic (AVX512-BF16, AMX), where
    # emulated bfloat16 (Ice Lake) would be slower than float32; channels-last and torch.compile on
    # AVX2-only CPUs (docs/performance.md, "The float32 path").
)

# --- modern recipes (docs/training.md, "Modern training") ----------------------------------------

TORCHVISION_V2 = Recipe(
    # The reference recipe of torchvision's ResNet50_Weights.IMAGENET1K_V2 (80.858% top-1; Vryniotis,
    # "How to train state-of-the-art models using TorchVision's latest primitives", 2021, and
    # references/classification/README.md): 8 GPUs x batch 128, SGD momentum 0.9, lr 0.5, weight decay
    # 2e-5 (0 on norm layers), cosine after a 5-epoch linear warm-up from 0.01 x lr (torchvision steps
    # both per epoch, we per iteration), 600 epochs, label smoothing 0.1, mixup 0.2 / CutMix 1.0 (one
    # of the two per batch: RandomChoice), TrivialAugmentWide, random erasing 0.1 (torchvision's
    # RandomErasing fills with 0 after normalisation), repeated augmentation x4 (--ra-reps 4),
    # train crop 176 / eval resize 232 and crop 224 (FixRes), EMA.
    name="torchvision-v2",
    model="resnet50",
    dataset="imagenet",
    epochs=600,
    batch_size=1024,
    train_transform="rrc",
    image_size=224,
    train_crop_size=176,
    eval_resize=232,
    optimizer="sgd",
    lr=0.5,
    momentum=0.9,
    weight_decay=2e-5,
    norm_weight_decay=0.0,
    label_smoothing=0.1,
    schedule="cosine",
    schedule_unit="epoch",
    warmup=5,
    warmup_start_factor=0.01,
    final_lr_factor=0.0,
    mixup=0.2,
    cutmix=1.0,
    mixup_prob=1.0,
    mixup_switch_prob=0.5,
    auto_augment="ta_wide",
    reprob=0.1,
    remode="const",
    aug_repeats=4,
    # --model-ema-steps 32 --model-ema-decay 0.99998, which torchvision rescales by world size x batch x
    # steps / epochs = 8 x 128 x 32 / 600: 1 - 2e-5 x 54.6 = 0.998908 every 32 steps. (torchvision also
    # restarts the average after the warm-up; we do not.)
    ema=True,
    ema_every=32,
    ema_decay=0.998908,
)


def _rsb(name: str, **values: Any) -> Recipe:
    # Wightman, Touvron and Jegou 2021, "ResNet strikes back", Table 1 and timm's released hparams:
    # LAMB, batch 2048, cosine after a 5-epoch warm-up (from 1e-4/lr, timm's warmup_lr) down to 1e-6,
    # no decay on norm layers and biases (timm's optimizer factory), BCE with targets thresholded at
    # 0.2, RandAugment with magnitude noise 0.5, mixup (alpha in Table 1) and CutMix 1.0 switching
    # half and half, RandomResizedCrop and flip, test crop ratio 0.95 (resize 235 for a 224 crop),
    # mixed precision, no EMA, no random erasing.
    base = Recipe(
        name=name,
        model="resnet50",
        dataset="imagenet",
        batch_size=2048,
        optimizer="lamb",
        norm_weight_decay=0.0,
        schedule="cosine",
        schedule_unit="epoch",
        warmup=5,
        warmup_start_factor=0.02,
        final_lr_factor=2e-4,
        bce_loss=True,
        bce_target_thresh=0.2,
        cutmix=1.0,
        mixup_prob=1.0,
        mixup_switch_prob=0.5,
        train_transform="rrc",
        image_size=224,
        eval_resize=235,
        amp=True,
        label_smoothing=0.0,
    )
    return dataclasses.replace(base, **values)


# A1: 600 epochs, lr 5e-3 (warm-up from 1e-4: factor 0.02, cosine to 1e-6), weight decay 0.01, label
# smoothing 0.1, stochastic depth 0.05, repeated augmentation x3, rand-m7-mstd0.5-inc1, mixup 0.2: 80.4%
RSB_A1 = _rsb(
    "rsb-a1",
    epochs=600,
    lr=5e-3,
    weight_decay=0.01,
    label_smoothing=0.1,
    drop_path=0.05,
    aug_repeats=3,
    auto_augment="rand-m7-mstd0.5-inc1",
    mixup=0.2,
)
# A2: 300 epochs, weight decay 0.02, no label smoothing, otherwise A1's with mixup 0.1: 79.8%
RSB_A2 = _rsb(
    "rsb-a2",
    epochs=300,
    lr=5e-3,
    weight_decay=0.02,
    drop_path=0.05,
    aug_repeats=3,
    auto_augment="rand-m7-mstd0.5-inc1",
    mixup=0.1,
)
# A3: 100 epochs at 160 px (tested at 224), lr 8e-3 (warm-up from 1e-4: 0.0125), no stochastic depth, no
# repeated augmentation, rand-m6-mstd0.5-inc1, mixup 0.1: 78.1%
RSB_A3 = _rsb(
    "rsb-a3",
    epochs=100,
    lr=8e-3,
    warmup_start_factor=0.0125,
    final_lr_factor=1.25e-4,
    weight_decay=0.02,
    train_crop_size=160,
    auto_augment="rand-m6-mstd0.5-inc1",
    mixup=0.1,
)

BAG_OF_TRICKS = Recipe(
    # He et al. 2019, "Bag of tricks for image classification with convolutional neural networks":
    # ResNet-50-D (Sec. 4), batch 1024 with lr 0.1 x 1024/256 = 0.4 (Sec. 3.1), a 5-epoch linear
    # warm-up from 0, zero gamma in each block's last BN, no bias (or BN) decay, cosine decay (Sec. 5.1),
    # label smoothing 0.1 (Sec. 5.2), mixup alpha 0.2 with 200 instead of 120 epochs (Sec. 5.4), SGD
    # momentum 0.9, weight decay 1e-4, Inception-style crops and flip (Sec. 2.1; the paper adds colour
    # jitter and PCA noise, which this recipe does not). The paper trained in FP16 on V100s; "auto"
    # takes bfloat16 where the device has it (no loss scaling needed). Top-1 79.29% (Table 6, no
    # distillation 79.15% at 120 epochs without mixup).
    name="bag-of-tricks",
    model="resnet50d",
    model_kwargs={"zero_init_last": True},
    dataset="imagenet",
    epochs=200,
    batch_size=1024,
    lr=0.4,
    momentum=0.9,
    weight_decay=1e-4,
    norm_weight_decay=0.0,
    schedule="cosine",
    schedule_unit="epoch",
    warmup=5,
    warmup_start_factor=0.0,
    final_lr_factor=0.0,
    label_smoothing=0.1,
    mixup=0.2,
    train_transform="rrc",
    amp="auto",
)

FASHION_LONG = dataclasses.replace(
    # fast-cpu on a 16-epoch one-cycle, with the 2-pixel translation it then has room for: 94.29% in
    # 10m39s on 2026-12-01 (docs/training.md), formerly `--set epochs=16 --set crop_padding=2`.
    FAST_CPU,
    name="fashion-long",
    epochs=16,
    # fast-cpu's batch before issue 32's 4-epoch schedule: these runs were measured with it.
    batch_size=256,
    crop_padding=2,
)

FASHION_BEST = dataclasses.replace(
    # The most accurate Fashion-MNIST ResNet found for 30 minutes of this 2-core CPU (docs/training.md,
    # "The best Fashion-MNIST recipes", with the measurements: 95.17% in 23m52s on 2026-12-03):
    # fashion-long's one-cycle on 38 epochs (what fits 30 minutes at ~1,450-1,650 images/s), with
    # random erasing (Zhong et al. 2017 measured its gain on Fashion-MNIST), evaluated every 4 epochs
    # and at the end to leave the time to training; the last epoch's weights are the result.
    FASHION_LONG,
    name="fashion-best",
    epochs=38,
    reprob=0.25,
    eval_every=4,
)

REPRODUCE_CPU = dataclasses.replace(
    # The reproductions' converging cpu budget (docs/reproduce.md, "Choosing the cpu budget", has the
    # validation runs behind each value): the main job's recipe as it was when chosen (fast-cpu: Nesterov
    # SGD, one-cycle with a fixed one-epoch linear warm-up from lr/10, lr 0.2, label smoothing 0.1, flip,
    # batch 256, bfloat16 where the CPU has it) on the whole training set less a fixed, class-balanced
    # 5,000-image validation split, which every epoch is evaluated on; the test set is read once, after
    # the last epoch. Weight decay on every weight, BN scales included, as in the papers (He et al. 2015,
    # Sec. 3.4 and 4.2), since Fig. 7's responses are BN outputs. No test-time augmentation: the papers
    # test single views.
    FAST_CPU,
    name="reproduce-cpu",
    epochs=4,
    batch_size=256,
    val_split=5000,
    split_seed=0,
    final_test_only=True,
    norm_weight_decay=None,
    tta="none",
    # Eager on every CPU: compilation is not checked on every family's net (drop-path, FractalNet's
    # columns, the Highway gates), and the zoo's runs were trained so (their config.json says so).
    channels_last=True,
    compile=False,
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        PAPER_CIFAR,
        PAPER_IMAGENET,
        PAPER_IMAGENET_STEP,
        PREACT_CIFAR,
        WRN,
        FAST_CPU,
        TORCHVISION_V2,
        RSB_A1,
        RSB_A2,
        RSB_A3,
        BAG_OF_TRICKS,
        FASHION_LONG,
        FASHION_BEST,
        REPRODUCE_CPU,
    )
}
DEFAULT_RECIPE = "fast-cpu"


Settings = TypeVar("Settings")


def get_recipe(name: str, table: Mapping[str, Settings] = RECIPES) -> Settings:
    """The recipe called ``name`` in ``table`` (the classification recipes unless another family's table
    is given, such as ``detection.recipes.DETECTION_RECIPES``), or a ConfigError naming the closest."""
    try:
        return table[name]
    except KeyError:
        raise unknown_name("recipe", name, table) from None


def apply_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """A copy of ``settings`` (a recipe of either family, or ``RunOptions``) with ``overrides`` applied:
    strings (as from --set) are parsed by the field's type, other values are taken as they are."""
    types = {key: tp for key, tp in field_types(type(settings)).items() if key != "name"}
    values = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in types:
            raise unknown_name(f"{settings.KIND} field", key, types)
        values[key] = convert(value, types[key], key) if isinstance(value, str) else value
    return dataclasses.replace(settings, **values)


# --- run options (do not change the result) ------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    KIND: ClassVar[str] = "run"  # how the error messages name these options

    output: str | None = None  # default runs/<time>-<model>-<dataset>
    resume: str | None = None  # a run folder (its newest good checkpoint) or a checkpoint file
    device: str | None = None  # None/"auto": CUDA when present, else CPU
    data_dir: str | None = None
    download: bool = False
    workers: int | None = None  # DataLoader workers for image folders (None: one per core, up to 8)
    device_decode: bool | None = None  # image folders: JPEGs decoded on the device (None: on CUDA)
    init_weights: str | None = None  # torchvision/timm/resnets weights to start from (fine-tuning)
    freeze_bn: bool = False  # keep BatchNorm layers in eval mode: running statistics stay as loaded
    keep_last: int = 2  # last.pt plus this many - 1 older checkpoints
    log_every: int = 50  # steps between steps.jsonl records
    progress: Literal["auto", "bar", "line", "none"] = "auto"
    plot: bool = True  # curves.png
    tensorboard: bool = False  # TensorBoard scalars in RUN/tensorboard (the optional tensorboard extra)
    # how inputs are accepted (docs/reliability.md); with clean data they do not change the result
    strict_data: bool = False  # an unreadable image or an empty class folder stops the run (else: warned)
    verify_checksums: bool = True  # MD5 of the official mnist / fashion-mnist / cifar files
    follow_links: bool = False  # image folders: follow symbolic links that point out of --data-dir
    max_image_pixels: int | None = None  # larger images are refused (None: PIL's 89,478,485; 0: no limit)

    def __post_init__(self) -> None:
        check_types(self)
        if self.max_image_pixels is not None and self.max_image_pixels < 0:
            raise ConfigError("max_image_pixels must be >= 0 (0: no limit)")
        if self.keep_last < 1:
            raise ConfigError("keep_last must be >= 1")
        if self.log_every < 1:
            raise ConfigError("log_every must be >= 1")
        if self.workers is not None and self.workers < 0:
            raise ConfigError("workers must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    recipe: Recipe = FAST_CPU
    run: RunOptions = field(default_factory=RunOptions)

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.to_dict(), "run": dataclasses.asdict(self.run)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        try:
            return cls(recipe=Recipe.from_dict(data["recipe"]), run=RunOptions(**data.get("run", {})))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"not a resnets training config: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


class TaskConfig:
    """A task's config beside classification's ``TrainConfig``: its recipe (``RECIPE``) and ``RunOptions``,
    with ``"task": TASK`` in config.json and checkpoints so that each command resumes only its own runs.
    Subclasses are frozen dataclasses with the fields ``recipe`` and ``run``
    (``detection.recipes.DetectionConfig``, ``segmentation.recipes.SegmentationConfig``)."""

    TASK: ClassVar[str]
    RECIPE: ClassVar[type[Optimization]]
    recipe: Any
    run: RunOptions

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.to_dict(), "run": dataclasses.asdict(self.run), "task": self.TASK}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        try:
            if data.get("task") != cls.TASK:
                raise KeyError("task")
            return cls(recipe=cls.RECIPE.from_dict(data["recipe"]), run=RunOptions(**data.get("run", {})))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"not a resnets {cls.TASK} config ({exc}); resume a run with the command that trained it "
                f"(`resnets train`, `resnets detect train` or `resnets segment train` --resume)"
            ) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
