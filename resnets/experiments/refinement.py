"""Iterative refinement: Greff, Srivastava and Schmidhuber 2017, "Highway and Residual Networks learn
Unrolled Iterative Estimation" (ICLR; arXiv 1612.07771), which the lecture cites.

Their view: a stage of a ResNet (the units between two changes of dimensionality) refines one estimate
of the same features rather than computing a new representation per unit, so the stage's first unit
changes its input a lot and every later unit only a little. On trained ResNets (``depth``'s runs, shared
when the output folder is shared) we measure each unit's relative change ||F(x)|| / ||x||
(``analysis.refinement``; the downsampling units against their shortcut's output) and the cosine between
the changes of successive units of a stage.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ..analysis.refinement import Refinement, StageRefinement, refinement, stage_of
from .base import Analysis, Context, Experiment, Runs, RunSpec, recipe_dict
from .plans import cifar_run, net_label
from .plots import plot_refinement
from .tables import Table
from .trained import TrainedNets

# Depths per budget: depth's paper-init ResNets (its plan holds 20..110 at the cpu and paper budgets, 8
# and 14 at smoke), so this experiment trains nothing after ``depth``. Not degradation's cpu ResNets:
# those start every branch at zero (zero_init_last), which would flatter "later units change little".
# Greff et al.'s CIFAR discussion is of ResNet-110-sized nets; 20 and 56 show how depth changes it. The
# smoke budget's ResNet-14 is the smallest with a later unit in every stage (ResNet-8 has one per stage).
DEPTHS: dict[str, tuple[int, ...]] = {"smoke": (14,), "cpu": (20, 56, 110), "paper": (20, 56, 110)}

# "Small" refinement: ||F(x)|| < 0.5 ||x||. Greff et al. give the stage-wise behaviour as figures, not a
# number; 0.5 is ours, chosen because then the unit's output x + F(x) stays within 30 degrees of the
# estimate x it refines (sin of the largest angle = ||F|| / ||x||; cosine >= 0.87): the same features,
# changed, rather than new ones.
SMALL_RATIO = 0.5
# A mean is "beyond the noise" when it is this many standard errors (over images) from the criterion.
NOISE_SIGMAS = 2.0


def first_unit_larger(stage: StageRefinement) -> bool | None:
    """Does the stage's first unit change its input more than the later units (median) do, by a margin
    beyond the spread of that gap across images? None: within the noise (or no later units)."""
    if stage.gap is None or stage.gap_std is None or stage.gap_se is None:
        return None
    if abs(stage.gap) <= NOISE_SIGMAS * stage.gap_se:
        return None
    # Beyond the noise; "a margin beyond the spread": larger than the gap's std over images too, so the
    # first unit's change is the larger one in most images, not only on average.
    return stage.gap > stage.gap_std


def later_units_small(stage: StageRefinement) -> bool | None:
    """Are the later units' changes small (median ratio below ``SMALL_RATIO``) beyond the noise?"""
    if stage.later_median is None or stage.later_median_se is None:
        return None
    margin = NOISE_SIGMAS * stage.later_median_se
    if stage.later_median + margin < SMALL_RATIO:
        return True
    if stage.later_median - margin > SMALL_RATIO:
        return False
    return None


def stage_cosines(measured: Refinement) -> dict[str, float]:
    """Mean cosine of successive units' changes, per stage (stages of one unit have none)."""
    by_stage: dict[str, list[float]] = {}
    for pair, cosine in zip(measured.pairs, measured.cosine, strict=True):
        by_stage.setdefault(stage_of(pair.split("->")[0]), []).append(cosine)
    return {stage: statistics.mean(values) for stage, values in by_stage.items()}


def _small(value: float) -> str:
    """A standard error or spread: 3 decimals, or 2 significant digits below 0.001 (not "0.000")."""
    return f"{value:.3f}" if value >= 1e-3 or value == 0 else f"{value:.1e}"


def _word(verdict: bool | None, judged: bool = True) -> str:
    if not judged:
        return "not judged"
    return "undecided" if verdict is None else "yes" if verdict else "no"


class IterativeRefinement(Experiment):
    name = "refinement"
    title = "Iterative refinement: after a stage's first unit, residual units make small changes"
    paper = (
        'Greff, Srivastava and Schmidhuber 2017, "Highway and Residual Networks learn Unrolled Iterative '
        'Estimation" (ICLR)'
    )
    claim = (
        "The units of a ResNet stage refine one estimate of the same features instead of each computing a "
        "new representation: the unit that starts a stage (where the dimensionality changes) changes the "
        "representation, and every later unit of the stage changes it only slightly (||F(x)|| small beside "
        "||x||)."
    )
    figures = (
        (
            "refinement.png",
            "Relative change ||F(x)|| / ||x|| of each unit (left; shaded: spread over images; squares: "
            "downsampling units, measured against their shortcut's output; dotted: stage boundaries, "
            f"dashed: {SMALL_RATIO}) and the cosine between successive units' changes within a stage "
            "(right), per trained ResNet",
        ),
    )

    def _specs(self, ctx: Context) -> list[tuple[int, RunSpec]]:
        return [(depth, cifar_run(ctx, "resnet", depth)) for depth in DEPTHS[ctx.budget.name]]

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for _, spec in self._specs(ctx)]

    def settings(self, ctx: Context) -> dict[str, Any]:
        return {
            "networks": ", ".join(net_label("resnet", d) for d in DEPTHS[ctx.budget.name])
            + " (depth's runs: the paper's initialisation)",
            "measured on": "the run's test split, network in eval mode",
            "relative change": "||F(x)|| / ||h(x)|| per image (h: the shortcut; x itself except in the "
            "downsampling units), averaged over images",
            "criteria": f"first unit of each downsampling stage above the later units' median by more than "
            f"{NOISE_SIGMAS:g} standard errors and the gap's spread over images; later units' median below "
            f"{SMALL_RATIO} by more than {NOISE_SIGMAS:g} standard errors",
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        nets = TrainedNets(ctx)
        measured: dict[str, Refinement] = {}
        results: dict[str, Any] = {}
        rows = []
        for depth, spec in self._specs(ctx):
            record = runs[spec.name]
            found = refinement(nets.model(record), nets.test_loader(record))
            measured[record.label] = found
            results[record.label] = {"kind": "resnet", "depth": depth, **found.to_dict()}
            cosines = stage_cosines(found)
            for stage in found.stage_summaries():
                rows.append([
                    record.label,
                    stage.stage,
                    len(stage.units),
                    "projection / option A" if stage.first_projected else "identity",
                    stage.first_ratio,
                    stage.later_median,
                    None if stage.gap is None else f"{stage.gap:+.3f} ± {_small(stage.gap_se)}",
                    stage.gap_std,
                    cosines.get(stage.stage),
                    _word(first_unit_larger(stage), judged=stage.first_projected and stage.gap is not None),
                    _word(later_units_small(stage), judged=stage.later_median is not None),
                ])
        (figure,) = self.figure_paths(ctx)
        plot_refinement(measured, figure, threshold=SMALL_RATIO,
                        title=f"relative change per unit, {ctx.dataset} test split (Greff et al. 2017)")
        caveat = ""
        if ctx.budget.name != "paper":
            iterations = recipe_dict(self._specs(ctx)[0][1]).get("iterations")
            caveat = (
                f" These nets trained {iterations} iterations on {ctx.dataset}, where Greff et al. analyse "
                "fully trained nets (CIFAR-10's 64k iterations at the paper budget): a short-trained net may "
                "not yet have settled into the stage-wise pattern, so this is no test of the paper's nets."
            )
        finding, shows, checks = self._finding(
            {label: m.stage_summaries() for label, m in measured.items()},
            {label: stage_cosines(m) for label, m in measured.items()},
            caveat=caveat,
        )
        results["checks"] = checks
        columns = [
            # "‖" rather than "|": a pipe would split the markdown table's cells.
            "network", "stage", "units", "first unit's shortcut", "first unit ‖F‖ / ‖h‖",
            "later units: median ‖F‖ / ‖x‖", "gap (first - median) ± s.e.", "gap's spread over images",
            "mean cosine of successive changes", "first unit larger?", f"later units < {SMALL_RATIO}?",
        ]
        caption = "Relative change of each stage's first unit and of the units after it (test split, eval)"
        notes = [
            "Greff et al. show the stage-wise behaviour in figures and state no numbers, so there is "
            f"nothing to set beside ours; the threshold {SMALL_RATIO} for a small change is ours (the output "
            "then stays within 30 degrees of the estimate it refines).",
            "Per image, the ratio is the norm of the branch's output F (before the addition) over the norm "
            "of the shortcut's output h over the whole feature map. For identity units h = x. For the units "
            "that downsample (the first of stages 2 and 3), x has another shape than F, so F is compared "
            "with the option-A shortcut's output, the estimate it is added to: a quarter of x's positions "
            "and zero new channels, so ||h|| < ||x|| and the ratio there is larger by construction (the "
            "new channels come from F alone: the 'new representation' of Greff et al.).",
            "Stage 1's first unit keeps the shape (its stage starts at the stem's conv, which changes the "
            "dimensionality in these CIFAR nets), so it is reported but not judged; Greff et al.'s stages "
            "begin where the dimensionality changes.",
            "The nets are depth's runs with the paper's initialisation; the cpu budget's degradation ResNets "
            "start every residual branch at zero, which would favour small changes without any training.",
        ]
        if ctx.budget.name != "paper" or ctx.dataset != "cifar10":
            notes.append("At this budget and dataset the nets are far shorter-trained than the paper's; the "
                         "pattern, not its exact size, is what the experiment tests.")
        return Analysis(results, finding, shows, tables=[(caption, Table(columns, rows))], notes=notes)

    @staticmethod
    def _finding(
        stages: Mapping[str, Sequence[StageRefinement]],
        cosines: Mapping[str, Mapping[str, float]],
        caveat: str = "",
    ) -> tuple[str, bool | None, list[dict[str, Any]]]:
        """The verdict: every downsampling stage's first unit larger and every stage's later units small,
        in every net. False if any check fails beyond the noise; None if some are within it. ``caveat``
        (why the budget may not show it) follows a verdict that is not True."""
        checks: list[dict[str, Any]] = []
        sentences = []
        for label, summaries in stages.items():
            parts = []
            for s in summaries:
                if s.later_median is None:
                    parts.append(f"{s.stage} has one unit ({s.first_ratio:.2f}), nothing to compare")
                    continue
                larger = first_unit_larger(s) if s.first_projected else None
                small = later_units_small(s)
                if s.first_projected:
                    checks.append({"network": label, "stage": s.stage, "check": "first unit larger",
                                   "verdict": larger, "gap": s.gap, "gap_se": s.gap_se, "gap_std": s.gap_std})
                checks.append({"network": label, "stage": s.stage, "check": "later units small",
                               "verdict": small, "later_median": s.later_median,
                               "later_median_se": s.later_median_se})
                factor = s.first_ratio / s.later_median if s.later_median > 0 else float("inf")
                first = ("downsampling first unit" if s.first_projected
                         else "first unit (identity, not judged)")
                parts.append(
                    f"{s.stage}: {first} {s.first_ratio:.2f}, later units' median {s.later_median:.2f} "
                    f"({factor:.1f}x; gap {s.gap:+.3f} ± {_small(s.gap_se)}, spread over images "
                    f"{_small(s.gap_std)})"
                )
            cos = cosines.get(label, {})
            cos_text = ", ".join(f"{stage} {value:+.2f}" for stage, value in cos.items())
            cos_part = f"; mean cosine of successive changes {cos_text}" if cos else ""
            sentences.append(f"{label}: " + "; ".join(parts) + cos_part)
        verdicts = [c["verdict"] for c in checks]
        failed = [c for c in checks if c["verdict"] is False]
        open_ = [c for c in checks if c["verdict"] is None]
        shows: bool | None
        if not checks:
            shows = None
            verdict = "No stage has more than one unit, so there is nothing to judge at this budget."
        elif failed:
            shows = False
            verdict = ("The paper's finding does not show: " + "; ".join(_failure(c) for c in failed) + "."
                       + caveat)
        elif all(v is True for v in verdicts):
            shows = True
            verdict = (
                "The paper's finding shows: in every net, each downsampling unit changes the representation "
                f"more than the units after it, which change it by less than {SMALL_RATIO} of its size."
            )
        else:
            shows = None
            verdict = ("Undecided: " + "; ".join(f"{c['network']} {c['stage']} ({c['check']})" for c in open_)
                       + " within the noise, the other checks pass." + caveat)
        text = (
            "Relative change ||F(x)|| / ||x|| per stage (the mean over images; the downsampling units "
            "against their shortcut's output). " + ". ".join(sentences) + ". " + verdict
        )
        return text, shows, checks


def _failure(check: Mapping[str, Any]) -> str:
    where = f"{check['network']} {check['stage']}"
    if check["check"] == "first unit larger":
        return (f"in {where} the first unit's change is not larger than the later units' by more than its "
                f"spread over images (gap {check['gap']:+.3f}, spread {check['gap_std']:.3f})")
    return (f"in {where} the later units change their input by a median {check['later_median']:.2f} of its "
            f"size, not below {SMALL_RATIO}")
