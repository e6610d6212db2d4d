"""Cardinality at equal complexity: Xie et al. 2017 (ResNeXt), Table 3.

ResNeXt splits each bottleneck's 3x3 conv into C groups of d channels and, holding the multiply-adds
fixed, trades width per group for cardinality: on ImageNet, ResNet-50-sized nets of about 4.1 GFLOPs
go from 23.9% top-1 error at 1x64d to 22.2% at 32x4d (Table 3), and their training error falls with
cardinality too (Fig. 5), which the paper reads as stronger representations rather than regularisation.
The paper budget is that series (torchvision's ResNet-50 with ``groups`` and ``width_per_group``, the
ImageNet recipe); the cpu and smoke budgets train the same C x d series on a CIFAR ResNeXt template (Sec.
5.3) at a quarter of its widths, where the series' multiply-adds stay within 5% of the 1x64d net's.

The verdict, fixed before the runs, is on the statistic Table 3 uses, test error: the ends of the series
(1x64d against the highest cardinality, both with the budget's seeds) compared on the test images with
the paired bootstrap, two-sided in the paper's direction (lower). The final training error (Fig. 5) is
judged the same way on a bootstrap over seeds and the last epoch's logged windows, and reported beside
it; it decides nothing. Where the series' multiply-adds drift beyond 5% the comparison tests nothing
("cannot be judged").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..summary import summary
from .base import Analysis, Context, Experiment, RunRecord, Runs, RunSpec
from .paired import (
    Compared,
    Comparison,
    Net,
    Scores,
    compare,
    seeded_net,
    shows_flag,
    spread_cell,
    verdict_sentence,
)
from .paper_numbers import RESNEXT_TABLE3
from .plans import ITERATIONS
from .plots import plot_cardinality
from .stats import Direction, Judgement, Verdict, bootstrap_difference, judge, rank_correlation
from .tables import Table

# (cardinality C, the first stage's width per group d), Table 3's rows. The cpu budget trains the ends and
# the middle (4x24d) of the five: the ends with two seeds each and all five would take about 70 minutes.
SERIES: dict[str, tuple[tuple[int, int], ...]] = {
    "smoke": ((1, 64), (2, 40), (4, 24)),
    "cpu": ((1, 64), (4, 24), (32, 4)),
    "paper": ((1, 64), (2, 40), (4, 24), (8, 14), (32, 4)),
}
# The CIFAR template at a quarter of the CIFAR ResNeXt's widths (16/32/64 wide bottlenecks at 1x64d,
# 64/128/256 outputs). The cpu budget's has two bottlenecks a stage (ResNeXt-20) rather than ResNeXt-29's
# three, so that the series fits its time; the smoke budget's is smaller still.
TEMPLATES: dict[str, dict[str, Any]] = {
    "smoke": {"depth": 11, "widths": (8, 16, 32), "stem_width": 8},
    "cpu": {"depth": 20, "widths": (16, 32, 64), "stem_width": 16},
}
COMPLEXITY_TOLERANCE = 0.05  # the series' multiply-adds within 5% of the 1x64d net's

# Estimated seconds of one cpu-budget run (4 epochs of 55,000 images, plus 5% for evaluation): the
# earlier budget's measured throughput of the ResNeXt-29 series (385 images/s at 1x64d, 273-320 for the
# grouped nets, 2026-12-02; the slowest taken for 32x4d) scaled to ResNeXt-20's two thirds of the units.
CPU_RUN_SECONDS = {(1, 64): 400, (4, 24): 510, (32, 4): 565}
SHOWS = "The paper's finding shows: the highest cardinality tests better than 1x64d at equal multiply-adds."


def series_label(cardinality: int, width: int) -> str:
    return f"{cardinality}x{width}d"


def _run(ctx: Context, cardinality: int, width: int, seed: int = 0) -> RunSpec:
    label = series_label(cardinality, width)
    if ctx.budget.name == "paper":
        return ctx.run(
            "resnet50",
            f"ResNet-50 {label}",
            iterations=None,
            recipe="paper-imagenet",
            model_kwargs={"groups": cardinality, "width_per_group": width},
            dataset="imagenet",
            seed=seed,
        )
    kwargs = {**TEMPLATES[ctx.budget.name], "cardinality": cardinality, "base_width": width}
    return ctx.run(
        "resnext_cifar",
        f"ResNeXt-{kwargs['depth']} {label}",
        iterations=ITERATIONS[ctx.budget.name],
        model_kwargs=kwargs,
        seed=seed,
    )


def cardinality_nets(ctx: Context) -> dict[tuple[int, int], Net]:
    """The series by (C, d): its ends with the budget's seeds (they decide), the middle once."""
    series = SERIES[ctx.budget.name]
    nets = {}
    for c, d in series:
        first = _run(ctx, c, d)
        if (c, d) in (series[0], series[-1]):
            nets[(c, d)] = seeded_net(ctx, first.name, first.label, lambda s, c=c, d=d: _run(ctx, c, d, s))
        else:
            nets[(c, d)] = Net(first.name, first.label, (first,))
    return nets


def cardinality_comparison(ctx: Context) -> Comparison:
    """1x64d (A) against the highest cardinality (B): the paper's B has the lower error (Table 3)."""
    series, nets = SERIES[ctx.budget.name], cardinality_nets(ctx)
    low, high = series[0], series[-1]
    return Comparison(nets[low], nets[high], "lower", RESNEXT_TABLE3[high] - RESNEXT_TABLE3[low])


def complexity(spec: RunSpec, imagenet: bool) -> tuple[int, int]:
    """(multiply-adds, parameters) of the run's network as the paper counts them: ImageNet nets at 224x224
    with 1000 classes, CIFAR nets at 32x32 with 10."""
    kwargs = dict(spec.overrides.get("model_kwargs", {}))
    size, classes = ((3, 224, 224), 1000) if imagenet else ((3, 32, 32), 10)
    report = summary(spec.model, size, num_classes=classes, **kwargs)
    return report.total_mult_adds, report.total_params


def last_epoch_errors(record: RunRecord) -> list[float]:
    """The running training error (%) of each logged window of the last epoch (steps.jsonl, 50 iterations
    each), or the last epoch's error where the run is too short to log windows."""
    start = record.metrics[-2]["iteration"] if len(record.metrics) >= 2 else 0
    windows = [
        float(s["error"]) for s in record.steps if s.get("error") is not None and s["iteration"] > start
    ]
    return windows or [record.final_value("train_error")]


def training_judgement(
    a: Sequence[RunRecord], b: Sequence[RunRecord], expected: Direction = "lower"
) -> Judgement:
    """Fig. 5's statistic: B's final training error minus A's, a bootstrap over seeds and the last epoch's
    windows (paired by window: both nets run the same schedule), judged two-sided like the test error."""
    errors_a, errors_b = [last_epoch_errors(r) for r in a], [last_epoch_errors(r) for r in b]
    windows = min(len(e) for e in errors_a + errors_b)  # the same schedule: equal, unless one is unfinished
    errors_a, errors_b = [e[-windows:] for e in errors_a], [e[-windows:] for e in errors_b]
    interval = bootstrap_difference(errors_a, errors_b, paired=True)
    per_seed = [sum(eb) / len(eb) - sum(ea) / len(ea) for ea, eb in zip(errors_a, errors_b, strict=False)]
    return judge(interval, expected, per_seed_differences=per_seed)


def complexity_spread(macs: Sequence[int]) -> float:
    """The largest relative distance of the series' multiply-adds from the first net's."""
    return max(abs(m / macs[0] - 1) for m in macs)


def cardinality_verdict(test: str, spread: float) -> Verdict:
    """The test-error comparison's verdict, where the series holds its complexity; else nothing is tested."""
    return test if spread <= COMPLEXITY_TOLERANCE else "cannot be judged"  # type: ignore[return-value]


def training_sentence(train: Judgement) -> str:
    """The training-error comparison in words (the bootstrap is over seeds and logged windows)."""
    i = train.interval
    text = (
        f"B - A = {i.difference:+.2f} points (95% interval {i.low:+.2f} to {i.high:+.2f}, bootstrap over "
        "seeds and the last epoch's logged windows); "
    )
    if train.verdict == "cannot be judged":
        detectable = f"{train.detectable:.2f}"
        return text + f"cannot be judged: the smallest effect this budget could detect is {detectable} points"
    return text + f"{train.verdict} the paper's direction beyond the noise"


def finding_text(test: Compared, train: Judgement, spread: float, rho: float, verdict: str) -> str:
    c = test.comparison
    text = (
        f"The series' multiply-adds stay within {100 * spread:.1f}% of {c.a.label}'s "
        f"({'within' if spread <= COMPLEXITY_TOLERANCE else 'outside'} the 5% the comparison needs). "
        f"Test error (Table 3's statistic, deciding): {test.sentence()} Final training error (Fig. 5's, "
        f"reported, not deciding): {training_sentence(train)}. The rank correlation of cardinality and mean "
        f"test error over the series is {rho:+.2f} (-1: every higher cardinality better; descriptive, the "
        "middle of the series has one seed). "
    )
    if spread > COMPLEXITY_TOLERANCE:
        return text + "The complexity is not constant enough for the series to test the paper's claim."
    return text + verdict_sentence(verdict, SHOWS)


class Cardinality(Experiment):
    name = "cardinality"
    title = "Cardinality: more groups of narrower bottlenecks at equal multiply-adds"
    paper = "Xie et al. 2017 (Aggregated Residual Transformations, ResNeXt), Table 3 and Fig. 5"
    claim = (
        "At a fixed complexity of about 4.1 GFLOPs (ResNet-50), raising the cardinality C while narrowing "
        "each group d lowers ImageNet top-1 error: 1x64d 23.9%, 2x40d 23.0%, 4x24d 22.6%, 8x14d 22.3%, 32x4d "
        "22.2%; the training error falls too (Fig. 5), so the gain is not from regularisation."
    )
    figures = (
        (
            "cardinality.png",
            "Test and final training error by cardinality x width at equal multiply-adds (mean, seed range, "
            "seeds), the paired comparisons of the series' ends, and Table 3's ImageNet top-1 error in a "
            "panel of its own",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in cardinality_nets(ctx).values() for spec in net.specs]

    def comparisons(self, ctx: Context) -> list[Comparison]:
        return [cardinality_comparison(ctx)]

    def settings(self, ctx: Context) -> dict[str, Any]:
        budget = ctx.budget.name
        nets = cardinality_nets(ctx)
        template = "CIFAR ResNeXt, depth {depth}, bottleneck widths {widths} at 1x64d, stem {stem_width}"
        if budget == "paper":
            template = "torchvision's ResNet-50 (groups, width_per_group), 224x224"
        else:
            template = template.format(**TEMPLATES[budget])
        settings = {
            "template": template,
            "series": ", ".join(series_label(c, d) for c, d in SERIES[budget]),
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in nets.values()),
        }
        if budget == "cpu":
            minutes = sum(CPU_RUN_SECONDS[key] * len(net.specs) for key, net in nets.items()) / 60
            settings["time"] = (
                f"about {minutes:.0f} minutes from scratch on 2 cores with bfloat16 (estimated per run: "
                + ", ".join(f"{series_label(*k)} {v} s" for k, v in CPU_RUN_SECONDS.items())
                + "; grouped convolutions run slower per multiply-add on a CPU); no run is shared with "
                "degradation, depth or shortcuts; a third seed of the ends adds about 16 minutes"
            )
        return settings

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        imagenet = ctx.budget.name == "paper"
        nets, scores = cardinality_nets(ctx), Scores(ctx, runs)
        rows, results, test_errors, train_errors, macs = [], {}, {}, {}, []
        for (c, d), net in nets.items():
            records = [runs[spec.name] for spec in net.specs]
            mult_adds, params = complexity(net.specs[0], imagenet)
            macs.append(mult_adds)
            label = series_label(c, d)
            test_errors[label] = scores.test_errors(net)
            train_errors[label] = [r.final_value("train_error") for r in records]
            published = RESNEXT_TABLE3.get((c, d))
            results[net.label] = {
                "cardinality": c,
                "width": d,
                "mult_adds": mult_adds,
                "params": params,
                "complexity_ratio": mult_adds / macs[0],
                "seeds": len(net.specs),
                "test_error": test_errors[label],
                "final_train_error": train_errors[label],
                "train_seconds": [float(r.summary.get("elapsed_s") or 0.0) for r in records],
                "paper_top1_error": published,
            }
            rows.append(
                [
                    net.label,
                    f"{params / 1e6:.3f}M",
                    f"{mult_adds / 1e6:.1f}M",
                    f"{mult_adds / macs[0]:.3f}",
                    len(net.specs),
                    spread_cell(test_errors[label]),
                    spread_cell(train_errors[label]),
                    published,
                ]
            )
        comparison = cardinality_comparison(ctx)
        test = compare(scores, comparison)
        train = training_judgement(
            [runs[s.name] for s in comparison.a.specs], [runs[s.name] for s in comparison.b.specs]
        )
        spread = complexity_spread(macs)
        rho = rank_correlation(
            [float(c) for c, _ in nets],
            [sum(test_errors[series_label(*k)]) / len(nets[k].specs) for k in nets],
        )
        verdict = cardinality_verdict(test.verdict, spread)
        results["comparison"] = test.to_dict()
        results["training_error_comparison"] = train.to_dict()
        results["summary"] = {"complexity_spread": spread, "spearman_cardinality_error": rho}
        results["verdict"] = verdict
        (figure,) = self.figure_paths(ctx)
        ends = f"{series_label(*SERIES[ctx.budget.name][-1])} vs {series_label(*SERIES[ctx.budget.name][0])}"
        i, t = test.interval, train.interval
        plot_cardinality(
            test_errors,
            train_errors,
            {
                f"{ends}: test error\n(decides; paper: B lower)": (i.difference, i.low, i.high),
                f"{ends}: training error\n(reported, not deciding)": (t.difference, t.low, t.high),
            },
            {series_label(*k): v for k, v in RESNEXT_TABLE3.items()},
            figure,
            title=f"cardinality at equal multiply-adds on {ctx.dataset} ({ctx.budget.name} budget)",
        )
        columns = [
            "network",
            "params",
            "mult-adds",
            "mult-adds / 1x64d's",
            "seeds",
            "test error (%)",
            "final training error (%)",
            "paper top-1 error (%, ImageNet)",
        ]
        notes = [
            "Errors: the mean over seeds with the seed range in brackets; test error on every test image, "
            "training error the last epoch's running error with augmentation (as Fig. 5's curves).",
            "Table 3's errors are ImageNet top-1 (ResNet-50 template, 1.28M images, 90 epochs); ours are "
            "comparable to them only at the paper budget: elsewhere the paired comparison is what the "
            "verdict tests.",
            "Multiply-adds as `resnets summary` counts them, on one 32x32 image with 10 classes (CIFAR "
            "template) or one 224x224 image with 1000 classes (ResNet-50).",
        ]
        caption = "The C x d series at equal complexity beside Table 3"
        return Analysis(
            results,
            finding_text(test, train, spread, rho, verdict),
            shows_flag(verdict),
            tables=[(caption, Table(columns, rows))],
            notes=notes,
            verdict=verdict,
        )
