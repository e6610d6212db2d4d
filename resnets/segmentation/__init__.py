"""Segmentation with the zoo's backbones: semantic (FCN, DeepLabV3) and instance (Mask R-CNN).

torchvision's FCN and DeepLabV3 heads on any registered backbone with stage features, dilated to output
stride 8 or 16, and torchvision's Mask R-CNN on ``resnets.detection``'s FPN backbone (``models``); mean IoU,
pixel accuracy and per-class IoU from one confusion matrix, and COCO mask AP (``metrics``).
"""

from .metrics import (
    ConfusionMatrix,
    SegmentationScores,
    confusion_matrix,
    mask_average_precision,
    segmentation_scores,
)
from .models import deeplabv3, fcn, mask_rcnn, segmenter_from_spec

__all__ = [
    "ConfusionMatrix",
    "SegmentationScores",
    "confusion_matrix",
    "deeplabv3",
    "fcn",
    "mask_average_precision",
    "mask_rcnn",
    "segmentation_scores",
    "segmenter_from_spec",
]
