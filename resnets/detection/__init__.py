"""Object detection with the zoo's backbones: He et al. 2015, Sec. 4.3 and appendix A (Tables 7-8).

torchvision's Faster R-CNN on any registered backbone with stage features, with torchvision's FPN or the
paper's own C4 design (``models``); COCO and Pascal VOC folders and a detection set generated from
Fashion-MNIST (``data``, ``synthetic``); batches (``loader``); training through the classification loop's
run folders, resume and fault handling (``recipes``, ``train``); COCOeval (``evaluate``); predicted boxes
drawn (``plots``); ONNX export checked in onnxruntime (``export``). docs/detection.md has the details.
"""

from .data import DetectionDataset, open_detection_data, read_coco, read_voc
from .evaluate import coco_metrics, evaluate_detector
from .loader import DetectionLoader
from .models import build_detector, detector_from_spec, load_detector
from .recipes import DETECTION_RECIPES, DetectionConfig, DetectionRecipe
from .synthetic import SyntheticSpec, make_fashion_detection
from .train import train_detector

__all__ = [
    "DETECTION_RECIPES",
    "DetectionConfig",
    "DetectionDataset",
    "DetectionLoader",
    "DetectionRecipe",
    "SyntheticSpec",
    "build_detector",
    "coco_metrics",
    "detector_from_spec",
    "evaluate_detector",
    "load_detector",
    "make_fashion_detection",
    "open_detection_data",
    "read_coco",
    "read_voc",
    "train_detector",
]
