"""The papers' experiments, reproduced: ``resnets reproduce NAME``; one module per table or figure.

``EXPERIMENTS`` lists them in the order ``resnets reproduce --list`` shows; ``get_experiment(name)``
returns one; ``runner.reproduce(name, ReproduceOptions(...))`` trains, analyses and writes the report.
"""

from __future__ import annotations

from ..errors import unknown_name
from .base import BUDGETS, DEFAULT_BUDGET, Experiment
from .cardinality import Cardinality
from .degradation import Degradation
from .depth import Depth
from .ensembles import Ensembles
from .identity_1000 import Identity1000
from .identity_mappings import IdentityMappings
from .identity_toy import IdentityToy
from .lesion import Lesion
from .recurrent import Recurrent
from .refinement import IterativeRefinement
from .responses import Responses
from .shortcuts import Shortcuts
from .survey import Survey
from .width import Width

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Degradation(),
        Depth(),
        Shortcuts(),
        IdentityMappings(),
        Responses(),
        Lesion(),
        IdentityToy(),
        Survey(),
        Cardinality(),
        Width(),
        Ensembles(),
        Recurrent(),
        IterativeRefinement(),
        Identity1000(),
    )
}


def get_experiment(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise unknown_name("experiment", name, EXPERIMENTS) from None


def list_experiments() -> list[Experiment]:
    return list(EXPERIMENTS.values())


__all__ = ["BUDGETS", "DEFAULT_BUDGET", "EXPERIMENTS", "Experiment", "get_experiment", "list_experiments"]

# Sec. 4.3's object detection (Tables 7-8) and the COCO segmentation entry, registered after the others.
from .detection import DetectionExperiment  # noqa: E402
from .segmentation import SegmentationExperiment  # noqa: E402

EXPERIMENTS[DetectionExperiment.name] = DetectionExperiment()
EXPERIMENTS[SegmentationExperiment.name] = SegmentationExperiment()
