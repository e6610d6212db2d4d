"""Residual networks behave like ensembles: Veit, Wilber and Belongie 2016, "Residual Networks Behave Like
Ensembles of Relatively Shallow Networks", Sec. 4.2-4.3 (Fig. 5) with the VGG contrast of Fig. 3.

An ensemble degrades smoothly as members are removed. Veit et al. delete k residual units drawn at random
from a trained ResNet (Fig. 5(a)) and re-order its units by random swaps (Fig. 5(b), against the Kendall
tau of the new order): the test error rises smoothly with k and as tau falls. A net with a single path
(the plain net, VGG) collapses when any one of its layers goes. This experiment measures both curves on
``lesion``'s trained nets (the same runs and seeds: ResNet, plain net, VGG-style net), with at least 20
seeded draws per point and every image's error kept; re-orderings are binned by Kendall tau (equal-count
bins of 20 orders).

The verdict, fixed before the runs: the cost of deleting ``VERDICT_K`` units at random (per seed and test
image, the error with them deleted, averaged over the draws, minus the intact net's error) of the ResNet
against the plain net's and against the VGG-style net's, on the same images and the same draws (a
hierarchical paired bootstrap over seeds and images, ``lesion.compare_costs``): "shows" when both
contrasts cost more beyond the interval with every seed pair agreeing, "contradicts" when both cost less,
otherwise "cannot be judged". The curves' shape (largest step, rank correlation with the damage) is
measured and reported; it decides nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..analysis.lesion import DeletionCurve, ReorderingResult, deletion_curve, reordering_curve
from .base import Analysis, Context, Experiment, Runs, RunSpec
from .lesion import CostComparison, check_same_images, compare_costs, cost_differences, labels_of, run_score
from .paired import Net, overall, shows_flag, verdict_sentence
from .paper_numbers import VEIT_2016
from .plans import LESION_DEPTH as DEPTH
from .plans import LESION_VGG_DEPTH as VGG_DEPTH
from .plans import lesion_nets, lesion_runs
from .plots import plot_ensembles
from .stats import rank_correlation, sampling_noise
from .tables import Table
from .trained import TrainedNets

# The test images every draw is scored on: a fixed random subset (seed ``SUBSET_SEED``) where all 10,000
# would not fit the budget's time, None for all of them. At cpu each evaluation of ResNet-56 on 2,000
# images takes about 1.4 s on 2 cores, so the grid below (about 400 ResNet-56, 120 plain-56 and 120 VGG-20
# evaluations) takes about 14 minutes; on all 10,000 it would take over an hour.
TEST_IMAGES: dict[str, int | None] = {"smoke": None, "cpu": 2000, "paper": None}
SUBSET_SEED = 0
# Units deleted at random (k): the ResNet's curve up to about two thirds of its 25 shape-keeping units
# (Veit et al. go to 20 of ResNet-110's 54), the contrast nets (which collapse at k = 1) up to VERDICT_K.
KS = {
    "smoke": (0, 1, 2, 4),
    "cpu": (0, 1, 2, 4, 8, 12, 16),
    "paper": (0, 1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20),
}
CONTRAST_KS = {"smoke": (0, 1, 2), "cpu": (0, 1, 2, 4), "paper": (0, 1, 2, 4, 8)}
# Draws per point: distinct random unit sets per k, and re-orderings per Kendall-tau bin (the issue's
# "at least 20 draws per point"; 5 gave spreads of +-16 points). The smoke budget only checks the machinery.
DRAWS = {"smoke": 2, "cpu": 20, "paper": 20}
TAU_BINS = {"smoke": 2, "cpu": 4, "paper": 6}
DRAW_SEED = 0  # the same unit sets and orders for every seed of a net, so the seeds are paired by draw
# The verdict's k: 4 of the ResNet-56's 25 shape-keeping units (16%).
VERDICT_K = {"smoke": 2, "cpu": 4, "paper": 4}
PERCENTILES = (5.0, 95.0)  # error bars: the central 90% of the draws, pooled over seeds (inside 0-100%)

SHOWS = (
    "The paper's finding shows: with units deleted at random the ResNet's error grows far less than the "
    "plain net's and the VGG-style net's, each beyond the noise, as an ensemble's would."
)


def fixed_subset(loader: Any, images: int | None, seed: int = SUBSET_SEED, batch: int = 500) -> Any:
    """``images`` test images drawn once at random (seed ``seed``, in the split's order), as batches on
    the loader's device; the loader itself where ``images`` is None or not fewer than it holds."""
    if images is None:
        return loader
    xs, ys = zip(*loader, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    if images >= len(y):
        return loader
    pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:images].sort().values
    x, y = x[pick.to(x.device)], y[pick.to(y.device)]
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, images, batch)]


def curve_shape(damage: Sequence[float], means: Sequence[float], chance: float) -> dict[str, Any]:
    """How a curve of mean error against damage (units deleted, 1 - tau) rises, descriptively: its rise,
    its largest step between neighbouring points and that step's share of the way from the first point
    to ``chance``, and the rank correlation of error with damage (1: rises at every point)."""
    steps = [b - a for a, b in zip(means, means[1:], strict=False)]
    largest = max(steps, default=0.0)
    at = steps.index(largest) if steps else 0
    room = max(chance - means[0], 1e-9)
    return {
        "rise": means[-1] - means[0],
        "largest_step": largest,
        "largest_step_between": [damage[at], damage[min(at + 1, len(damage) - 1)]],
        "largest_step_share_to_chance": largest / room,
        "rank_correlation": rank_correlation(list(damage), list(means)) if len(means) >= 2 else 1.0,
    }


def _pooled(values: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """(mean, low, high percentile) of draws pooled over seeds (equal draws per seed)."""
    flat = [v for seed in values for v in seed]
    low, high = np.percentile(flat, PERCENTILES)
    return float(np.mean(flat)), float(low), float(high)


def deletion_points(curves: Sequence[DeletionCurve]) -> dict[int, tuple[float, float, float]]:
    """Per k: the mean error over seeds and draws and the draws' central percentiles."""
    first = curves[0]
    return {k: _pooled([c.errors[i] for c in curves]) for i, k in enumerate(first.ks)}


def reordering_points(results: Sequence[ReorderingResult]) -> list[dict[str, Any]]:
    """Per Kendall-tau bin (least re-ordered first): the mean tau, its range, the swaps made, and the mean
    error over seeds and orders with the orders' central percentiles."""
    first, points = results[0], []
    for members in first.bins():
        taus = [first.taus[i] for i in members]
        mean, low, high = _pooled([[r.errors[i] for i in members] for r in results])
        points.append(
            {
                "tau": float(np.mean(taus)),
                "tau_range": [min(taus), max(taus)],
                "swaps": sorted({first.swaps[i] for i in members}),
                "orders": len(members),
                "error": mean,
                "percentiles": [low, high],
            }
        )
    return points


class Ensembles(Experiment):
    name = "ensembles"
    title = "Ensembles: a ResNet degrades smoothly as units are deleted or re-ordered, a plain net collapses"
    paper = "Veit et al. 2016, Sec. 4.2-4.3 (Fig. 5(a) and 5(b)) with the VGG contrast of Fig. 3"
    claim = (
        "Deleting k residual units drawn at random from a trained ResNet-110 on CIFAR-10 (k up to about 20 "
        "of its 54) raises the test error smoothly with k, and re-ordering its units by random swaps raises "
        "it smoothly as the Kendall tau of the order falls, as one would expect of an ensemble of many "
        "paths; deleting any one layer of a VGG net drops it to chance."
    )
    figures = (
        (
            "ensembles.png",
            "Test error with k units deleted at random (a) and with the ResNet's units re-ordered, binned by "
            "Kendall tau (b): mean over seeds and draws, error bars the central 90% of the draws; dotted: "
            "chance; (c) the paired comparisons at the verdict's k (Veit et al. Fig. 5)",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return lesion_runs(ctx)

    def settings(self, ctx: Context) -> dict[str, Any]:
        b = ctx.budget.name
        nets = lesion_nets(ctx)
        images = TEST_IMAGES[b]
        data = "" if ctx.dataset == "cifar10" else f"; {ctx.dataset} instead of CIFAR-10"
        settings = {
            "networks": f"ResNet-{DEPTH[b]}, plain-{DEPTH[b]}, VGG-{VGG_DEPTH[b]} (lesion's runs, shared)",
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in nets.values()),
            "test images": "every image of the test split"
            if images is None
            else f"a fixed random {images:,} of the test images (seed {SUBSET_SEED}), the same for every "
            f"net and draw: an error near 8% is known to about +-{1.96 * sampling_noise(8.0, images):.1f} "
            "points (95%), a paired difference to its bootstrap interval",
            "random deletions": f"k in {list(KS[b])} of the units that keep their shape (ResNet), k in "
            f"{list(CONTRAST_KS[b])} (plain, VGG); {DRAWS[b]} distinct random sets per k, the same for "
            f"every seed (seed {DRAW_SEED})",
            "random re-orderings": f"the ResNet's units, {TAU_BINS[b] * DRAWS[b]} orders made by 1 to 32 "
            f"random swaps of two equal-shape units, binned by Kendall tau into {TAU_BINS[b]} bins of "
            f"{DRAWS[b]}",
            "verdict": f"the cost of deleting k={VERDICT_K[b]} units at random, ResNet against plain and VGG",
            "departures from the paper": f"ResNet-{DEPTH[b]} ({_units(DEPTH[b])} units) rather than "
            "ResNet-110 (54), to share lesion's runs; the VGG contrast is a CIFAR-style "
            f"VGG-{VGG_DEPTH[b]}{data}",
        }
        if b == "cpu":
            # Estimated from one evaluation's CPU time (2026-12-07, Intel Xeon with AMX, bfloat16): about
            # 0.7 ms per image for ResNet-56 or plain-56 on 2 cores, 0.25 ms for VGG-20.
            settings["cost"] = (
                "after lesion's runs: 2 x (6 x 20 deletions + 80 re-orderings) evaluations of ResNet-56, "
                "2 x 60 of plain-56 and 2 x 60 of VGG-20 on 2,000 images: about 14 minutes (estimated)"
            )
        return settings

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        b = ctx.budget.name
        nets, trained = lesion_nets(ctx), TrainedNets(ctx)
        curves: dict[str, list[DeletionCurve]] = {}
        reorders: list[ReorderingResult] = []
        labels: dict[str, np.ndarray] = {}
        subsets: dict[int, Any] = {}
        classes = 10
        for kind, net in nets.items():
            curves[kind] = []
            for spec in net.specs:
                record = runs[spec.name]
                model, full = trained.model(record), trained.test_loader(record)
                if id(full) not in subsets:  # the test set is drawn from once per distinct loader
                    subsets[id(full)] = fixed_subset(full, TEST_IMAGES[b])
                loader = subsets[id(full)]
                labels.setdefault(net.label, labels_of(loader))
                classes, score = model.num_classes, run_score(record)
                ks = KS[b] if kind == "resnet" else CONTRAST_KS[b]
                curve = deletion_curve(model, loader, ks, draws=DRAWS[b], seed=DRAW_SEED, score=score)
                curves[kind].append(curve)
                if kind == "resnet":
                    reorders.append(
                        reordering_curve(
                            model,
                            loader,
                            bins=TAU_BINS[b],
                            per_bin=DRAWS[b],
                            seed=DRAW_SEED,
                            intact=curve.intact,
                            score=score,
                        )
                    )
        check_same_images(labels)
        chance = 100 * (1 - 1 / classes)
        k = VERDICT_K[b]
        deciding = self._comparisons(nets, curves, k)
        verdict = overall([c.verdict for c in deciding])
        points = {nets[kind].label: deletion_points(c) for kind, c in curves.items()}
        reordered = reordering_points(reorders)
        (figure,) = self.figure_paths(ctx)
        plot_ensembles(
            {label: [(k_, *p) for k_, p in by_k.items()] for label, by_k in points.items()},
            [(p["tau"], p["error"], *p["percentiles"]) for p in reordered],
            float(np.mean([r.baseline_error for r in reorders])),
            cost_differences(deciding),
            chance,
            figure,
            reordered_label=nets["resnet"].label,
            title=f"random deletions and re-orderings, {ctx.dataset} test images (Veit et al. Fig. 5)",
        )
        shapes = self._shapes(nets, points, reordered, chance)
        results: dict[str, Any] = {
            nets[kind].label: {"deletions": [c.to_dict() for c in per_seed]}
            for kind, per_seed in curves.items()
        }
        results[nets["resnet"].label]["reorderings"] = [r.to_dict() for r in reorders]
        results.update(
            deletion_points={
                label: {str(k_): list(p) for k_, p in by_k.items()} for label, by_k in points.items()
            },
            reordering_points=reordered,
            comparisons={c.name: c.to_dict() for c in deciding},
            verdict_k=k,
            verdict=verdict,
            curve_shapes=shapes,
            chance_error=chance,
            test_images=int(len(next(iter(labels.values())))),
            paper=VEIT_2016,
        )
        finding = self._finding(nets, points, reordered, deciding, shapes, verdict, k, chance)
        return Analysis(
            results,
            finding,
            shows_flag(verdict),
            tables=self._tables(points, reordered, nets["resnet"].label),
            notes=self._notes(b),
            verdict=verdict,
        )

    @staticmethod
    def _comparisons(
        nets: Mapping[str, Net], curves: Mapping[str, Sequence[DeletionCurve]], k: int
    ) -> list[CostComparison]:
        """Each contrast's cost of k random deletions against the ResNet's, on the same images."""

        def costs(kind: str) -> np.ndarray:
            return np.stack([curve.image_costs(k) for curve in curves[kind]])

        return [
            compare_costs(
                f"{nets['resnet'].label}, k={k}",
                costs("resnet"),
                f"{nets[kind].label}, k={k}",
                costs(kind),
                paper_effect=float(VEIT_2016["cost_gap"]),
            )
            for kind in ("plain", "vgg")
        ]

    @staticmethod
    def _shapes(
        nets: Mapping[str, Net],
        points: Mapping[str, Mapping[int, tuple[float, float, float]]],
        reordered: Sequence[Mapping[str, Any]],
        chance: float,
    ) -> dict[str, Any]:
        """The curves' shapes (descriptive): the ResNet's deletions and re-orderings."""
        res = points[nets["resnet"].label]
        deletions = curve_shape(list(res), [p[0] for p in res.values()], chance)
        damage = [0.0, *(1 - p["tau"] for p in reordered)]
        means = [res[0][0] if 0 in res else reordered[0]["error"], *(p["error"] for p in reordered)]
        return {"resnet_deletions": deletions, "resnet_reorderings": curve_shape(damage, means, chance)}

    @staticmethod
    def _finding(
        nets: Mapping[str, Net],
        points: Mapping[str, Mapping[int, tuple[float, float, float]]],
        reordered: Sequence[Mapping[str, Any]],
        deciding: Sequence[CostComparison],
        shapes: Mapping[str, Mapping[str, Any]],
        verdict: str,
        k: int,
        chance: float,
    ) -> str:
        res_label = nets["resnet"].label
        curves = []
        for label, by_k in points.items():
            deleted = ", ".join(
                f"{m:.2f}% at k={k_} ({lo:.1f}-{hi:.1f})" for k_, (m, lo, hi) in by_k.items() if k_
            )
            start = f"from {by_k[0][0]:.2f}% intact to " if 0 in by_k else ""
            curves.append(f"{'the error of ' if not curves else 'of '}{label} {start}{deleted}")
        text = (
            "Deleting k units at random (mean over seeds and draws; in brackets the central 90% of the "
            f"draws) takes {'; '.join(curves)}. At k={k}: "
            + " ".join(c.sentence() for c in deciding)
            + " "
            + verdict_sentence(verdict, SHOWS)
        )
        d = shapes["resnet_deletions"]
        text += (
            f" The shape of {res_label}'s deletion curve (descriptive): its largest step, "
            f"{d['largest_step']:+.2f} points between k={d['largest_step_between'][0]} and "
            f"k={d['largest_step_between'][1]}, is {100 * d['largest_step_share_to_chance']:.0f}% of the way "
            f"to chance ({chance:.0f}%), and its rank correlation with k is {d['rank_correlation']:+.2f}. "
        )
        r = shapes["resnet_reorderings"]
        text += (
            f"Re-ordering {res_label}'s units by random swaps, binned by Kendall tau: "
            + ", ".join(
                f"{p['error']:.2f}% at tau {p['tau']:.2f} ({low:.1f}-{high:.1f})"
                for p in reordered
                for low, high in [p["percentiles"]]
            )
            + f"; the error's rank correlation with 1 - tau is {r['rank_correlation']:+.2f} and its largest "
            f"step {100 * r['largest_step_share_to_chance']:.0f}% of the way to chance (descriptive)."
        )
        return text

    @staticmethod
    def _tables(
        points: Mapping[str, Mapping[int, tuple[float, float, float]]],
        reordered: Sequence[Mapping[str, Any]],
        res_label: str,
    ) -> list[tuple[str, Table]]:
        def cell(point: tuple[float, float, float] | None) -> str | None:
            return None if point is None else f"{point[0]:.2f} ({point[1]:.2f}-{point[2]:.2f})"

        ks = sorted({k for by_k in points.values() for k in by_k})
        rows = [[k, *(cell(by_k.get(k)) for by_k in points.values())] for k in ks]
        columns = ["units deleted", *(f"{label} error (%)" for label in points)]
        reorder_rows = [
            [
                i + 1,
                f"{p['tau']:.3f} ({p['tau_range'][0]:.3f}-{p['tau_range'][1]:.3f})",
                ", ".join(str(s) for s in p["swaps"]),
                cell((p["error"], *p["percentiles"])),
            ]
            for i, p in enumerate(reordered)
        ]
        reorder_columns = ["tau bin", f"{res_label} mean Kendall tau (range)", "random swaps", "error (%)"]
        return [
            (
                "Test error with k units deleted at random: mean over seeds and draws (central 90% of the "
                "draws) (Veit et al. Fig. 5(a))",
                Table(columns, rows),
            ),
            (
                "Test error with the units re-ordered by random swaps, in equal-count bins of Kendall tau "
                "(Veit et al. Fig. 5(b))",
                Table(reorder_columns, reorder_rows),
            ),
            (
                "The paper: what Veit et al.'s Fig. 3 and 5 show (no table; read off the plots)",
                Table(
                    ["network (Veit et al., CIFAR-10)", "units deleted at random", "units re-ordered"],
                    [
                        [
                            f"{VEIT_2016['network']} ({VEIT_2016['units']} units)",
                            f"error rises smoothly up to {VEIT_2016['deleted_up_to']} deleted",
                            "error rises smoothly as the Kendall tau falls",
                        ],
                        ["VGG", f"chance ({VEIT_2016['vgg_one_deletion_error']:.0f}% error) at one", "-"],
                    ],
                ),
            ),
        ]

    @staticmethod
    def _notes(budget: str) -> list[str]:
        depth = DEPTH[budget]
        units = _units(depth)
        return [
            "Veit et al. plot these curves for ResNet-110 on CIFAR-10 and give no table, so the comparison "
            "is of shapes: a smooth rise for the ResNet, a collapse to chance (90% error on 10 classes) for "
            "a net without shortcuts.",
            f"The nets are lesion's (ResNet-{depth}, plain-{depth}, VGG-{VGG_DEPTH[budget]}), so one output "
            f"folder trains them once for both; ResNet-{depth} has {units} units ({units - 2} keep their "
            f"shape), so deleting k of them removes {54 / units:.1f} times the share of the net that "
            "deleting k of ResNet-110's 54 does.",
            "Units are drawn from those that keep their input's shape (lesion's single deletions cover the "
            "downsampling units); a deleted unit computes its shortcut (identity). Re-orderings swap two "
            "units of one shape at a time, so every unit still receives the shape it was trained on; the "
            "Kendall tau compares the new order with the original (1: unchanged).",
            "The cost of a deletion is, per image, the error with the units deleted (averaged over the "
            "draws) minus the intact net's error, in the run's own evaluation precision; the verdict's "
            "intervals are 95% paired bootstrap intervals over seeds and images.",
        ]


def _units(depth: int) -> int:
    """Residual units of a 6n+2 CIFAR net: 3 stages of n."""
    return 3 * ((depth - 2) // 6)
