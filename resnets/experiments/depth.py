"""Deeper ResNets on CIFAR-10: He et al. 2015, Table 6 (ResNet-20 to ResNet-1202).

Parameters and test error of 6n+2 ResNets beside the paper's. The paper: the error falls with depth from
20 to 110 layers (8.75% to 6.43%); 1202 layers (19.4M parameters) train fine but test worse (7.93%),
which the authors attribute to overfitting.
"""

from __future__ import annotations

from typing import Any

from .base import Analysis, Context, Experiment, Runs, RunSpec
from .paper_numbers import CIFAR_TABLE6
from .plans import cifar_run, net_label, params_cifar
from .plots import plot_ours_vs_paper
from .stats import evaluated_images, gap_noise, rank_correlation, strength
from .tables import Table

# Table 6's depths; 1202 layers only at the paper budget (19.4M parameters: a GPU's job).
DEPTHS: dict[str, tuple[int, ...]] = {
    "smoke": (8, 14),
    "cpu": (20, 32, 44, 56, 110),
    "paper": (20, 32, 44, 56, 110, 1202),
}


class Depth(Experiment):
    name = "depth"
    title = "Deeper ResNets: parameters and CIFAR-10 test error from 20 to 1202 layers"
    paper = "He et al. 2015, Table 6"
    claim = (
        "ResNets of 20, 32, 44, 56 and 110 layers (0.27M to 1.7M parameters) reach 8.75%, 7.51%, 7.17%, "
        "6.97% and 6.43% test error: deeper is better. ResNet-1202 (19.4M) trains to a similar training "
        "error but tests at 7.93%, attributed to overfitting."
    )
    figures = (("depth.png", "Final test error by depth, ours beside the paper's Table 6"),)

    def _specs(self, ctx: Context) -> list[tuple[int, RunSpec]]:
        return [(depth, cifar_run(ctx, "resnet", depth)) for depth in DEPTHS[ctx.budget.name]]

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for _, spec in self._specs(ctx)]

    def settings(self, ctx: Context) -> dict[str, Any]:
        return {"networks": ", ".join(net_label("resnet", d) for d in DEPTHS[ctx.budget.name])}

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        rows, results, labels, ours, paper = [], {}, [], [], []
        depths, errors = [], []
        worst_param_gap: float | None = None  # None: no depth of this budget is in Table 6
        for depth, spec in self._specs(ctx):
            record = runs[spec.name]
            params = params_cifar(spec)
            published = CIFAR_TABLE6.get(depth, {})
            error = record.final_value("test_error")
            if "params_m" in published:
                # The paper rounds to 2 significant digits (0.27M, 1.7M, 19.4M).
                gap = abs(params / 1e6 - published["params_m"]) / published["params_m"]
                worst_param_gap = max(worst_param_gap or 0.0, gap)
            results[record.label] = {
                "depth": depth,
                "params": params,
                "paper_params_m": published.get("params_m"),
                "test_error": error,
                "paper_test_error": published.get("error"),
                "final_train_error": record.final_value("train_error"),
            }
            rows.append(
                [
                    record.label,
                    f"{params / 1e6:.2f}M",
                    published.get("params_m"),
                    error,
                    published.get("error"),
                    record.final_value("train_error"),
                ]
            )
            labels.append(record.label)
            ours.append(error)
            paper.append(published.get("error"))
            depths.append(depth)
            errors.append(error)
        (figure,) = self.figure_paths(ctx)
        title = f"test error by depth: ours ({ctx.dataset}, {ctx.budget.name}) and Table 6"
        plot_ours_vs_paper(labels, ours, paper, figure, title=title)
        finding, shows, summary = self._finding(runs, self._specs(ctx), depths, errors, worst_param_gap)
        results["summary"] = summary
        columns = ["network", "params (CIFAR-10)", "paper params (M)", "test error (%)",
                   "paper test error (%)", "final training error (%)"]
        table = Table(columns, rows)
        note = ("Paper errors are on CIFAR-10 after 64k iterations; ours are comparable only at the paper "
                "budget on CIFAR-10.")
        caption = "Parameters and final test error beside Table 6"
        return Analysis(results, finding, shows, tables=[(caption, table)], notes=[note])

    @staticmethod
    def _finding(
        runs: Runs,
        specs: list[tuple[int, RunSpec]],
        depths: list[int],
        errors: list[float],
        worst_param_gap: float | None,
    ) -> tuple[str, bool | None, dict[str, Any]]:
        upto = [(d, e) for d, e in zip(depths, errors, strict=True) if d <= 110]
        rho = rank_correlation([float(d) for d, _ in upto], [e for _, e in upto])
        (d0, e0), (d1, e1) = upto[0], upto[-1]
        first, last = runs[specs[0][1].name], runs[specs[len(upto) - 1][1].name]
        noise = gap_noise(e0, evaluated_images(first), e1, evaluated_images(last))
        gain = e0 - e1
        summary = {
            "spearman_depth_error": rho,
            "gain_shallowest_to_deepest": gain,
            "noise": noise,
            "worst_param_gap": worst_param_gap,
        }
        text = (
            "No depth of this budget is in Table 6, so no parameter counts to compare. "
            if worst_param_gap is None
            else f"Parameter counts match Table 6 to within {100 * worst_param_gap:.1f}% (the paper rounds "
            "to two digits). "
        )
        text += (
            f"Test error goes from {e0:.2f}% at {d0} layers to {e1:.2f}% at {d1} ({abs(gain):.2f} points "
            f"{'in favour of' if gain > 0 else 'against'} depth, {strength(gain, noise)}); the rank "
            "correlation of depth and error is "
            f"{rho:+.2f} (-1: every deeper net is better). "
        )
        shows: bool | None = gain > 0 and rho < 0
        text += (
            "Deeper is better here, as in the paper."
            if shows
            else "Deeper is not better here; at short budgets deep nets are still far from converged, so "
            "this ordering is not a test of the paper's claim."
        )
        if 1202 in depths and 110 in depths:
            e110, e1202 = errors[depths.index(110)], errors[depths.index(1202)]
            text += f" ResNet-1202 tests at {e1202:.2f}% against {e110:.2f}% for ResNet-110: " + (
                "worse, as the paper found." if e1202 > e110 else "not worse, unlike the paper."
            )
        return text, shows, summary
