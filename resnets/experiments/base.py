"""What every reproduced experiment shares: budgets, run specifications, the context, the analysis record.

An experiment is a set of ordinary training runs (``RunSpec``: a recipe plus overrides, trained into
``OUTPUT/runs/<name>`` by the training engine, resumable, never redone once finished) and an analysis
of them (``Analysis``: numbers for results.json, tables beside the paper's, figures, and a paragraph on
whether the paper's finding shows). Runs are named after everything that changes their weights, so
experiments that need the same network (responses and lesion both train plain/ResNet-20/56) share one
run when they share an output folder (``plans`` builds the shared ones).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, unknown_name
from ..runs import RunFolder
from ..train.recipes import Recipe, apply_overrides, get_recipe
from .tables import Table


@dataclass(frozen=True)
class Budget:
    """How much compute an experiment gets: the dataset, the data subset and the training recipe."""

    name: str
    dataset: str  # default dataset (``--dataset`` replaces it)
    recipe: str  # base training recipe
    # Recipe fields every run of this budget sets (subsets, batch size, speed options).
    settings: Mapping[str, Any]
    description: str
    # Linear lr warm-up over this fraction of a run whose length an experiment sets in iterations
    # (from lr/10), 0 for none; runs of the recipe's own length keep the recipe's warm-up.
    warmup_fraction: float = 0.0
    # Seeds of every network whose comparison decides a verdict (``--seeds`` replaces it); a third is
    # added where a deciding gap is within twice its standard error (stats.seeds_needed).
    seeds: int = 2
    adaptive_seeds: bool = True  # False: no third seed (the smoke budget, whose gaps are all noise)


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        "smoke",
        "fashion-mnist",
        "paper-cifar",
        # 64 images at batch 32: the 4 iterations of a smoke run make 2 epochs, so curves have 2 points.
        {
            "train_subset": 64,
            "test_subset": 64,
            "val_split": 0,
            "split_seed": 0,
            "batch_size": 32,
            "eval_batch_size": 64,
            "amp": False,  # float32 and eager on every machine: seconds, and the same on each
            "channels_last": False,
            "compile": False,
        },
        "seconds: 64 training and 64 test images, 4 iterations; checks the machinery, shows nothing",
        adaptive_seeds=False,
    ),
    "cpu": Budget(
        # The reproduce-cpu recipe (train/recipes.py): every net of a comparison trained alike to
        # convergence on this hardware, choices made on a fixed validation split, the whole test set
        # read once at the end. channels_last and bfloat16 ("auto": only where the CPU computes it).
        "cpu",
        "fashion-mnist",
        "reproduce-cpu",
        {"channels_last": True, "amp": "auto", "compile": False},
        "the main job's recipe on a 2-core CPU (reproduce-cpu: Nesterov SGD, one-cycle lr 0.2 with a fixed "
        "one-epoch warm-up, label smoothing 0.1, weight decay 5e-4, flip, batch 256, 4 epochs) on the "
        "55,000 Fashion-MNIST training images outside a fixed, class-balanced 5,000-image validation split "
        "(every choice of the budget was made on it), the paper's initialisation, tested once on all "
        "10,000 test images; two seeds per compared network (three where a deciding gap is within twice "
        "its standard error); bfloat16 autocast where the CPU has bfloat16 arithmetic",
        warmup_fraction=1 / 4,  # the recipe's one epoch of four
    ),
    "paper": Budget(
        "paper",
        "cifar10",
        "paper-cifar",
        # one validation split for every seed of a network; float32 and eager, as the papers trained
        {"split_seed": 0, "amp": False, "compile": False},
        "the papers' schedules on CIFAR-10 for a GPU: 64k iterations at batch 128, lr 0.1 divided by 10 "
        "at 32k and 48k, 4-pixel pad-and-crop and flip, the full test set (each run's exact recipe is in "
        "its command below)",
    ),
}
DEFAULT_BUDGET = "cpu"


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise unknown_name("budget", name, BUDGETS) from None


@dataclass(frozen=True)
class RunSpec:
    """One training run: a recipe name plus recipe-field overrides, trained into ``runs/<name>``."""

    name: str
    label: str  # short name for tables and plots, e.g. "ResNet-56"
    recipe: str
    overrides: Mapping[str, Any]

    @property
    def model(self) -> str:
        return self.overrides["model"]

    def resolved(self) -> Recipe:
        """The recipe with the overrides applied: what the engine trains."""
        return apply_overrides(get_recipe(self.recipe), dict(self.overrides))

    def train_command(self, run_dir: Path, data_dir: str | None) -> str:
        """The ``resnets train`` command that trains (or resumes) exactly this run."""
        words = ["resnets", "train", "--recipe", self.recipe]
        for key, value in self.overrides.items():
            if isinstance(value, dict):
                text = json.dumps(value)
            elif isinstance(value, tuple | list):
                text = ",".join(str(v) for v in value)
            else:
                text = str(value)
            words += ["--set", f"{key}={text}"]
        if data_dir:
            words += ["--data-dir", str(data_dir)]
        words += ["--output", str(run_dir)]
        return shlex.join(words)


def recipe_dict(spec: RunSpec) -> dict[str, Any]:
    """The resolved recipe of ``spec`` as a plain dict (what the engine writes into the run folder)."""
    return spec.resolved().to_dict()


def _slug(value: Any) -> str:
    return str(value).replace(" ", "").replace("/", "-")


@dataclass
class Context:
    """Where and how an experiment runs."""

    experiment: str
    budget: Budget
    dataset: str
    data_dir: str | None
    output: Path
    device: torch.device
    command: str  # the reproduce command, for the report
    iterations: int | None = None  # replaces every run's planned iterations (``--iterations``)
    seeds: int = 1  # seeds of each compared network (``--seeds``; the budget's by default)
    # More seeds for some networks (by ``Net.key``), asked for by the runner where a deciding gap is
    # within twice its standard error.
    extra_seeds: dict[str, int] = field(default_factory=dict)
    detection_data: Path | None = None  # a VOC or COCO folder (``--detection-data``)

    @property
    def runs_dir(self) -> Path:
        return self.output / "runs"

    @property
    def results_dir(self) -> Path:
        return self.output / self.experiment

    def seeds_for(self, key: str) -> int:
        """How many seeds the network ``key`` is trained with."""
        return max(self.seeds, self.extra_seeds.get(key, 0))

    def run(
        self,
        model: str,
        label: str,
        *,
        iterations: int | None,
        recipe: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
        **settings: Any,
    ) -> RunSpec:
        """A run of ``model`` under this budget; ``iterations`` None keeps the recipe's own schedule.

        A shortened schedule keeps the paper's shape: lr divided by 10 at 50% and 75% of the
        iterations (32k and 48k of 64k in Sec. 4.2). The context's ``iterations`` wins when set.
        ``seed`` seeds the run's initialisation and data order (the validation split stays fixed).
        """
        if self.iterations is not None:
            iterations = self.iterations
        overrides: dict[str, Any] = {"model": model, "dataset": self.dataset, **self.budget.settings}
        if model_kwargs:
            overrides["model_kwargs"] = dict(model_kwargs)
        if iterations is not None:
            overrides.update(
                iterations=iterations,
                schedule_unit="iteration",
                milestones=(iterations // 2, iterations * 3 // 4),
            )
            if self.budget.warmup_fraction:
                warmup = round(iterations * self.budget.warmup_fraction)
                overrides.update(warmup=warmup, warmup_shape="linear")
        overrides.update(settings)
        if seed:
            overrides["seed"] = seed
        recipe_name = recipe or self.budget.recipe
        parts = [model] + [f"{k}={_slug(v)}" for k, v in sorted((model_kwargs or {}).items())]
        parts += [f"{k}={_slug(v)}" for k, v in sorted(settings.items())]
        if recipe is not None:
            parts.append(recipe)
        parts += [self.dataset, self.budget.name]
        if iterations is not None:
            parts.append(f"{iterations}it")
        if seed:
            parts.append(f"seed{seed}")
        return RunSpec("-".join(parts), label, recipe_name, overrides)


@dataclass
class RunRecord:
    """A finished training run: its spec, folder, per-epoch metrics and per-step records."""

    spec: RunSpec
    folder: Path
    metrics: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's row of metrics.csv."""
        if not self.metrics:
            raise ConfigError(f"run {self.folder} has no metrics.csv rows; delete the folder and run again")
        return self.metrics[-1]

    def final_value(self, key: str) -> float:
        value = self.final.get(key)
        if value is None:
            raise ConfigError(f"run {self.folder}: metrics.csv has no {key!r} in its last row")
        return float(value)

    @property
    def checkpoint(self) -> Path:
        return RunFolder(self.folder).last


Runs = Mapping[str, RunRecord]  # an experiment's finished runs by run name


def error_curves(record: RunRecord) -> dict[str, tuple[list[float], list[float]]]:
    """Training error (per logged step, or per epoch for short runs), and validation and test error
    (where evaluated) against iterations."""
    steps = [s for s in record.steps if s.get("error") is not None]
    if len(steps) >= 2:
        train = ([s["iteration"] for s in steps], [s["error"] for s in steps])
    else:
        rows = [r for r in record.metrics if r.get("train_error") is not None]
        train = ([r["iteration"] for r in rows], [r["train_error"] for r in rows])
    curves = {"train": train}
    for split in ("val", "test"):
        rows = [r for r in record.metrics if r.get(f"{split}_error") is not None]
        if rows:
            curves[split] = ([r["iteration"] for r in rows], [r[f"{split}_error"] for r in rows])
    curves.setdefault("test", ([], []))
    return curves


SeedCurve = tuple[list[float], list[float], list[float], list[float]]  # iterations, mean, min, max


def seed_curves(records: Sequence[RunRecord]) -> dict[str, SeedCurve]:
    """``error_curves`` of several seeds of one net: (iterations, mean, min, max) per curve, over the
    iterations every seed logged."""
    per_seed = [error_curves(record) for record in records]
    out = {}
    for key in per_seed[0]:
        tables = [dict(zip(*curves[key], strict=True)) for curves in per_seed if key in curves]
        shared = sorted(set.intersection(*(set(t) for t in tables))) if tables else []
        values = [[t[i] for t in tables] for i in shared]
        out[key] = (
            shared,
            [sum(v) / len(v) for v in values],
            [min(v) for v in values],
            [max(v) for v in values],
        )
    return out


def config_differences(wanted: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """Recipe fields whose stored value differs from the wanted one ("field: stored -> wanted")."""
    out = []
    for key, value in wanted.items():
        old = stored.get(key)
        value = json.loads(json.dumps(value))  # as config.json stores it: tuples, nested too, are lists
        if old != value:
            out.append(f"{key}: {old!r} -> {value!r}")
    return out


@dataclass
class Analysis:
    """What an experiment's analysis produced (its figures are the experiment's ``figures``)."""

    results: dict[str, Any]  # JSON-serialisable numbers (results.json)
    finding: str  # one paragraph, computed from the numbers
    shows: bool | None  # does the paper's finding show? None: not decidable at this budget
    tables: list[tuple[str, Table]] = field(default_factory=list)  # (caption, table)
    notes: list[str] = field(default_factory=list)
    # The two-sided verdict ("shows", "contradicts", "cannot be judged") where the experiment gives one.
    verdict: str | None = None


class Experiment:
    """One reproduced table or figure. Subclasses set the class attributes and override the methods."""

    name: str = ""
    title: str = ""
    paper: str = ""  # which paper, table or figure
    claim: str = ""  # what the paper found, in a sentence or two
    # (file name in the results folder, caption) of each figure the analysis draws, in report order.
    figures: tuple[tuple[str, str], ...] = ()
    # The budgets at which ``--detection-data`` (a VOC or COCO folder) is read; elsewhere it is refused.
    detection_data_budgets: tuple[str, ...] = ()

    def runs(self, ctx: Context) -> list[RunSpec]:
        """The training runs this experiment needs at ``ctx.budget`` (none by default)."""
        return []

    def comparisons(self, ctx: Context) -> list[Any]:
        """The paired comparisons (``paired.Comparison``) whose verdicts decide the experiment's; the
        runner gives their nets a third seed where a gap is within twice its standard error."""
        return []

    def settings(self, ctx: Context) -> dict[str, Any]:
        """Experiment-specific settings at this budget, recorded in the report (models, schedule ...)."""
        return {}

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        """Measure the finished ``runs``, draw ``figures`` into ``ctx.results_dir`` and judge the finding."""
        raise NotImplementedError

    def figure_paths(self, ctx: Context) -> list[Path]:
        """Where the analysis draws each of ``figures``."""
        return [ctx.results_dir / filename for filename, _ in self.figures]
