"""Training recipes: the papers' setups as frozen dataclasses, plus a fast CPU recipe.

A ``Recipe`` holds everything that changes the trained weights (model, data, optimiser,
schedule, precision, seed). ``RunOptions`` holds where and how a run happens (output folder,
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
from dataclasses import dataclass, field
from typing import Any, Literal

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


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_types(obj: Any) -> None:
    """Raise ConfigError if a dataclass field holds a value of the wrong type."""
    for name, tp in _field_types(type(obj)).items():
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
            raise ConfigError(f"{key} expects a JSON object such as '{{\"shortcut\": \"B\"}}', got {text!r}")
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


Schedule = Literal["step", "plateau", "onecycle", "cosine", "constant"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass(frozen=True)
class Recipe:
    """One training setup. Defaults are plain SGD values; the named recipes below set the rest."""

    name: str = "custom"
    model: str = "resnet20"
    dataset: str = "fashion-mnist"
    # model options passed to create_model (e.g. {"shortcut": "B"}); --set model_kwargs='{"k": v}'
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    # length: ``iterations`` wins when set (the CIFAR paper counts iterations, Sec. 4.2)
    epochs: int = 90
    iterations: int | None = None

    # data
    batch_size: int = 128  # global batch: divided between the processes of a distributed run
    eval_batch_size: int = 512
    val_split: int = 0  # images held out of the training set for validation
    # augmentation and preprocessing (None: the dataset's default; see resnets.data.DataConfig)
    crop_padding: int | None = None  # random crop from zero padding: 4 px at 32x32 (Sec. 4.2), 3 at 28x28
    hflip: bool | None = None  # random horizontal flip (default: on, except for digits)
    normalization: Literal["per_channel", "per_pixel"] = "per_channel"
    image_size: int | None = None  # image folders: crop side (224)
    train_transform: Literal["paper", "rrc"] = "paper"  # image folders: Sec. 3.4 scale aug., or timm's RRC
    train_subset: int | None = None  # a stratified subset of N training images (quick runs and tests)
    test_subset: int | None = None

    # optimiser
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # SGD only
    nesterov: bool = False
    weight_decay: float = 1e-4
    # None: same as weight_decay. 0 excludes BN weights and all biases from decay (Goyal et al. 2017).
    norm_weight_decay: float | None = None
    label_smoothing: float = 0.0

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
    # Sec. 4.2: "for 110 layers we use 0.01 to warm up until the training error is below 80%"
    warmup_until_error: float | None = None  # fraction, e.g. 0.8
    warmup_until_error_factor: float = 0.1
    warmup_until_error_min_depth: int = 110

    # evaluation during training
    tta: Literal["none", "flip"] = "none"  # test-time augmentation of the per-epoch val/test evaluation
    eval_every: int = 1  # epochs

    # weight averaging
    ema: bool = False
    ema_decay: float = 0.999

    # precision and speed
    # True: autocast to amp_dtype; "auto": only where the device computes amp_dtype natively
    # (resnets.runtime.computes_natively), else float32
    amp: bool | Literal["auto"] = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = False
    compile: bool = False
    # torch.compile's mode: "reduce-overhead" replays CUDA graphs, which pays off where the step is a
    # few milliseconds of GPU work (the CIFAR-sized nets) and launch overhead dominates
    compile_mode: CompileMode = "default"
    sync_bn: bool = False  # SyncBatchNorm in distributed runs

    seed: int = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        check_types(self)
        problems = [f"{f.name} must be a finite number, got {getattr(self, f.name)}"
                    for f in dataclasses.fields(self)
                    if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name))]
        if self.epochs < 1:
            problems.append("epochs must be >= 1")
        if self.iterations is not None and self.iterations < 1:
            problems.append("iterations must be >= 1")
        for name in ("batch_size", "eval_batch_size", "eval_every", "warmup_until_error_min_depth",
                     "image_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1")
        if not self.lr > 0:
            problems.append("lr must be > 0")
        for name in ("weight_decay", "momentum", "val_split", "warmup", "final_lr_factor", "crop_padding"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            problems.append("label_smoothing must be in [0, 1)")
        if not 0 < self.ema_decay < 1:
            problems.append("ema_decay must be in (0, 1)")
        if self.compile_mode != "default" and not self.compile:
            problems.append(f"compile_mode {self.compile_mode!r} needs compile=True (--compile)")
        if self.nesterov and (self.momentum == 0 or self.optimizer != "sgd"):
            problems.append("nesterov needs optimizer 'sgd' with momentum > 0")
        if list(self.milestones) != sorted(self.milestones):
            problems.append(f"milestones must increase, got {list(self.milestones)}")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1 (or None for the whole set)")
        if problems:
            raise ConfigError(f"recipe {self.name!r}: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out


# --- the papers' recipes -------------------------------------------------------------------------

PAPER_CIFAR = Recipe(
    # He et al. 2015, Sec. 4.2: SGD, batch 128, weight decay 1e-4, momentum 0.9, lr 0.1 divided by
    # 10 at 32k and 48k iterations, stop at 64k, 45k/5k train/val split, 4-pixel pad + 32x32 crop +
    # flip; lr 0.01 until training error < 80% (~400 iterations) for 110+ layers, then 0.1.
    name="paper-cifar", model="resnet20", dataset="cifar10", iterations=64_000, epochs=182,
    batch_size=128, val_split=5000, normalization="per_pixel", lr=0.1, momentum=0.9, weight_decay=1e-4,
    schedule="step", schedule_unit="iteration", milestones=(32_000, 48_000), gamma=0.1,
    warmup_until_error=0.8, warmup_until_error_factor=0.1, warmup_until_error_min_depth=110,
)

PAPER_IMAGENET = Recipe(
    # Sec. 3.4: SGD, batch 256, lr 0.1 divided by 10 when the error plateaus, weight decay 1e-4,
    # momentum 0.9, up to 60e4 iterations (~120 epochs; 90 is the common budget), no dropout,
    # scale augmentation, 224 crop, flip, per-pixel mean subtraction, PCA colour lighting.
    name="paper-imagenet", model="resnet50", dataset="imagenet", epochs=90, batch_size=256,
    normalization="per_pixel", train_transform="paper",
    eval_batch_size=256, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="plateau", gamma=0.1,
    plateau_patience=5, val_split=10_000,
)

PAPER_IMAGENET_STEP = dataclasses.replace(
    # The fixed variant everybody uses (torchvision's reference recipe): /10 every 30 epochs, 90 epochs.
    PAPER_IMAGENET, name="paper-imagenet-step", schedule="step", schedule_unit="epoch",
    milestones=(30, 60), val_split=0,
)

PREACT_CIFAR = dataclasses.replace(
    # He et al. 2016 (Identity Mappings), appendix: as the first paper's CIFAR recipe (lr 0.1 /10
    # at 32k and 48k, stop at 64k, batch 128, wd 1e-4, momentum 0.9) but "for all CIFAR experiments
    # we warm up ... using a smaller learning rate of 0.01 at the beginning 400 iterations".
    # The authors' Torch code normalises per channel (mean and std).
    PAPER_CIFAR, name="preact-cifar", model="preact_resnet164", val_split=0, normalization="per_channel",
    warmup=400, warmup_shape="constant", warmup_start_factor=0.1, warmup_until_error=None,
)

WRN = Recipe(
    # Zagoruyko and Komodakis 2016, Sec. 3: SGD with Nesterov momentum 0.9, lr 0.1, weight decay
    # 5e-4, lr x0.2 at epochs 60, 120, 160 of 200, batch 128, standard CIFAR augmentation.
    name="wrn", model="wrn28_10", dataset="cifar10", epochs=200, batch_size=128, lr=0.1,
    momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="step", schedule_unit="epoch",
    milestones=(60, 120, 160), gamma=0.2, normalization="per_channel",
)

FAST_CPU = Recipe(
    # Time-to-accuracy on a 2-core CPU: resnet20 on Fashion-MNIST to >= 92% test accuracy in under
    # 10 minutes (why each value, with its measurements: docs/training.md, "The fast-cpu recipe").
    name="fast-cpu", model="resnet20", dataset="fashion-mnist",
    # Few epochs, so that per-epoch evaluation fits in the budget.
    epochs=5,
    # A larger batch keeps both cores busy (larger conv kernels run more efficiently) while still
    # giving over a thousand steps.
    batch_size=256,
    # No validation split: with a short budget every training image counts; nothing is selected on
    # the test set (the last epoch's weights are the result).
    val_split=0,
    # Flip only, no translation: a short schedule needs little regularisation, and flipping
    # clothes keeps the class (airbench: flip is the augmentation worth having on short runs).
    crop_padding=0, hflip=True,
    # Nesterov SGD with a one-cycle (linear up, linear down to 0) schedule: the "super-convergence"
    # recipe of Smith & Topin 2017, used by Page's "How to train your ResNet" (DAWNBench) and
    # airbench; a higher peak lr than the paper's 0.1 since the run is short.
    optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, schedule="onecycle",
    schedule_unit="epoch", warmup=1.0, warmup_start_factor=0.1, final_lr_factor=0.0,
    # Page used 5e-4 for short runs: stronger decay helps when there are few epochs.
    weight_decay=5e-4, norm_weight_decay=0.0,
    # Label smoothing 0.1 (Szegedy et al. 2016; airbench uses 0.2): better calibrated and more
    # accurate after few epochs.
    label_smoothing=0.1,
    # Flip test-time augmentation (airbench): averages the predictions for the image and its mirror.
    tta="flip",
    # channels_last: oneDNN's preferred layout for convolutions on CPU.
    # amp "auto": bfloat16 autocast only where the device has bfloat16 arithmetic (AVX512-BF16 or AMX
    # CPUs, recent GPUs); where it is emulated (Ice Lake) it is slower than float32.
    channels_last=True, amp="auto",
)

RECIPES: dict[str, Recipe] = {
    r.name: r for r in (PAPER_CIFAR, PAPER_IMAGENET, PAPER_IMAGENET_STEP, PREACT_CIFAR, WRN, FAST_CPU)
}
DEFAULT_RECIPE = "fast-cpu"


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise unknown_name("recipe", name, RECIPES) from None


def apply_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """A copy of ``recipe`` with ``overrides`` (strings as from --set, or typed values) applied."""
    hints = _field_types(Recipe)
    values = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in hints or key == "name":
            raise unknown_name("recipe field", key, [k for k in hints if k != "name"])
        values[key] = convert(value, hints[key], key) if isinstance(value, str) else value
    return dataclasses.replace(recipe, **values)


# --- run options (do not change the result) ------------------------------------------------------

@dataclass(frozen=True)
class RunOptions:
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
            recipe = Recipe(**{**data["recipe"], "milestones": tuple(data["recipe"].get("milestones", ()))})
            return cls(recipe=recipe, run=RunOptions(**data.get("run", {})))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"not a resnets training config: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)
