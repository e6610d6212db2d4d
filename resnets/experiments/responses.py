"""Layer responses: He et al. 2015, Sec. 4.2 "Analysis of Layer Responses" and Fig. 7.

The std of each 3x3 layer's output (after BN, before the addition and ReLU) on the test set, for plain
and residual nets. The paper: ResNets respond more weakly than their plain counterparts, supporting the
idea that residual functions are closer to zero; the deeper the ResNet, the weaker each layer's response.
The networks are those of ``degradation`` and ``depth`` (the same runs, with the same seeds, shared when
the output folder is shared). The verdict, fixed before the runs: the ResNet responds more weakly than the
plain net of the same depth (layer by layer, paired) at every depth, and the deeper ResNet more weakly
than the shallower (mean over layers); each judged two-sided on a bootstrap over seeds and layers with
every seed pair in the same direction.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from ..analysis.responses import layer_responses
from .base import Analysis, Context, Experiment, Runs, RunSpec
from .paired import Net, overall, shows_flag, spread_cell, verdict_sentence
from .plans import cifar_net, net_label
from .plots import plot_responses
from .stats import Judgement, bootstrap_difference, judge
from .tables import Table
from .trained import TrainedNets

# (kind, depth) pairs per budget: Fig. 7 shows plain-20/56 and ResNet-20/56/110.
NETS: dict[str, tuple[tuple[str, int], ...]] = {
    "smoke": (("plain", 8), ("plain", 14), ("resnet", 8), ("resnet", 14)),
    "cpu": (("plain", 20), ("plain", 56), ("resnet", 20), ("resnet", 56)),
    "paper": (("plain", 20), ("plain", 56), ("resnet", 20), ("resnet", 56), ("resnet", 110)),
}

SHOWS = (
    "The paper's finding shows: residual layers respond more weakly than plain ones at every depth, and "
    "the deeper ResNet's layers more weakly than the shallower one's."
)


class Responses(Experiment):
    name = "responses"
    title = "Layer responses: residual functions are closer to zero"
    paper = "He et al. 2015, Sec. 4.2 and Fig. 7"
    claim = (
        "The standard deviations of the 3x3 layers' responses (after BN, before the addition and ReLU) "
        "are generally smaller in ResNets than in their plain counterparts, and smaller in deeper "
        "ResNets (ResNet-20 > 56 > 110): residual functions are generally closer to zero."
    )
    figures = (
        (
            "responses.png",
            "Std of layer responses in layer order (top) and sorted in descending order (middle), mean "
            "over seeds with the seed range shaded, plain nets dashed (paper Fig. 7); the comparisons "
            "that decide the verdict with their 95% intervals (bottom)",
        ),
    )

    def _nets(self, ctx: Context) -> dict[tuple[str, int], Net]:
        return {(kind, depth): cifar_net(ctx, kind, depth) for kind, depth in NETS[ctx.budget.name]}

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in self._nets(ctx).values() for spec in net.specs]

    def settings(self, ctx: Context) -> dict[str, Any]:
        return {
            "networks": ", ".join(net_label(k, d) for k, d in NETS[ctx.budget.name]),
            "seeds": ctx.seeds,
            "measured on": "every image of the run's test split, network in eval mode",
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        trained = TrainedNets(ctx)
        measured: dict[tuple[str, int], list[list[float]]] = {}
        results: dict[str, Any] = {}
        rows = []
        for (kind, depth), net in self._nets(ctx).items():
            per_seed = []
            for spec in net.specs:
                record = runs[spec.name]
                per_seed.append(layer_responses(trained.model(record), trained.test_loader(record)).stds)
            measured[(kind, depth)] = per_seed
            means = [statistics.mean(stds) for stds in per_seed]
            results[net.label] = {"kind": kind, "depth": depth, "stds": per_seed, "mean_std": means}
            flat = [v for stds in per_seed for v in stds]
            rows.append(
                [
                    net.label,
                    len(per_seed[0]),
                    len(per_seed),
                    spread_cell(means),
                    statistics.median(flat),
                    max(flat),
                    min(flat),
                ]
            )
        judged = self._judgements(measured)
        verdict = overall([j.verdict for j in judged.values()])
        results["comparisons"] = {
            name: {
                "verdict": j.verdict,
                "difference": j.interval.difference,
                "interval": [j.interval.low, j.interval.high],
                "detectable": j.detectable,
            }
            for name, j in judged.items()
        }
        results["verdict"] = verdict
        (figure,) = self.figure_paths(ctx)
        plot_responses(
            {net_label(k, d): stds for (k, d), stds in measured.items()},
            figure,
            differences={
                f"{n}\n(paper: B lower)": (j.interval.difference, j.interval.low, j.interval.high)
                for n, j in judged.items()
            },
            title=f"layer responses on {ctx.dataset} (Fig. 7)",
        )
        finding = "Layer responses (mean std over layers, B - A): " + "; ".join(
            f"{name}: {j.interval.difference:+.3f} (95% interval {j.interval.low:+.3f} to "
            f"{j.interval.high:+.3f}, smallest detectable {j.detectable:.3f}), {j.verdict}"
            for name, j in judged.items()
        )
        finding += ". " + verdict_sentence(verdict, SHOWS)
        table = Table(
            ["network", "3x3 layers", "seeds", "mean std", "median std", "max std", "min std"], rows
        )
        caption = "Std of each 3x3 layer's response (after BN, before addition/ReLU), test split"
        note = (
            "The paper gives these only as a figure (Fig. 7), so there are no numbers to set beside "
            "ours; the comparison is of the orderings. The std is over every value of a layer's output; "
            "mean std: the mean over layers, per seed (mean and seed range)."
        )
        return Analysis(
            results, finding, shows_flag(verdict), tables=[(caption, table)], notes=[note], verdict=verdict
        )

    @staticmethod
    def _judgements(measured: dict[tuple[str, int], list[list[float]]]) -> dict[str, Judgement]:
        """The deciding comparisons, "B vs A": ResNet against plain at each depth (paired by layer),
        and the deepest ResNet against the shallowest."""

        def per_seed_gap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> list[float]:
            return [statistics.mean(sb) - statistics.mean(sa) for sa, sb in zip(a, b, strict=False)]

        out = {}
        for depth in sorted({d for k, d in measured if k == "plain"}):
            if ("resnet", depth) in measured:
                a, b = measured[("plain", depth)], measured[("resnet", depth)]
                interval = bootstrap_difference(a, b, paired=True)
                out[f"ResNet-{depth} vs plain-{depth}"] = judge(
                    interval, "lower", per_seed_differences=per_seed_gap(a, b)
                )
        depths = sorted(d for k, d in measured if k == "resnet")
        if len(depths) > 1:
            a, b = measured[("resnet", depths[0])], measured[("resnet", depths[-1])]
            interval = bootstrap_difference(a, b, paired=False)
            out[f"ResNet-{depths[-1]} vs ResNet-{depths[0]}"] = judge(
                interval, "lower", per_seed_differences=per_seed_gap(a, b)
            )
        return out
