"""Lesion study: Veit, Wilber and Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively
Shallow Networks", Sec. 4.1 (deleting single units, Fig. 3) and Sec. 5 (path lengths and gradients, Fig. 6).

A trained ResNet and plain net of one depth (degradation's runs, shared when the output folder is), and a
VGG-style net (max-pool downsampling, no shortcuts: the contrast of Veit et al. Fig. 3, whose VGG "drops
to chance" when any layer is deleted), each with the budget's seeds: delete one unit at a time and score
every test image; count the ResNet's paths by length and measure how much gradient each length carries.

The verdict, fixed before the runs: a deletion's cost is, per seed and test image, the error with a unit
deleted minus the intact net's error, averaged over the net's units. The ResNet's cost against the plain
net's and against the VGG-style net's, each on the same images (a hierarchical paired bootstrap over seeds
and images, ``compare_costs``): "shows" when both contrasts cost more beyond the interval with every seed
pair agreeing; "contradicts" when both cost less; otherwise "cannot be judged". Where the ResNet's cost
sits (its first stage's first unit against its downsampling units, which Veit et al. single out as the
costly ones) is measured the same way and reported; it decides nothing.

``compare_costs`` also serves ``ensembles`` (the cost of k units deleted at random).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from ..analysis.lesion import UnitLesions, image_errors, unit_lesions
from ..analysis.paths import gradient_by_path_length, path_length_fractions
from ..errors import ConfigError
from .base import Analysis, Context, Experiment, RunRecord, Runs, RunSpec
from .paired import Net, overall, run_precision, shows_flag, spread_cell, verdict_sentence
from .paper_numbers import VEIT_2016
from .plans import LESION_DEPTH as DEPTH
from .plans import LESION_VGG_DEPTH as VGG_DEPTH
from .plans import lesion_nets, lesion_runs
from .plots import Differences, plot_lesion, plot_path_lengths
from .stats import Direction, Interval, Judgement, bootstrap_difference, image_blocks, judge, seed_spread
from .tables import Table
from .trained import TrainedNets

# Gradient samples per path length (Veit et al. sample paths; each sample is one backward pass) and the
# images of the batch they are measured on (the ResNet's first seed).
GRADIENT_SAMPLES = {"smoke": 1, "cpu": 8, "paper": 32}
GRADIENT_BATCH = {"smoke": 8, "cpu": 128, "paper": 128}

# The bootstrap resamples images in this many interleaved blocks (``stats.image_blocks``).
IMAGE_BLOCKS = 250

SHOWS = (
    "The paper's finding shows: deleting a unit costs the ResNet less than it costs the plain net and the "
    "VGG-style net, each beyond the noise, as an ensemble of many paths would."
)
WHERE = {
    "shows": "so the cost sits in the downsampling units, as Veit et al. report",
    "contradicts": "so the cost sits in the first stage's first unit rather than in the downsampling units "
    "that Veit et al. single out",
    "cannot be judged": "so neither is costlier beyond the noise",
}


# --- the paired comparison of costs (shared with ensembles) -------------------------------------------


@dataclass(frozen=True)
class CostComparison:
    """B's cost of a lesion against A's on the same images: seeds x images costs in points, their paired
    interval and the two-sided verdict in the paper's direction (``expected``: B's cost "higher" or
    "lower" than A's)."""

    a: str
    b: str
    expected: Direction
    interval: Interval
    judgement: Judgement
    seeds_a: tuple[float, ...]  # each seed's mean cost, points
    seeds_b: tuple[float, ...]

    @property
    def name(self) -> str:
        return f"{self.b} vs {self.a}"

    @property
    def verdict(self) -> str:
        return self.judgement.verdict

    def sentence(self) -> str:
        a, b = seed_spread(self.seeds_a), seed_spread(self.seeds_b)
        return (
            f"{self.b} {b.mean:+.2f} points against {self.a} {a.mean:+.2f} ({b.n} and {a.n} seeds): "
            + self.judgement.sentence()
            + "."
        )

    def to_dict(self) -> dict[str, Any]:
        i = self.interval
        return {
            "a": self.a,
            "b": self.b,
            "expected": self.expected,
            "verdict": self.verdict,
            "difference": i.difference,
            "interval": [i.low, i.high],
            "standard_error": i.standard_error,
            "detectable_effect": self.judgement.detectable,
            "paper_effect": self.judgement.paper_effect,
            "cost_a_per_seed": list(self.seeds_a),
            "cost_b_per_seed": list(self.seeds_b),
        }


def compare_costs(
    a: str,
    costs_a: np.ndarray,
    b: str,
    costs_b: np.ndarray,
    *,
    expected: Direction = "higher",
    paper_effect: float | None = None,
) -> CostComparison:
    """Judge B's cost against A's: ``costs_*`` are seeds x images (the same images, in one order) of a
    lesion's cost per image as a fraction (the error with the lesion minus the intact net's, in [-1, 1]).
    A hierarchical bootstrap over each net's seeds and the shared images (``image_blocks``) gives the 95%
    interval of B's mean cost minus A's; ``stats.judge`` the verdict, with every seed pair's difference."""
    if costs_a.shape[1] != costs_b.shape[1]:
        raise ConfigError(f"{a} and {b} were scored on {costs_a.shape[1]} and {costs_b.shape[1]} images")
    points_a, points_b = 100 * np.asarray(costs_a, float), 100 * np.asarray(costs_b, float)
    interval = bootstrap_difference(
        image_blocks(points_a, IMAGE_BLOCKS), image_blocks(points_b, IMAGE_BLOCKS), paired=True
    )
    seeds_a = tuple(float(v) for v in points_a.mean(axis=1))
    seeds_b = tuple(float(v) for v in points_b.mean(axis=1))
    per_seed = [sb - sa for sa, sb in zip(seeds_a, seeds_b, strict=False)]
    judgement = judge(interval, expected, per_seed_differences=per_seed, paper_effect=paper_effect)
    return CostComparison(a, b, expected, interval, judgement, seeds_a, seeds_b)


def cost_differences(compared: Sequence[CostComparison]) -> Differences:
    """What a figure's comparison panel draws: B - A with its interval, by name and the paper's side."""
    return {
        f"{c.name}\n(paper: B {c.expected})": (c.interval.difference, c.interval.low, c.interval.high)
        for c in compared
    }


def check_same_images(labels: Mapping[str, np.ndarray]) -> None:
    """Paired comparisons need every net scored on the same images in the same order."""
    first_label, first = next(iter(labels.items()))
    for label, other in labels.items():
        if other.shape != first.shape or not np.array_equal(other, first):
            raise ConfigError(f"{label} and {first_label} were not evaluated on the same test images")


def labels_of(loader: Any) -> np.ndarray:
    """The labels of a test loader's images, in order."""
    return np.concatenate([y.cpu().numpy() for _, y in loader])


def run_score(record: RunRecord) -> Any:
    """``image_errors`` in the run's own evaluation precision (its intact error is then its test error)."""
    return partial(image_errors, dtype=run_precision(record))


# --- the experiment -----------------------------------------------------------------------------------


def signed_cell(values: Sequence[float]) -> str:
    """A table cell of costs: the mean over seeds, signed, and the seed range where there are several."""
    spread = seed_spread(values)
    if spread.n == 1:
        return f"{spread.mean:+.2f}"
    return f"{spread.mean:+.2f} ({spread.min:+.2f} to {spread.max:+.2f})"


def _seed_costs(lesions: Sequence[UnitLesions], units: Sequence[int] | None = None) -> np.ndarray:
    """Seeds x images: the cost of deleting one of ``units`` (all by default), averaged over them."""
    return np.stack([lesion.image_costs(units) for lesion in lesions])


def _unit_costs(lesions: Sequence[UnitLesions]) -> np.ndarray:
    """Seeds x units: each unit's cost in points (its error deleted minus the intact error)."""
    return np.array([[e - lesion.intact_error for e in lesion.deleted_errors] for lesion in lesions])


class Lesion(Experiment):
    name = "lesion"
    title = "Lesion study: deleting a unit hurts a ResNet little and breaks a plain net"
    paper = "Veit et al. 2016, Sec. 4.1 (Fig. 3) and Sec. 5 (Fig. 6)"
    claim = (
        "Deleting a single unit from a trained ResNet barely changes its test error (except, somewhat, "
        "the units that downsample), whereas deleting any layer of a plain net (VGG, their Fig. 3) drops it "
        "to chance. A ResNet of n units is an ensemble of 2^n paths of binomially distributed length, and "
        "almost all of its gradient comes from short paths (5 to 17 of ResNet-110's 54 units)."
    )
    figures = (
        (
            "lesion.png",
            "Test error with each unit deleted, mean over seeds with the seed range shaded, dotted: the "
            "intact net (a); the ResNet's cost of each deletion with the seed range, downsampling units in "
            "purple (b); the paired comparisons of the costs that decide the verdict (c) and where the "
            "ResNet's cost sits (d) (Veit et al. Fig. 3)",
        ),
        (
            "paths.png",
            "Path lengths, gradient norm of one path of each length, and the share of the total gradient by "
            "length (Veit et al. Fig. 6)",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return lesion_runs(ctx)

    def settings(self, ctx: Context) -> dict[str, Any]:
        b = ctx.budget.name
        nets = lesion_nets(ctx)
        settings = {
            "networks": f"ResNet-{DEPTH[b]}, plain-{DEPTH[b]}, VGG-{VGG_DEPTH[b]} (VGG-style, max-pool "
            "downsampling, no shortcuts)",
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in nets.values()),
            "measured on": "every image of the run's test split, network in eval mode, in the run's own "
            "evaluation precision; every unit deleted in turn",
            "gradient by path length": f"{GRADIENT_SAMPLES[b]} sampled paths per length on "
            f"{GRADIENT_BATCH[b]} test images, the ResNet's first seed",
        }
        if b == "cpu":
            # Estimated from one evaluation's CPU time (2026-12-07, Intel Xeon with AMX, bfloat16): ResNet-56
            # and plain-56 about 7 s per pass over 10,000 images on 2 cores, VGG-20 about 2.5 s.
            settings["cost"] = (
                "after degradation: VGG-20's 2 seeds (about 3 min each), then 28 evaluations of each "
                "ResNet-56 and plain-56 seed on 10,000 images (about 7 s each) and 19 of each VGG-20 seed "
                "(about 2.5 s): about 22 minutes (estimated)"
            )
        return settings

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        nets, trained = lesion_nets(ctx), TrainedNets(ctx)
        lesions: dict[str, list[UnitLesions]] = {}
        labels: dict[str, np.ndarray] = {}
        paths: dict[str, Any] = {}
        classes = 10
        for kind, net in nets.items():
            lesions[kind] = []
            for spec in net.specs:
                record = runs[spec.name]
                model, loader = trained.model(record), trained.test_loader(record)
                labels.setdefault(net.label, labels_of(loader))
                classes = model.num_classes
                lesions[kind].append(unit_lesions(model, loader, score=run_score(record)))
                if kind == "resnet" and not paths:
                    paths = self._paths(ctx, model, loader)
        check_same_images(labels)
        deciding, where = self._comparisons(nets, lesions)
        verdict = overall([c.verdict for c in deciding])
        lesion_figure, paths_figure = self.figure_paths(ctx)
        chance = 100 * (1 - 1 / classes)
        res = lesions["resnet"]
        plot_lesion(
            {nets[k].label: [lesion.deleted_errors for lesion in v] for k, v in lesions.items()},
            {nets[k].label: [lesion.intact_error for lesion in v] for k, v in lesions.items()},
            _unit_costs(res).tolist(),
            cost_differences(deciding),
            cost_differences([where]),
            lesion_figure,
            downsampling=res[0].downsampling,
            focus=nets["resnet"].label,
            chance=chance,
            title=f"deleting one unit, {ctx.dataset} test split (Veit et al. Fig. 3)",
        )
        plot_path_lengths(
            paths["fractions"],
            paths_figure,
            lengths=paths["lengths"],
            mean_norm=paths["mean_norm"],
            total_norm=paths["total_norm"],
            title=f"{nets['resnet'].label}: paths and their gradients (Veit et al. Fig. 6)",
        )
        results: dict[str, Any] = {
            nets[k].label: {"seeds": [lesion.to_dict() for lesion in v]} for k, v in lesions.items()
        }
        results.update(
            comparisons={c.name: c.to_dict() for c in deciding},
            where_the_cost_sits={**where.to_dict(), "costliest_units": self._costliest(res)},
            verdict=verdict,
            paths=paths,
            chance_error=chance,
            paper=VEIT_2016,
        )
        finding = self._finding(nets, lesions, deciding, where, verdict, paths)
        return Analysis(
            results,
            finding,
            shows_flag(verdict),
            tables=self._tables(nets, lesions),
            notes=self._notes(),
            verdict=verdict,
        )

    @staticmethod
    def _comparisons(
        nets: Mapping[str, Net], lesions: Mapping[str, Sequence[UnitLesions]]
    ) -> tuple[list[CostComparison], CostComparison]:
        """(deciding: each contrast's cost against the ResNet's; reported: the ResNet's first stage's first
        unit against its downsampling units)."""
        res_label, res = nets["resnet"].label, lesions["resnet"]
        res_costs = _seed_costs(res)
        deciding = [
            compare_costs(
                res_label,
                res_costs,
                nets[kind].label,
                _seed_costs(lesions[kind]),
                paper_effect=float(VEIT_2016["cost_gap"]),
            )
            for kind in ("plain", "vgg")
        ]
        down = [i for i, flag in enumerate(res[0].downsampling) if flag]
        where = compare_costs(
            "downsampling units",
            _seed_costs(res, down),
            res[0].block_names[0],
            _seed_costs(res, [0]),
            expected="lower",  # Veit et al.: the downsampling units are the costly ones
        )
        return deciding, where

    @staticmethod
    def _costliest(lesions: Sequence[UnitLesions], top: int = 3) -> list[dict[str, Any]]:
        """The units whose deletion costs most (mean over seeds), costliest first."""
        costs = _unit_costs(lesions)
        order = np.argsort(-costs.mean(axis=0), kind="stable")[:top]
        first = lesions[0]
        return [
            {
                "unit": first.block_names[i],
                "downsampling": first.downsampling[i],
                "cost": float(costs[:, i].mean()),
                "seed_range": [float(costs[:, i].min()), float(costs[:, i].max())],
            }
            for i in order
        ]

    @staticmethod
    def _paths(ctx: Context, model: torch.nn.Module, loader: Any) -> dict[str, Any]:
        batch = GRADIENT_BATCH[ctx.budget.name]
        xs, ys, have = [], [], 0
        for x, y in loader:
            xs.append(x)
            ys.append(y)
            have += len(y)
            if have >= batch:
                break
        x, y = torch.cat(xs)[:batch], torch.cat(ys)[:batch]
        grads = gradient_by_path_length(model, x, y, samples=GRADIENT_SAMPLES[ctx.budget.name])
        n = grads.num_blocks
        return {
            "num_blocks": n,
            "fractions": path_length_fractions(n),
            **grads.to_dict(),
            "share_below_half": grads.share_below((n + 1) // 2),
            "paths_below_half": sum(path_length_fractions(n)[: (n + 1) // 2]),
        }

    @classmethod
    def _finding(
        cls,
        nets: Mapping[str, Net],
        lesions: Mapping[str, Sequence[UnitLesions]],
        deciding: Sequence[CostComparison],
        where: CostComparison,
        verdict: str,
        paths: Mapping[str, Any],
    ) -> str:
        parts = []
        for kind, per_seed in lesions.items():
            costs = _unit_costs(per_seed).mean(axis=1)
            parts.append(
                f"{nets[kind].label} {float(costs.mean()):+.2f} points (seeds {float(costs.min()):+.2f} to "
                f"{float(costs.max()):+.2f}; intact {spread_cell([s.intact_error for s in per_seed])}%)"
            )
        text = "Deleting one unit costs on average " + ", ".join(parts) + ". "
        text += " ".join(c.sentence() for c in deciding) + " " + verdict_sentence(verdict, SHOWS) + " "
        res_label = nets["resnet"].label
        costliest = ", ".join(
            f"{u['unit']}{' (downsampling)' if u['downsampling'] else ''} {u['cost']:+.2f} "
            f"({u['seed_range'][0]:+.2f} to {u['seed_range'][1]:+.2f})"
            for u in cls._costliest(lesions["resnet"])
        )
        text += (
            f"Where the cost sits: {res_label}'s costliest units are {costliest} points (mean over seeds, "
            f"seed range); its first unit, {where.b}, against its downsampling units: "
            f"{where.judgement.sentence()}, "
            f"{WHERE[where.verdict]}. "
        )
        low, high = paths["central_90"]
        n = paths["num_blocks"]
        text += (
            f"Of the ResNet's 2^{n} paths, 90% of the gradient comes from paths through {low} to {high} of "
            f"its {n} units, and {100 * paths['share_below_half']:.0f}% from paths through fewer than half "
            f"its units, which are {100 * paths['paths_below_half']:.0f}% of all paths."
        )
        return text

    @staticmethod
    def _tables(
        nets: Mapping[str, Net], lesions: Mapping[str, Sequence[UnitLesions]]
    ) -> list[tuple[str, Table]]:
        rows = []
        for kind, per_seed in lesions.items():
            costs = _unit_costs(per_seed)
            worst = int(np.argmax(costs.mean(axis=0)))
            down = [i for i, flag in enumerate(per_seed[0].downsampling) if flag]
            rows.append(
                [
                    nets[kind].label,
                    len(per_seed),
                    spread_cell([s.intact_error for s in per_seed]),
                    spread_cell([float(np.mean(s.deleted_errors)) for s in per_seed]),
                    signed_cell(costs.mean(axis=1).tolist()),
                    signed_cell(np.median(costs, axis=1).tolist()),
                    f"{per_seed[0].block_names[worst]} {costs[:, worst].mean():+.2f}",
                    signed_cell(costs[:, down].mean(axis=1).tolist()) if down else None,
                    signed_cell(costs[:, 0].tolist()),
                ]
            )
        columns = [
            "network",
            "seeds",
            "intact error (%)",
            "mean error, one unit deleted (%)",
            "mean cost (points)",
            "median unit's cost",
            "costliest unit (points)",
            "downsampling units' cost",
            "first unit's cost",
        ]
        res = lesions["resnet"]
        costs = _unit_costs(res)
        unit_rows = [
            [name, "yes" if down else "", signed_cell(costs[:, i].tolist())]
            for i, (name, down) in enumerate(zip(res[0].block_names, res[0].downsampling, strict=True))
        ]
        label = nets["resnet"].label
        paper = Table(
            ["network (Veit et al., CIFAR-10)", "one unit or layer deleted"],
            [
                ["VGG", f"chance ({VEIT_2016['vgg_one_deletion_error']:.0f}% error)"],
                [VEIT_2016["network"], "about a point or less; the downsampling units somewhat more"],
            ],
        )
        return [
            (
                "The cost of deleting one unit (its branch removed, its shortcut kept): mean over seeds "
                "(seed range), points of test error",
                Table(columns, rows),
            ),
            (
                f"{label}: the cost of deleting each unit, mean over seeds (seed range), points",
                Table(["unit", "downsampling", "cost (points)"], unit_rows),
            ),
            ("The paper: what Veit et al.'s Fig. 3 shows (no table; read off the plot)", paper),
        ]

    @staticmethod
    def _notes() -> list[str]:
        return [
            "Veit et al. lesion ResNet-110 (54 units) and a VGG net on CIFAR-10 and give no table: a VGG "
            "layer's deletion drops to chance (90%), a ResNet unit's costs about a point or less, the "
            "downsampling units somewhat more (their Fig. 3, read off the plot; the paper effect of about "
            f"{VEIT_2016['cost_gap']:.0f} points is that gap).",
            "The cost of a deletion is the error with the unit deleted minus the intact net's error, on the "
            "same images in the same precision; the intervals are 95% paired bootstrap intervals over seeds "
            f"and the test images (resampled in {IMAGE_BLOCKS} interleaved blocks).",
            "The VGG-style net is a CIFAR net of 3x3 conv-BN-ReLU layers (16, 32, 64 maps) with 2x2 max "
            "pools between its stages (models/vgg.py, vgg_cifar); a deleted layer passes its input on, "
            "zero-padded where it widens. It is the plain contrast at VGG's depth; the plain net of the "
            "ResNet's depth is the other.",
            "In a plain net, deleting a unit keeps the parameter-free option-A mapping where the shape "
            "changes, so the rest of the net still receives a tensor of the right shape.",
        ]
