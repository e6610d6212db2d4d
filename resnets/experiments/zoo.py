"""The shared zoo of runs: every experiment in the order that shares most (``resnets reproduce --all``),
the plan of what each adds with an estimated time, and what ``--plan`` says of the runs' recipes.

Runs are named after everything that changes their weights (``Context.run``), so a network is trained
once per (model, options, recipe, seed) and reused by every experiment that needs it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..summary import summary
from . import get_experiment
from .base import Context, Experiment, RunSpec, recipe_dict
from .runner import ReproduceOptions, check_run_folder, make_context, options_with, plan, reproduce

# ``--all``: the order that shares most (each experiment reuses the runs of those before it: degradation
# trains the plain and residual nets that responses, depth, shortcuts and identity-mappings reuse).
ALL_ORDER = (
    "degradation",
    "responses",
    "depth",
    "shortcuts",
    "identity-mappings",
    "identity-toy",
    "lesion",
    "ensembles",
    "recurrent",
    "refinement",
    "width",
    "cardinality",
    "survey",
    "identity-1000",
    "detection",
    "segmentation",
)
# The rough cost of a training image on a 2-core CPU with bfloat16, fitted to the cpu budget's runs
# (Intel Xeon with AMX, batch 256, channels-last, 2026-12-07: plain and ResNet 20-56 at 28x28, 520-1,555
# images/s): a fixed cost per image and one per million multiply-adds of the forward pass. Float32 on an
# AVX2-only CPU: about 4x.
SECONDS_PER_IMAGE = 0.19e-3
SECONDS_PER_MEGA_MAC = 1.71e-5
# Models the multiply-adds underestimate, by their measured time against the fit (the survey's cpu runs,
# same machine, 2026-12-07): DenseNet-BC-52 1,349-1,626 s a run against 346 estimated (its batch-norm and
# ReLU passes over concatenated maps are memory-bound), FractalNet (C=3, B=3) 276 s against 145 (its
# columns' joins); the other families within 20% of the fit.
MEASURED_SLOWDOWN = {"densenet_cifar": 4.3, "fractalnet_cifar": 1.9}
DATASET_SHAPES = {
    "fashion-mnist": ((1, 28, 28), 60_000),
    "mnist": ((1, 28, 28), 60_000),
    "cifar10": ((3, 32, 32), 50_000),
    "cifar100": ((3, 32, 32), 50_000),
}


def estimate_seconds(spec: RunSpec, macs: dict[str, float]) -> float | None:
    """A rough training time of ``spec`` on a 2-core bfloat16 CPU (None: a dataset of unknown size);
    ``macs`` caches each model's multiply-adds per image."""
    recipe = spec.resolved()
    if recipe.dataset not in DATASET_SHAPES:
        return None
    shape, images = DATASET_SHAPES[recipe.dataset]
    images = recipe.train_subset or images - recipe.val_split
    key = json.dumps([recipe.model, recipe.model_kwargs, shape], sort_keys=True, default=str)
    if key not in macs:
        options = {**recipe.model_options, "in_chans": shape[0], "num_classes": 10}
        macs[key] = summary(recipe.model, shape, **options).total_mult_adds / 1e6
    steps = recipe.iterations or recipe.epochs * -(-images // recipe.batch_size)
    per_image = SECONDS_PER_IMAGE + SECONDS_PER_MEGA_MAC * macs[key]
    return steps * recipe.batch_size * per_image * MEASURED_SLOWDOWN.get(recipe.model, 1.0)


def _options_for(experiment: Experiment, options: ReproduceOptions) -> ReproduceOptions:
    """``options`` less what ``experiment`` refuses: ``--iterations`` where it trains nothing,
    ``--detection-data`` where it reads none."""
    if type(experiment).runs is Experiment.runs:
        options = replace(options, iterations=None)
    if options.budget not in experiment.detection_data_budgets:
        options = replace(options, detection_data=None)
    return options


Planned = list[tuple[Experiment, Context, list[RunSpec]]]


def plan_all(options: ReproduceOptions | None = None, **fields: Any) -> Planned:
    """Every experiment in ``ALL_ORDER`` with its context and the runs it adds to those planned before it."""
    options = options_with(options, fields)
    seen: set[str] = set()
    out = []
    for name in ALL_ORDER:
        experiment = get_experiment(name)
        ctx = make_context(experiment, _options_for(experiment, options))
        new = [spec for spec in plan(experiment, ctx) if spec.name not in seen]
        seen.update(spec.name for spec in new)
        out.append((experiment, ctx, new))
    return out


def plan_lines(planned: Planned) -> list[str]:
    """The ``--all`` plan: per experiment, the runs it adds (finished ones marked) and their estimated
    training time; the total last."""
    macs: dict[str, float] = {}
    lines, total, unknown = [], 0.0, False
    for experiment, ctx, specs in planned:
        todo = [s for s in specs if check_run_folder(s, ctx.runs_dir / s.name) != "finished"]
        estimates = [estimate_seconds(s, macs) for s in todo]
        known = sum(e for e in estimates if e is not None)
        unknown |= None in estimates
        total += known
        lines.append(
            f"{experiment.name:<18} {len(specs):>3} new run(s), {len(specs) - len(todo):>3} finished, "
            f"~{known / 60:.0f} min"
        )
    lines.append(
        f"total: ~{total / 3600:.1f} h of training on a 2-core CPU with bfloat16 (about 4x in "
        "float32), plus the analyses" + ("; some runs' time unknown" if unknown else "")
    )
    return lines


def reproduce_all(
    options: ReproduceOptions | None = None, *, log: Callable[[str], None] | None = None, **fields: Any
) -> dict[str, dict[str, Path]]:
    """Every experiment in ``ALL_ORDER``, sharing runs; the plan with its estimated time is logged first.
    Interrupted, the same call resumes: finished runs are reused, a started one continues."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    options = options_with(options, fields)
    for line in plan_lines(plan_all(options)):
        log(line)
    return {name: reproduce(name, _options_for(get_experiment(name), options), log=log) for name in ALL_ORDER}


SHOWN_FIELDS = (
    "recipe",
    "epochs",
    "iterations",
    "batch_size",
    "lr",
    "schedule",
    "warmup",
    "weight_decay",
    "label_smoothing",
    "val_split",
    "train_subset",
    "test_subset",
    "final_test_only",
    "init",
)


def recipe_summary(specs: list[RunSpec]) -> list[str]:
    """What ``--plan`` says of the runs' recipes: the values every run shares on one line, and each field
    whose value differs with its values (the comparison's fairness, visible before any training)."""
    values: dict[str, set[str]] = {name: set() for name in SHOWN_FIELDS}
    for spec in specs:
        recipe = {**recipe_dict(spec), "recipe": spec.recipe}
        zero_init = recipe["model_kwargs"].get("zero_init_last", False)
        recipe["init"] = "zero-init residual branches" if zero_init else "the model's (the paper's)"
        for name in SHOWN_FIELDS:
            values[name].add(str(recipe[name]))
    shared = [f"{name}={next(iter(v))}" for name, v in values.items() if len(v) == 1]
    lines = ["every run: " + ", ".join(shared)] if specs else []
    lines += [f"differs: {name} in {sorted(v)}" for name, v in values.items() if len(v) > 1]
    return lines
