"""Width against depth: Zagoruyko and Komodakis 2016 (Wide Residual Networks), Table 4.

A WRN-d-k is a pre-activation CIFAR ResNet of depth d = 6n+4 whose three stages are k times as wide as
ResNet's (16k, 32k, 64k channels). On CIFAR-10 widening WRN-40 from k = 1 to 8 takes its error from 6.85%
to 4.66%, and at about equal parameters the wider, shallower net is as accurate or better (WRN-28-10 4.17%
against WRN-40-8 4.66%) while training faster, since a GPU runs fewer, larger layers better (Sec. 4,
"Computational efficiency").

The paper budget trains the table's ten nets with the paper's recipe (``wrn``). The cpu budget trains what
fits in about 30 minutes on two cores: a WRN-16-k series over k = 1..4 and two deep-thin against
shallow-wide pairs of about equal parameters, WRN-40-1 / WRN-16-2 and WRN-28-2 / WRN-16-3.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..models.registry import list_models
from ..summary import summary
from .base import Analysis, Context, Experiment, RunRecord, Runs, RunSpec
from .plans import ITERATIONS, params_cifar
from .plots import plot_width
from .stats import evaluated_images, gap_noise, sampling_noise, strength
from .tables import Table

# Zagoruyko and Komodakis 2016, Table 4 (as the lecture reprints it): (depth, k) -> parameters (M) and
# CIFAR-10 test error (%), no dropout, standard augmentation.
WRN_TABLE4: dict[tuple[int, int], dict[str, float]] = {
    (40, 1): {"params_m": 0.6, "error": 6.85},
    (40, 2): {"params_m": 2.2, "error": 5.33},
    (40, 4): {"params_m": 8.9, "error": 4.97},
    (40, 8): {"params_m": 35.7, "error": 4.66},
    (28, 10): {"params_m": 36.5, "error": 4.17},
    (28, 12): {"params_m": 52.5, "error": 4.33},
    (22, 8): {"params_m": 17.2, "error": 4.38},
    (22, 10): {"params_m": 26.8, "error": 4.44},
    (16, 8): {"params_m": 11.0, "error": 4.81},
    (16, 10): {"params_m": 17.1, "error": 4.56},
}

Net = tuple[int, int]  # (depth d, widen factor k)

# The width series: one depth, widening k (the paper's widest series is WRN-40-k).
SERIES: dict[str, tuple[int, tuple[int, ...]]] = {
    "smoke": (10, (1, 2)),
    "cpu": (16, (1, 2, 3, 4)),
    "paper": (40, (1, 2, 4, 8)),
}
# (deep and thin, shallow and wide) pairs of about equal parameters (CIFAR-10 counts, within PARAMS_TOLERANCE)
# and multiply-adds.
PAIRS: dict[str, tuple[tuple[Net, Net], ...]] = {
    "smoke": (((22, 1), (10, 2)),),  # 0.27M / 0.30M
    "cpu": (((40, 1), (16, 2)), ((28, 2), (16, 3))),  # 0.56M / 0.69M, 1.47M / 1.55M
    "paper": (((40, 8), (28, 10)), ((40, 4), (16, 8)), ((22, 8), (16, 10))),  # 35.7/36.5, 8.9/11.0, 17.2/17.1
}
# The paper budget also trains the table's other rows, so that every printed number has ours beside it.
EXTRA: dict[str, tuple[Net, ...]] = {"smoke": (), "cpu": (), "paper": ((28, 12), (22, 10))}
PARAMS_TOLERANCE = 0.25  # a pair's larger net has at most 25% more parameters than its smaller
# Seconds per epoch closer than this (as a fraction) count as equally fast: a busy machine's timings vary.
TIME_TOLERANCE = 0.05

# The cpu budget's wall time, estimated (not timed) from per-step measurements at batch 128, bfloat16,
# channels-last, 2 threads, 32x32: WRN-16-4 0.87 s, ResNet-20 0.11 s (19 convs), ResNet-56 0.30 s (55 convs);
# Fashion-MNIST's 28x28 costs about 0.76x of 32x32; a WRN-d-k costs about (d-4) k^2, with per-layer
# overheads at small k. Per step at 28x28: WRN-16-1 0.06, WRN-16-2 0.20, WRN-16-3 0.37 (9/16 of WRN-16-4),
# WRN-16-4 0.66, WRN-40-1 0.16 (37 convs, as ResNet-56's per conv), WRN-28-2 0.36 (twice WRN-16-2's blocks)
# = 1.81 s, x 900 iterations = 1,630 s = 27 min, plus about 5% for the nine evaluations on 2,000 images.
# WRN-16-8 (~2.6 s a step, 40 minutes alone) does not fit.
CPU_TIME = ("about 29 minutes on 2 cores (estimated, not timed: per-step seconds at 28x28 of WRN-16-1 "
            "0.06, -16-2 0.20, -16-3 0.37, -16-4 0.66, WRN-40-1 0.16, WRN-28-2 0.36 = 1.81 s, x 900 "
            "iterations = 27 minutes, plus about 5% for evaluation; WRN-16-8, about 2.6 s a step, would "
            "take 40 minutes alone)")


def net_label(depth: int, k: int) -> str:
    return f"WRN-{depth}-{k}"


def wrn_model(depth: int, k: int) -> tuple[str, dict[str, Any]]:
    """The zoo's name for WRN-d-k (``wrn28_10``), or ``wrn`` with depth and widen_factor (as the survey
    plans its WRN-16-4, so the two share a run where they train alike)."""
    name = f"wrn{depth}_{k}"
    if name in list_models():
        return name, {}
    return "wrn", {"depth": depth, "widen_factor": k}


def width_nets(budget: str) -> list[Net]:
    """Every net the budget trains, once each: the series, then the pairs' other members, then the rest."""
    depth, ks = SERIES[budget]
    nets = [(depth, k) for k in ks] + [net for pair in PAIRS[budget] for net in pair] + list(EXTRA[budget])
    return list(dict.fromkeys(nets))


def width_run(ctx: Context, depth: int, k: int) -> RunSpec:
    """WRN-d-k's run: the paper's own recipe (``wrn``: 200 epochs, Nesterov, wd 5e-4, lr x0.2 at 60, 120,
    160) at the paper budget, the budget's recipe and the shared ITERATIONS elsewhere."""
    model, kwargs = wrn_model(depth, k)
    label = net_label(depth, k)
    if ctx.budget.name == "paper":
        return ctx.run(model, label, iterations=None, recipe="wrn", model_kwargs=kwargs)
    return ctx.run(model, label, iterations=ITERATIONS[ctx.budget.name], model_kwargs=kwargs)


def width_runs(ctx: Context) -> dict[Net, RunSpec]:
    return {net: width_run(ctx, *net) for net in width_nets(ctx.budget.name)}


def seconds_per_epoch(record: RunRecord) -> float:
    """Median training seconds of an epoch (metrics.csv's epoch_time_s: the steps only, no evaluation);
    the median keeps a slow first epoch (allocation, warm-up) or a busy moment from deciding it."""
    times = [float(r["epoch_time_s"]) for r in record.metrics if r.get("epoch_time_s")]
    return statistics.median(times) if times else 0.0


@dataclass(frozen=True)
class Measured:
    """One trained net's numbers, as the verdict reads them."""

    depth: int
    k: int
    params: int
    error: float  # test error, %
    images: int  # test images it was measured on
    seconds_per_epoch: float

    @property
    def label(self) -> str:
        return net_label(self.depth, self.k)


@dataclass(frozen=True)
class SeriesOutcome:
    """Does error fall as the series widens? ``gain``: narrowest's error minus widest's."""

    gain: float
    noise: float
    rises: tuple[str, ...]  # widening steps whose error rose beyond their noise ("WRN-16-2 -> WRN-16-3")

    @property
    def outcome(self) -> str:
        if self.gain < -self.noise:
            return "reversed"
        if self.gain > self.noise and not self.rises:
            return "holds"
        return "undecided"


def series_outcome(series: Sequence[Measured]) -> SeriesOutcome:
    first, last = series[0], series[-1]
    rises = tuple(f"{a.label} -> {b.label}" for a, b in zip(series, series[1:], strict=False)
                  if b.error - a.error > gap_noise(a.error, a.images, b.error, b.images))
    noise = gap_noise(first.error, first.images, last.error, last.images)
    return SeriesOutcome(first.error - last.error, noise, rises)


@dataclass(frozen=True)
class PairOutcome:
    """A deep-thin net against a shallow-wide one of about equal parameters."""

    deep: Measured
    wide: Measured

    @property
    def params_ratio(self) -> float:
        return self.wide.params / self.deep.params

    @property
    def error_gap(self) -> float:
        """Deep's error minus wide's: positive where the wide net is better."""
        return self.deep.error - self.wide.error

    @property
    def noise(self) -> float:
        return gap_noise(self.deep.error, self.deep.images, self.wide.error, self.wide.images)

    @property
    def time_ratio(self) -> float | None:
        """Wide's seconds per epoch over deep's (below 1: the wide net is faster); None if unmeasured."""
        if self.deep.seconds_per_epoch <= 0 or self.wide.seconds_per_epoch <= 0:
            return None
        return self.wide.seconds_per_epoch / self.deep.seconds_per_epoch

    @property
    def accuracy(self) -> str:
        """ "not worse" or "worse" (the wide net's error beyond the noise above the deep net's)."""
        return "worse" if self.error_gap < -self.noise else "not worse"

    @property
    def speed(self) -> str:
        ratio = self.time_ratio
        if ratio is None or abs(ratio - 1) <= TIME_TOLERANCE:
            return "alike" if ratio is not None else "unmeasured"
        return "faster" if ratio < 1 else "slower"

    @property
    def outcome(self) -> str:
        if self.accuracy == "worse" or self.speed == "slower":
            return "reversed"
        return "holds" if self.speed == "faster" else "undecided"


def verdict(series: SeriesOutcome, pairs: Sequence[PairOutcome]) -> bool | None:
    """True: error falls with width beyond the noise and every pair's wide net is not worse and faster;
    False: either reverses (beyond the noise, or slower by more than TIME_TOLERANCE); None otherwise."""
    outcomes = [series.outcome] + [p.outcome for p in pairs]
    if "reversed" in outcomes:
        return False
    if all(o == "holds" for o in outcomes):
        return True
    return None


def finding_text(series: Sequence[Measured], found: SeriesOutcome, pairs: Sequence[PairOutcome],
                 shows: bool | None) -> str:
    first, last = series[0], series[-1]
    text = (f"Widening {first.label} to {last.label} ({first.params / 1e6:.2f}M to {last.params / 1e6:.2f}M "
            f"parameters) takes test error from {first.error:.2f}% to {last.error:.2f}% "
            f"({abs(found.gain):.2f} points {'lower' if found.gain >= 0 else 'higher'}, "
            f"{strength(found.gain, found.noise)})")
    text += (f"; error rises beyond the noise at {', '.join(found.rises)}. " if found.rises else ". ")
    for p in pairs:
        ratio = p.time_ratio
        speed = (f"{p.wide.seconds_per_epoch:.1f} s an epoch against {p.deep.seconds_per_epoch:.1f} s "
                 f"({ratio:.2f}x: {p.speed})" if ratio is not None else "its speed was not measured")
        text += (f"{p.wide.label} against {p.deep.label} ({p.params_ratio:.2f}x the parameters): "
                 f"{p.wide.error:.2f}% against {p.deep.error:.2f}%, "
                 f"{'better' if p.error_gap >= 0 else 'worse'} by {abs(p.error_gap):.2f} points "
                 f"({strength(p.error_gap, p.noise)}), {speed}. ")
    if shows is True:
        return text + ("Wider is better here, and at equal parameters the wider, shallower nets are as "
                       "accurate and faster per epoch, as in the paper.")
    if shows is None:
        return text + ("The differences are too close to the sampling noise (or the timings too alike) to "
                       "decide the paper's finding at this budget.")
    reasons = ["error rises with width beyond the noise"] if found.outcome == "reversed" else []
    reasons += [f"{p.wide.label} is less accurate than {p.deep.label} beyond the noise" for p in pairs
                if p.accuracy == "worse"]
    slower = [p for p in pairs if p.speed == "slower"]
    reasons += [f"{p.wide.label} is slower per epoch than {p.deep.label}" for p in slower]
    text += "The paper's finding does not show here: " + "; ".join(reasons) + "."
    if slower:
        text += (" (The paper's speed claim is for GPUs, where fewer, larger layers run more efficiently; "
                 "on a CPU the multiply-adds decide most of the time.)")
    return text


def mult_adds_cifar(spec: RunSpec) -> int:
    """Multiply-adds of the run's network on one 32x32 CIFAR-10 image."""
    return summary(spec.model, (3, 32, 32), **spec.overrides.get("model_kwargs", {})).total_mult_adds


class Width(Experiment):
    name = "width"
    title = "Width against depth: Wide ResNets"
    paper = "Zagoruyko and Komodakis 2016 (Wide Residual Networks), Table 4"
    claim = (
        "Widening residual nets improves them: on CIFAR-10 WRN-40-k goes from 6.85% error at k = 1 (0.6M "
        "parameters) through 5.33% (k = 2) and 4.97% (k = 4) to 4.66% at k = 8 (35.7M); at about equal "
        "parameters a shallower, wider net is at least as accurate (WRN-28-10 4.17% against WRN-40-8 "
        "4.66%; WRN-16-8 4.81% against WRN-40-4 4.97%; WRN-16-10 4.56% against WRN-22-8 4.38%) and faster "
        "to train."
    )
    figures = (("width.png", "Test error against parameters (left: the width series as a line, each "
                             "equal-parameter pair joined by a dotted line, deep-thin as triangles, "
                             "shallow-wide as squares) and against training time (right)"),)

    def runs(self, ctx: Context) -> list[RunSpec]:
        return list(width_runs(ctx).values())

    def settings(self, ctx: Context) -> dict[str, Any]:
        budget = ctx.budget.name
        depth, ks = SERIES[budget]
        settings = {
            "series": f"WRN-{depth}-k, k = {', '.join(map(str, ks))}",
            "equal-parameter pairs (deep-thin / shallow-wide)": "; ".join(
                f"{net_label(*a)} / {net_label(*b)}" for a, b in PAIRS[budget]),
            "networks": ", ".join(net_label(*net) for net in width_nets(budget)),
        }
        if budget == "paper":
            settings["recipe"] = ("the paper's (`wrn` recipe, Sec. 3): 200 epochs at batch 128, SGD with "
                                  "Nesterov momentum 0.9, lr 0.1 x0.2 at epochs 60, 120 and 160, weight "
                                  "decay 5e-4, pad-and-crop and flip, no dropout (the table's rows)")
        else:
            settings["recipe"] = (f"the budget's, {ITERATIONS[budget]} iterations each (the shared length), "
                                  "not WRN's own schedule")
        if budget == "cpu":
            settings["time"] = CPU_TIME
        return settings

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        budget = ctx.budget.name
        measured: dict[Net, Measured] = {}
        results: dict[str, Any] = {}
        rows = []
        for (depth, k), spec in width_runs(ctx).items():
            record = runs[spec.name]
            params, error = params_cifar(spec), record.final_value("test_error")
            images = evaluated_images(record)
            per_epoch = seconds_per_epoch(record)
            train_seconds = sum(float(r.get("epoch_time_s") or 0.0) for r in record.metrics)
            paper = WRN_TABLE4.get((depth, k))
            measured[(depth, k)] = Measured(depth, k, params, error, images, per_epoch)
            macs = mult_adds_cifar(spec)
            results[spec.label] = {
                "depth": depth, "widen_factor": k, "model": spec.model, "params": params, "mult_adds": macs,
                "seconds_per_epoch": per_epoch, "train_seconds": train_seconds,
                "elapsed_s": float(record.summary.get("elapsed_s") or 0.0),
                "test_error": error, "noise": sampling_noise(error, images),
                "final_train_error": record.final_value("train_error"),
                "paper_params_m": paper["params_m"] if paper else None,
                "paper_error": paper["error"] if paper else None,
            }
            rows.append([spec.label, depth, k, f"{params / 1e6:.2f}M", paper["params_m"] if paper else None,
                         f"{macs / 1e6:.0f}M", per_epoch, train_seconds,
                         f"{error:.2f} +- {sampling_noise(error, images):.2f}",
                         paper["error"] if paper else None])
        depth, ks = SERIES[budget]
        series = [measured[(depth, k)] for k in ks]
        found = series_outcome(series)
        pairs = [PairOutcome(measured[a], measured[b]) for a, b in PAIRS[budget]]
        shows = verdict(found, pairs)
        results["series"] = {"nets": [m.label for m in series], "gain": found.gain, "noise": found.noise,
                             "rises": list(found.rises), "outcome": found.outcome}
        results["pairs"] = [
            {"deep": p.deep.label, "wide": p.wide.label, "params_ratio": p.params_ratio,
             "error_gap": p.error_gap, "noise": p.noise, "time_ratio": p.time_ratio,
             "accuracy": p.accuracy, "speed": p.speed, "outcome": p.outcome} for p in pairs]
        (figure,) = self.figure_paths(ctx)
        points = {m.label: (m.params, results[m.label]["train_seconds"], m.error) for m in measured.values()}
        plot_width(points, [m.label for m in series], [(p.deep.label, p.wide.label) for p in pairs], figure,
                   title=f"width against depth on {ctx.dataset} ({budget} budget)")
        columns = ["network", "depth", "k", "params (CIFAR-10)", "paper params (M)", "mult-adds (32x32)",
                   "s / epoch", "training time (s)", "test error (%) +- noise",
                   "paper test error (%, CIFAR-10)"]
        pair_rows = [[p.deep.label, p.wide.label, f"{p.params_ratio:.2f}",
                      f"{p.error_gap:+.2f} +- {p.noise:.2f}",
                      f"{p.time_ratio:.2f}" if p.time_ratio is not None else None, p.outcome] for p in pairs]
        pair_table = Table(["deep-thin", "shallow-wide", "params ratio (wide / deep)",
                            "error gap (deep - wide, points)", "s / epoch ratio (wide / deep)", "outcome"],
                           pair_rows)
        published = Table(["network", "params (M)", "test error (%, CIFAR-10)"],
                          [[net_label(*net), row["params_m"], row["error"]]
                           for net, row in WRN_TABLE4.items()])
        notes = [
            "Parameters and multiply-adds are those of the network built for CIFAR-10 (3 channels, 10 "
            "classes, 32x32), as the paper counts them, whatever the dataset trained on.",
            "Seconds per epoch: the median over epochs of the training steps' time (metrics.csv "
            "epoch_time_s, no evaluation); training time: their sum. An epoch is the budget's training set "
            "(12,800 images, 100 iterations, at the cpu budget). Timings within 5% count as alike.",
            "The paper's errors are CIFAR-10's after 200 epochs; ours are comparable to them only at the "
            "paper budget: elsewhere the orderings are what the verdict tests.",
        ]
        if budget != "paper":
            notes.append("The runs use the budget's recipe (SGD momentum 0.9, wd 1e-4, lr /10 at 50% and "
                         "75%), not WRN's (Nesterov, wd 5e-4, lr x0.2 at 60/120/160 of 200 epochs), so "
                         "that they train alike with the other experiments' nets; the paper budget uses "
                         "WRN's.")
        tables = [("Our nets beside Table 4", Table(columns, rows)),
                  ("The equal-parameter pairs", pair_table),
                  ("Table 4: CIFAR-10 test error of wide residual networks", published)]
        return Analysis(results, finding_text(series, found, pairs, shows), shows, tables=tables, notes=notes)
