"""Deeper ResNets on CIFAR-10: He et al. 2015, Table 6 (ResNet-20 to ResNet-1202).

Parameters and test error of 6n+2 ResNets beside the paper's. The paper: the error falls with depth from
20 to 110 layers (8.75% to 6.43%); 1202 layers (19.4M parameters) train fine but test worse (7.93%),
which the authors attribute to overfitting.

The verdict is one paired comparison fixed before the runs: the deepest net up to 110 layers against the
shallowest (the paper: lower error, by 2.32 points from 20 to 110 layers), both with the budget's seeds;
the depths between are trained with one seed and give the rank correlation, which decides nothing.
"""

from __future__ import annotations

from typing import Any

from .base import Analysis, Context, Experiment, Runs, RunSpec
from .paired import Comparison, Net, Scores, compare, differences_of, shows_flag, spread_cell
from .paper_numbers import CIFAR_TABLE6
from .plans import cifar_net, net_label, params_cifar
from .plots import plot_seeded_comparison
from .stats import rank_correlation
from .tables import Table

# Table 6's depths; 1202 layers only at the paper budget (19.4M parameters: a GPU's job).
DEPTHS: dict[str, tuple[int, ...]] = {
    "smoke": (8, 14),
    "cpu": (20, 32, 44, 56, 110),
    "paper": (20, 32, 44, 56, 110, 1202),
}


def depth_nets(ctx: Context) -> dict[int, Net]:
    """The ResNets by depth: the shallowest and the deepest up to 110 layers with the budget's seeds."""
    depths = DEPTHS[ctx.budget.name]
    deciding = (depths[0], max(d for d in depths if d <= 110))
    nets = {}
    for depth in depths:
        nets[depth] = cifar_net(ctx, "resnet", depth, seeded=depth in deciding)
    return nets


def depth_comparison(ctx: Context) -> Comparison:
    nets = depth_nets(ctx)
    shallow, deep = min(nets), max(d for d in nets if d <= 110)
    paper = CIFAR_TABLE6.get(shallow, {}).get("error"), CIFAR_TABLE6.get(deep, {}).get("error")
    effect = paper[1] - paper[0] if None not in paper else None
    return Comparison(nets[shallow], nets[deep], "lower", effect)


class Depth(Experiment):
    name = "depth"
    title = "Deeper ResNets: parameters and CIFAR-10 test error from 20 to 1202 layers"
    paper = "He et al. 2015, Table 6"
    claim = (
        "ResNets of 20, 32, 44, 56 and 110 layers (0.27M to 1.7M parameters) reach 8.75%, 7.51%, 7.17%, "
        "6.97% and 6.43% test error: deeper is better. ResNet-1202 (19.4M) trains to a similar training "
        "error but tests at 7.93%, attributed to overfitting."
    )
    figures = (
        (
            "depth.png",
            "Final test error by depth (mean, seed range, seeds), the paired comparison that decides the "
            "verdict, and Table 6 in a panel of its own",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in depth_nets(ctx).values() for spec in net.specs]

    def comparisons(self, ctx: Context) -> list[Comparison]:
        return [depth_comparison(ctx)]

    def settings(self, ctx: Context) -> dict[str, Any]:
        nets = depth_nets(ctx)
        return {
            "networks": ", ".join(net_label("resnet", d) for d in nets),
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in nets.values()),
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        nets, scores = depth_nets(ctx), Scores(ctx, runs)
        rows, results, per_seed = [], {}, {}
        worst_param_gap: float | None = None  # None: no depth of this budget is in Table 6
        for depth, net in nets.items():
            params = params_cifar(net.specs[0])
            published = CIFAR_TABLE6.get(depth, {})
            if "params_m" in published:
                # The paper rounds to 2 significant digits (0.27M, 1.7M, 19.4M).
                gap = abs(params / 1e6 - published["params_m"]) / published["params_m"]
                worst_param_gap = max(worst_param_gap or 0.0, gap)
            test = scores.test_errors(net)
            train = [runs[spec.name].final_value("train_error") for spec in net.specs]
            per_seed[net.label] = test
            results[net.label] = {
                "depth": depth,
                "params": params,
                "paper_params_m": published.get("params_m"),
                "seeds": len(net.specs),
                "test_error": test,
                "paper_test_error": published.get("error"),
                "final_train_error": train,
            }
            rows.append(
                [
                    net.label,
                    f"{params / 1e6:.2f}M",
                    published.get("params_m"),
                    len(net.specs),
                    spread_cell(test),
                    published.get("error"),
                    spread_cell(train),
                ]
            )
        measured = compare(scores, depth_comparison(ctx))
        upto = [d for d in nets if d <= 110]
        means = [sum(per_seed[nets[d].label]) / len(per_seed[nets[d].label]) for d in upto]
        rho = rank_correlation([float(d) for d in upto], means)
        results["comparison"] = measured.to_dict()
        results["spearman_depth_error"] = rho
        results["worst_param_gap"] = worst_param_gap
        results["verdict"] = measured.verdict
        (figure,) = self.figure_paths(ctx)
        plot_seeded_comparison(
            per_seed,
            differences_of([measured]),
            {f"ResNet-{d}": CIFAR_TABLE6.get(d, {}).get("error") for d in nets},
            figure,
            title=f"depth: final test error on {ctx.dataset} ({ctx.budget.name} budget)",
            paper_title="paper: CIFAR-10 (Table 6)",
        )
        text = (
            "No depth of this budget is in Table 6, so no parameter counts to compare. "
            if worst_param_gap is None
            else f"Parameter counts match Table 6 to within {100 * worst_param_gap:.1f}% (the paper rounds "
            "to two digits). "
        )
        text += measured.sentence() + (
            f" The rank correlation of depth and mean test error up to 110 layers is {rho:+.2f} (-1: every "
            "deeper net is better; descriptive, one seed between the ends)."
        )
        if 1202 in nets and 110 in nets:
            e110, e1202 = (sum(per_seed[nets[d].label]) / len(nets[d].specs) for d in (110, 1202))
            text += f" ResNet-1202 tests at {e1202:.2f}% against {e110:.2f}% for ResNet-110: " + (
                "worse, as the paper found." if e1202 > e110 else "not worse, unlike the paper."
            )
        columns = [
            "network",
            "params (CIFAR-10)",
            "paper params (M)",
            "seeds",
            "test error (%)",
            "paper test error (%)",
            "final training error (%)",
        ]
        notes = [
            "Errors are the mean over seeds with the seed range in brackets, on every test image.",
            "Paper errors are on CIFAR-10 after 64k iterations; ours are comparable only at the paper "
            "budget on CIFAR-10.",
        ]
        caption = "Parameters and final test error beside Table 6"
        return Analysis(
            results,
            text,
            shows_flag(measured.verdict),
            tables=[(caption, Table(columns, rows))],
            notes=notes,
            verdict=measured.verdict,
        )
