"""Detection recipes: everything that changes a detector's weights, as a frozen dataclass.

``DetectionRecipe`` is to a detector what ``train.recipes.Recipe`` is to a classifier; where and how a run
happens is the classification loop's own ``RunOptions`` (output, resume, device, ``data_dir`` the data
folder, ``init_weights`` the backbone's weights, logging). Its length, optimiser and schedule fields are
``train.recipes.Optimization``'s, as the classification recipe's, so the same builders take it
(``train.build.build_optimizer``, ``train.schedule.LRSchedule``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..train.recipes import Optimization, RunOptions, TaskConfig
from .models import BACKBONE_NORMS, HEADS

# Fields that are build_detector's options.
DETECTOR_FIELDS = (
    "backbone_kwargs",
    "head",
    "backbone_norm",
    "frozen_stages",
    "image_mean",
    "image_std",
    "anchor_sizes",
    "aspect_ratios",
    "fpn_channels",
    "representation_size",
    "roi_output_size",
    "rpn_batch_size_per_image",
    "box_batch_size_per_image",
    "proposals_train",
    "proposals_test",
    "box_score_thresh",
    "box_detections_per_img",
)


@dataclass(frozen=True)
class DetectionRecipe(Optimization):
    """One detector's training. Defaults: torchvision's detection reference (``fasterrcnn_resnet50_fpn``)."""

    KIND: ClassVar[str] = "detection recipe"

    backbone: str = "resnet50"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    head: Literal["fpn", "c4"] = "fpn"

    # data: the folder is the run's --data-dir (a COCO or VOC folder)
    train_split: str = "train"
    eval_split: str | None = "val"  # evaluated every eval_every epochs and at the end; None: never
    train_subset: int | None = None  # the first N images (quick runs and tests)
    eval_subset: int | None = None
    hflip: bool = True  # the paper's detectors' only augmentation

    # length, batch, optimiser and schedule: Optimization's fields, with torchvision's reference values
    epochs: int = 26
    batch_size: int = 16
    eval_batch_size: int = 8
    optimizer: Literal["sgd", "adamw"] = "sgd"  # no LAMB: never tried on a detector
    lr: float = 0.02
    milestones: tuple[int, ...] = (16, 22)
    warmup: float = 0.14  # torchvision's 1000 iterations, in epochs of COCO at batch 16
    warmup_start_factor: float = 0.001

    # the detector (build_detector's options; None: its defaults)
    min_size: int | None = None  # None: the generated set's canvas, else torchvision's 800
    max_size: int | None = None  # None: min_size for a generated set, else torchvision's 1333
    backbone_norm: Literal["frozen", "batchnorm"] = "frozen"
    frozen_stages: int | None = None
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    anchor_sizes: tuple[int, ...] = ()
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    fpn_channels: int = 256
    representation_size: int = 1024
    roi_output_size: int | None = None
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    proposals_train: int = 2000
    proposals_test: int = 1000
    box_score_thresh: float = 0.05
    box_detections_per_img: int = 100

    eval_every: int = 1
    amp: bool | Literal["auto"] = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    deterministic: bool = False

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.head not in HEADS or self.backbone_norm not in BACKBONE_NORMS:
            problems.append(f"head must be one of {HEADS} and backbone_norm one of {BACKBONE_NORMS}")
        for name in (
            "eval_batch_size",
            "eval_every",
            "fpn_channels",
            "representation_size",
            "proposals_train",
            "proposals_test",
            "rpn_batch_size_per_image",
            "box_batch_size_per_image",
            "box_detections_per_img",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("train_subset", "eval_subset", "min_size", "max_size", "roi_output_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1 (or None)")
        if not 0 <= self.box_score_thresh < 1:
            problems.append("box_score_thresh must be in [0, 1)")
        return problems

    def detector_options(self) -> dict[str, Any]:
        """``build_detector``'s keyword arguments (sizes resolved by the training loop)."""
        return {key: getattr(self, key) for key in DETECTOR_FIELDS}


@dataclass(frozen=True)
class DetectionConfig(TaskConfig):
    TASK: ClassVar[str] = "detection"
    RECIPE: ClassVar[type[Optimization]] = DetectionRecipe

    recipe: DetectionRecipe = field(default_factory=DetectionRecipe)
    run: RunOptions = field(default_factory=RunOptions)


# --- named recipes --------------------------------------------------------------------------------

TORCHVISION_COCO = DetectionRecipe(
    # torchvision's detection reference for fasterrcnn_resnet50_fpn: 26 epochs at batch 2 x 8 GPUs,
    # lr 0.02 / 10 at epochs 16 and 22, weight decay 1e-4, 1000 linear warm-up iterations from lr / 1000.
    name="torchvision-coco",
    backbone="resnet50",
    head="fpn",
    train_split="train2017",
    eval_split="val2017",
)

PAPER_COCO = DetectionRecipe(
    # He et al. 2015 appendix A: Faster R-CNN with ResNet-101, conv1-conv4 shared, RoI pooling before
    # conv5; images of shorter side 600 (max 1000); "the RPN step and Fast R-CNN step are both trained for
    # 240k iterations with a learning rate of 0.001 and then for 80k iterations with 0.0001" on 8 GPUs
    # (8 images per batch), flips only. Trained end to end here (torchvision's approximate joint training).
    name="paper-coco",
    backbone="resnet101",
    head="c4",
    train_split="train2017",
    eval_split="val2017",
    min_size=600,
    max_size=1000,
    batch_size=8,
    lr=0.001,
    iterations=320_000,
    schedule_unit="iteration",
    milestones=(240_000,),
    warmup=0.0,
    eval_every=4,
    box_batch_size_per_image=128,
    rpn_batch_size_per_image=256,
    proposals_train=2000,
    proposals_test=300,
)

PAPER_VOC = dataclasses.replace(
    # Faster R-CNN's VOC 2007 schedule (Ren et al. 2015, which the ResNet paper follows for Table 7):
    # 1 image per batch, lr 0.001 for 60k iterations then 0.0001 for 20k; trainval to train, test to test.
    PAPER_COCO,
    name="paper-voc",
    train_split="trainval",
    eval_split="test",
    batch_size=1,
    iterations=80_000,
    milestones=(60_000,),
    eval_every=1,
)

FASHION_CPU = DetectionRecipe(
    # A few minutes on a 2-core CPU: the generated Fashion-MNIST set (64 x 64 canvases), the paper's C4
    # design on a CIFAR-style ResNet-20, few regions per image (the per-region conv5 is the cost), 14 x 14
    # RoIs would be 7 x 7 after conv5: 8 x 8 -> 4 x 4 keeps the head's cost low at these object sizes.
    name="fashion-cpu",
    backbone="resnet20",
    head="c4",
    train_split="train",
    eval_split="val",
    epochs=4,
    batch_size=8,
    eval_batch_size=16,
    lr=0.02,
    milestones=(3,),
    warmup=0.25,
    warmup_start_factor=0.01,
    roi_output_size=8,
    rpn_batch_size_per_image=128,
    box_batch_size_per_image=64,
    proposals_train=300,
    proposals_test=100,
)

DETECTION_RECIPES: dict[str, DetectionRecipe] = {
    r.name: r for r in (FASHION_CPU, TORCHVISION_COCO, PAPER_COCO, PAPER_VOC)
}
DEFAULT_DETECTION_RECIPE = "fashion-cpu"
