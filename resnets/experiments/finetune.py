"""A second-stage run on an experiment's classifier (a detector or a segmenter fine-tuned from its weights),
and the comparison of such runs across backbones.

The paper's detection (Sec. 4.3) and the COCO segmentation entry built on it start from ImageNet
classifiers; the detection and segmentation experiments likewise fine-tune each backbone classifier (an
ordinary run of the experiment) into a task run trained by the analysis into ``OUTPUT/runs/<name>``:
finished ones are found and not redone, interrupted ones resume, one trained with other settings is refused.
Both judge the ResNet backbone against the others on per-fold scores of the same test images
(``resnet_gaps``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ConfigError
from ..runs import RunFolder
from ..train.recipes import Optimization, RunOptions, apply_overrides, get_recipe
from .base import Context, RunSpec, config_differences
from .stats import Interval, Judgement, bootstrap_difference, judge


@dataclass(frozen=True)
class FineTuneRun:
    """One task run: a recipe of the task (base name + overrides) on a classifier run's weights."""

    name: str
    label: str
    recipe: str
    overrides: Mapping[str, Any]
    backbone_run: RunSpec

    what: ClassVar[str] = ""  # "detector", "segmenter": for the log
    command_words: ClassVar[tuple[str, ...]] = ()  # ("resnets", "detect", "train")
    recipes: ClassVar[Mapping[str, Optimization]] = {}

    def resolved(self) -> Any:
        return apply_overrides(get_recipe(self.recipe, self.recipes), dict(self.overrides))

    def fit(self, options: RunOptions) -> dict[str, Any]:
        """Train the resolved recipe with ``options``; returns the run's summary."""
        raise NotImplementedError

    def command(self, folder: Path, data_dir: Path, weights: Path) -> str:
        """The command line that trains this run by hand, for the report."""
        words = [*self.command_words, "--recipe", self.recipe]
        for key, value in self.overrides.items():
            if isinstance(value, tuple | list):
                text = ",".join(map(str, value))
            else:
                text = json.dumps(value) if isinstance(value, dict) else str(value)
            words += ["--set", f"{key}={text}"]
        words += ["--data-dir", str(data_dir), "--backbone-weights", str(weights), "--output", str(folder)]
        return shlex.join(words)

    def train(self, ctx: Context, data_dir: Path, weights: Path, log: Callable[[str], None]) -> Path:
        """Fine-tune into ``OUTPUT/runs/<name>`` unless finished there; resume it when started."""
        folder = ctx.runs_dir / self.name
        run = RunFolder(folder)
        stored = run.config() if run.config_path.is_file() else None
        if stored is not None:
            differences = config_differences(self.resolved().to_dict(), stored.get("recipe", {}))
            if differences:
                raise ConfigError(
                    f"run folder {folder} was trained with other settings ({'; '.join(differences[:4])}); "
                    "use another --output, or delete that folder to retrain it"
                )
        if run.finished:
            log(f"[{ctx.experiment}] {self.label} {self.what}: finished run found in {folder}")
            return folder
        resume = run.last.is_file()
        log(f"[{ctx.experiment}] {self.label} {self.what}: {'resuming' if resume else 'training'} {folder}")
        options = RunOptions(
            output=str(folder),
            resume=str(folder) if resume else None,
            device=str(ctx.device),
            data_dir=str(data_dir),
            init_weights=None if resume else str(weights),
            progress="line",
        )
        if self.fit(options).get("interrupted"):
            log(f"[{ctx.experiment}] interrupted; run the same command again to continue where it stopped")
            raise KeyboardInterrupt
        return folder


def run_commands(
    per_backbone: Sequence[Sequence[FineTuneRun]], ctx: Context, data_dir: Path
) -> dict[str, str]:
    """The report's settings: each second-stage run's command line, by backbone and seed."""
    out = {}
    for seeds in per_backbone:
        for run in seeds:
            weights = ctx.runs_dir / run.backbone_run.name
            name = run.label + (f" seed {run.overrides['seed']}" if "seed" in run.overrides else "")
            out[f"{run.what} {name}"] = run.command(ctx.runs_dir / run.name, data_dir, weights)
    return out


def seed_summary(measured: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """One backbone's runs over seeds: the mean of every number, and the per-seed values the statistics use
    (``per_seed_<metric>``, ``per_seed_folds``, ``runs``, ``seeds``)."""
    out: dict[str, Any] = {}
    for key, value in measured[0].items():
        if isinstance(value, int | float) or value is None:
            values = [m[key] for m in measured if m[key] is not None]
            out[key] = sum(values) / len(values) if values else None
    out[f"per_seed_{metric}"] = [m[metric] or 0.0 for m in measured]
    out["per_seed_folds"] = [m["folds"] for m in measured]
    out["runs"] = [m["run"] for m in measured]
    out["seeds"] = list(measured)
    return out


@dataclass(frozen=True)
class BackboneGap:
    """The ResNet backbone against another: the paired per-fold interval and the two-sided judgement."""

    interval: Interval
    judgement: Judgement
    per_seed: list[float]  # ResNet minus the other, per seed


def resnet_gaps(
    labels: Sequence[str], results: Mapping[str, Any], metric: str, paper_effect: float
) -> dict[str, BackboneGap]:
    """The ResNet (the last label) against every other backbone, in the paper's direction (higher
    ``metric``), on the per-fold values of each seed (the same folds for both)."""
    resnet = results[labels[-1]]
    out = {}
    for other in labels[:-1]:
        theirs = results[other]
        interval = bootstrap_difference(theirs["per_seed_folds"], resnet["per_seed_folds"], paired=True)
        per_seed = [
            b - a for a, b in zip(theirs[f"per_seed_{metric}"], resnet[f"per_seed_{metric}"], strict=False)
        ]
        judgement = judge(interval, "higher", per_seed_differences=per_seed, paper_effect=paper_effect)
        out[other] = BackboneGap(interval, judgement, per_seed)
    return out
