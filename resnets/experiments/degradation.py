"""The degradation problem: He et al. 2015, Fig. 1 and Fig. 6 (left and middle).

Plain nets of 20 to 56 layers and ResNets of the same depths (option A shortcuts, so both have the same
parameters) trained alike. The paper: the deeper plain net has the higher *training* error throughout
training (an optimisation difficulty, not overfitting); the deeper ResNet has the lower.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Analysis, Context, Experiment, RunRecord, Runs, RunSpec, error_curves
from .paper_numbers import CIFAR_TABLE6
from .plans import ZERO_INIT_BUDGETS, cifar_run, net_label, params_cifar, zero_init_kwargs
from .plots import plot_error_curves
from .stats import evaluated_images, gap_noise, last_epoch_images, strength
from .tables import Table

# Fig. 6's depths; the smoke budget's nets are only as deep as needed for two depths.
DEPTHS: dict[str, tuple[int, ...]] = {"smoke": (8, 14), "cpu": (20, 32, 44, 56), "paper": (20, 32, 44, 56)}
KINDS = ("plain", "resnet")


def degradation_runs(ctx: Context) -> dict[tuple[str, int], RunSpec]:
    """Plain and residual nets of each depth, trained alike, by (kind, depth)."""
    zero_init = zero_init_kwargs(ctx)
    return {
        (kind, depth): cifar_run(ctx, kind, depth, model_kwargs=zero_init if kind == "resnet" else None)
        for kind in KINDS
        for depth in DEPTHS[ctx.budget.name]
    }


class Degradation(Experiment):
    name = "degradation"
    title = "Degradation: deeper plain nets train worse, deeper ResNets do not"
    paper = "He et al. 2015, Fig. 1 and Fig. 6 (left, middle), with Table 6's CIFAR-10 errors"
    claim = (
        "On CIFAR-10 the 56-layer plain net has higher training error than the 20-layer one throughout "
        "training (Fig. 1), so deeper plain nets are harder to optimise; with residual learning the "
        "ordering reverses and ResNet-56 (6.97% test error) beats ResNet-20 (8.75%)."
    )
    figures = (
        (
            "degradation.png",
            "Training (dashed) and test (bold) error against iterations, "
            "plain nets left, ResNets right (paper Fig. 6)",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return list(degradation_runs(ctx).values())

    def settings(self, ctx: Context) -> dict[str, Any]:
        return {"networks": ", ".join(net_label(k, d) for k, d in degradation_runs(ctx))}

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        depths = DEPTHS[ctx.budget.name]
        by_net = {net: runs[spec.name] for net, spec in degradation_runs(ctx).items()}
        rows, results = [], {}
        for (kind, depth), record in by_net.items():
            params = params_cifar(record.spec)
            train_err, test_err = record.final_value("train_error"), record.final_value("test_error")
            paper = CIFAR_TABLE6.get(depth, {}).get("error") if kind == "resnet" else None
            results[record.label] = {
                "kind": kind,
                "depth": depth,
                "params": params,
                "final_train_error": train_err,
                "final_test_error": test_err,
                "paper_test_error": paper,
            }
            rows.append([record.label, f"{params / 1e6:.2f}M", train_err, test_err, paper])
        panels = {
            ("plain" if kind == "plain" else "ResNet"): {
                f"{depth} layers": error_curves(by_net[(kind, depth)]) for depth in depths
            }
            for kind in KINDS
        }
        (figure,) = self.figure_paths(ctx)
        title = f"{ctx.dataset}: training error (dashed) and test error (bold)"
        plot_error_curves(panels, figure, title=title)
        finding, shows, gaps = self._finding(by_net, min(depths), max(depths))
        results["gaps"] = gaps
        columns = ["network", "params (CIFAR-10)", "final training error (%)", "final test error (%)",
                   "paper test error (%)"]
        table = Table(columns, rows)
        notes = [
            "Paper test errors are Table 6's (CIFAR-10, 64k iterations); the paper gives plain nets' errors "
            "only as curves (Fig. 6 left)."
        ]
        if ctx.budget.name in ZERO_INIT_BUDGETS:
            notes.append(
                "At this budget the ResNets start with the last BN scale of each residual branch at zero "
                "(zero_init_last; Goyal et al. 2017, timm's default), so every unit starts as the identity; "
                "the paper initialises it to one. 900 iterations are too few for paper-init ResNets to sort "
                "by depth (the paper's curves separate after thousands of iterations): `resnets reproduce "
                "depth` trains them with this budget and reports their training errors."
            )
        if ctx.dataset != "cifar10" or ctx.budget.name != "paper":
            notes.append(
                "At this dataset and budget the absolute errors are not comparable to the paper's; "
                "the orderings are what the experiment tests."
            )
        caption = "Final errors (training error: last epoch, with augmentation, as Fig. 6)"
        return Analysis(results, finding, shows, tables=[(caption, table)], notes=notes)

    @staticmethod
    def _finding(
        by_net: Mapping[tuple[str, int], RunRecord], shallow: int, deep: int
    ) -> tuple[str, bool, dict]:
        gaps, sentences = {}, []
        for kind in KINDS:
            a, b = by_net[(kind, shallow)], by_net[(kind, deep)]
            ta, tb = a.final_value("train_error"), b.final_value("train_error")
            gap = tb - ta
            noise = gap_noise(ta, last_epoch_images(a), tb, last_epoch_images(b))
            ea, eb = a.final_value("test_error"), b.final_value("test_error")
            test_noise = gap_noise(ea, evaluated_images(a), eb, evaluated_images(b))
            gaps[kind] = {
                "train_gap": gap,
                "train_noise": noise,
                "test_gap": eb - ea,
                "test_noise": test_noise,
            }
            compared = (
                "higher training error than"
                if gap > 0
                else "lower training error than"
                if gap < 0
                else "the same training error as"
            )
            sentences.append(
                f"{b.label} ends with {compared} {a.label} ({tb:.2f}% against {ta:.2f}%, {gap:+.2f} points, "
                f"{strength(gap, noise)}) and {eb - ea:+.2f} points of test error ({eb:.2f}% against "
                f"{ea:.2f}%)"
            )
        plain_gap, res_gap = gaps["plain"]["train_gap"], gaps["resnet"]["train_gap"]
        shows = plain_gap > 0 and res_gap <= 0
        if shows:
            verdict = (
                "The paper's finding shows: depth hurts the plain net's optimisation but not the ResNet's."
            )
        elif plain_gap > 0:
            verdict = (
                "The plain nets degrade as in the paper, but the deeper ResNet also ends with higher "
                "training error, so residual learning did not remove the degradation at this budget."
            )
        else:
            verdict = (
                "The deeper plain net did not end with higher training error, so the degradation problem "
                "does not show at this budget."
            )
        return "; ".join(sentences) + ". " + verdict, shows, gaps
