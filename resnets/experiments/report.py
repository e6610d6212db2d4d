"""Writing an experiment's artefacts: results.json and report.md (figures are written by the analysis).

Both files are written atomically, so a reproduce killed while writing leaves the previous version.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..io import write_json, write_text
from .base import Analysis, Context, Experiment, Runs, recipe_dict


def _jsonable(value: Any) -> Any:
    """Plain JSON types; non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.device):
        return str(value)
    return value


def _versions() -> dict[str, str]:
    return {"resnets": __version__, "torch": torch.__version__, "python": platform.python_version()}


def results_document(experiment: Experiment, ctx: Context, runs: Runs, analysis: Analysis) -> dict[str, Any]:
    """What results.json holds: the setup, each run's final numbers, the analysis, the finding."""
    return _jsonable(
        {
            "experiment": experiment.name,
            "title": experiment.title,
            "paper": experiment.paper,
            "budget": ctx.budget.name,
            "dataset": ctx.dataset,
            "device": ctx.device,
            "command": ctx.command,
            "settings": experiment.settings(ctx),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": _versions(),
            "runs": {
                name: {
                    "label": record.label,
                    "folder": record.folder,
                    "recipe": record.spec.recipe,
                    "overrides": dict(record.spec.overrides),
                    "final": record.final,
                }
                for name, record in runs.items()
            },
            "results": analysis.results,
            "finding": {"shows": analysis.shows, "verdict": analysis.verdict, "text": analysis.finding},
        }
    )


def report_markdown(experiment: Experiment, ctx: Context, runs: Runs, analysis: Analysis) -> str:
    """report.md: the claim, our finding, tables beside the paper's, figures, the budget and the commands."""
    one_sided = {True: "shows", False: "does not show", None: "cannot be judged at this budget"}
    verdict = analysis.verdict or one_sided[analysis.shows]
    lines = [
        f"# {experiment.title}",
        "",
        f"Reproduces: {experiment.paper}.",
        "",
        f"**The paper:** {experiment.claim}",
        "",
        f"## Finding ({verdict})",
        "",
        analysis.finding,
        "",
    ]
    for caption, table in analysis.tables:
        lines += [f"## {caption}", "", table.markdown(), ""]
    if experiment.figures:
        lines += ["## Figures", ""]
        for filename, caption in experiment.figures:
            lines += [f"![{caption}]({filename})", "", f"*{caption}*", ""]
    lines += ["## Budget", ""]
    if runs:  # the budget's data and schedule only matter to experiments that train
        lines += [
            f"`{ctx.budget.name}`: {ctx.budget.description}.",
            "",
            f"- dataset: {ctx.dataset}",
            f"- device: {ctx.device}",
        ]
    else:
        lines += [f"`{ctx.budget.name}`; no training runs.", ""]
    lines += [f"- {key}: {value}" for key, value in experiment.settings(ctx).items()]
    if runs:
        lines.append(f"- training length of each run: {_training_length(runs)}")
    lines += ["", "## Commands", "", "This report:", "", "```", ctx.command, "```", ""]
    if runs:
        lines += [
            "Each training run on its own (the same run folders; a finished run is not redone):",
            "",
            "```",
        ]
        lines += [record.spec.train_command(record.folder, ctx.data_dir) for record in runs.values()]
        lines += ["```", ""]
    if analysis.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in analysis.notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _training_length(runs: Runs) -> str:
    lengths = set()
    for record in runs.values():
        recipe = recipe_dict(record.spec)
        iterations = recipe["iterations"]
        lengths.add(f"{iterations} iterations" if iterations else f"{recipe['epochs']} epochs")
    return ", ".join(sorted(lengths))


def write_artifacts(experiment: Experiment, ctx: Context, runs: Runs, analysis: Analysis) -> dict[str, Path]:
    """Write results.json and report.md into ``ctx.results_dir``; return their paths."""
    results = write_json(ctx.results_dir / "results.json", results_document(experiment, ctx, runs, analysis))
    report = write_text(ctx.results_dir / "report.md", report_markdown(experiment, ctx, runs, analysis))
    return {"results": results, "report": report}
