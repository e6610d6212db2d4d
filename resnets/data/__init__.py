"""Datasets and the input pipeline (see docs/architecture.md, "Data").

``build_data(DataConfig(...), device)`` gives the loaders of a run; ``preprocess_image`` prepares
one image for a trained model from the ``meta()`` stored in its checkpoint.
"""

from .augment import Normalization
from .datasets import DATASET_NAMES, ArrayDataset, load_arrays
from .folders import DataWarning
from .images import load_image, preprocess_image
from .loaders import DataBundle, DataConfig, build_data

__all__ = [
    "DATASET_NAMES",
    "ArrayDataset",
    "DataBundle",
    "DataConfig",
    "DataWarning",
    "Normalization",
    "build_data",
    "load_arrays",
    "load_image",
    "preprocess_image",
]
