"""Very deep ResNets, f = ReLU against f = identity: He et al. 2016, "Identity Mappings in Deep Residual
Networks", Fig. 1 and Table 3 (the lecture's "1001-layer ResNets on CIFAR-10").

Two ResNets of the same depth differ only in the unit: the original one adds the shortcut and then
applies a ReLU (f = ReLU, x_{l+1} = ReLU(x_l + F(x_l))), the full pre-activation one applies BN and ReLU
before the weights and leaves the sum alone (f = identity, x_{l+1} = x_l + F(x_l)). The paper (Sec. 4.1,
"Ease of optimization"): at 1001 layers the original's training loss falls very slowly at the beginning
and stays higher, the pre-activation net's falls at once and lower, and it tests better (4.92% against
7.61%); at 164 layers the difference is small (5.46% against 5.93%).

Both nets train with one recipe and its fixed warm-up (the paper: lr 0.01 for the first 400 iterations
for both; the cpu budget: its one linear warm-up epoch), with the budget's seeds. The verdict, fixed before
the runs, has two parts, each two-sided in the paper's direction; "shows" needs both to show,
"contradicts" both to contradict (``paired.overall``), anything else "cannot be judged":
Table 3's test error, a paired bootstrap over seeds and test images (``paired.compare``); and Fig. 1's
training loss, its mean over the run's logged windows (the area under the curve: a slow start and a
higher end both raise it), a bootstrap over seeds and windows paired by iteration, every seed pair
agreeing. Each net's first passage below a fixed training error (20%) and the highest loss it logs
(above chance is a blow-up, not Fig. 1's slow start) are reported beside them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .base import Analysis, Context, Experiment, RunRecord, Runs, RunSpec
from .paired import (
    Comparison,
    Net,
    Scores,
    compare,
    differences_of,
    overall,
    seeded_net,
    shows_flag,
    spread_cell,
    verdict_sentence,
)
from .paper_numbers import IDENTITY_1000_TABLE3, UNITS_TABLE2
from .plans import ITERATIONS, cifar_net, params_cifar
from .plots import plot_identity_1000, plot_seeded_comparison
from .stats import Judgement, bootstrap_difference, judge
from .tables import Table


@dataclass(frozen=True)
class Plan:
    depth: int  # 6n+2 (basic units) or 9n+2 (bottleneck units)
    bottleneck: bool
    recipe: str | None = None  # None: the budget's recipe


# cpu: the deepest pair of two seeds each that fits the budget: ResNet-110, basic units (54 of them, as
# many as ResNet-164's bottlenecks), its original net being depth's run (shared, not trained again);
# bottleneck ResNet-164s would take about 80 minutes. paper: Fig. 1's ResNet-1001 pair with the Identity
# Mappings appendix's recipe (lr 0.01 for the first 400 iterations, then 0.1, /10 at 32k and 48k, stop at
# 64k, batch 128, weight decay 1e-4).
PLANS: dict[str, Plan] = {
    "smoke": Plan(8, False),
    "cpu": Plan(110, False),
    "paper": Plan(1001, True, "preact-cifar"),
}
NETS = ("original", "preact")
# The zoo's named pre-activation nets, by depth: bottleneck units or not (as the paper builds them).
PREACT_NAMED = {110: False, 164: True, 1001: True}
UNITS = {"original": "original, f = ReLU", "preact": "pre-activation, f = identity"}
# The training error a net must get below to count as started, fixed before the runs: a net that merely
# leaves chance (90%), or hovers after a blow-up, stays above it; a well-conditioned net passes it within
# its first (warm-up) epoch at the cpu budget (ResNet-56's logged windows: 52.9%, 22.2%, 16.9% at
# iterations 50, 100, 150).
THRESHOLD_ERROR = 20.0
# The cpu budget's estimate: ResNet-110's measured run (about 850 s on the 2-core Intel Xeon with AMX,
# docs/reproduce.md); the pre-activation net has the same convolutions and two more BNs.
CPU_RUN_SECONDS = 870
SHOWS = (
    "The paper's finding shows: the pre-activation net trains to a lower loss over the run and tests "
    "better, each beyond the noise of seeds (and test images)."
)


def net_model(net: str, plan: Plan) -> tuple[str, dict[str, Any]]:
    """The zoo's name and options of the net of ``plan``'s depth and unit kind with ``net``'s unit."""
    depth = plan.depth
    if net == "original":
        return "resnet_cifar", {"depth": depth, "bottleneck": plan.bottleneck}
    if PREACT_NAMED.get(depth) == plan.bottleneck:
        return f"preact_resnet{depth}", {}
    return "preact_resnet_cifar", {"depth": depth, "bottleneck": plan.bottleneck}


def net_label(net: str, depth: int) -> str:
    return f"{'original' if net == 'original' else 'pre-act'} ResNet-{depth}"


def seeded_pair_net(ctx: Context, net: str) -> Net:
    """``net``'s unit at the budget's depth, trained once per seed with the plan's recipe."""
    plan = PLANS[ctx.budget.name]
    model, kwargs = net_model(net, plan)
    label = net_label(net, plan.depth)

    def make(seed: int) -> RunSpec:
        iterations = ITERATIONS[ctx.budget.name]
        return ctx.run(
            model, label, iterations=iterations, recipe=plan.recipe, model_kwargs=kwargs, seed=seed
        )

    return seeded_net(ctx, make(0).name, label, make)


def identity_1000_nets(ctx: Context) -> dict[str, Net]:
    """``{"original": Net, "preact": Net}`` with the budget's seeds. A basic original net under the
    budget's recipe is the zoo's ResNet of that depth (``plans.cifar_net``): the cpu budget's is depth's."""
    plan = PLANS[ctx.budget.name]
    if plan.bottleneck or plan.recipe is not None:
        original = seeded_pair_net(ctx, "original")
    else:
        original = cifar_net(ctx, "resnet", plan.depth, label=net_label("original", plan.depth))
    return {"original": original, "preact": seeded_pair_net(ctx, "preact")}


def paper_errors(plan: Plan) -> dict[str, float] | None:
    """The paper's CIFAR-10 test errors of the two units at this depth (Table 3 for the bottleneck nets,
    Table 2 for ResNet-110), None where it has none."""
    if plan.bottleneck and plan.depth in IDENTITY_1000_TABLE3:
        row = IDENTITY_1000_TABLE3[plan.depth]
        return {"original": row["original"], "preact": row["preact"]}
    if not plan.bottleneck and plan.depth == 110:
        return {
            "original": UNITS_TABLE2["original"][plan.depth],
            "preact": UNITS_TABLE2["full_preact"][plan.depth],
        }
    return None


def unit_comparison(ctx: Context) -> Comparison:
    """Original (A) against pre-activation (B): the paper's B tests lower."""
    nets, paper = identity_1000_nets(ctx), paper_errors(PLANS[ctx.budget.name])
    effect = paper["preact"] - paper["original"] if paper else None
    return Comparison(nets["original"], nets["preact"], "lower", effect)


def parameters(spec: RunSpec) -> int:
    """The network's parameters as the paper counts them (CIFAR-10), built on the meta device: no memory
    and no initialisation, so ResNet-1001 counts in a moment."""
    with torch.device("meta"):
        return params_cifar(spec)


# --- the curves -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """Training loss and error (%) against iterations: each logged step (a mean over the 50-iteration
    logging window), or each epoch for runs too short to log steps."""

    iterations: list[float]
    loss: list[float]
    error: list[float]


def training_curve(record: RunRecord) -> Curve:
    steps = [s for s in record.steps if s.get("loss") is not None]
    if len(steps) >= 2:
        return Curve([s["iteration"] for s in steps], [s["loss"] for s in steps], [s["error"] for s in steps])
    rows = [r for r in record.metrics if r.get("train_loss") is not None]
    return Curve(
        [r["iteration"] for r in rows], [r["train_loss"] for r in rows], [r["train_error"] for r in rows]
    )


def first_reaching(threshold: float, xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The first iteration where ys falls to ``threshold`` (linear between points); None if never."""
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if y <= threshold:
            if i == 0:
                return x
            x0, y0 = xs[i - 1], ys[i - 1]
            return x0 + (x - x0) * (y0 - threshold) / (y0 - y)
    return None


def chance_loss(dataset: str) -> float:
    """Cross-entropy of a uniform guess: where every training-loss curve starts."""
    return math.log(100 if dataset == "cifar100" else 10)


def shared_values(curves: Sequence[Curve], key: str) -> tuple[list[float], list[list[float]]]:
    """(the iterations every curve logged, each curve's ``key`` values there): seeds x windows."""
    shared = sorted(set.intersection(*(set(c.iterations) for c in curves)))
    return shared, [
        [dict(zip(c.iterations, getattr(c, key), strict=True))[i] for i in shared] for c in curves
    ]


def loss_judgement(original: Sequence[Curve], preact: Sequence[Curve]) -> Judgement:
    """Fig. 1: the pre-activation net's mean training loss over the run minus the original's, a bootstrap
    over seeds and logged windows paired by iteration, judged two-sided (the paper: lower)."""
    _, values = shared_values([*original, *preact], "loss")
    a, b = values[: len(original)], values[len(original) :]
    per_seed = [sum(vb) / len(vb) - sum(va) / len(va) for va, vb in zip(a, b, strict=False)]
    return judge(bootstrap_difference(a, b, paired=True), "lower", per_seed_differences=per_seed)


def loss_sentence(j: Judgement) -> str:
    """The training-loss comparison in words (its units are the loss's, not points)."""
    i = j.interval
    text = (
        f"mean training loss over the run, pre-activation minus original: {i.difference:+.3f} (95% interval "
        f"{i.low:+.3f} to {i.high:+.3f}, bootstrap over seeds and logged windows paired by iteration); "
    )
    if j.verdict == "cannot be judged":
        return (
            text + f"cannot be judged: the smallest difference this budget could detect is {j.detectable:.3f}"
        )
    return text + f"{j.verdict} the paper's direction beyond the noise"


def bands(curves: Sequence[Curve], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """(iterations, mean, min, max) of ``key`` over seeds at the iterations all logged."""
    xs, values = shared_values(curves, key)
    columns = list(zip(*values, strict=True))
    return xs, [sum(c) / len(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def describe(records: Sequence[RunRecord], curves: Sequence[Curve], spec: RunSpec) -> dict[str, Any]:
    """One net's curve numbers, per seed: its first passage below THRESHOLD_ERROR, the highest loss it
    logs after the first window and where, the final training loss and error, the mean loss over the run."""
    peaks = [max(zip(c.loss[1:], c.iterations[1:], strict=True), default=(float("nan"), 0)) for c in curves]
    return {
        "label": spec.label,
        "params": parameters(spec),
        "seeds": len(records),
        "reaches_threshold_at": [first_reaching(THRESHOLD_ERROR, c.iterations, c.error) for c in curves],
        "peak_loss": [p[0] for p in peaks],
        "peak_loss_at": [p[1] for p in peaks],
        "final_train_loss": [r.final_value("train_loss") for r in records],
        "final_train_error": [r.final_value("train_error") for r in records],
        "mean_train_loss": [sum(c.loss) / len(c.loss) for c in curves],
    }


def start_sentence(results: Mapping[str, Mapping[str, Any]], chance: float) -> str:
    """When each net first gets below the threshold, and a blow-up (a logged loss above chance after the
    first window) where there is one."""

    def when(values: Sequence[float | None]) -> str:
        return ", ".join("never" if v is None else f"{v:.0f}" for v in values)

    text = f"First below {THRESHOLD_ERROR:.0f}% training error at iteration " + "; ".join(
        f"{results[n]['label']} {when(results[n]['reaches_threshold_at'])}" for n in NETS
    )
    text += " (per seed)."
    for net in NETS:
        worst = max(results[net]["peak_loss"])
        if worst > chance:
            text += (
                f" {results[net]['label']}'s loss rose to {worst:.2f}, above chance ({chance:.2f}): a "
                "blow-up, not Fig. 1's slow start."
            )
    return text


class Identity1000(Experiment):
    name = "identity-1000"
    title = "Very deep ResNets: f = ReLU against f = identity"
    paper = "He et al. 2016 (Identity Mappings in Deep Residual Networks), Fig. 1 and Table 3"
    claim = (
        "A 1001-layer bottleneck ResNet with the original unit (ReLU after the addition) is hard to "
        "optimise: its training loss falls very slowly at the beginning and stays higher; the same net with "
        "full pre-activation units (the sum left alone) trains at once to a lower loss and tests better, "
        "4.92% against 7.61% on CIFAR-10 (10.2M parameters). At 164 layers the difference is small (5.46% "
        "against 5.93%)."
    )
    figures = (
        (
            "identity_1000.png",
            "Training loss (left) and training error (right) of the original and the pre-activation net "
            "against iterations, the mean over seeds with the seed range shaded; chance dotted on the left, "
            "the 20% threshold dotted on the right with each seed's first passage marked",
        ),
        (
            "identity_1000_test.png",
            "Final test error per net (mean, seed range, seeds), the paired comparison, and the paper's "
            "CIFAR-10 errors in a panel of their own",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in identity_1000_nets(ctx).values() for spec in net.specs]

    def comparisons(self, ctx: Context) -> list[Comparison]:
        return [unit_comparison(ctx)]

    def settings(self, ctx: Context) -> dict[str, Any]:
        plan, nets = PLANS[ctx.budget.name], identity_1000_nets(ctx)
        kind = "bottleneck" if plan.bottleneck else "basic"
        out = {
            "networks": f"{nets['original'].label} ({UNITS['original']}) and {nets['preact'].label} "
            f"({UNITS['preact']}), {kind} units, one recipe and warm-up for both",
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in nets.values()),
            "recipe": plan.recipe or ctx.budget.recipe,
        }
        if ctx.budget.name == "paper":
            out["schedule"] = (
                "the Identity Mappings appendix's, for both nets: batch 128, lr 0.01 for the first 400 "
                "iterations, then 0.1, divided by 10 at 32k and 48k, stop at 64k, momentum 0.9, weight decay "
                "1e-4, the full CIFAR-10 training set"
            )
        if ctx.budget.name == "cpu":
            new = len(nets["preact"].specs)
            after, scratch = new * CPU_RUN_SECONDS / 60, 2 * new * CPU_RUN_SECONDS / 60
            out["time"] = (
                f"about {after:.0f} minutes after depth ({new} pre-act ResNet-110 runs of about "
                f"{CPU_RUN_SECONDS} s, ResNet-110's measured time at this budget; the original nets are "
                f"depth's runs), about {scratch:.0f} minutes from scratch; a third seed adds about 15 "
                "minutes a net. The paper's 1001 layers do not fit: bottleneck ResNet-164s, with as many "
                "units as ResNet-110, would take about 80 minutes for two seeds each"
            )
        return out

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        plan, nets, scores = PLANS[ctx.budget.name], identity_1000_nets(ctx), Scores(ctx, runs)
        records = {net: [runs[spec.name] for spec in nets[net].specs] for net in NETS}
        curves = {net: [training_curve(r) for r in records[net]] for net in NETS}
        paper = paper_errors(plan)
        results: dict[str, Any] = {}
        for net in NETS:
            results[net] = describe(records[net], curves[net], nets[net].specs[0])
            results[net].update(
                unit=UNITS[net],
                depth=plan.depth,
                test_error=scores.test_errors(nets[net]),
                paper_test_error=paper[net] if paper else None,
            )
        test = compare(scores, unit_comparison(ctx))
        loss = loss_judgement(curves["original"], curves["preact"])
        verdict = overall([test.verdict, loss.verdict])
        chance = chance_loss(ctx.dataset)
        results["comparison"] = test.to_dict()
        results["loss_comparison"] = loss.to_dict()
        results["threshold_error"] = THRESHOLD_ERROR
        results["verdict"] = verdict
        curve_path, test_path = self.figure_paths(ctx)
        plot_identity_1000(
            {
                nets[net].label: {"loss": bands(curves[net], "loss"), "error": bands(curves[net], "error")}
                for net in NETS
            },
            {nets[net].label: results[net]["reaches_threshold_at"] for net in NETS},
            curve_path,
            threshold=THRESHOLD_ERROR,
            chance=chance,
            title=f"{plan.depth}-layer ResNets on {ctx.dataset} ({ctx.budget.name} budget)",
        )
        published = {
            f"110, {n}": UNITS_TABLE2["original" if n == "original" else "full_preact"][110] for n in NETS
        }
        published |= {f"{d}, {n}": row[n] for d, row in IDENTITY_1000_TABLE3.items() for n in NETS}
        plot_seeded_comparison(
            {nets[net].label: results[net]["test_error"] for net in NETS},
            differences_of([test]),
            published,
            test_path,
            title=f"{plan.depth}-layer ResNets: final test error on {ctx.dataset}",
            paper_title="paper: CIFAR-10 (Tables 2, 3)",
        )
        finding = (
            f"Test error (Table 3): {test.sentence()} Training loss (Fig. 1): {loss_sentence(loss)}. "
            f"{start_sentence(results, chance)} {verdict_sentence(verdict, SHOWS)}"
        )
        notes = [
            "Training loss and error: each logged step's mean over its 50-iteration window (each epoch's for "
            "runs too short to log steps), with augmentation, as Fig. 1's curves. Errors and losses in the "
            "table: the mean over seeds with the seed range in brackets; test error on every test image.",
            f"The threshold, {THRESHOLD_ERROR:.0f}% training error, is fixed in code before the runs; chance "
            f"is {100 - 100 / (100 if ctx.dataset == 'cifar100' else 10):.0f}% error and a loss of "
            f"ln(classes) = {chance:.3f}.",
        ]
        if plan.depth != 1001:
            notes.append(
                f"The paper's Fig. 1 nets have 1001 layers; at this budget the pair has {plan.depth} "
                f"({'bottleneck' if plan.bottleneck else 'basic'} units). The paper finds the original "
                "unit's difficulty growing with depth: small at 110 and 164 layers (Table 2; Fig. 6, where "
                "the pre-activation net even ends at a slightly higher training loss, yet tests better), "
                "large at 1001 (Fig. 1)."
            )
        caption = "Training loss and error, and test error, of the two units beside the paper"
        return Analysis(
            results,
            finding,
            shows_flag(verdict),
            tables=[(caption, _table(results, plan))],
            notes=notes,
            verdict=verdict,
        )


def _table(results: Mapping[str, Mapping[str, Any]], plan: Plan) -> Table:
    """Ours beside the paper's errors at this depth (Table 3 at 164 and 1001 layers, Table 2 at 110)."""
    source = "Table 3" if plan.bottleneck else "Table 2"
    columns = [
        "network",
        "params",
        "seeds",
        "mean training loss over the run",
        "final training loss",
        "final training error (%)",
        f"first below {THRESHOLD_ERROR:.0f}% training error (iteration, per seed)",
        "test error (%)",
        f"paper test error (%, CIFAR-10, {source})",
    ]
    rows = []
    for net in NETS:
        r = results[net]
        reached = ", ".join("never" if v is None else f"{v:.0f}" for v in r["reaches_threshold_at"])
        rows.append(
            [
                f"{r['label']} ({r['unit']})",
                f"{r['params'] / 1e6:.2f}M",
                r["seeds"],
                _cell(r["mean_train_loss"]),
                _cell(r["final_train_loss"]),
                spread_cell(r["final_train_error"]),
                reached,
                spread_cell(r["test_error"]),
                r["paper_test_error"],
            ]
        )
    return Table(columns, rows)


def _cell(values: Sequence[float]) -> str:
    """A loss cell: the mean over seeds, with the seed range where there are several (three decimals)."""
    mean = sum(values) / len(values)
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"
