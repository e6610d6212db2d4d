"""The survey: ResNet beside the architectures that followed or rivalled it, on CIFAR-sized nets.

The lecture's CIFAR-10 comparison (NIN, DSN, FitNet, Highway, ResNet-110/1202, pre-activation ResNet-164 and
-1001, and the DenseNet, FractalNet, RoR, Multi-ResNet and WRN numbers of their papers) beside ours: the
CIFAR-sized members trained alike (the budget's recipe, the same length), with their parameters and
multiply-adds (as built for CIFAR-10), their training time and test error. At the smoke and paper budgets our
ResNet-110 is ``depth``'s run when the output folder is shared; the cpu budget trains shorter.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from ..evaluate import evaluate
from ..summary import summary
from .base import Analysis, Context, Experiment, RunRecord, Runs, RunSpec
from .paper_numbers import SURVEY_CIFAR10
from .plans import ITERATIONS, cifar_run, params_cifar
from .plots import plot_error_vs_cost
from .stats import evaluated_images, gap_noise, rank_correlation, sampling_noise, strength
from .tables import Table
from .trained import TrainedNets

# FractalNet trains with the paper's drop-path (Larsson et al. Sec. 4: local 15%, half the mini-batches
# global); it is FractalNet's own regulariser, as stochastic depth is not part of the ResNets here.
FRACTAL_DROP_PATH = {"local_drop_rate": 0.15, "global_drop_rate": 0.5}
# ... and at its paper's lr, 0.02 (Larsson et al. Sec. 4.1); at 0.1 FractalNet-20 diverged in its first
# epoch at the cpu budget and never left 82% training error (docs/reproduce.md).
FRACTAL_SETTINGS = {"lr": 0.02}
# The one departure from "trained alike": the Highway net has no BN, and its authors train it at lr 0.025
# (flukeskywalker/highway-networks, cifar10_solver.prototxt); the BN nets' 0.1 is 4x that.
HIGHWAY_SETTINGS = {"lr": 0.025}


@dataclass(frozen=True)
class SurveyNet:
    """One network of the survey: its zoo name and options, its label and its row in SURVEY_CIFAR10."""

    key: str  # the family, e.g. "densenet"
    model: str
    label: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    paper: str | None = None  # the published row it is (None: the budget's smaller stand-in, or none)
    settings: Mapping[str, Any] = field(default_factory=dict)  # recipe fields this net trains with


# The paper-sized nets (cpu and paper budgets), and the smoke budget's small stand-ins of each family.
NETS: dict[str, tuple[SurveyNet, ...]] = {
    "paper": (
        SurveyNet("highway", "highway19", "Highway-19", paper="Highway-19", settings=HIGHWAY_SETTINGS),
        SurveyNet("resnet", "resnet110", "ResNet-110", paper="ResNet-110"),
        SurveyNet("preact", "preact_resnet164", "pre-act ResNet-164", paper="pre-act ResNet-164"),
        SurveyNet("densenet", "densenet_bc100_k12", "DenseNet-BC-100 (k=12)", paper="DenseNet-BC-100 (k=12)"),
        SurveyNet(
            "fractalnet",
            "fractalnet20",
            "FractalNet-20",
            FRACTAL_DROP_PATH,
            paper="FractalNet-20",
            settings=FRACTAL_SETTINGS,
        ),
        SurveyNet("ror", "ror3_resnet110", "RoR-3-110"),
        SurveyNet("multiresnet", "multiresnet20_k4", "Multi-ResNet-20 (k=4)"),
        SurveyNet("wrn", "wrn", "WRN-16-4", {"depth": 16, "widen_factor": 4}),
    ),
    "smoke": (
        SurveyNet("highway", "highway19", "Highway-19", settings=HIGHWAY_SETTINGS),
        SurveyNet("resnet", "resnet_cifar", "ResNet-8", {"depth": 8}),
        SurveyNet("preact", "preact_resnet_cifar", "pre-act ResNet-11", {"depth": 11}),
        SurveyNet("densenet", "densenet_cifar", "DenseNet-BC-16 (k=12)", {"depth": 16, "growth_rate": 12}),
        SurveyNet(
            "fractalnet",
            "fractalnet_cifar",
            "FractalNet (C=2, w=8)",
            {"columns": 2, "width": 8, **FRACTAL_DROP_PATH},
            settings=FRACTAL_SETTINGS,
        ),
        SurveyNet("ror", "ror3_resnet_cifar", "RoR-3-8", {"depth": 8}),
        SurveyNet("multiresnet", "multiresnet_cifar", "Multi-ResNet-8 (k=2)", {"depth": 8, "k": 2}),
        SurveyNet("wrn", "wrn", "WRN-10-2", {"depth": 10, "widen_factor": 2}),
    ),
}
# On CPU DenseNet is the one net that channels-last slows (3.77 vs 2.35 s a step, docs/reproduce.md); the
# layout changes the speed, not what the net learns.
NETS["cpu"] = tuple(
    replace(net, settings={**net.settings, "channels_last": False}) if net.key == "densenet" else net
    for net in NETS["paper"]
)

# The cpu budget's length: the shared 900 iterations take the eight nets about 1.7 hours on two cores,
# 400 fit in about 50 minutes (docs/reproduce.md); its ResNet-110 is then a run of its own, not depth's.
SURVEY_ITERATIONS: dict[str, int | None] = {**ITERATIONS, "cpu": 400}


def survey_nets(budget: str) -> tuple[SurveyNet, ...]:
    return NETS[budget]


def survey_runs(ctx: Context) -> dict[str, tuple[SurveyNet, RunSpec]]:
    """Each net's run, by family; the ResNet is the shared CIFAR ResNet run of ``depth`` where the
    survey trains as long as the other experiments (the smoke and paper budgets)."""
    runs = {}
    iterations = SURVEY_ITERATIONS[ctx.budget.name]
    for net in survey_nets(ctx.budget.name):
        if net.key == "resnet":
            spec = cifar_run(
                ctx, "resnet", int(net.kwargs.get("depth", 110)), label=net.label, iterations=iterations
            )
        else:
            spec = ctx.run(
                net.model, net.label, iterations=iterations, model_kwargs=net.kwargs, **net.settings
            )
        runs[net.key] = (net, spec)
    return runs


def mult_adds_cifar(spec: RunSpec) -> int:
    """Multiply-adds of the run's network on one 32x32 CIFAR-10 image, as the papers count them."""
    return summary(spec.model, (3, 32, 32), **spec.overrides.get("model_kwargs", {})).total_mult_adds


@dataclass(frozen=True)
class Comparison:
    """A pair of our nets that the papers order: ``better`` published below ``worse``."""

    better: str
    worse: str
    published_gap: float  # points, positive
    gap: float  # ours: error(worse) - error(better)
    noise: float

    @property
    def outcome(self) -> str:
        """ "agrees" (our gap has the paper's sign and exceeds its noise), "disagrees", or "within noise"."""
        if abs(self.gap) <= self.noise:
            return "within noise"
        return "agrees" if self.gap > 0 else "disagrees"


def comparisons(
    measured: Mapping[str, tuple[float, int]], published: Mapping[str, float]
) -> list[Comparison]:
    """Every pair of our nets with published errors: ``measured[label] = (error %, test images)``."""
    labels = [label for label in measured if label in published]
    out = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            better, worse = (a, b) if published[a] <= published[b] else (b, a)
            (eb, nb), (ew, nw) = measured[better], measured[worse]
            out.append(
                Comparison(
                    better, worse, published[worse] - published[better], ew - eb, gap_noise(eb, nb, ew, nw)
                )
            )
    return out


def verdict(found: list[Comparison]) -> bool | None:
    """True: no pair reversed beyond the noise and most pairs ordered as published beyond it; False: more
    pairs reversed than confirmed; None: the noise decides too many of them."""
    counts = {o: sum(c.outcome == o for c in found) for o in ("agrees", "disagrees", "within noise")}
    if not found:
        return None
    if counts["disagrees"] == 0 and counts["agrees"] > counts["within noise"]:
        return True
    if counts["disagrees"] > counts["agrees"]:
        return False
    return None


class Survey(Experiment):
    name = "survey"
    title = "The survey: ResNet beside Highway, DenseNet, FractalNet, RoR, Multi-ResNet and WRN"
    paper = (
        "the lecture's CIFAR-10 comparison: He et al. 2015 (Table 6), Identity Mappings (Tables 2, 4), "
        "Srivastava et al. 2015, Huang et al. 2017 (Table 2), Larsson et al. 2017 (Table 1), Zhang et "
        "al. (RoR), Abdi and Nahavandi 2016, Zagoruyko and Komodakis 2016"
    )
    claim = (
        "On CIFAR-10 the nets that followed ResNet improve on ResNet-110's 6.61% (1.7M parameters): "
        "pre-activation ResNet-164 5.46% (1.7M), DenseNet-BC-100 4.51% with half the parameters (0.8M), "
        "FractalNet 4.60% without residuals (38.6M), WRNs trade depth for width (WRN-28-10: 4.00%, 36.5M), "
        "RoR and Multi-ResNet reach 3.77% and 3.73%; the earlier Highway networks trail it (7.72%, 2.3M), "
        "and NIN, DSN and FitNet more (8.81%, 8.22%, 8.39%)."
    )
    figures = (
        (
            "survey.png",
            "Test error against parameters (left; the papers' CIFAR-10 errors as open squares) "
            "and against training time (right)",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for _, spec in survey_runs(ctx).values()]

    def settings(self, ctx: Context) -> dict[str, Any]:
        return {
            "networks": ", ".join(net.label for net in survey_nets(ctx.budget.name)),
            "FractalNet": "drop-path: local 15%, global on half the mini-batches (Larsson et al. Sec. 4); "
            "its deepest column is also evaluated alone",
            "Highway": "lr 0.025, its authors' (no BN)",
            "FractalNet lr": "0.02, its paper's (Sec. 4.1); every other net the budget's recipe",
            "length": f"{SURVEY_ITERATIONS[ctx.budget.name] or 'the recipe'} iterations each",
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        nets = TrainedNets(ctx)
        rows, results, points, measured = [], {}, {}, {}
        published_errors = {}
        for net, spec in survey_runs(ctx).values():
            record = runs[spec.name]
            params, macs = params_cifar(spec), mult_adds_cifar(spec)
            error, images = record.final_value("test_error"), evaluated_images(record)
            seconds = float(record.summary.get("elapsed_s") or 0.0)
            paper = SURVEY_CIFAR10.get(net.paper) if net.paper else None
            results[net.label] = {
                "model": spec.model,
                "model_kwargs": dict(net.kwargs),
                "params": params,
                "mult_adds": macs,
                "train_seconds": seconds,
                "test_error": error,
                "noise": sampling_noise(error, images),
                "final_train_error": record.final_value("train_error"),
                "paper_params_m": paper["params_m"] if paper else None,
                "paper_error": paper["error"] if paper else None,
            }
            if net.key == "fractalnet":
                results[net.label]["deepest_column_error"] = self._deepest_column_error(nets, record)
            rows.append(
                [
                    net.label,
                    f"{params / 1e6:.2f}M",
                    f"{macs / 1e6:.0f}M",
                    seconds,
                    f"{error:.2f} +- {sampling_noise(error, images):.2f}",
                    paper["params_m"] if paper else None,
                    paper["error"] if paper else None,
                ]
            )
            points[net.label] = (params, seconds, error)
            measured[net.label] = (error, images)
            if paper:
                published_errors[net.label] = float(paper["error"])
        found = comparisons(measured, published_errors)
        shows = verdict(found)
        results["comparisons"] = [{**c.__dict__, "outcome": c.outcome} for c in found]
        ours = [measured[label][0] for label in published_errors]
        rho = rank_correlation(ours, list(published_errors.values())) if len(ours) >= 3 else None
        results["rank_correlation_with_papers"] = rho
        (figure,) = self.figure_paths(ctx)
        published_points = {
            label: (float(row["params_m"]) * 1e6, float(row["error"]))
            for label, row in SURVEY_CIFAR10.items()
            if row["params_m"] is not None
        }
        plot_error_vs_cost(
            points,
            figure,
            published=published_points,
            title=f"the survey on {ctx.dataset} ({ctx.budget.name} budget)",
        )
        finding = self._finding(results, found, rho, shows, ctx)
        columns = [
            "network",
            "params (CIFAR-10)",
            "mult-adds (32x32)",
            "training time (s)",
            "test error (%) +- noise",
            "paper params (M)",
            "paper test error (%, CIFAR-10)",
        ]
        published = Table(
            ["network", "params (M)", "test error (%)", "source"],
            [[label, row["params_m"], row["error"], row["source"]] for label, row in SURVEY_CIFAR10.items()],
        )
        notes = [
            "Every net is trained with the same recipe and length (the budget's), not its paper's own "
            "schedule (DenseNet: 300 epochs at batch 64; FractalNet: 400 epochs at lr 0.02), so the "
            "comparison is of architectures under one budget; the exception is the Highway net (no BN), "
            "trained at its authors' lr 0.025 instead of 0.1.",
            "Parameters and multiply-adds are those of the network built for CIFAR-10 (3 channels, 10 "
            "classes, 32x32), as the papers count them, whatever the dataset trained on. Training time is "
            "the run's wall time (summary.json's elapsed_s, evaluations included) on this run's device.",
            "The FractalNet paper prints 38.6M parameters for its 20-layer net; the authors' released "
            "definition, which ours follows, has 33.7M.",
            "Published errors are CIFAR-10's; ours are comparable to them only at the paper budget on "
            "CIFAR-10: elsewhere the orderings are what the verdict tests.",
        ]
        if ctx.budget.name == "smoke":
            notes.append(
                "The smoke budget trains small stand-ins of each family, so no published row applies."
            )
        tables = [
            ("Our nets, trained alike", Table(columns, rows)),
            ("The published CIFAR-10 numbers of the lecture's comparison", published),
        ]
        return Analysis(results, finding, shows, tables=tables, notes=notes)

    @staticmethod
    def _deepest_column_error(nets: TrainedNets, record: RunRecord) -> float:
        """Test error of the trained FractalNet's deepest column alone (Larsson et al. Table 1)."""
        model: nn.Module = nets.model(record)
        model.eval_column = "deepest"  # read at each forward; the weights are the trained fractal's
        return float(evaluate(model, nets.test_loader(record))["top1_error"])

    @staticmethod
    def _finding(
        results: Mapping[str, Any],
        found: list[Comparison],
        rho: float | None,
        shows: bool | None,
        ctx: Context,
    ) -> str:
        nets = {label: r for label, r in results.items() if isinstance(r, dict) and "test_error" in r}
        best = min(nets, key=lambda label: nets[label]["test_error"])
        worst = max(nets, key=lambda label: nets[label]["test_error"])
        noise = statistics.median(r["noise"] for r in nets.values())
        text = (
            f"On {ctx.dataset} at the {ctx.budget.name} budget, {best} tests best "
            f"({nets[best]['test_error']:.2f}%, {nets[best]['params'] / 1e6:.2f}M parameters) and {worst} "
            f"worst ({nets[worst]['test_error']:.2f}%); "
            f"each error carries a sampling noise of about {noise:.2f} points. "
        )
        fractal = next((r for r in nets.values() if "deepest_column_error" in r), None)
        if fractal is not None:
            text += (
                f"FractalNet's deepest column alone tests at {fractal['deepest_column_error']:.2f}% "
                f"against {fractal['test_error']:.2f}% for the whole fractal. "
            )
        if not found:
            return text + (
                "No net of this budget has a published CIFAR-10 error, so the papers' ordering "
                "cannot be tested here."
            )
        counts = {o: sum(c.outcome == o for c in found) for o in ("agrees", "disagrees", "within noise")}
        text += (
            f"Of the {len(found)} pairs the papers order, {counts['agrees']} come out in the same "
            f"order beyond the sampling noise, {counts['disagrees']} reversed and {counts['within noise']} "
            "within it"
        )
        text += f" (rank correlation with the published errors {rho:+.2f}). " if rho is not None else ". "
        reversed_pairs = [c for c in found if c.outcome == "disagrees"]
        for c in reversed_pairs[:3]:
            text += (
                f"{c.worse} beats {c.better} by {-c.gap:.2f} points ({strength(c.gap, c.noise)}), "
                f"though the papers put it {c.published_gap:.2f} points behind. "
            )
        verdict_text = {
            True: "The papers' ordering shows at this budget.",
            False: "The papers' ordering does not show at this budget: more pairs reverse than hold.",
            None: "Too many of the pairs are within the noise (or reversed) to judge the papers' ordering at "
            "this budget.",
        }[shows]
        return text + verdict_text
