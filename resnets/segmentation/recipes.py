"""Segmentation recipes: everything that changes a segmenter's weights, as a frozen dataclass.

``SegmentationRecipe`` is to FCN and DeepLabV3 what ``detection.recipes.DetectionRecipe`` is to a detector:
its length, optimiser and schedule fields are ``train.recipes.Optimization``'s (so the shared builders take
it), where and how a run happens is ``RunOptions`` (``data_dir`` a COCO or Pascal VOC folder,
``init_weights`` the backbone's weights). Defaults and the named recipes follow torchvision's
``references/segmentation/train.py``: SGD with momentum 0.9 and weight decay 1e-4, lr 0.02 (the
auxiliary head at 10 x), the "poly" schedule over iterations, the auxiliary loss at weight 0.5, images
resized by 0.5-2.0 x a base size of 520, flipped and cropped to 480, cross-entropy ignoring label 255.

``MaskRCNNRecipe`` is Mask R-CNN's: a ``detection.recipes.DetectionRecipe`` (Mask R-CNN trains as the
detector it extends, on the same loader and loop) on the FPN, with the mask head's width; its named recipes
follow torchvision's ``references/detection`` (``maskrcnn_resnet50_fpn``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..detection.recipes import DetectionRecipe
from ..train.recipes import Optimization, RunOptions, TaskConfig
from .models import MASK_HEAD_WIDTH, OUTPUT_STRIDES

MODELS = ("fcn", "deeplabv3")


@dataclass(frozen=True)
class SegmentationRecipe(Optimization):
    """One semantic segmenter's training. Defaults: torchvision's reference (``fcn_resnet50`` on COCO)."""

    KIND: ClassVar[str] = "segmentation recipe"

    model: Literal["fcn", "deeplabv3"] = "fcn"
    backbone: str = "resnet50"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    output_stride: int | None = 8  # torchvision's builders dilate the last two stages
    aux_loss: bool = True
    aux_weight: float = 0.5  # torchvision's criterion: losses["out"] + 0.5 * losses["aux"]
    aux_lr_factor: float = 10.0  # torchvision's reference trains the auxiliary head at 10 x the lr

    # data: the folder is the run's --data-dir (a COCO or Pascal VOC folder)
    train_split: str = "train"
    eval_split: str | None = "val"  # evaluated every eval_every epochs and at the end; None: never
    train_subset: int | None = None  # the first N images (quick runs and tests)
    eval_subset: int | None = None
    # augmentation (torchvision's SegmentationPresetTrain): shorter side resized to a random size in
    # [min_scale, max_scale] x base_size, flipped, cropped to crop_size (padded with 0 and 255 if smaller);
    # evaluation resizes the shorter side to base_size. None: no resizing / no crop (generated canvases).
    base_size: int | None = 520
    crop_size: int | None = 480
    min_scale: float = 0.5
    max_scale: float = 2.0
    hflip: bool = True

    # length, batch, optimiser and schedule: Optimization's fields, with torchvision's reference values
    epochs: int = 30
    batch_size: int = 32  # 8 GPUs x 4 images
    eval_batch_size: int = 1  # images of different sizes
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02
    schedule: Literal["poly", "step", "cosine", "constant"] = "poly"
    schedule_unit: Literal["epoch", "iteration"] = "epoch"
    warmup: float = 0.0
    warmup_start_factor: float = 0.01

    eval_every: int = 1
    amp: bool | Literal["auto"] = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    deterministic: bool = False

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.model not in MODELS:
            problems.append(f"model must be one of {MODELS}")
        if self.output_stride not in OUTPUT_STRIDES:
            problems.append("output_stride must be 8, 16 or None")
        for name in ("eval_batch_size", "eval_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("train_subset", "eval_subset", "base_size", "crop_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1 (or None)")
        if not 0 < self.min_scale <= self.max_scale:
            problems.append(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        if self.aux_weight < 0:
            problems.append("aux_weight must be >= 0")
        if not self.aux_lr_factor > 0:
            problems.append("aux_lr_factor must be > 0")
        return problems

    def model_options(self) -> dict[str, Any]:
        """The builder's keyword arguments, beside the classes and channels the data gives."""
        return {
            "backbone": self.backbone,
            "backbone_kwargs": dict(self.backbone_kwargs),
            "output_stride": self.output_stride,
            "aux_loss": self.aux_loss,
        }


@dataclass(frozen=True)
class SegmentationConfig(TaskConfig):
    TASK: ClassVar[str] = "segmentation"
    RECIPE: ClassVar[type[Optimization]] = SegmentationRecipe

    recipe: SegmentationRecipe = field(default_factory=SegmentationRecipe)
    run: RunOptions = field(default_factory=RunOptions)


# --- named recipes --------------------------------------------------------------------------------

TORCHVISION_COCO = SegmentationRecipe(
    # torchvision's fcn_resnet50 / deeplabv3_resnet50 on COCO (the 20 VOC classes): 30 epochs at batch
    # 4 x 8 GPUs, lr 0.02 with the poly schedule, aux loss 0.5, resize 0.5-2.0 x 520 then crop 480.
    name="torchvision-coco",
    train_split="train2017",
    eval_split="val2017",
)

TORCHVISION_COCO_DEEPLABV3 = dataclasses.replace(
    TORCHVISION_COCO, name="torchvision-coco-deeplabv3", model="deeplabv3"
)

TORCHVISION_VOC = dataclasses.replace(
    # the same recipe on Pascal VOC 2012's segmentation lists (train, val)
    TORCHVISION_COCO,
    name="torchvision-voc",
    train_split="train",
    eval_split="val",
)

FASHION_CPU = SegmentationRecipe(
    # A few minutes on a 2-core CPU: the generated Fashion-MNIST canvases (64 x 64, one channel, kept at
    # their size: no resizing or cropping), FCN on a CIFAR-style ResNet-20 at its own strides (the CIFAR
    # nets cannot dilate; their last stage is at stride 4), the reference's optimiser and poly schedule.
    name="fashion-cpu",
    backbone="resnet20",
    output_stride=None,
    train_split="train",
    eval_split="val",
    base_size=None,
    crop_size=None,
    epochs=4,
    batch_size=16,
    eval_batch_size=32,
    lr=0.02,
)

SEGMENTATION_RECIPES: dict[str, SegmentationRecipe] = {
    r.name: r for r in (FASHION_CPU, TORCHVISION_COCO, TORCHVISION_COCO_DEEPLABV3, TORCHVISION_VOC)
}
DEFAULT_SEGMENTATION_RECIPE = "fashion-cpu"


# --- Mask R-CNN (instance segmentation) --------------------------------------------------------------


@dataclass(frozen=True)
class MaskRCNNRecipe(DetectionRecipe):
    """One Mask R-CNN's training. Defaults: torchvision's detection reference for ``maskrcnn_resnet50_fpn``
    (the Faster R-CNN recipe: 26 epochs at batch 2 x 8 GPUs, lr 0.02 / 10 at epochs 16 and 22, momentum 0.9,
    weight decay 1e-4, 1000 linear warm-up iterations from lr / 1000; images flipped)."""

    KIND: ClassVar[str] = "Mask R-CNN recipe"

    model: Literal["mask_rcnn"] = "mask_rcnn"  # what `resnets segment train --model` names
    mask_head_width: int = MASK_HEAD_WIDTH  # channels of the mask head's four convs

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.model != "mask_rcnn":
            problems.append("model must be 'mask_rcnn' (FCN and DeepLabV3 have recipes of their own)")
        if self.head != "fpn":
            problems.append("head must be 'fpn': Mask R-CNN is built on the FPN")
        if self.mask_head_width < 1:
            problems.append("mask_head_width must be >= 1")
        return problems

    def model_options(self) -> dict[str, Any]:
        """``models.mask_rcnn``'s keyword arguments, beside the classes and channels the data gives and the
        image sizes the task resolves."""
        return {
            "backbone": self.backbone,
            "mask_head_width": self.mask_head_width,
            **self.detector_options(),
        }


@dataclass(frozen=True)
class MaskRCNNConfig(TaskConfig):
    TASK: ClassVar[str] = "instance_segmentation"
    RECIPE: ClassVar[type[Optimization]] = MaskRCNNRecipe

    recipe: MaskRCNNRecipe = field(default_factory=MaskRCNNRecipe)
    run: RunOptions = field(default_factory=RunOptions)


TORCHVISION_COCO_MASK_RCNN = MaskRCNNRecipe(
    # torchvision's references/detection for maskrcnn_resnet50_fpn: `--epochs 26 --lr-steps 16 22` at its
    # defaults (lr 0.02 for 8 GPUs x 2 images, SGD momentum 0.9, weight decay 1e-4, 1000 warm-up iterations
    # from lr / 1000): DetectionRecipe's defaults, on COCO 2017.
    name="torchvision-coco-mask-rcnn",
    train_split="train2017",
    eval_split="val2017",
)

MASK_RCNN_FASHION_CPU = MaskRCNNRecipe(
    # Sized for a CPU: the generated Fashion-MNIST canvases (64 x 64, one channel, not resized), the FPN on
    # a CIFAR-style ResNet-20 (levels at strides 1, 2, 4 and the pooled 8), narrow FPN, box and mask heads
    # (torchvision's 256-channel mask head costs ten times the backbone per region), few regions per image.
    name="mask-rcnn-fashion-cpu",
    backbone="resnet20",
    train_split="train",
    eval_split="val",
    epochs=4,
    batch_size=8,
    eval_batch_size=16,
    lr=0.02,
    milestones=(3,),
    warmup=0.25,
    warmup_start_factor=0.01,
    fpn_channels=64,
    representation_size=256,
    mask_head_width=64,
    rpn_batch_size_per_image=128,
    box_batch_size_per_image=64,
    proposals_train=300,
    proposals_test=100,
)

MASK_RCNN_RECIPES: dict[str, MaskRCNNRecipe] = {
    r.name: r for r in (MASK_RCNN_FASHION_CPU, TORCHVISION_COCO_MASK_RCNN)
}
DEFAULT_MASK_RCNN_RECIPE = "mask-rcnn-fashion-cpu"
