"""Residual networks behave like ensembles: Veit, Wilber and Belongie 2016, "Residual Networks Behave Like
Ensembles of Relatively Shallow Networks", Sec. 4.3 (Fig. 5) with the VGG contrast of Fig. 3.

An ensemble degrades smoothly as members are removed. Veit et al. delete k residual units drawn at random
from a trained ResNet (Fig. 5(a)) and re-order its units by random swaps (Fig. 5(b), against the Kendall
tau of the new order): the test error rises smoothly with k and as tau falls. A net with a single path
(the plain net, VGG) collapses to chance when any one of its layers goes. This experiment measures both
curves on the trained nets of ``lesion`` (the same runs: ResNet, plain net and VGG-style net), several
seeded draws for each k or number of swaps, and reports the mean and spread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..analysis.lesion import DeletionCurve, ReorderingResult, deletion_curve, reordering_curve
from .base import Analysis, Context, Experiment, Runs, RunSpec
from .plans import LESION_DEPTH as DEPTH
from .plans import LESION_KINDS as KINDS
from .plans import LESION_VGG_DEPTH as VGG_DEPTH
from .plans import lesion_runs
from .plots import plot_ensembles
from .stats import evaluated_images, gap_noise, rank_correlation, sampling_noise
from .tables import Table
from .trained import TrainedNets

# Veit et al. 2016, Sec. 4.3 and Fig. 5 (qualitative: the paper plots the curves and gives no table): a
# ResNet-110 (54 residual units) on CIFAR-10, up to about 20 units deleted at random; the error rises
# smoothly with the units deleted and as the Kendall tau of a random re-ordering falls. Fig. 3: deleting
# any single layer of a VGG net drops it to chance, 90% error on 10 classes.
VEIT_FIG5: dict[str, Any] = {
    "network": "ResNet-110",
    "dataset": "CIFAR-10",
    "units": 54,
    "deleted_up_to": 20,
    "vgg_one_deletion_error": 90.0,
}

# Units deleted at random (k) and draws per k: the ResNet's curve in detail, the contrast nets (which
# collapse at k = 1) at fewer points. At cpu each (k, draw) is one evaluation of the 2,000 test images:
# about 80 ResNet-56-sized evaluations in all (41 ResNet deletions, 20 re-orderings, the plain net's 19)
# plus VGG-20's 13 (cheaper), a few minutes on 2 cores.
KS = {"smoke": (0, 1, 2, 4), "cpu": (0, 1, 2, 4, 6, 8, 10, 14, 18),
      "paper": (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 18, 20)}
DRAWS = {"smoke": 2, "cpu": 5, "paper": 10}
CONTRAST_KS = {"smoke": (0, 1, 2), "cpu": (0, 1, 2, 4, 8), "paper": (0, 1, 2, 4, 8, 12)}
CONTRAST_DRAWS = {"smoke": 1, "cpu": 3, "paper": 5}
# Random swaps of two equal-shape units per re-ordering, and draws per number of swaps (Fig. 5(b)); the
# plain net is re-ordered too, at fewer points, as the contrast.
SWAPS = {"smoke": (1, 2), "cpu": (1, 2, 4, 8, 16), "paper": (1, 2, 4, 8, 16, 32, 64)}
SWAP_DRAWS = {"smoke": 2, "cpu": 4, "paper": 10}
CONTRAST_SWAPS = {"smoke": (1,), "cpu": (1, 4, 16), "paper": (1, 4, 16, 64)}
CONTRAST_SWAP_DRAWS = {"smoke": 1, "cpu": 2, "paper": 5}
SEED = 0

# The verdict's thresholds. A contrast net "collapses" when one deletion closes at least half of the
# distance from its intact error to chance; the ResNet's cost of one deletion must be at most a third of
# the contrast's (lesion's criterion) and below it beyond 3 standard errors at every k both measure. The
# ResNet's curves are "smooth" when no step between neighbouring points closes half the distance to
# chance and, where they rise by more than 3 standard errors, the error rises with the damage (rank
# correlation at least 0.8).
COLLAPSE = 0.5
COST_RATIO = 1 / 3
JUMP = 0.5
MONOTONE = 0.8
NOISE_FACTOR = 3.0


def ensemble_specs(ctx: Context) -> dict[str, RunSpec]:
    """The lesion study's runs by kind ("resnet", "plain", "vgg"): the same RunSpecs, so one output folder
    trains them once for both experiments."""
    return lesion_runs(ctx)


def smoothness(xs: Sequence[float], means: Sequence[float], baseline: float, chance: float,
               noise: float) -> dict[str, Any]:
    """Whether a curve of mean error against damage (units deleted, swaps) degrades smoothly: no step
    between neighbouring points closes ``JUMP`` of the distance from ``baseline`` to ``chance``, and where
    it rises by more than ``NOISE_FACTOR`` x ``noise`` the error rises with the damage."""
    steps = [b - a for a, b in zip(means, means[1:], strict=False)]
    largest = max(steps, default=0.0)
    at = steps.index(largest) if steps else 0
    rise = means[-1] - means[0]
    rho = rank_correlation(list(xs), list(means)) if len(xs) >= 2 else 1.0
    monotone = rise <= NOISE_FACTOR * noise or rho >= MONOTONE
    no_jump = largest <= JUMP * max(chance - baseline, 0.0)
    return {"smooth": monotone and no_jump, "monotone": monotone, "no_jump": no_jump, "rise": rise,
            "largest_step": largest, "largest_step_between": [xs[at], xs[min(at + 1, len(xs) - 1)]],
            "rank_correlation": rho}


class Ensembles(Experiment):
    name = "ensembles"
    title = "Ensembles: a ResNet degrades smoothly as units are deleted or re-ordered, a plain net collapses"
    paper = "Veit et al. 2016, Sec. 4.3 (Fig. 5(a) and 5(b)) with the VGG contrast of Fig. 3"
    claim = (
        "Deleting k residual units drawn at random from a trained ResNet-110 on CIFAR-10 (k up to about 20 "
        "of its 54) raises the test error smoothly with k, and re-ordering its units by random swaps raises "
        "it smoothly as the Kendall tau of the order falls, as one would expect of an ensemble of many "
        "paths; deleting any one layer of a VGG net drops it to chance."
    )
    figures = (
        (
            "ensembles.png",
            "Test error with k units deleted at random, mean and spread over the draws (left; dotted: "
            "chance), and with the units re-ordered by random swaps against the Kendall tau of the order "
            "(right) (Veit et al. Fig. 5)",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return list(ensemble_specs(ctx).values())

    def settings(self, ctx: Context) -> dict[str, Any]:
        b = ctx.budget.name
        data = "" if ctx.dataset == "cifar10" else f"; {ctx.dataset} instead of CIFAR-10"
        return {
            "networks": f"ResNet-{DEPTH[b]}, plain-{DEPTH[b]}, VGG-{VGG_DEPTH[b]} (lesion's runs, shared)",
            "random deletions": f"k in {list(KS[b])} of the units that keep their shape, "
                                f"{_draws(DRAWS[b])} each (ResNet); k in {list(CONTRAST_KS[b])}, "
                                f"{_draws(CONTRAST_DRAWS[b])} each (plain, VGG); seed {SEED}",
            "random re-orderings": f"{list(SWAPS[b])} random swaps of two equal-shape units, "
                                   f"{_draws(SWAP_DRAWS[b])} each (ResNet); {list(CONTRAST_SWAPS[b])}, "
                                   f"{_draws(CONTRAST_SWAP_DRAWS[b])} each (plain)",
            "departures from the paper": f"ResNet-{DEPTH[b]} ({_units(DEPTH[b])} units) rather than "
                                         "ResNet-110 (54), to share lesion's runs; the VGG contrast is a "
                                         f"CIFAR-style VGG-{VGG_DEPTH[b]}{data}",
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        b = ctx.budget.name
        nets = TrainedNets(ctx)
        deletions: dict[str, tuple[str, DeletionCurve]] = {}
        reorderings: dict[str, tuple[str, ReorderingResult]] = {}
        chance, images = 90.0, 10_000
        for kind, spec in ensemble_specs(ctx).items():
            record = runs[spec.name]
            model, loader = nets.model(record), nets.test_loader(record)
            chance, images = 100 * (1 - 1 / model.num_classes), evaluated_images(record)
            resnet = kind == "resnet"
            curve = deletion_curve(model, loader, KS[b] if resnet else CONTRAST_KS[b],
                                   draws=DRAWS[b] if resnet else CONTRAST_DRAWS[b], seed=SEED)
            deletions[kind] = (record.label, curve)
            if kind in KINDS:
                reorderings[kind] = (record.label, reordering_curve(
                    model, loader, SWAPS[b] if resnet else CONTRAST_SWAPS[b],
                    draws=SWAP_DRAWS[b] if resnet else CONTRAST_SWAP_DRAWS[b], seed=SEED,
                    baseline_error=curve.baseline_error))
        (figure,) = self.figure_paths(ctx)
        plot_ensembles(
            {label: (c.ks, c.mean_errors, c.std_errors) for label, c in deletions.values()},
            {label: r for label, r in reorderings.values()},
            chance, figure,
            title=f"random deletions and re-orderings, {ctx.dataset} test split (Veit et al. Fig. 5)",
        )
        finding, shows, summary = self._finding(deletions, reorderings, chance, images)
        results: dict[str, Any] = {
            label: {"deletions": c.to_dict(),
                    **({"reorderings": reorderings[kind][1].to_dict()} if kind in reorderings else {})}
            for kind, (label, c) in deletions.items()
        }
        results.update(summary=summary, chance_error=chance, test_images=images, paper=VEIT_FIG5)
        return Analysis(results, finding, shows, tables=self._tables(deletions, reorderings),
                        notes=self._notes(b))

    @staticmethod
    def _tables(deletions: Mapping[str, tuple[str, DeletionCurve]],
                reorderings: Mapping[str, tuple[str, ReorderingResult]]) -> list[tuple[str, Table]]:
        def cell(values: Sequence[float], mean: float, std: float) -> str:
            spread = f" ± {std:.2f} ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
            return f"{mean:.2f}{spread}"

        ks = sorted({k for _, c in deletions.values() for k in c.ks})
        rows = []
        for k in ks:
            row: list[Any] = [k]
            for _, c in deletions.values():
                if k in c.ks:
                    i = c.ks.index(k)
                    row.append(cell(c.errors[i], c.mean_errors[i], c.std_errors[i]))
                else:
                    row.append(None)
            rows.append(row)
        columns = ["units deleted", *(f"{label} error (%)" for label, _ in deletions.values())]
        tables = [("Test error with k units deleted at random: mean ± spread (min-max) over the draws "
                   "(Veit et al. Fig. 5(a))", Table(columns, rows))]
        swaps = sorted({s for _, r in reorderings.values() for s in r.swaps})
        rows = []
        for s in swaps:
            row = [s]
            for _, r in reorderings.values():
                found = [entry for entry in r.by_swaps() if entry[0] == s]
                if found:
                    _, tau, mean, std = found[0]
                    errors = [e for e, v in zip(r.errors, r.swaps, strict=True) if v == s]
                    row += [tau, cell(errors, mean, std)]
                else:
                    row += [None, None]
            rows.append(row)
        columns = ["random swaps"]
        for label, _ in reorderings.values():
            columns += [f"{label} mean Kendall tau", f"{label} error (%)"]
        tables.append(("Test error with the units re-ordered by random swaps (Veit et al. Fig. 5(b))",
                       Table(columns, rows)))
        return tables

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
            "Spread: the sample standard deviation over the seeded draws, and their range. Each draw is "
            "measured on the same test images, so the spread is the draws' and the sampling noise of the "
            "test set adds to it.",
        ]

    @staticmethod
    def _finding(
        deletions: Mapping[str, tuple[str, DeletionCurve]],
        reorderings: Mapping[str, tuple[str, ReorderingResult]],
        chance: float,
        images: int,
    ) -> tuple[str, bool | None, dict[str, Any]]:
        res_label, res = deletions["resnet"]
        contrasts = {kind: deletions[kind] for kind in ("plain", "vgg") if kind in deletions}
        noise = sampling_noise(res.baseline_error, images)
        summary: dict[str, Any] = {"noise": noise}
        chance_noise = sampling_noise(chance, images)
        untrained = [label for label, c in deletions.values()
                     if c.baseline_error >= chance - NOISE_FACTOR * chance_noise]

        res_curve = smoothness(res.ks, res.mean_errors, res.baseline_error, chance, noise)
        summary["resnet_deletions"] = res_curve
        res1 = res.mean_at(1)
        deleted = ", ".join(f"{m:.2f}% at k={k}"
                            for k, m in zip(res.ks[1:], res.mean_errors[1:], strict=True))
        text = (
            f"Deleting k units at random from {res_label} (mean of up to {max(map(len, res.errors))} draws) "
            f"takes its test error from {res.baseline_error:.2f}% intact to {deleted} (largest spread over "
            f"draws {max(res.std_errors):.2f} points). The curve changes by {res_curve['rise']:+.2f} points "
            f"(rank correlation with k {res_curve['rank_correlation']:+.2f}); its largest step, "
            f"{res_curve['largest_step']:+.2f} points between k={res_curve['largest_step_between'][0]} and "
            f"k={res_curve['largest_step_between'][1]}, is {'less' if res_curve['no_jump'] else 'more'} "
            f"than half the distance to chance ({chance:.0f}%). "
        )

        collapses, far_below = True, True
        for kind, (label, c) in contrasts.items():
            c1 = c.mean_at(1)
            cost = None if c1 is None else c1 - c.baseline_error
            collapsed = (cost is not None and c.baseline_error < chance
                         and cost >= COLLAPSE * (chance - c.baseline_error))
            gaps = {k: (c.mean_at(k) - res.mean_at(k),
                        gap_noise(res.mean_at(k), images, c.mean_at(k), images))
                    for k in c.ks if k >= 1 and k in res.ks}
            below = bool(gaps) and all(gap > NOISE_FACTOR * gn for gap, gn in gaps.values())
            ratio_ok = (cost is not None and res1 is not None
                        and res1 - res.baseline_error <= COST_RATIO * cost)
            summary[kind] = {
                "one_deletion_cost": cost, "collapses": collapsed, "resnet_below_beyond_noise": below,
                "resnet_cost_at_most_a_third": ratio_ok,
                "gaps": {str(k): {"gap": gap, "noise": gn} for k, (gap, gn) in gaps.items()},
            }
            collapses = collapses and collapsed
            far_below = far_below and below and ratio_ok
            if c1 is None or not gaps:
                continue
            more = "".join(f", {c.mean_at(k):.2f}% at k={k}" for k in c.ks if k >= 2)
            text += (
                f"{label} goes from {c.baseline_error:.2f}% to {c1:.2f}% with one unit deleted"
                f" ({'a collapse towards' if collapsed else 'short of'} chance){more}; {res_label} stays "
                f"below it by {', '.join(f'{gap:.2f}' for gap, _ in gaps.values())} points at "
                f"k={', '.join(str(k) for k in gaps)} (3 standard errors: at most "
                f"{NOISE_FACTOR * max(gn for _, gn in gaps.values()):.2f}). "
            )

        reorder_ok = True
        if "resnet" in reorderings:
            _, r = reorderings["resnet"]
            rows = r.by_swaps()
            xs = [0, *(s for s, _, _, _ in rows)]
            means = [r.baseline_error, *(m for _, _, m, _ in rows)]
            reorder = smoothness(xs, means, r.baseline_error, chance, noise)
            if len(r.taus) > 1:
                reorder["rank_correlation_tau_error"] = rank_correlation(r.taus, r.errors)
            summary["resnet_reorderings"] = reorder
            reorder_ok = reorder["smooth"]
            text += (
                f"Re-ordering {res_label} by random swaps takes its error to "
                + ", ".join(f"{m:.2f}% at Kendall tau {tau:.2f} ({s} swap{'s' if s > 1 else ''})"
                            for s, tau, m, _ in rows)
                + f": {'a smooth curve' if reorder_ok else 'not a smooth curve'}. "
            )
            if "plain" in reorderings:
                plain_label, p = reorderings["plain"]
                text += f"{plain_label} re-ordered: " + ", ".join(
                    f"{m:.2f}% at tau {tau:.2f}" for _, tau, m, _ in p.by_swaps()) + ". "

        shows: bool | None
        if untrained:
            shows = None
            text += (f"{', '.join(untrained)} did not learn at this budget (intact error within the noise "
                     "of chance), so there is nothing to delete: the finding cannot be judged here.")
        else:
            shows = collapses and far_below and res_curve["smooth"] and reorder_ok
            if shows:
                text += ("The paper's finding shows: the ResNet's error grows smoothly with the units "
                         "deleted and the re-ordering, far below the nets without shortcuts, which collapse "
                         "when one unit goes.")
            else:
                failed = [why for ok, why in (
                    (collapses, "the contrast nets collapse towards chance at k=1"),
                    (far_below, "the ResNet stays far below them beyond the noise (a third of their cost)"),
                    (res_curve["smooth"], "the ResNet's deletion curve is smooth"),
                    (reorder_ok, "its re-ordering curve is smooth"),
                ) if not ok]
                text += f"The paper's finding does not show at this budget; not met: {'; '.join(failed)}."
        summary["shows"] = shows
        return text, shows, summary


def _units(depth: int) -> int:
    """Residual units of a 6n+2 CIFAR net: 3 stages of n."""
    return 3 * ((depth - 2) // 6)


def _draws(n: int) -> str:
    return f"{n} draw{'s' if n != 1 else ''}"


# --- the figure ---------------------------------------------------------------------------------------
