"""Iterative refinement: Greff, Srivastava and Schmidhuber 2017, "Highway and Residual Networks learn
Unrolled Iterative Estimation" (ICLR; arXiv 1612.07771), which the lecture cites.

Their view: a stage of a ResNet (the units between two changes of dimensionality) refines one estimate
of the same features rather than computing a new representation per unit, so the unit that starts a stage
changes its input a lot and the later units of the stage less. On trained ResNets (the runs of
``degradation`` and ``depth``, shared by name when the output folder is) we measure each unit's relative
change ||F(x)|| / ||h(x)|| on every test image (``analysis.refinement``; h is x itself except in the
downsampling units, where it is the shortcut's output) and the cosine between the changes of successive
units of a stage.

The verdict, fixed in code before the runs (issue 30), is relative: in each stage whose first unit changes
the dimensionality (the downsampling units that start stages 2 and 3), the later units' median relative
change minus the first unit's, per image and seed, judged two-sided on a bootstrap over seeds and images:
"shows" where it is below zero beyond the noise with every seed agreeing, "contradicts" where it is above
zero likewise, else "cannot be judged" with the smallest difference the budget could detect. The
experiment shows when every such stage of every net shows (``paired.overall``). Stage 1's first unit keeps
the shape (the stem's conv changed the dimensionality before it), so stage 1 is measured the same way and
reported, not judged: Greff et al. do not say whether the first refinement of the stem's estimate is the
large one.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analysis.refinement import Refinement, refinement, stage_of
from ..runs import RunFolder
from .base import Analysis, Context, Experiment, Runs, RunSpec
from .paired import Net, overall, shows_flag, spread_cell
from .plans import cifar_net, cifar_run, net_label
from .plots import plot_refinement
from .stats import Judgement, Spread, bootstrap_difference, image_blocks, judge, seed_spread
from .tables import Table
from .trained import TrainedNets

# The ResNets measured: Greff et al.'s CIFAR discussion is of ResNet-110-sized nets; 20 and 56 show how
# depth changes it. All are trained by degradation (20, 56) and depth (20, 110) with the budget's recipe
# and seeds, so this experiment trains nothing of its own. The smoke budget's ResNet-14 is the smallest
# with a later unit in every stage (ResNet-8 has one unit per stage).
DEPTHS: dict[str, tuple[int, ...]] = {"smoke": (14,), "cpu": (20, 56, 110), "paper": (20, 56, 110)}

# The bootstrap resamples the test images in this many interleaved blocks (``stats.image_blocks``).
BLOCKS = 100

SHOWS = (
    "The paper's finding shows: in every net, each stage that starts by changing the dimensionality has its "
    "later units change their input less than its first unit does, beyond the noise of seeds and images."
)


def with_finished_seeds(ctx: Context, net: Net, make: Callable[[int], RunSpec]) -> Net:
    """``net`` with every further seed its output folder already holds finished (degradation trains a third
    seed of ResNet-20 and ResNet-56 where its deciding gap is close): more seeds at no cost, never a run
    to train."""
    specs = list(net.specs)
    while RunFolder(ctx.runs_dir / (spec := make(len(specs))).name).finished:
        specs.append(spec)
    return Net(net.key, net.label, tuple(specs))


def refinement_nets(ctx: Context) -> dict[int, Net]:
    """The measured ResNets by depth, each with the budget's seeds (the shared runs' names) and any further
    finished ones."""

    def seeded(depth: int) -> Net:
        return with_finished_seeds(
            ctx, cifar_net(ctx, "resnet", depth), lambda seed: cifar_run(ctx, "resnet", depth, seed=seed)
        )

    return {depth: seeded(depth) for depth in DEPTHS[ctx.budget.name]}


@dataclass(frozen=True)
class StageVerdict:
    """One stage of one net: the later units' median relative change against the first unit's."""

    network: str
    stage: str
    deciding: bool  # the stage's first unit changes the dimensionality
    first_values: tuple[float, ...]  # per seed: the first unit's ratio, mean over images
    later_values: tuple[float, ...]  # per seed: the later units' median ratio, mean over images
    judgement: Judgement  # later - first, the paper's side "lower"
    per_seed: tuple[float, ...]  # later - first per seed

    @property
    def name(self) -> str:
        return f"{self.network} {self.stage}"

    @property
    def first(self) -> Spread:
        return seed_spread(self.first_values)

    @property
    def later(self) -> Spread:
        return seed_spread(self.later_values)

    @property
    def quotient(self) -> float:
        """How much the later units change their input, as a fraction of the first unit's change."""
        return self.later.mean / self.first.mean if self.first.mean > 0 else float("inf")

    def sentence(self) -> str:
        i = self.judgement.interval
        role = "" if self.deciding else " (identity first unit: reported, not judged)"
        text = (
            f"{self.stage}{role}: first unit {self.first.mean:.2f}, later units' median "
            f"{self.later.mean:.2f} "
            f"({self.quotient:.2f}x; later - first {i.difference:+.3f}, 95% interval {i.low:+.3f} to "
            f"{i.high:+.3f}), {self.judgement.verdict}"
        )
        if self.judgement.verdict == "cannot be judged":
            text += f" (smallest detectable difference {self.judgement.detectable:.3f})"
        return text

    def to_dict(self) -> dict[str, Any]:
        i = self.judgement.interval
        return {
            "network": self.network,
            "stage": self.stage,
            "deciding": self.deciding,
            "first_ratio": {"mean": self.first.mean, "min": self.first.min, "max": self.first.max},
            "later_median": {"mean": self.later.mean, "min": self.later.min, "max": self.later.max},
            "later_over_first": self.quotient,
            "difference": i.difference,
            "interval": [i.low, i.high],
            "standard_error": i.standard_error,
            "detectable_effect": self.judgement.detectable,
            "per_seed_differences": list(self.per_seed),
            "verdict": self.judgement.verdict,
        }


def judge_stage(
    network: str, stage: str, deciding: bool, first: np.ndarray, later: np.ndarray
) -> StageVerdict:
    """The verdict on one stage from seeds x images ratios of its first unit and its later units' median.

    The difference is taken per image and seed first, so the bootstrap (seeds, then blocks of images) keeps
    both pairings: the same image and the same net for the two units. ``bootstrap_difference`` against zeros
    is then the hierarchical bootstrap of that difference's mean.
    """
    difference = np.asarray(later, dtype=np.float64) - np.asarray(first, dtype=np.float64)
    blocks = image_blocks(difference, BLOCKS)
    interval = bootstrap_difference(np.zeros_like(blocks), blocks, paired=True)
    per_seed = tuple(float(v) for v in difference.mean(axis=1))
    return StageVerdict(
        network,
        stage,
        deciding,
        tuple(float(v) for v in np.asarray(first).mean(axis=1)),
        tuple(float(v) for v in np.asarray(later).mean(axis=1)),
        judge(interval, "lower", per_seed_differences=per_seed),
        per_seed,
    )


def stage_verdicts(network: str, measured: Sequence[Refinement]) -> list[StageVerdict]:
    """Every stage with later units of one net, measured once per seed."""
    out = []
    for stage, idx in measured[0].stage_units().items():
        pairs = [m.stage_images(stage) for m in measured]
        if pairs[0][1] is None:
            continue  # one unit: nothing after the first
        first = np.stack([f.numpy() for f, _ in pairs])
        later = np.stack([lat.numpy() for _, lat in pairs])
        out.append(judge_stage(network, stage, measured[0].projected[idx[0]], first, later))
    return out


def refinement_verdict(parts: Sequence[StageVerdict]) -> str:
    """Every deciding stage of every net must show; all contradicting contradicts; else undecided."""
    deciding = [p.judgement.verdict for p in parts if p.deciding]
    return overall(deciding) if deciding else "cannot be judged"


def closing(verdict: str, parts: Sequence[StageVerdict]) -> str:
    """The verdict in words, naming the stages that keep it from showing."""
    if verdict == "shows":
        return SHOWS
    deciding = [p for p in parts if p.deciding]
    if not deciding:
        return "No stage starts with a unit that changes the dimensionality, so there is nothing to judge."
    against = [p.name for p in deciding if p.judgement.verdict == "contradicts"]
    within = [
        f"{p.name} (smallest detectable {p.judgement.detectable:.3f})"
        for p in deciding
        if p.judgement.verdict == "cannot be judged"
    ]
    if verdict == "contradicts":
        return (
            "The opposite of the paper's finding holds: in every judged stage the later units change their "
            "input more than the first unit, beyond the noise."
        )
    text = "The finding cannot be judged as a whole:"
    if against:
        text += (
            " the later units change their input more than the first unit beyond the noise in "
            + ", ".join(against)
            + ";"
        )
    if within:
        text += " the difference is within the noise in " + ", ".join(within) + ";"
    shown = [p.name for p in deciding if p.judgement.verdict == "shows"]
    text += " it shows in " + (", ".join(shown) if shown else "no stage") + "."
    return text


def stage_cosines(measured: Refinement) -> dict[str, float]:
    """Mean cosine of successive units' changes, per stage (stages of one unit have none)."""
    by_stage: dict[str, list[float]] = {}
    for pair, cosine in zip(measured.pairs, measured.cosine, strict=True):
        by_stage.setdefault(stage_of(pair.split("->")[0]), []).append(cosine)
    return {stage: statistics.mean(values) for stage, values in by_stage.items()}


def _signed_cell(values: Sequence[float]) -> str:
    """A cell for values of either sign (cosines): the mean over seeds and the seed range, signed."""
    spread = seed_spread(values)
    if spread.n == 1:
        return f"{spread.mean:+.2f}"
    return f"{spread.mean:+.2f} ({spread.min:+.2f} to {spread.max:+.2f})"


class IterativeRefinement(Experiment):
    name = "refinement"
    title = "Iterative refinement: after a stage's first unit, residual units make smaller changes"
    paper = (
        'Greff, Srivastava and Schmidhuber 2017, "Highway and Residual Networks learn Unrolled Iterative '
        'Estimation" (ICLR)'
    )
    claim = (
        "The units of a ResNet stage refine one estimate of the same features instead of each computing a "
        "new representation: the unit that starts a stage (where the dimensionality changes) changes the "
        "representation, and the later units of the stage change it less."
    )
    figures = (
        (
            "refinement.png",
            "Relative change ||F(x)|| / ||h(x)|| of each unit (left) and the cosine between successive "
            "units' changes within a stage (right), per net: mean over seeds with the seed range shaded; "
            "squares: downsampling units, measured against their shortcut's output; dotted: stage "
            "boundaries. Bottom: later units' median minus the first unit's, per stage, with 95% intervals "
            "over seeds and images",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in refinement_nets(ctx).values() for spec in net.specs]

    def settings(self, ctx: Context) -> dict[str, Any]:
        nets = refinement_nets(ctx)
        return {
            "networks": ", ".join(net_label("resnet", d) for d in nets)
            + " (degradation's and depth's runs, the paper's initialisation: nothing new is trained)",
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in nets.values())
            + " (the budget's, and any further seed the output folder holds finished)",
            "measured on": "every image of the run's test split, network in eval mode",
            "relative change": "||F(x)|| / ||h(x)|| per image (h: the shortcut; x itself except in the "
            "downsampling units)",
            "criterion": "per stage whose first unit changes the dimensionality: the later units' median "
            "relative change minus the first unit's, per image and seed; 95% interval of a bootstrap over "
            f"seeds and {BLOCKS} interleaved blocks of test images; every such stage of every net must show",
            "cost": "no training after degradation and depth; the analysis runs every test image through "
            "each seed in float32 (measured 85 CPU-seconds per ResNet-110 seed, 15 per ResNet-20: about 4 "
            "min on 2 cores for three seeds of each net)",
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        trained = TrainedNets(ctx)
        measured: dict[str, list[Refinement]] = {}
        parts: list[StageVerdict] = []
        results: dict[str, Any] = {}
        test_errors: dict[str, list[float]] = {}
        for depth, net in refinement_nets(ctx).items():
            records = [runs[spec.name] for spec in net.specs]
            per_seed = [refinement(trained.model(r), trained.test_loader(r)) for r in records]
            measured[net.label] = per_seed
            test_errors[net.label] = [r.final_value("test_error") for r in records]
            parts += stage_verdicts(net.label, per_seed)
            results[net.label] = {
                "depth": depth,
                "seeds": len(records),
                "test_error": test_errors[net.label],
                "per_seed": [m.to_dict() for m in per_seed],
            }
        verdict = refinement_verdict(parts)
        results["stages"] = [p.to_dict() for p in parts]
        results["verdict"] = verdict
        (figure,) = self.figure_paths(ctx)
        plot_refinement(
            measured,
            {
                f"{p.name}" + ("" if p.deciding else " (reported)"): (
                    p.judgement.interval.difference,
                    p.judgement.interval.low,
                    p.judgement.interval.high,
                )
                for p in parts
            },
            figure,
            title=f"relative change per unit, {ctx.dataset} test split (Greff et al. 2017)",
        )
        return Analysis(
            results,
            self._finding(parts, test_errors, verdict),
            shows_flag(verdict),
            tables=[self._table(measured, parts)],
            notes=self._notes(),
            verdict=verdict,
        )

    @staticmethod
    def _finding(
        parts: Sequence[StageVerdict], test_errors: Mapping[str, Sequence[float]], verdict: str
    ) -> str:
        sentences = []
        for network, errors in test_errors.items():
            stages = "; ".join(p.sentence() for p in parts if p.network == network)
            head = f"{network} ({len(errors)} seeds, test error {spread_cell(errors)}%)"
            sentences.append(f"{head}: {stages or 'no stage with later units'}")
        return (
            "Relative change ||F(x)|| / ||h(x)||, mean over test images and seeds. "
            + ". ".join(sentences)
            + ". "
            + closing(verdict, parts)
        )

    @staticmethod
    def _table(
        measured: Mapping[str, Sequence[Refinement]], parts: Sequence[StageVerdict]
    ) -> tuple[str, Table]:
        cosines = {label: [stage_cosines(m) for m in per_seed] for label, per_seed in measured.items()}
        rows = []
        for p in parts:
            units = len(measured[p.network][0].stage_units()[p.stage])
            i = p.judgement.interval
            cos = [c[p.stage] for c in cosines[p.network] if p.stage in c]
            rows.append(
                [
                    p.network,
                    p.stage,
                    units,
                    "projection / option A" if p.deciding else "identity",
                    len(p.per_seed),
                    spread_cell(p.first_values),
                    spread_cell(p.later_values),
                    f"{p.quotient:.2f}",
                    f"{i.difference:+.3f} ({i.low:+.3f} to {i.high:+.3f})",
                    f"{p.judgement.detectable:.3f}",
                    _signed_cell(cos) if cos else None,
                    p.judgement.verdict if p.deciding else f"{p.judgement.verdict} (reported)",
                ]
            )
        columns = [
            # "‖" rather than "|": a pipe would split the markdown table's cells.
            "network",
            "stage",
            "units",
            "first unit's shortcut",
            "seeds",
            "first unit ‖F‖ / ‖h‖",
            "later units: median ‖F‖ / ‖x‖",
            "later / first",
            "later - first (95% interval)",
            "smallest detectable",
            "mean cosine of successive changes",
            "verdict",
        ]
        caption = "Relative change of each stage's first unit and of the units after it (test split, eval)"
        return caption, Table(columns, rows)

    @staticmethod
    def _notes() -> list[str]:
        return [
            "Greff et al. show the stage-wise behaviour in figures and state no numbers, so there is nothing "
            "to set beside ours and no threshold of ours: the criterion is relative (later units against the "
            "first unit of their stage).",
            "Per image, the ratio is the norm of the branch's output F (before the addition) over the norm "
            "of the shortcut's output h over the whole feature map. For identity units h = x. For the units "
            "that downsample (the first of stages 2 and 3), x has another shape than F, so F is compared "
            "with the option-A shortcut's output, the estimate it is added to: a quarter of x's positions "
            "and zero new channels, so ||h|| < ||x|| and the ratio there is larger by construction (the "
            "new channels come from F alone: the 'new representation' of Greff et al.).",
            "Stage 1's first unit keeps the shape (its stage starts at the stem's conv, which changes the "
            "dimensionality in these CIFAR nets), so stage 1 is reported but not judged.",
            "Values: the mean over seeds with the seed range in brackets; each seed's value is the mean over "
            f"every test image. Intervals: a bootstrap over seeds and {BLOCKS} interleaved blocks of test "
            "images (10,000 resamples).",
        ]
