"""A ResNet in recurrent form: Liao and Poggio 2016, "Bridging the Gaps Between Residual Learning, Recurrent
Neural Networks and Visual Cortex" (arXiv:1604.03640), the lecture's "ResNet with shared weights".

A shallow recurrent net unrolled in time is a deep ResNet whose units share their weights. Three CIFAR
ResNets trained alike, each with the budget's seeds: ResNet-56 (the runs of ``degradation``, shared by name
when the output folder is), the same 56 layers with the weights of each stage's units 2..9 shared
(``share_weights``: 0.176M parameters, each unit keeping its own BN as Liao and Poggio's time-specific
batch normalization does), and the 6n+2 ResNet whose parameter count is closest to the shared net's
(ResNet-14, 0.173M: the shared net is ResNet-14's weights plus the BNs of each extra time step).

The verdict, fixed in code before the runs (issue 30), on the same test images with paired statistics:
the claim is that the shared net keeps most of the deep net's accuracy with the shallow net's parameters.
There is something to keep only where ResNet-56 beats ResNet-14 (``compare``, the paper's direction: lower
error); without that the finding cannot be judged. Then the shared net's error against the midpoint of the
two (a hierarchical bootstrap over seeds and test images) decides, two-sided: below the midpoint beyond the
noise with every seed agreeing (it keeps more than half of the gap) shows, above it likewise contradicts,
else cannot be judged with the smallest detectable effect. The shared net against ResNet-14 (lower) and
against ResNet-56 (Liao and Poggio: similar) are reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .base import Analysis, Context, Experiment, Runs, RunSpec, seed_curves
from .paired import (
    Compared,
    Comparison,
    Net,
    Scores,
    compare,
    differences_of,
    shows_flag,
    spread_cell,
    verdict_sentence,
)
from .paper_numbers import CIFAR_TABLE6
from .plans import cifar_net, net_label, params_cifar
from .plots import plot_error_curves, plot_seeded_comparison
from .refinement import BLOCKS
from .stats import Judgement, bootstrap_difference, image_blocks, judge
from .tables import Table

# Liao and Poggio 2016 (CBMM Memo 047, arXiv:1604.03640), abstract: "a shallow RNN is exactly
# equivalent to a very deep ResNet with weight sharing among the layers. A direct implementation of such
# a RNN, although having orders of magnitude fewer parameters, leads to a performance similar to the
# corresponding ResNet", tested on CIFAR-10 (and ImageNet in the September 2016 version). Their CIFAR nets
# are not these 6n+2 ones and they give no table of parameters and errors that matches them, so the
# report compares with no number of theirs; the unshared ResNet-56's CIFAR-10 error is He et al. 2015's
# Table 6 (6.97%). BN: "[Liao and Poggio, 2016] and [Cooijmans et al., 2016] independently proposed
# 'time-specific batch normalization': different normalization statistics are used for different
# timesteps" (Liao, Kawaguchi and Poggio 2016, "Streaming Normalization", Sec. 1).
LIAO_POGGIO_2016: dict[str, Any] = {
    "dataset": "CIFAR-10",
    "claim": "a ResNet with weights shared among its layers performs similarly to the unshared ResNet "
    "with orders of magnitude fewer parameters",
    "normalization": "time-specific batch normalization (separate statistics at each time step)",
}

# The deep net's depth (6n+2), and the shallow net of about the shared net's parameters. The smoke budget
# needs n >= 3 for any weight to be shared (units 2 and 3 of each stage).
DEPTH: dict[str, int] = {"smoke": 20, "cpu": 56, "paper": 56}
SHALLOW: dict[str, int] = {"smoke": 14, "cpu": 14, "paper": 14}
KEYS = ("deep", "shared", "shallow")  # the three nets, in table order

# What the cpu budget trains beyond degradation's ResNet-56 runs, timed on this project's 2-core Xeon
# (bfloat16): the shared net has ResNet-56's compute (each shared conv runs once per unit).
CPU_COST = (
    "2 runs of ResNet-56 shared (~440 s each, ResNet-56's compute) and 2 of ResNet-14 (~130 s each): about "
    "19 min after degradation, whose ResNet-56 runs are shared by name; about 34 min from scratch. Where "
    "the ResNet-56/ResNet-14 gap is within twice its standard error the runner adds a third seed of both "
    "(ResNet-14 ~130 s; ResNet-56's third is degradation's)"
)

SHOWS = (
    "The paper's finding shows: with about ResNet-14's parameters, the shared net keeps more than half of "
    "the deep net's lead over the shallow one, beyond the noise of seeds and test images."
)


def recurrent_nets(ctx: Context) -> dict[str, Net]:
    """The deep, the shared (recurrent) and the shallow net, by ``KEYS``, with the budget's seeds."""
    depth, shallow = DEPTH[ctx.budget.name], SHALLOW[ctx.budget.name]
    shared_label = f"{net_label('resnet', depth)} shared"
    return {
        # exactly degradation's ResNet of that depth, seed by seed, where degradation trains that depth
        "deep": cifar_net(ctx, "resnet", depth),
        "shared": cifar_net(ctx, "resnet", depth, label=shared_label, model_kwargs={"share_weights": True}),
        "shallow": cifar_net(ctx, "resnet", shallow),
    }


def recurrent_comparisons(ctx: Context) -> dict[str, Comparison]:
    """``gap``: the deep net against the shallow one (deciding: there must be a gap to keep); ``beats``: the
    shared net against the shallow one and ``cost``: against the deep one (both reported)."""
    nets = recurrent_nets(ctx)
    deep, shared, shallow = (nets[k] for k in KEYS)
    return {
        "gap": Comparison(shallow, deep, "lower"),
        "beats": Comparison(shallow, shared, "lower"),
        # Liao and Poggio: "similar"; if sharing costs anything, the shared net's error is the higher.
        "cost": Comparison(deep, shared, "higher"),
    }


class ScoresLike(Protocol):
    """What the verdict reads (``paired.Scores``, or constructed errors in the tests)."""

    def net_errors(self, net: Net) -> np.ndarray: ...

    def test_errors(self, net: Net) -> list[float]: ...


@dataclass(frozen=True)
class Midpoint:
    """The shared net against the midpoint of the deep and the shallow net's errors, B - A in points."""

    judgement: Judgement  # the paper's side: "lower" (nearer the deep net)
    per_seed: tuple[float, ...]
    kept: float | None  # the fraction of the deep net's lead the shared net keeps (None: no lead)

    def to_dict(self) -> dict[str, Any]:
        i = self.judgement.interval
        return {
            "verdict": self.judgement.verdict,
            "difference": i.difference,
            "interval": [i.low, i.high],
            "standard_error": i.standard_error,
            "detectable_effect": self.judgement.detectable,
            "per_seed_differences": list(self.per_seed),
            "gap_kept": self.kept,
        }


def midpoint(scores: ScoresLike, nets: Mapping[str, Net]) -> Midpoint:
    """The shared net's error minus the midpoint of the deep and shallow nets', per image.

    Seed s of the deep net is paired with seed s of the shallow one (independent nets, so the pairs are
    independent draws; the runner gives both the same seeds). The bootstrap resamples the seeds of each side
    and one set of blocks of test images for both (``stats.image_blocks``: a 10,000-image bootstrap in
    blocks of 100, the same variance at a hundredth of the memory).
    """
    deep, shared, shallow = (scores.net_errors(nets[k]).astype(np.float64) for k in KEYS)
    pairs = min(len(deep), len(shallow))
    middle = 100 * (deep[:pairs] + shallow[:pairs]) / 2
    ours = 100 * shared
    interval = bootstrap_difference(image_blocks(middle, BLOCKS), image_blocks(ours, BLOCKS), paired=True)
    per_seed = tuple(float(ours[s].mean() - middle[s].mean()) for s in range(min(len(ours), pairs)))
    e_deep, e_shared, e_shallow = (float(np.mean(scores.test_errors(nets[k]))) for k in KEYS)
    lead = e_shallow - e_deep
    kept = (e_shallow - e_shared) / lead if lead > 0 else None
    return Midpoint(judge(interval, "lower", per_seed_differences=per_seed), per_seed, kept)


def recurrent_verdict(gap: str, keeps: str) -> str:
    """Both parts of the claim: a gap to keep (else there is nothing to judge), then the midpoint's verdict
    (shows: keeps more than half of it; contradicts: keeps less than half, each beyond the noise)."""
    return keeps if gap == "shows" else "cannot be judged"


def finding_text(
    measured: Mapping[str, Compared], middle: Midpoint, params: Mapping[str, int], verdict: str
) -> str:
    """The finding's paragraph from the measured comparisons (by ``recurrent_comparisons``' keys)."""
    gap = measured["gap"]
    deep, shallow = gap.comparison.b.label, gap.comparison.a.label
    shared = measured["beats"].comparison.b.label
    share = 100 * params["shared"] / params["deep"]
    i = middle.judgement.interval
    kept = "" if middle.kept is None else f"keeps {100 * middle.kept:.0f}% of the gap: "
    text = (
        f"{shared} has {params['shared'] / 1e6:.3f}M parameters, {share:.0f}% of {deep}'s "
        f"{params['deep'] / 1e6:.3f}M and {params['shared'] / params['shallow']:.2f}x {shallow}'s "
        f"{params['shallow'] / 1e6:.3f}M. The gap to keep: {gap.sentence()} {shared} {kept}its error minus "
        f"the midpoint of {deep}'s and {shallow}'s is {i.difference:+.2f} points (95% interval {i.low:+.2f} "
        f"to {i.high:+.2f}, bootstrap over seeds and test images), {middle.judgement.verdict}"
    )
    if middle.judgement.verdict == "cannot be judged":
        text += f" (smallest detectable effect {middle.judgement.detectable:.2f} points)"
    cost = measured["cost"]
    c = cost.interval
    text += (
        f". Reported: {measured['beats'].sentence()} {cost.comparison.name} (Liao and Poggio: similar): "
        f"B - A = {c.difference:+.2f} points (95% interval {c.low:+.2f} to {c.high:+.2f}; the smallest "
        f"difference this budget could detect is {cost.judgement.detectable:.2f} points). "
    )
    if gap.verdict != "shows":
        return text + (
            f"{deep} does not beat {shallow} beyond the noise here, so there is no gap for the shared net to "
            "keep and this budget cannot judge the claim."
        )
    text += verdict_sentence(verdict, SHOWS)
    if verdict == "contradicts":
        text += " Here: the shared net is nearer the shallow net than the deep one."
    return text


class Recurrent(Experiment):
    name = "recurrent"
    title = "ResNet in recurrent form: shared-weight units keep a deep net's accuracy at a shallow net's size"
    paper = "Liao and Poggio 2016 (Bridging the Gaps Between Residual Learning, RNNs and Visual Cortex)"
    claim = (
        "A deep ResNet whose units share their weights is a shallow recurrent net unrolled in time; "
        "implemented directly it has orders of magnitude fewer parameters yet performs similarly to the "
        "unshared ResNet of the same depth on CIFAR-10 (with time-specific batch normalization). Here: the "
        "shared ResNet-56 keeps most of ResNet-56's lead over ResNet-14, whose parameters it has."
    )
    figures = (
        (
            "recurrent.png",
            "Test error per net (mean, seed range, seeds), the paired comparisons with their 95% intervals "
            "(the gap and the midpoint decide), and He et al.'s Table 6 error of the deep net in a panel of "
            "its own",
        ),
        (
            "recurrent_curves.png",
            "Training error (dashed) and validation error (bold) against iterations, mean over seeds with "
            "the seed range shaded, final test error a star",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in recurrent_nets(ctx).values() for spec in net.specs]

    def comparisons(self, ctx: Context) -> list[Comparison]:
        # The gap gives the deep and the shallow net a third seed alike where it is close; the midpoint
        # contrast is no two-net Comparison, so the runner cannot add seeds for it.
        return [recurrent_comparisons(ctx)["gap"]]

    def settings(self, ctx: Context) -> dict[str, Any]:
        nets = recurrent_nets(ctx)
        out = {
            "networks": ", ".join(net.label for net in nets.values()),
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in nets.values()),
            "weight sharing": "within each stage, units 2..n use unit 2's convolutions; every unit keeps its "
            "own BN (time-specific batch normalization)",
            "shallow net": "the 6n+2 ResNet whose parameter count is closest to the shared net's",
            "initialisation": "the paper's",
            "criterion": "the deep net beats the shallow one (paired, lower error), then the shared net's "
            "error against the midpoint of theirs (bootstrap over seeds and test images): below it shows, "
            "above it contradicts, each beyond the 95% interval with every seed agreeing",
        }
        if ctx.budget.name == "cpu":
            out["cost"] = CPU_COST
        return out

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        nets, scores = recurrent_nets(ctx), Scores(ctx, runs)
        results: dict[str, Any] = {}
        rows, per_seed, curves, params = [], {}, {}, {}
        for key, net in nets.items():
            records = [runs[spec.name] for spec in net.specs]
            params[key] = params_cifar(net.specs[0])
            depth = SHALLOW[ctx.budget.name] if key == "shallow" else DEPTH[ctx.budget.name]
            paper = CIFAR_TABLE6.get(depth, {}).get("error") if key == "deep" else None
            test = scores.test_errors(net)
            train = [r.final_value("train_error") for r in records]
            seconds = [float(r.summary.get("elapsed_s") or 0.0) for r in records]
            per_seed[f"{net.label}\n{params[key] / 1e6:.3f}M params"] = test
            curves[net.label] = seed_curves(records)
            results[net.label] = {
                "role": key,
                "depth": depth,
                "shared": key == "shared",
                "params": params[key],
                "seeds": len(records),
                "test_error": test,
                "final_train_error": train,
                "train_seconds": seconds,
                "paper_test_error": paper,
            }
            rows.append(
                [
                    net.label,
                    f"{params[key] / 1e6:.3f}M",
                    len(records),
                    spread_cell(test),
                    spread_cell(train),
                    f"{sum(seconds) / len(seconds):.0f}",
                    paper,
                ]
            )
        measured = {name: compare(scores, c) for name, c in recurrent_comparisons(ctx).items()}
        middle = midpoint(scores, nets)
        verdict = recurrent_verdict(measured["gap"].verdict, middle.judgement.verdict)
        results["comparisons"] = {m.comparison.name: m.to_dict() for m in measured.values()}
        results["midpoint"] = middle.to_dict()
        results["params_shared_over_deep"] = params["shared"] / params["deep"]
        results["params_shared_over_shallow"] = params["shared"] / params["shallow"]
        results["verdict"] = verdict
        self._plot(ctx, nets, per_seed, curves, measured, middle)
        columns = [
            "network",
            "params (CIFAR-10)",
            "seeds",
            "test error (%)",
            "final training error (%)",
            "training time per run (s)",
            "paper test error (%)",
        ]
        notes = [
            "The shared net has the deep net's depth and compute (each shared conv runs once per unit) and "
            "the shallow net's weights plus one BN per extra unit; its training time is the deep net's.",
            "Liao and Poggio 2016 give no CIFAR-10 table that matches these nets; the paper column is He "
            "et al. 2015's Table 6 error of the unshared deep net (CIFAR-10, 64k iterations), comparable to "
            "ours only at the paper budget on CIFAR-10.",
            "Errors: the mean over seeds with the seed range in brackets, on every test image. Intervals: "
            "paired bootstraps over seeds and test images (the midpoint's over blocks of 100 images).",
        ]
        caption = "Deep, shared (recurrent) and shallow ResNet: parameters, errors and training time"
        return Analysis(
            results,
            finding_text(measured, middle, params, verdict),
            shows_flag(verdict),
            tables=[(caption, Table(columns, rows))],
            notes=notes,
            verdict=verdict,
        )

    def _plot(
        self,
        ctx: Context,
        nets: Mapping[str, Net],
        per_seed: Mapping[str, list[float]],
        curves: Mapping[str, Any],
        measured: Mapping[str, Compared],
        middle: Midpoint,
    ) -> None:
        deep, shared, shallow = (nets[k].label for k in KEYS)
        i = middle.judgement.interval
        differences = differences_of([measured["gap"], measured["beats"]])
        differences[f"{shared} vs midpoint of\n{deep} and {shallow} (paper: B lower)"] = (
            i.difference,
            i.low,
            i.high,
        )
        cost = measured["cost"].interval
        differences[f"{measured['cost'].comparison.name}\n(paper: similar; reported)"] = (
            cost.difference,
            cost.low,
            cost.high,
        )
        figure, curve_path = self.figure_paths(ctx)
        plot_seeded_comparison(
            per_seed,
            differences,
            {f"{deep}": CIFAR_TABLE6.get(DEPTH[ctx.budget.name], {}).get("error")},
            figure,
            title=f"recurrent: final test error on {ctx.dataset} ({ctx.budget.name} budget)",
            paper_title="paper: CIFAR-10, He et al. Table 6\n(Liao and Poggio: no matching table)",
        )
        finals = [v for errors in per_seed.values() for v in errors]
        plot_error_curves(
            {"deep, shared and shallow ResNet": curves},
            curve_path,
            title=f"{ctx.dataset}: training (dashed), validation (bold), test (star)",
            ylim=(0, min(100, 3 * max(finals))),
        )
