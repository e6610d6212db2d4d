"""Layer responses: He et al. 2015, Sec. 4.2 "Analysis of Layer Responses" and Fig. 7.

The std of each 3x3 layer's output (after BN, before the addition and ReLU) on the test set, for plain
and residual nets. The paper: ResNets respond more weakly than their plain counterparts, supporting the
idea that residual functions are closer to zero; the deeper the ResNet, the weaker each layer's response.
The networks are those of ``degradation`` (plain) and ``depth`` (ResNets): the same runs, shared when the
output folder is shared.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from ..analysis.responses import layer_responses
from .base import Analysis, Context, Experiment, Runs, RunSpec
from .plans import cifar_run, net_label
from .plots import plot_responses
from .tables import Table
from .trained import TrainedNets

# (kind, depth) pairs per budget: Fig. 7 shows plain-20/56 and ResNet-20/56/110.
NETS: dict[str, tuple[tuple[str, int], ...]] = {
    "smoke": (("plain", 8), ("plain", 14), ("resnet", 8), ("resnet", 14)),
    "cpu": (("plain", 20), ("plain", 56), ("resnet", 20), ("resnet", 56)),
    "paper": (("plain", 20), ("plain", 56), ("resnet", 20), ("resnet", 56), ("resnet", 110)),
}


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
            "Std of layer responses in layer order (top) and sorted in descending "
            "order (bottom); plain nets dashed (paper Fig. 7)",
        ),
    )

    def _nets(self, ctx: Context) -> list[tuple[str, int, RunSpec]]:
        return [(kind, depth, cifar_run(ctx, kind, depth)) for kind, depth in NETS[ctx.budget.name]]

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for _, _, spec in self._nets(ctx)]

    def settings(self, ctx: Context) -> dict[str, Any]:
        return {
            "networks": ", ".join(net_label(k, d) for k, d in NETS[ctx.budget.name]),
            "measured on": "the run's test split, network in eval mode",
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        nets = TrainedNets(ctx)
        measured: dict[tuple[str, int], list[float]] = {}
        results: dict[str, Any] = {}
        rows = []
        for kind, depth, spec in self._nets(ctx):
            record = runs[spec.name]
            responses = layer_responses(nets.model(record), nets.test_loader(record))
            measured[(kind, depth)] = responses.stds
            results[record.label] = {"kind": kind, "depth": depth, **responses.to_dict()}
            rows.append(
                [
                    record.label,
                    len(responses.stds),
                    responses.mean(),
                    statistics.median(responses.stds),
                    max(responses.stds),
                    min(responses.stds),
                ]
            )
        (figure,) = self.figure_paths(ctx)
        plot_responses(
            {net_label(k, d): stds for (k, d), stds in measured.items()},
            figure,
            title=f"layer responses on {ctx.dataset} (Fig. 7)",
        )
        finding, shows, comparisons = self._finding(measured)
        results["comparisons"] = comparisons
        table = Table(["network", "3x3 layers", "mean std", "median std", "max std", "min std"], rows)
        caption = "Std of each 3x3 layer's response (after BN, before addition/ReLU), test split"
        note = (
            "The paper gives these only as a figure (Fig. 7), so there are no numbers to set beside "
            "ours; the comparison is of the orderings. The std is over every value of a layer's output."
        )
        return Analysis(results, finding, shows, tables=[(caption, table)], notes=[note])

    @staticmethod
    def _finding(measured: Mapping[tuple[str, int], list[float]]) -> tuple[str, bool, dict[str, Any]]:
        sentences, comparisons, weaker_everywhere = [], {}, True
        for depth in sorted({d for k, d in measured if k == "plain"}):
            if ("resnet", depth) not in measured:
                continue
            plain, res = measured[("plain", depth)], measured[("resnet", depth)]
            ratio = statistics.mean(res) / statistics.mean(plain)
            per_layer = sum(r < p for r, p in zip(res, plain, strict=True)) / len(res)
            comparisons[f"{depth}"] = {"mean_ratio_resnet_to_plain": ratio, "layers_weaker": per_layer}
            weaker_everywhere &= ratio < 1
            sentences.append(
                f"at {depth} layers the ResNet's mean response std is {ratio:.2f}x the plain net's, and "
                f"{100 * per_layer:.0f}% of its layers respond more weakly than the plain layer in the same "
                "place"
            )
        depths = sorted(d for k, d in measured if k == "resnet")
        means = [statistics.mean(measured[("resnet", d)]) for d in depths]
        changes = [b / a - 1 for a, b in zip(means, means[1:], strict=False)]
        comparisons["resnet_mean_by_depth"] = dict(zip(map(str, depths), means, strict=True))
        if all(c < -0.01 for c in changes):
            depth_words = "Deeper ResNets respond more weakly, as in the paper"
        elif all(abs(c) <= 0.01 for c in changes):  # a 1% change is not "weaker" in words
            depth_words = (
                "Deeper ResNets respond about as strongly as shallower ones (within 1%), where the "
                "paper found them weaker"
            )
        else:
            depth_words = "Deeper ResNets do not respond more weakly, unlike the paper"
        depth_sentence = (
            depth_words
            + " (mean std "
            + ", ".join(f"ResNet-{d}: {m:.3f}" for d, m in zip(depths, means, strict=True))
            + ")."
        )
        verdict = (
            "The paper's finding shows: residual layers respond more weakly than plain ones at every depth."
            if weaker_everywhere
            else "The paper's finding does not show at every depth: some ResNet responds at least as "
            "strongly as its plain counterpart."
        )
        text = "Layer responses: " + "; ".join(sentences) + ". " + depth_sentence + " " + verdict
        return text, weaker_everywhere, comparisons
