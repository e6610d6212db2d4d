"""The degradation problem: He et al. 2015, Fig. 1 and Fig. 6 (left and middle).

Plain nets of 20 to 56 layers and ResNets of the same depths (option A shortcuts, so both have the same
parameters) trained alike, with the paper's initialisation. The paper: the deeper plain net has the
higher training and test error throughout training (an optimisation difficulty, not overfitting); the
deeper ResNet has the lower (Table 6: 6.97% at 56 layers against 8.75% at 20).

The verdict rests on two paired comparisons on the test images, fixed before the runs: plain-56 against
plain-20 (the paper: higher) and ResNet-56 against ResNet-20 (the paper: lower, by 1.78 points); both
must show. The intermediate depths are drawn (one seed each) but decide nothing.
"""

from __future__ import annotations

from typing import Any

from .base import Analysis, Context, Experiment, Runs, RunSpec, seed_curves
from .paired import (
    Comparison,
    Net,
    Scores,
    compare,
    differences_of,
    overall,
    shows_flag,
    spread_cell,
    verdict_sentence,
)
from .paper_numbers import CIFAR_TABLE6
from .plans import cifar_net, net_label, params_cifar
from .plots import plot_error_curves, plot_seeded_comparison
from .tables import Table

# Fig. 6's depths; the smoke budget's nets are only as deep as needed for two depths.
DEPTHS: dict[str, tuple[int, ...]] = {"smoke": (8, 14), "cpu": (20, 32, 44, 56), "paper": (20, 32, 44, 56)}
KINDS = ("plain", "resnet")
SHOWS = (
    "The paper's finding shows: depth hurts the plain net but helps the ResNet, each beyond the noise of "
    "seeds and test images."
)


def degradation_nets(ctx: Context) -> dict[tuple[str, int], Net]:
    """Plain and residual nets of each depth by (kind, depth): the shallowest and deepest with the
    budget's seeds (they decide the verdict), the others with one."""
    depths = DEPTHS[ctx.budget.name]
    nets = {}
    for kind in KINDS:
        for depth in depths:
            nets[(kind, depth)] = cifar_net(ctx, kind, depth, seeded=depth in (depths[0], depths[-1]))
    return nets


def degradation_comparisons(ctx: Context) -> list[Comparison]:
    nets, depths = degradation_nets(ctx), DEPTHS[ctx.budget.name]
    shallow, deep = depths[0], depths[-1]
    paper = CIFAR_TABLE6.get(deep, {}).get("error"), CIFAR_TABLE6.get(shallow, {}).get("error")
    resnet_effect = paper[0] - paper[1] if None not in paper else None
    return [
        # Fig. 1 and 6 give the plain nets only as curves: no number for the effect.
        Comparison(nets[("plain", shallow)], nets[("plain", deep)], "higher"),
        Comparison(nets[("resnet", shallow)], nets[("resnet", deep)], "lower", resnet_effect),
    ]


class Degradation(Experiment):
    name = "degradation"
    title = "Degradation: deeper plain nets train worse, deeper ResNets do not"
    paper = "He et al. 2015, Fig. 1 and Fig. 6 (left, middle), with Table 6's CIFAR-10 errors"
    claim = (
        "On CIFAR-10 the 56-layer plain net has higher training and test error than the 20-layer one "
        "(Fig. 1), so deeper plain nets are harder to optimise; with residual learning the ordering "
        "reverses and ResNet-56 (6.97% test error) beats ResNet-20 (8.75%)."
    )
    figures = (
        (
            "degradation.png",
            "Training error (dashed) and validation error (bold) against iterations, mean over seeds with "
            "the seed range shaded, final test error a star; plain nets left, ResNets right (paper Fig. 6)",
        ),
        (
            "degradation_test.png",
            "Final test error per net (mean, seed range, seeds), the paired comparisons that decide the "
            "verdict, and Table 6's ResNet errors in a panel of their own",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in degradation_nets(ctx).values() for spec in net.specs]

    def comparisons(self, ctx: Context) -> list[Comparison]:
        return degradation_comparisons(ctx)

    def settings(self, ctx: Context) -> dict[str, Any]:
        nets = degradation_nets(ctx)
        return {
            "networks": ", ".join(net_label(k, d) for k, d in nets),
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in nets.values()),
            "initialisation": "the paper's (He et al. 2015) for every net",
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        nets, scores = degradation_nets(ctx), Scores(ctx, runs)
        rows, results, per_seed = [], {}, {}
        for (kind, depth), net in nets.items():
            records = [runs[spec.name] for spec in net.specs]
            test = scores.test_errors(net)
            train = [r.final_value("train_error") for r in records]
            paper = CIFAR_TABLE6.get(depth, {}).get("error") if kind == "resnet" else None
            per_seed[net.label] = test
            results[net.label] = {
                "kind": kind,
                "depth": depth,
                "params": params_cifar(net.specs[0]),
                "seeds": len(net.specs),
                "final_train_error": train,
                "test_error": test,
                "paper_test_error": paper,
            }
            rows.append(
                [
                    net.label,
                    f"{results[net.label]['params'] / 1e6:.2f}M",
                    len(net.specs),
                    spread_cell(train),
                    spread_cell(test),
                    paper,
                ]
            )
        measured = [compare(scores, c) for c in degradation_comparisons(ctx)]
        verdict = overall([m.verdict for m in measured])
        results["comparisons"] = {m.comparison.name: m.to_dict() for m in measured}
        results["verdict"] = verdict
        curves = {("plain" if kind == "plain" else "ResNet"): {} for kind in KINDS}
        for (kind, depth), net in nets.items():
            panel = "plain" if kind == "plain" else "ResNet"
            curves[panel][f"{depth} layers"] = seed_curves([runs[spec.name] for spec in net.specs])
        finals = [v for seeds in per_seed.values() for v in seeds] + [
            v
            for r in results.values()
            if isinstance(r, dict) and "final_train_error" in r
            for v in r["final_train_error"]
        ]
        curve_path, test_path = self.figure_paths(ctx)
        plot_error_curves(
            curves,
            curve_path,
            title=f"{ctx.dataset}: training (dashed), validation (bold), test (star)",
            ylim=(0, min(100, 3 * max(finals))),
        )
        plot_seeded_comparison(
            per_seed,
            differences_of(measured),
            {f"ResNet-{d}": CIFAR_TABLE6.get(d, {}).get("error") for d in DEPTHS[ctx.budget.name]},
            test_path,
            title=f"degradation: final test error on {ctx.dataset}",
            paper_title="paper: ResNets, CIFAR-10 (Table 6)",
        )
        finding = " ".join(m.sentence() for m in measured) + " " + verdict_sentence(verdict, SHOWS)
        columns = [
            "network",
            "params (CIFAR-10)",
            "seeds",
            "final training error (%)",
            "test error (%)",
            "paper test error (%)",
        ]
        notes = [
            "Errors are the mean over seeds with the seed range in brackets; test errors on every test "
            "image, read once per run after its last epoch. Training error: the last epoch's running error "
            "with augmentation, as Fig. 6.",
            "Paper test errors are Table 6's (CIFAR-10, 64k iterations); the paper gives plain nets' errors "
            "only as curves (Fig. 6 left).",
        ]
        if ctx.dataset != "cifar10" or ctx.budget.name != "paper":
            notes.append(
                "At this dataset and budget the absolute errors are not comparable to the paper's; "
                "the orderings are what the experiment tests."
            )
        caption = "Final errors (training error: last epoch, with augmentation, as Fig. 6)"
        return Analysis(
            results,
            finding,
            shows_flag(verdict),
            tables=[(caption, Table(columns, rows))],
            notes=notes,
            verdict=verdict,
        )
