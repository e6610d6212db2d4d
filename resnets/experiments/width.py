"""Width against depth: Zagoruyko and Komodakis 2016 (Wide Residual Networks), Table 4.

A WRN-d-k is a pre-activation CIFAR ResNet of depth d = 6n+4 whose three stages are k times as wide as
ResNet's (16k, 32k, 64k channels). On CIFAR-10 widening WRN-40 from k = 1 to 8 takes its error from 6.85%
to 4.66%, and at about equal parameters the wider, shallower net is at least as accurate (WRN-16-8 4.81%
against WRN-40-4 4.97%; WRN-28-10 4.17% against WRN-40-8 4.66%) while training faster on a GPU (Sec. 4,
"Computational efficiency").

The verdict, fixed before the runs, rests on paired comparisons on the test images (``paired.compare``):
the width series, WRN-d-1 against the wider net the budget seeds (the paper: lower error), and each
equal-parameter pair, deep-thin against shallow-wide (the paper: "at least as accurate"). "shows" when
the series shows and no pair contradicts (the wide net is not worse beyond the noise); "contradicts" when
the series or a pair contradicts; otherwise "cannot be judged". Time per epoch is reported as a
measurement, not judged: the paper's speed claim is about GPUs, and this budget runs on a CPU.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..models.registry import list_models
from .base import Analysis, Context, Experiment, RunRecord, Runs, RunSpec
from .paired import (
    Compared,
    Comparison,
    Net,
    Scores,
    compare,
    differences_of,
    seeded_net,
    shows_flag,
    spread_cell,
    verdict_sentence,
)
from .paper_numbers import WRN_TABLE4
from .plans import ITERATIONS, mult_adds_cifar, params_cifar
from .plots import plot_width
from .stats import Verdict
from .tables import Table

Shape = tuple[int, int]  # (depth d, widen factor k)


@dataclass(frozen=True)
class Series:
    """Widening at one depth: ``ks`` drawn, ``ks[0]`` against ``wide`` decides (both seeded)."""

    depth: int
    ks: tuple[int, ...]
    wide: int


@dataclass(frozen=True)
class Pair:
    """A deep-thin and a shallow-wide net of about equal parameters; ``paper``: the Table 4 pair whose
    effect it stands for (the same depth ratio and doubling of width), None where there is none."""

    deep: Shape
    wide: Shape
    paper: tuple[Shape, Shape] | None


SERIES: dict[str, Series] = {
    "smoke": Series(10, (1, 2), 2),
    # k = 1, 2, 4 as the paper's WRN-40-k (1, 2, 4, 8); 1 -> 2 decides (WRN-16-2 is also the pair's wide net).
    "cpu": Series(16, (1, 2, 4), 2),
    "paper": Series(40, (1, 2, 4, 8), 8),
}
PAIRS: dict[str, tuple[Pair, ...]] = {
    "smoke": (Pair((22, 1), (10, 2), None),),  # 0.27M / 0.30M
    # 0.56M / 0.69M: depth 40 -> 16 at twice the width, as Table 4's WRN-40-4 -> WRN-16-8 (8.9M / 11.0M).
    "cpu": (Pair((40, 1), (16, 2), ((40, 4), (16, 8))),),
    "paper": tuple(
        Pair(d, w, (d, w)) for d, w in (((40, 4), (16, 8)), ((40, 8), (28, 10)), ((22, 8), (16, 10)))
    ),
}
# The paper budget also trains the table's other rows (one seed), so every printed number has ours beside it.
EXTRA: dict[str, tuple[Shape, ...]] = {"smoke": (), "cpu": (), "paper": ((28, 12), (22, 10))}
PARAMS_TOLERANCE = 0.25  # a pair's larger net has at most 25% more parameters than its smaller

# Estimated seconds of one cpu-budget run (reproduce-cpu, 4 epochs of 55,000 images, on the 2-core Intel
# Xeon with AMX of docs/reproduce.md): WRN-16-2 and WRN-40-1 from their timed epochs at the earlier budget
# (13.6 s and 12.8 s per 12,800 images, 2026-12-02), scaled to 220,000 images plus 5% for evaluation;
# WRN-16-1 and WRN-16-4 from `resnets reproduce --all`'s estimate (multiply-adds), which overestimated
# those two by 1.2-1.35x, divided by 1.3.
CPU_RUN_SECONDS = {"WRN-16-1": 90, "WRN-16-2": 245, "WRN-40-1": 230, "WRN-16-4": 900}
SHOWS = (
    "The paper's finding shows: the wider net is more accurate beyond the noise, and at about equal "
    "parameters the shallower, wider net is at least as accurate as the deeper, thinner one."
)


def net_label(depth: int, k: int) -> str:
    return f"WRN-{depth}-{k}"


def wrn_model(depth: int, k: int) -> tuple[str, dict[str, Any]]:
    """The zoo's name for WRN-d-k (``wrn28_10``), or ``wrn`` with depth and widen_factor (as the survey
    plans its WRN-16-4, so the two share a run where they train alike)."""
    name = f"wrn{depth}_{k}"
    if name in list_models():
        return name, {}
    return "wrn", {"depth": depth, "widen_factor": k}


def deciding_shapes(budget: str) -> set[Shape]:
    """The nets whose comparisons decide the verdict: trained with the budget's seeds."""
    series = SERIES[budget]
    return {(series.depth, series.ks[0]), (series.depth, series.wide)} | {
        shape for pair in PAIRS[budget] for shape in (pair.deep, pair.wide)
    }


def width_run(ctx: Context, depth: int, k: int, seed: int = 0) -> RunSpec:
    """WRN-d-k's run: the paper's own recipe (``wrn``: 200 epochs, Nesterov, wd 5e-4, lr x0.2 at 60, 120,
    160) at the paper budget, the budget's recipe and the shared ITERATIONS elsewhere."""
    model, kwargs = wrn_model(depth, k)
    label = net_label(depth, k)
    if ctx.budget.name == "paper":
        return ctx.run(model, label, iterations=None, recipe="wrn", model_kwargs=kwargs, seed=seed)
    return ctx.run(model, label, iterations=ITERATIONS[ctx.budget.name], model_kwargs=kwargs, seed=seed)


def width_nets(ctx: Context) -> dict[Shape, Net]:
    """Every net the budget trains: the series, then the pairs' other members, then the rest; the deciding
    nets with the budget's seeds (``Net.key`` their first run's name, so experiments sharing a net agree on
    its seeds), the others once."""
    budget = ctx.budget.name
    series = SERIES[budget]
    shapes = [(series.depth, k) for k in series.ks]
    shapes += [s for pair in PAIRS[budget] for s in (pair.deep, pair.wide)] + list(EXTRA[budget])
    deciding = deciding_shapes(budget)
    nets = {}
    for depth, k in dict.fromkeys(shapes):
        first = width_run(ctx, depth, k)
        if (depth, k) in deciding:
            nets[(depth, k)] = seeded_net(
                ctx, first.name, first.label, lambda s, d=depth, w=k: width_run(ctx, d, w, s)
            )
        else:
            nets[(depth, k)] = Net(first.name, first.label, (first,))
    return nets


def _paper_effect(a: Shape, b: Shape) -> float | None:
    """Table 4's B - A in points, None where either is not in it."""
    if a in WRN_TABLE4 and b in WRN_TABLE4:
        return WRN_TABLE4[b]["error"] - WRN_TABLE4[a]["error"]
    return None


def width_comparisons(ctx: Context) -> tuple[Comparison, list[Comparison]]:
    """(the series: narrowest against the seeded wide net; the equal-parameter pairs, deep against wide),
    each in the paper's direction (B lower) with Table 4's effect (the series' at depth 40)."""
    nets, series = width_nets(ctx), SERIES[ctx.budget.name]
    widening = Comparison(
        nets[(series.depth, series.ks[0])],
        nets[(series.depth, series.wide)],
        "lower",
        _paper_effect((40, series.ks[0]), (40, series.wide)),
    )
    pairs = [
        Comparison(nets[p.deep], nets[p.wide], "lower", _paper_effect(*p.paper) if p.paper else None)
        for p in PAIRS[ctx.budget.name]
    ]
    return widening, pairs


def width_verdict(series: str, pairs: Sequence[str]) -> Verdict:
    """The paper: wider is better, and at equal parameters the wide net is "at least as accurate". So
    "shows" when the series shows and no pair contradicts; "contradicts" when the series or any pair
    contradicts; otherwise "cannot be judged"."""
    if series == "contradicts" or "contradicts" in pairs:
        return "contradicts"
    return "shows" if series == "shows" else "cannot be judged"


def seconds_per_epoch(record: RunRecord) -> float:
    """The run's wall time per epoch from its summary (training and the validation pass; the engine's
    ``elapsed_s`` over ``epochs_done``); 0 where the summary lacks them."""
    epochs = record.summary.get("epochs_done") or 0
    return float(record.summary.get("elapsed_s") or 0.0) / epochs if epochs else 0.0


def cpu_minutes(nets: Mapping[Shape, Net]) -> float:
    """The estimated cpu-budget training time of ``nets`` (every seed), in minutes."""
    return sum(CPU_RUN_SECONDS[net.label] * len(net.specs) for net in nets.values()) / 60


def time_ratio(seconds: Mapping[str, Sequence[float]], deep: str, wide: str) -> float:
    """The wide net's mean seconds per epoch over the deep net's (below 1: the wide net is faster)."""
    t_deep, t_wide = statistics.fmean(seconds[deep]), statistics.fmean(seconds[wide])
    return t_wide / t_deep if t_deep > 0 else float("nan")


def time_sentence(measured: Compared, seconds: Mapping[str, Sequence[float]]) -> str:
    """The pair's time per epoch, a measurement beside the verdict."""
    deep, wide = measured.comparison.a.label, measured.comparison.b.label
    t_deep, t_wide = statistics.fmean(seconds[deep]), statistics.fmean(seconds[wide])
    return (
        f"Time per epoch (a measurement, not part of the verdict: the paper's speed claim is about GPUs): "
        f"{wide} {t_wide:.1f} s against {deep} {t_deep:.1f} s on this machine "
        f"({time_ratio(seconds, deep, wide):.2f}x)."
    )


def pair_numbers(
    measured: Compared, params: Mapping[str, int], seconds: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """An equal-parameter pair in results.json: its nets, parameter and time ratios, verdict."""
    deep, wide = measured.comparison.a.label, measured.comparison.b.label
    return {
        "deep": deep,
        "wide": wide,
        "params_ratio": params[wide] / params[deep],
        "seconds_per_epoch_ratio": time_ratio(seconds, deep, wide),
        "verdict": measured.verdict,
    }


def finding_text(series: Compared, pairs: Sequence[Compared], verdict: str, times: Sequence[str]) -> str:
    text = "Widening: " + series.sentence() + " At about equal parameters: "
    text += " ".join(p.sentence() for p in pairs) + " "
    if verdict == "contradicts":
        text += (
            "The opposite of the paper's finding holds beyond the noise: the wider net is worse, in the "
            "series or at equal parameters."
        )
    else:
        text += verdict_sentence(verdict, SHOWS)
    return text + " " + " ".join(times)


class Width(Experiment):
    name = "width"
    title = "Width against depth: Wide ResNets"
    paper = "Zagoruyko and Komodakis 2016 (Wide Residual Networks), Table 4"
    claim = (
        "Widening residual nets improves them: on CIFAR-10 WRN-40-k goes from 6.85% error at k = 1 (0.6M "
        "parameters) through 5.33% (k = 2) and 4.97% (k = 4) to 4.66% at k = 8 (35.7M); at about equal "
        "parameters a shallower, wider net is at least as accurate (WRN-16-8 4.81% against WRN-40-4 "
        "4.97%; WRN-28-10 4.17% against WRN-40-8 4.66%; WRN-16-10 4.56% against WRN-22-8 4.38%) and faster "
        "to train on a GPU."
    )
    figures = (
        (
            "width.png",
            "Test error against parameters (mean, seed range, seeds; the width series joined, each "
            "equal-parameter pair dotted, deep-thin triangles, shallow-wide squares), the paired "
            "comparisons that decide the verdict, time per epoch (measured, not judged), and Table 4 in a "
            "panel of its own",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in width_nets(ctx).values() for spec in net.specs]

    def comparisons(self, ctx: Context) -> list[Comparison]:
        series, pairs = width_comparisons(ctx)
        return [series, *pairs]

    def settings(self, ctx: Context) -> dict[str, Any]:
        budget = ctx.budget.name
        series, nets = SERIES[budget], width_nets(ctx)
        settings = {
            "series": f"WRN-{series.depth}-k, k = {', '.join(map(str, series.ks))} "
            f"(k = {series.ks[0]} against k = {series.wide} decides)",
            "equal-parameter pairs (deep-thin / shallow-wide)": "; ".join(
                f"{net_label(*p.deep)} / {net_label(*p.wide)}" for p in PAIRS[budget]
            ),
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in nets.values()),
        }
        if budget == "paper":
            settings["recipe"] = (
                "the paper's (`wrn` recipe, Sec. 3): 200 epochs at batch 128, SGD with Nesterov momentum "
                "0.9, lr 0.1 x0.2 at epochs 60, 120 and 160, weight decay 5e-4, pad-and-crop and flip, no "
                "dropout (the table's rows)"
            )
        else:
            settings["recipe"] = "the budget's, for every net (not WRN's own 200-epoch schedule)"
        if budget == "cpu":
            settings["time"] = (
                f"about {cpu_minutes(nets):.0f} minutes from scratch on 2 cores with bfloat16 (estimated per "
                "run: " + ", ".join(f"{k} {v} s" for k, v in CPU_RUN_SECONDS.items()) + "); no run is "
                "shared with degradation, depth or shortcuts; a third seed of a pair adds about 8 minutes"
            )
        return settings

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        nets, scores = width_nets(ctx), Scores(ctx, runs)
        results: dict[str, Any] = {}
        rows, per_seed, seconds = [], {}, {}
        for (depth, k), net in nets.items():
            records = [runs[spec.name] for spec in net.specs]
            params, macs = params_cifar(net.specs[0]), mult_adds_cifar(net.specs[0])
            test = scores.test_errors(net)
            train = [r.final_value("train_error") for r in records]
            per_seed[net.label], seconds[net.label] = test, [seconds_per_epoch(r) for r in records]
            paper = WRN_TABLE4.get((depth, k), {})
            results[net.label] = {
                "depth": depth,
                "widen_factor": k,
                "model": net.specs[0].model,
                "params": params,
                "mult_adds": macs,
                "seeds": len(net.specs),
                "seconds_per_epoch": seconds[net.label],
                "test_error": test,
                "final_train_error": train,
                "paper_params_m": paper.get("params_m"),
                "paper_error": paper.get("error"),
            }
            rows.append(
                [
                    net.label,
                    f"{params / 1e6:.2f}M",
                    paper.get("params_m"),
                    f"{macs / 1e6:.0f}M",
                    len(net.specs),
                    spread_cell(seconds[net.label]),
                    spread_cell(train),
                    spread_cell(test),
                    paper.get("error"),
                ]
            )
        series_cmp, pair_cmps = width_comparisons(ctx)
        series = compare(scores, series_cmp)
        pairs = [compare(scores, c) for c in pair_cmps]
        verdict = width_verdict(series.verdict, [p.verdict for p in pairs])
        results["comparisons"] = {m.comparison.name: m.to_dict() for m in [series, *pairs]}
        params = {net.label: results[net.label]["params"] for net in nets.values()}
        results["pairs"] = [pair_numbers(p, params, seconds) for p in pairs]
        results["verdict"] = verdict
        (figure,) = self.figure_paths(ctx)
        budget = ctx.budget.name
        plot_width(
            {net.label: (results[net.label]["params"], per_seed[net.label]) for net in nets.values()},
            [net_label(SERIES[budget].depth, k) for k in SERIES[budget].ks],
            [(net_label(*p.deep), net_label(*p.wide)) for p in PAIRS[budget]],
            differences_of([series, *pairs]),
            seconds,
            {net_label(*s): (row["params_m"] * 1e6, row["error"]) for s, row in WRN_TABLE4.items()},
            figure,
            title=f"width against depth on {ctx.dataset} ({budget} budget)",
        )
        times = [time_sentence(p, seconds) for p in pairs]
        columns = [
            "network",
            "params (CIFAR-10)",
            "paper params (M)",
            "mult-adds (32x32)",
            "seeds",
            "s / epoch",
            "final training error (%)",
            "test error (%)",
            "paper test error (%, CIFAR-10)",
        ]
        published = Table(
            ["network", "params (M)", "test error (%, CIFAR-10)"],
            [[net_label(*s), row["params_m"], row["error"]] for s, row in WRN_TABLE4.items()],
        )
        notes = [
            "Errors: the mean over seeds with the seed range in brackets, on every test image; training "
            "error is the last epoch's running error with augmentation.",
            "Parameters and multiply-adds are those of the network built for CIFAR-10 (3 channels, 10 "
            "classes, 32x32), as the paper counts them, whatever the dataset trained on.",
            "Seconds per epoch: each run's wall time (training and validation) over its epochs, from its "
            "summary.json, on this machine; reported, not judged (the paper's speed claim is about GPUs).",
            "The paper's errors are CIFAR-10's after 200 epochs; ours are comparable to them only at the "
            "paper budget: elsewhere the paired comparisons are what the verdict tests.",
        ]
        tables = [
            ("Our nets beside Table 4", Table(columns, rows)),
            ("Table 4: CIFAR-10 test error of wide residual networks", published),
        ]
        return Analysis(
            results,
            finding_text(series, pairs, verdict, times),
            shows_flag(verdict),
            tables=tables,
            notes=notes,
            verdict=verdict,
        )
