"""Segmentation with the zoo's backbones: semantic (FCN, DeepLabV3) and instance (Mask R-CNN).

torchvision's FCN and DeepLabV3 heads on any registered backbone with stage features, dilated to output
stride 8 or 16, and torchvision's Mask R-CNN on ``resnets.detection``'s FPN backbone (``models``); mean IoU,
pixel accuracy and per-class IoU from one confusion matrix, and COCO mask AP (``metrics``); Pascal VOC and
COCO masks (``data``) and a seeded Fashion-MNIST segmentation set (``synthetic``).
"""

from .data import IGNORE_INDEX, VOC_SEGMENTATION_CLASSES, open_segmentation_data
from .metrics import (
    ConfusionMatrix,
    SegmentationScores,
    confusion_matrix,
    mask_average_precision,
    segmentation_scores,
)
from .models import deeplabv3, fcn, mask_rcnn, segmenter_from_spec
from .synthetic import make_fashion_segmentation

__all__ = [
    "IGNORE_INDEX",
    "VOC_SEGMENTATION_CLASSES",
    "ConfusionMatrix",
    "SegmentationScores",
    "confusion_matrix",
    "deeplabv3",
    "fcn",
    "make_fashion_segmentation",
    "mask_average_precision",
    "mask_rcnn",
    "open_segmentation_data",
    "segmentation_scores",
    "segmenter_from_spec",
]
