"""Running an experiment: train its runs (resuming, skipping finished ones), analyse, write the artefacts.

Each run is an ordinary ``resnets train`` run folder under ``OUTPUT/runs/<name>``. A run is finished
when its folder holds ``summary.json`` (the engine writes it last); a folder with a checkpoint but no
summary is resumed; a folder trained with other settings is an error (never silently reused or
overwritten).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runs import RunFolder
from ..runtime import select_device
from ..train import engine
from ..train.build import check_names
from ..train.recipes import RunOptions, TrainConfig
from . import get_experiment
from .base import (
    DEFAULT_BUDGET,
    Context,
    Experiment,
    RunRecord,
    RunSpec,
    config_differences,
    get_budget,
    recipe_dict,
)
from .paired import Scores, compare, more_seeds
from .report import write_artifacts

DEFAULT_OUTPUT = "runs/reproduce"


@dataclass(frozen=True)
class ReproduceOptions:
    """How to reproduce an experiment: the options of ``resnets reproduce`` (one field a flag)."""

    budget: str = DEFAULT_BUDGET
    dataset: str | None = None  # None: the budget's dataset
    data_dir: str | Path | None = None
    output: str | Path = DEFAULT_OUTPUT  # runs go to OUTPUT/runs, reports to OUTPUT/<experiment>
    device: str | None = None  # None: the best available
    # Replaces the budget's training length for every run (the lr still drops at 50% and 75%), e.g. to
    # fit a slower machine; an experiment without training runs refuses it.
    iterations: int | None = None
    detection_data: str | Path | None = None  # a VOC or COCO folder, where the experiment reads one
    seeds: int | None = None  # seeds of each compared network (None: the budget's)


def options_with(options: ReproduceOptions | None, fields: dict[str, Any]) -> ReproduceOptions:
    """``options`` (default: the defaults) with the keyword ``fields`` replaced."""
    return replace(options or ReproduceOptions(), **fields)


def _stored_recipe(folder: Path) -> dict[str, Any] | None:
    path = RunFolder(folder).config_path
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["recipe"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{path} is not a readable run config ({exc}); delete {folder} to retrain it"
        ) from None


def check_run_folder(spec: RunSpec, folder: Path) -> str:
    """'new', 'resume' or 'finished'; raises ConfigError when the folder holds a different run."""
    stored = _stored_recipe(folder)
    run = RunFolder(folder)
    if stored is None:
        return "resume" if run.last.is_file() else "new"
    differences = config_differences(recipe_dict(spec), stored)
    if differences:
        raise ConfigError(
            f"run folder {folder} was trained with other settings ({'; '.join(differences[:4])}); "
            "use another --output, or delete that folder to retrain it"
        )
    if run.finished:
        return "finished"
    return "resume" if run.last.is_file() else "new"


def load_record(spec: RunSpec, folder: Path) -> RunRecord:
    run = RunFolder(folder)
    return RunRecord(spec, folder, run.metrics(), run.steps(), run.summary() or {})


def train_run(spec: RunSpec, ctx: Context, log: Callable[[str], None]) -> RunRecord:
    """Train ``spec`` into ``ctx.runs_dir / spec.name`` unless it is already finished; resume if started."""
    folder = ctx.runs_dir / spec.name
    state = check_run_folder(spec, folder)
    if state == "finished":
        log(f"[{ctx.experiment}] {spec.label}: finished run found in {folder}")
        return load_record(spec, folder)
    log(f"[{ctx.experiment}] {spec.label}: {'resuming' if state == 'resume' else 'training'} {folder}")
    options = RunOptions(
        output=str(folder),
        resume=str(folder) if state == "resume" else None,
        device=str(ctx.device),
        data_dir=ctx.data_dir,
    )
    result = engine.train(TrainConfig(recipe=spec.resolved(), run=options))
    if result.get("interrupted"):
        log(f"[{ctx.experiment}] interrupted; run the same command again to continue where it stopped")
        raise KeyboardInterrupt
    return load_record(spec, folder)


def make_context(experiment: Experiment, options: ReproduceOptions | None = None, **fields: Any) -> Context:
    """Where and how ``experiment`` runs under ``options`` (keyword ``fields`` replace some of them);
    the reproduce command is recorded for the report."""
    options = options_with(options, fields)
    budget, iterations = get_budget(options.budget), options.iterations
    command = ["resnets", "reproduce", experiment.name, "--budget", budget.name]
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ConfigError(f"iterations must be a positive integer, got {iterations!r}")
        if type(experiment).runs is Experiment.runs:
            raise ConfigError(f"{experiment.name} trains no networks, so --iterations does not apply to it")
        command += ["--iterations", str(iterations)]
    seeds = budget.seeds if options.seeds is None else options.seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 20:
        raise ConfigError(f"seeds must be an integer from 1 to 20, got {seeds!r}")
    if options.seeds is not None:
        command += ["--seeds", str(seeds)]
    if options.dataset:
        command += ["--dataset", options.dataset]
    if options.data_dir:
        command += ["--data-dir", str(options.data_dir)]
    if options.detection_data:
        if budget.name not in experiment.detection_data_budgets:
            raise ConfigError(
                f"{experiment.name} at --budget {budget.name} reads no detection data: drop --detection-data "
                "(it is for detection at --budget paper)"
            )
        command += ["--detection-data", str(options.detection_data)]
    command += ["--output", str(options.output)]
    return Context(
        experiment=experiment.name,
        budget=budget,
        dataset=options.dataset or budget.dataset,
        data_dir=str(options.data_dir) if options.data_dir else None,
        output=Path(options.output),
        device=select_device(options.device),
        command=shlex.join(command),
        iterations=iterations,
        seeds=seeds,
        detection_data=Path(options.detection_data) if options.detection_data else None,
    )


def reproduce(
    name: str,
    options: ReproduceOptions | None = None,
    *,
    log: Callable[[str], None] | None = None,
    **fields: Any,
) -> dict[str, Path]:
    """Reproduce experiment ``name`` under ``options`` (keyword ``fields`` replace some of them): train
    its runs, analyse them, write results.json, figures, report.md.

    Returns the paths written (``results``, ``report``, and each figure under its file name).
    """
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    experiment = get_experiment(name)
    ctx = make_context(experiment, options, **fields)
    specs = plan(experiment, ctx)
    records = {spec.name: train_run(spec, ctx, log) for spec in specs}
    more = more_seeds(ctx, [compare(Scores(ctx, records), c) for c in experiment.comparisons(ctx)])
    if more:
        log(
            f"[{ctx.experiment}] a deciding gap is within twice its standard error: another seed for "
            + ", ".join(sorted(more))
        )
        ctx.extra_seeds.update(more)
        for spec in plan(experiment, ctx):
            if spec.name not in records:
                records[spec.name] = train_run(spec, ctx, log)
    log(f"[{ctx.experiment}] analysing {len(records)} run(s)")
    analysis = experiment.analyze(ctx, records)
    written = write_artifacts(experiment, ctx, records, analysis)
    for filename, _ in experiment.figures:
        written[filename] = ctx.results_dir / filename
    log(f"[{ctx.experiment}] report: {written['report']}")
    return written


def plan(experiment: Experiment, ctx: Context) -> list[RunSpec]:
    """The experiment's runs, checked before any work starts (recipes resolve, folders are compatible)."""
    specs = experiment.runs(ctx)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise AssertionError(f"experiment {experiment.name} names two runs alike: {names}")
    for spec in specs:
        # Unknown models, options, datasets or recipe fields: a ConfigError now, not after hours of training.
        check_names(spec.resolved())
        check_run_folder(spec, ctx.runs_dir / spec.name)
    return specs
