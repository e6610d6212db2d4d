"""Analyses of trained networks: layer responses (He et al. 2015, Fig. 7), the lesion study and the
path view of residual networks (Veit et al. 2016)."""

from .lesion import LesionResult, blocks_deleted, blocks_swapped, lesion_study, swappable_pairs
from .paths import PathGradients, gradient_by_path_length, path_length_counts, path_length_fractions
from .responses import LayerResponses, layer_responses

__all__ = [
    "LayerResponses",
    "LesionResult",
    "PathGradients",
    "blocks_deleted",
    "blocks_swapped",
    "gradient_by_path_length",
    "layer_responses",
    "lesion_study",
    "path_length_counts",
    "path_length_fractions",
    "swappable_pairs",
]
