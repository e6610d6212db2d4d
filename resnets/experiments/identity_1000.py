"""1001-layer ResNets, f = ReLU against f = identity: He et al. 2016, "Identity Mappings in Deep Residual
Networks", Fig. 1 and Table 3 (the lecture's "1001-layer ResNets on CIFAR-10").

Two bottleneck ResNets of the same very large depth differ only in the unit: the original one adds the
shortcut and then applies a ReLU (f = ReLU, x_{l+1} = ReLU(x_l + F(x_l))), the full pre-activation one
applies BN and ReLU before the weights and leaves the sum alone (f = identity, x_{l+1} = x_l + F(x_l)).
The paper (Sec. 4.1, "Ease of optimization"): at 1001 layers the original's training loss falls very
slowly at the beginning and stays higher, the pre-activation net's falls at once and lower; at 164 layers
the difference is small (Fig. 6). Both nets train with the same recipe and seed; the analysis compares
their training-loss curves (steps.jsonl) and their final test errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .base import Analysis, Context, Experiment, RunRecord, Runs, RunSpec
from .plans import ITERATIONS, params_cifar
from .plots import plot_identity_1000
from .stats import evaluated_images, gap_noise, sampling_noise, strength
from .tables import Table

# He et al. 2016 (Identity Mappings), Table 3: CIFAR-10 test error (%) of the bottleneck ResNets with the
# original and with the full pre-activation unit; parameters (millions) from Table 4 (ResNet-1001, 10.2M)
# and Table 2 (ResNet-164, 1.7M). Table 4 also gives ResNet-1001's pre-activation mean over 5 runs,
# 4.89 +- 0.14. (CIFAR-100, Table 3: ResNet-164 25.16 / 24.33, ResNet-1001 27.82 / 22.71.)
IDENTITY_1000_TABLE3: dict[int, dict[str, float]] = {
    164: {"params_m": 1.7, "original": 5.93, "preact": 5.46},
    1001: {"params_m": 10.2, "original": 7.61, "preact": 4.92},
}


@dataclass(frozen=True)
class Plan:
    depth: int  # 9n+2 (bottleneck units)
    iterations: int | None  # None: the recipe's own schedule (64k iterations)
    recipe: str | None = None  # None: the budget's recipe


# cpu: the deepest pair that fits in about 30 minutes with enough iterations for a curve (cpu_seconds);
# paper: Fig. 1's ResNet-1001 pair with the Identity Mappings appendix's recipe (lr 0.01 for the first
# 400 iterations, then 0.1, /10 at 32k and 48k, stop at 64k, batch 128, weight decay 1e-4).
PLANS: dict[str, Plan] = {
    "smoke": Plan(11, ITERATIONS["smoke"]),
    "cpu": Plan(326, 350),
    "paper": Plan(1001, None, "preact-cifar"),
}
NETS = ("original", "preact")
UNITS = {"original": "original, f = ReLU", "preact": "pre-activation, f = identity"}

# The cpu budget's time estimate (measured once on the 2-core development machine: batch 128, bfloat16,
# channels-last, 2 threads): pre-act ResNet-164 1.50 s a step at 32x32, Fashion-MNIST's 28x28 about
# 0.76x of that, the time about linear in depth; the test of 2,000 images after every 100 iterations
# (forward only, about 1/3 of a training step per image) adds about 6%.
SECONDS_PER_STEP_164 = 1.50
FASHION_MNIST_FACTOR = 0.76
EVALUATION_OVERHEAD = 0.06
CPU_SECONDS = 1800  # the cpu budget's "about 30 minutes"


def seconds_per_step(depth: int) -> float:
    """Estimated seconds of one cpu-budget training step of a bottleneck net of ``depth``."""
    return SECONDS_PER_STEP_164 * FASHION_MNIST_FACTOR * depth / 164


def cpu_seconds(depth: int, iterations: int) -> float:
    """Estimated wall time of the pair at the cpu budget: 2 nets x iterations x s/step, plus evaluation."""
    return 2 * iterations * seconds_per_step(depth) * (1 + EVALUATION_OVERHEAD)


def iterations_in(depth: int, seconds: float = CPU_SECONDS) -> float:
    """Iterations each net of ``depth`` gets when the pair has ``seconds`` at the cpu budget."""
    return seconds / cpu_seconds(depth, 1)


def net_model(net: str, depth: int) -> tuple[str, dict[str, Any]]:
    """The zoo's name and options of the bottleneck ResNet of ``depth`` with ``net``'s unit."""
    if net == "original":
        return "resnet_cifar", {"depth": depth, "bottleneck": True}
    if depth in (164, 1001):  # the named pre-activation bottleneck nets (preact_resnet110 is basic)
        return f"preact_resnet{depth}", {}
    return "preact_resnet_cifar", {"depth": depth}


def net_label(net: str, depth: int) -> str:
    return f"{'original' if net == 'original' else 'pre-act'} ResNet-{depth}"


def identity_1000_runs(ctx: Context) -> dict[str, RunSpec]:
    """The pair at ``ctx``'s budget: ``{"original": spec, "preact": spec}``."""
    plan = PLANS[ctx.budget.name]
    specs = {}
    for net in NETS:
        model, kwargs = net_model(net, plan.depth)
        specs[net] = ctx.run(model, net_label(net, plan.depth), iterations=plan.iterations,
                             recipe=plan.recipe, model_kwargs=kwargs)
    return specs


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
    return Curve([r["iteration"] for r in rows], [r["train_loss"] for r in rows],
                 [r["train_error"] for r in rows])


def smoothing_half_width(points: int) -> int:
    """Points on each side of the centred moving average: 1% of the curve (the paper budget's 1,280
    logged steps: +-12, i.e. +-600 iterations); none for short curves, whose points already average
    50 steps each."""
    return points // 100


def moving_average(values: Sequence[float], half_width: int) -> list[float]:
    """Centred moving average; the window shrinks symmetrically at the ends, so they are not biased."""
    out = []
    for i in range(len(values)):
        h = min(half_width, i, len(values) - 1 - i)
        window = values[i - h:i + h + 1]
        out.append(sum(window) / len(window))
    return out


def interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """ys at x, linear between points, the end values beyond them."""
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def first_reaching(threshold: float, xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The first iteration where ys falls to ``threshold`` (linear between points); None if never."""
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if y <= threshold:
            if i == 0:
                return x
            x0, y0 = xs[i - 1], ys[i - 1]
            return x0 + (x - x0) * (y0 - threshold) / (y0 - y)
    return None


def final_loss(curve: Curve) -> tuple[float, float]:
    """(final training loss, its spread): the mean logged loss over the last 10% of training (at least
    the last point), and the standard deviation of the logged losses over the last 25%, after the last
    lr drop (at least the last two points). The spread holds the steps' noise and what is left of the
    trend there, so it is a generous noise estimate."""
    total = curve.iterations[-1]
    points = list(zip(curve.iterations, curve.loss, strict=True))
    last = [v for x, v in points if x > 0.9 * total] or curve.loss[-1:]
    tail = [v for x, v in points if x > 0.75 * total]
    tail = tail if len(tail) >= 2 else curve.loss[-2:]
    mean = sum(tail) / len(tail)
    spread = (sum((v - mean) ** 2 for v in tail) / (len(tail) - 1)) ** 0.5 if len(tail) >= 2 else 0.0
    return sum(last) / len(last), spread


def chance_loss(dataset: str) -> float:
    """Cross-entropy of a uniform guess: where every training-loss curve starts."""
    return math.log(100 if dataset == "cifar100" else 10)


def loss_threshold(dataset: str, finals: Sequence[float]) -> float:
    """The level both nets' losses are timed to: the geometric midpoint between the chance loss and the
    worse net's final loss, so that "sooner" measures the way down, not the end of it."""
    return math.sqrt(chance_loss(dataset) * max(finals))


def measure(record: RunRecord, spec: RunSpec, curve: Curve, threshold: float) -> dict[str, Any]:
    """One net's numbers: training loss and error at 25/50/100% of training, when its smoothed loss
    reaches ``threshold``, its final test error and that error's sampling noise."""
    xs, total = curve.iterations, curve.iterations[-1]
    loss = moving_average(curve.loss, smoothing_half_width(len(xs)))
    error = moving_average(curve.error, smoothing_half_width(len(xs)))
    final, spread = final_loss(curve)
    test_error, images = record.final_value("test_error"), evaluated_images(record)
    return {
        "label": spec.label,
        "params": parameters(spec),
        "train_loss": {"25%": interpolate(0.25 * total, xs, loss), "50%": interpolate(0.5 * total, xs, loss),
                       "100%": final},
        "train_error": {f"{q:.0%}": interpolate(q * total, xs, error) for q in (0.25, 0.5, 1.0)},
        "final_train_loss": final,
        "final_loss_spread": spread,
        "reaches_threshold_at": first_reaching(threshold, xs, loss),
        "test_error": test_error,
        "test_images": images,
        "test_noise": sampling_noise(test_error, images),
        "smoothed_loss": loss,
    }


class Identity1000(Experiment):
    name = "identity-1000"
    title = "1001-layer ResNets: f = ReLU against f = identity"
    paper = "He et al. 2016 (Identity Mappings in Deep Residual Networks), Fig. 1 and Table 3"
    claim = (
        "A 1001-layer bottleneck ResNet with the original unit (ReLU after the addition) is hard to "
        "optimise: its training loss falls very slowly at the beginning and stays higher; the same net with "
        "full pre-activation units (the sum left alone) trains at once to a lower loss and tests better, "
        "4.92% against 7.61% on CIFAR-10 (10.2M parameters). At 164 layers the difference is small (5.46% "
        "against 5.93%)."
    )
    figures = (("identity_1000.png", "Training loss of the original and the pre-activation net against "
                                     "iterations (solid), test error after each epoch (dots, right axis); "
                                     "the dotted line is the loss threshold of the 'sooner' comparison"),)

    def runs(self, ctx: Context) -> list[RunSpec]:
        return list(identity_1000_runs(ctx).values())

    def settings(self, ctx: Context) -> dict[str, Any]:
        plan = PLANS[ctx.budget.name]
        specs = identity_1000_runs(ctx)
        iterations = specs["original"].resolved().iterations or 0
        out = {
            "networks": f"{specs['original'].label} ({UNITS['original']}) and {specs['preact'].label} "
                        f"({UNITS['preact']}), bottleneck units, the same recipe and seed",
            "recipe": plan.recipe or ctx.budget.recipe,
            "iterations per net": str(iterations),
        }
        if ctx.budget.name == "paper":
            out["schedule"] = (
                "the Identity Mappings appendix's, for both nets: batch 128, lr 0.01 for the first 400 "
                "iterations, then 0.1, divided by 10 at 32k and 48k, stop at 64k, momentum 0.9, weight decay "
                "1e-4, the full CIFAR-10 training set"
            )
        if ctx.budget.name == "cpu":
            step = seconds_per_step(plan.depth)
            out["why this pair"] = (
                f"the deepest pair that fits in about 30 minutes: pre-act ResNet-164 takes "
                f"{SECONDS_PER_STEP_164} s a step at 32x32 on 2 CPU cores (batch 128, bfloat16, "
                f"channels-last), 28x28 Fashion-MNIST {FASHION_MNIST_FACTOR}x of it, and the time grows "
                f"about linearly with depth: {step:.2f} s a step at {plan.depth} layers, so 2 nets x "
                f"{iterations} iterations x {step:.2f} s x {1 + EVALUATION_OVERHEAD:.2f} (test evaluations) "
                f"= {cpu_seconds(plan.depth, iterations) / 60:.0f} minutes. 1001 layers would leave "
                f"{iterations_in(1001):.0f} iterations a net, too few for a curve; 164 layers would allow "
                f"{iterations_in(164):.0f}, but that is the depth where the paper finds the difference small"
            )
        return out

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        plan = PLANS[ctx.budget.name]
        specs = identity_1000_runs(ctx)
        records = {net: runs[spec.name] for net, spec in specs.items()}
        curves = {net: training_curve(record) for net, record in records.items()}
        threshold = loss_threshold(ctx.dataset, [final_loss(c)[0] for c in curves.values()])
        results: dict[str, Any] = {}
        for net in NETS:
            results[net] = measure(records[net], specs[net], curves[net], threshold)
            results[net].update(unit=UNITS[net], depth=plan.depth,
                                paper_test_error=IDENTITY_1000_TABLE3.get(plan.depth, {}).get(net))
        smoothed = {net: results[net].pop("smoothed_loss") for net in NETS}
        finding, shows, summary = self._finding(results, threshold)
        half_width = smoothing_half_width(len(curves["original"].loss))
        results["summary"] = {**summary, "smoothing_half_width": half_width}
        (figure,) = self.figure_paths(ctx)
        plot_identity_1000(
            {specs[net].label: {"loss": (curves[net].iterations, curves[net].loss),
                                "smoothed": (curves[net].iterations, smoothed[net]),
                                "test": _test_errors(records[net])} for net in NETS},
            figure, threshold=threshold,
            title=f"{plan.depth}-layer ResNets on {ctx.dataset} ({ctx.budget.name} budget)",
        )
        smoothing = (f"smoothed by a centred moving average of +-{half_width} points" if half_width else
                     "not smoothed further (under 100 points)")
        notes = [
            "Training loss: each logged step's mean over its 50-iteration window (each epoch's for runs too "
            f"short to log steps), {smoothing}; the final loss is the mean over the last 10% of "
            "training, +- the standard deviation of the logged losses over the last 25% (the verdict's noise "
            "estimate). The threshold is the geometric midpoint between the chance loss ln(classes) = "
            f"{chance_loss(ctx.dataset):.3f} and the worse net's final loss. Test error +- its binomial "
            "sampling noise on the test images.",
        ]
        if plan.depth != 1001:
            notes.append(
                f"The paper's nets have 1001 layers; at this budget they have {plan.depth}. The paper finds "
                "the original unit's difficulty growing with depth: small at 164 layers (Fig. 6, where the "
                "pre-activation net even ends at a slightly higher training loss, yet tests better), large "
                "at 1001 (Fig. 1)."
            )
        caption = "Training loss, training error and test error of the two units beside Table 3"
        return Analysis(results, finding, shows, tables=[(caption, _table(results, plan.depth))], notes=notes)

    @staticmethod
    def _finding(results: Mapping[str, Mapping[str, Any]], threshold: float
                 ) -> tuple[str, bool | None, dict[str, Any]]:
        """The verdict: True when the pre-activation net's final training loss is lower than the
        original's by more than the noise and its loss reaches ``threshold`` no later; False for the
        opposite; None otherwise."""
        orig, pre = results["original"], results["preact"]
        gap = orig["final_train_loss"] - pre["final_train_loss"]  # > 0: pre-activation lower
        noise = math.hypot(orig["final_loss_spread"], pre["final_loss_spread"])
        t_orig, t_pre = orig["reaches_threshold_at"], pre["reaches_threshold_at"]
        never = float("inf")
        pre_sooner = t_pre is not None and t_pre <= (never if t_orig is None else t_orig)
        orig_sooner = t_orig is not None and t_orig <= (never if t_pre is None else t_pre)
        test_gap = orig["test_error"] - pre["test_error"]
        test_noise = gap_noise(orig["test_error"], orig["test_images"], pre["test_error"], pre["test_images"])

        def when(t: float | None) -> str:
            return "never" if t is None else f"at iteration {t:.0f}"

        text = (
            f"The pre-activation net's final training loss is {pre['final_train_loss']:.3f} against the "
            f"original unit's {orig['final_train_loss']:.3f} ({abs(gap):.3f} "
            f"{'lower' if gap > 0 else 'higher'}; the noise of the final losses is about {noise:.3f}). Its "
            f"smoothed loss reaches {threshold:.3f} {when(t_pre)}, the original's {when(t_orig)}. Test "
            f"error: {pre['test_error']:.2f}% against {orig['test_error']:.2f}% "
            f"({strength(test_gap, test_noise)}). "
        )
        shows: bool | None
        if gap > noise and pre_sooner:
            shows = True
            text += "The pre-activation net's training loss falls sooner and lower, as in the paper's Fig. 1."
        elif gap < -noise and orig_sooner:
            shows = False
            text += "The original unit's training loss falls sooner and lower here, unlike in Fig. 1."
        else:
            shows = None
            text += ("The curves do not separate both ways (sooner, and lower beyond the noise), so this run "
                     "cannot tell the two units apart in training.")
        summary = {"loss_gap": gap, "loss_noise": noise, "threshold": threshold, "preact_sooner": pre_sooner,
                   "original_sooner": orig_sooner, "test_gap": test_gap, "test_noise": test_noise}
        return text, shows, summary


def _table(results: Mapping[str, Mapping[str, Any]], depth: int) -> Table:
    """Ours beside Table 3 (its nearest depth, named, where it has none of this one)."""
    nearest = min(IDENTITY_1000_TABLE3, key=lambda d: abs(d - depth))
    columns = ["network", "params", "train loss 25%", "train loss 50%", "final train loss",
               "train error 25 / 50 / 100% (%)", "reaches threshold at", "test error (%)",
               f"paper, ResNet-{nearest} (%, CIFAR-10)"]
    rows = []
    for net in NETS:
        r = results[net]
        reached = r["reaches_threshold_at"]
        rows.append([
            f"{r['label']} ({r['unit']})", f"{r['params'] / 1e6:.2f}M", f"{r['train_loss']['25%']:.3f}",
            f"{r['train_loss']['50%']:.3f}", f"{r['final_train_loss']:.3f} +- {r['final_loss_spread']:.3f}",
            " / ".join(f"{v:.1f}" for v in r["train_error"].values()),
            "never" if reached is None else f"{reached:.0f}",
            f"{r['test_error']:.2f} +- {r['test_noise']:.2f}", IDENTITY_1000_TABLE3[nearest][net],
        ])
    return Table(columns, rows)


def _test_errors(record: RunRecord) -> tuple[list[float], list[float]]:
    rows = [r for r in record.metrics if r.get("test_error") is not None]
    return [r["iteration"] for r in rows], [r["test_error"] for r in rows]


# --- the figure -----------------------------------------------------------------------------------

Series = tuple[Sequence[float], Sequence[float]]  # (iterations, values)
