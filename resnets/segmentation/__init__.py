"""Segmentation with the zoo's backbones: semantic (FCN, DeepLabV3) and instance (Mask R-CNN).

torchvision's FCN and DeepLabV3 heads on any registered backbone with stage features, dilated to output
stride 8 or 16, and torchvision's Mask R-CNN on ``resnets.detection``'s FPN backbone (``models``).
"""

from .models import deeplabv3, fcn, mask_rcnn, segmenter_from_spec

__all__ = [
    "deeplabv3",
    "fcn",
    "mask_rcnn",
    "segmenter_from_spec",
]
