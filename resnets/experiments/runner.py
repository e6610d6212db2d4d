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
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Context, Experiment, RunRecord, RunSpec, config_differences, get_budget, recipe_dict
from .report import write_artifacts

DEFAULT_OUTPUT = "runs/reproduce"


def _stored_recipe(folder: Path) -> dict[str, Any] | None:
    path = folder / "config.json"
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
    if stored is None:
        return "resume" if (folder / "last.pt").is_file() else "new"
    differences = config_differences(recipe_dict(spec), stored)
    if differences:
        raise ConfigError(
            f"run folder {folder} was trained with other settings ({'; '.join(differences[:4])}); "
            "use another --output, or delete that folder to retrain it"
        )
    if (folder / "summary.json").is_file():
        return "finished"
    return "resume" if (folder / "last.pt").is_file() else "new"


def load_record(spec: RunSpec, folder: Path) -> RunRecord:
    from ..train.logging import read_metrics, read_steps

    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return RunRecord(
        spec, folder, read_metrics(folder / "metrics.csv"), read_steps(folder / "steps.jsonl"), summary
    )


def train_run(spec: RunSpec, ctx: Context, log: Callable[[str], None]) -> RunRecord:
    """Train ``spec`` into ``ctx.runs_dir / spec.name`` unless it is already finished; resume if started."""
    from ..train.engine import train
    from ..train.recipes import RunOptions, TrainConfig, apply_overrides, get_recipe

    folder = ctx.runs_dir / spec.name
    state = check_run_folder(spec, folder)
    if state == "finished":
        log(f"[{ctx.experiment}] {spec.label}: finished run found in {folder}")
        return load_record(spec, folder)
    log(f"[{ctx.experiment}] {spec.label}: {'resuming' if state == 'resume' else 'training'} {folder}")
    recipe = apply_overrides(get_recipe(spec.recipe), dict(spec.overrides))
    options = RunOptions(
        output=str(folder),
        resume=str(folder) if state == "resume" else None,
        device=str(ctx.device),
        data_dir=ctx.data_dir,
    )
    result = train(TrainConfig(recipe=recipe, run=options))
    if result.get("interrupted"):
        log(f"[{ctx.experiment}] interrupted; run the same command again to continue where it stopped")
        raise KeyboardInterrupt
    return load_record(spec, folder)


def make_context(
    experiment: Experiment,
    *,
    budget: str = "cpu",
    dataset: str | None = None,
    data_dir: str | None = None,
    output: str | Path = DEFAULT_OUTPUT,
    device: str | None = None,
    iterations: int | None = None,
) -> Context:
    """Where and how ``experiment`` runs; the reproduce command is recorded for the report.

    ``iterations`` replaces the budget's training length for every run (the lr still drops at 50% and
    75%), e.g. to fit a slower machine; an experiment without training runs refuses it.
    """
    from ..runtime import select_device

    chosen = get_budget(budget)
    command = ["resnets", "reproduce", experiment.name, "--budget", chosen.name]
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ConfigError(f"iterations must be a positive integer, got {iterations!r}")
        if type(experiment).runs is Experiment.runs:
            raise ConfigError(f"{experiment.name} trains no networks, so --iterations does not apply to it")
        command += ["--iterations", str(iterations)]
    if dataset:
        command += ["--dataset", dataset]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    command += ["--output", str(output)]
    return Context(
        experiment=experiment.name,
        budget=chosen,
        dataset=dataset or chosen.dataset,
        data_dir=str(data_dir) if data_dir else None,
        output=Path(output),
        device=select_device(device),
        command=shlex.join(command),
        iterations=iterations,
    )


def reproduce(
    name: str,
    *,
    budget: str = "cpu",
    dataset: str | None = None,
    data_dir: str | None = None,
    output: str | Path = DEFAULT_OUTPUT,
    device: str | None = None,
    iterations: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Reproduce experiment ``name``: train its runs, analyse them, write results.json, figures, report.md.

    Returns the paths written (``results``, ``report``, and each figure under its file name).
    """
    from . import get_experiment

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    experiment = get_experiment(name)
    ctx = make_context(
        experiment,
        budget=budget,
        dataset=dataset,
        data_dir=data_dir,
        output=output,
        device=device,
        iterations=iterations,
    )
    specs = plan(experiment, ctx)
    records = {spec.name: train_run(spec, ctx, log) for spec in specs}
    log(f"[{ctx.experiment}] analysing {len(records)} run(s)")
    analysis = experiment.analyze(ctx, records)
    written = write_artifacts(experiment, ctx, records, analysis)
    for filename, _ in analysis.figures:
        written[filename] = ctx.results_dir / filename
    log(f"[{ctx.experiment}] report: {written['report']}")
    return written


def plan(experiment: Experiment, ctx: Context) -> list[RunSpec]:
    """The experiment's runs, checked before any work starts (recipes resolve, folders are compatible)."""
    specs = experiment.runs(ctx)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise AssertionError(f"experiment {experiment.name} names two runs alike: {names}")
    from ..train.build import check_names
    from ..train.recipes import apply_overrides, get_recipe

    for spec in specs:
        # Unknown models, options, datasets or recipe fields: a ConfigError now, not after hours of training.
        check_names(apply_overrides(get_recipe(spec.recipe), dict(spec.overrides)))
        check_run_folder(spec, ctx.runs_dir / spec.name)
    return specs
