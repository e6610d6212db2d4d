"""resnets: Deep Residual Networks (He et al., 2015) and their family.

Public API: ``create_model``, ``list_models``, ``summary``; the ``resnets`` command (see cli.py).
"""

from .models.registry import create_model, list_models
from .summary import summary

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "summary", "__version__"]
