"""Why residual learning is easier, in one layer (He et al. 2015, Sec. 3.1).

"If the optimal function is closer to an identity mapping than to a zero mapping, it should be easier
for the solver to find the perturbations with reference to an identity mapping." The toy that student
reproductions use: one 3x3 convolution learns to map random inputs to themselves, once as a plain layer
(it must learn the identity kernel) and once with a skip connection, y = x + conv(x) (it must learn zero).

Both are the same least-squares problem, only shifted: the plain layer starts farther from its answer
(He-initialised weights against the identity kernel) than the residual layer (the same weights against
zero). So the speed-up depends on the optimiser: plain SGD converges at a rate set by the (identical)
curvature, and the skip saves only the few steps the extra distance costs; an optimiser whose steps have
a fixed size per weight (Adam) must walk the whole extra distance. Both are measured and reported.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .base import Analysis, Context, Experiment, Runs
from .paired import overall, shows_flag, verdict_sentence
from .plots import plot_loss_curves
from .stats import sign_test, sign_verdict
from .tables import Table


@dataclass(frozen=True)
class ToySettings:
    steps: int = 200
    seeds: int = 5
    channels: int = 16
    size: int = 8  # feature map side: 16 x 8 x 8 = 1,024 positions per step for 144 weights per output
    batch: int = 16
    thresholds: tuple[float, ...] = (1e-2, 1e-3)


# Optimisers: the papers' SGD (lr 0.1, momentum 0.9), and Adam, which student reproductions mostly use.
OPTIMIZERS: dict[str, tuple[str, float]] = {"sgd": ("SGD, momentum 0.9", 0.1), "adam": ("Adam", 0.01)}

# The toy takes seconds whatever the budget: 20 seeds give the sign test power (all 20 one way: p 2e-6;
# 15 of 20: p 0.04); the smoke budget runs 3.
SETTINGS = {"smoke": ToySettings(seeds=3), "cpu": ToySettings(seeds=20), "paper": ToySettings(seeds=20)}


@contextmanager
def _single_thread() -> Iterator[None]:
    # A 16-channel 8x8 problem is far too small to split between threads: one thread is several times
    # faster, and immune to the other processes on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_identity_layer(
    residual: bool,
    optimizer: str,
    *,
    steps: int,
    seed: int,
    channels: int = 16,
    size: int = 8,
    batch: int = 16,
    lr: float | None = None,
) -> list[float]:
    """Per step, the mean squared error between ``x`` and ``y = conv(x)`` (plain) or ``x + conv(x)``.

    The conv starts with the zoo's He initialisation (normal, fan_out, ReLU gain); every step draws a
    fresh batch of standard-normal inputs from a generator seeded with ``seed``, so plain and residual
    see the same data and the same initial weights. Runs on the CPU, in one thread: the problem is tiny.
    """
    generator = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    with torch.no_grad():
        std = math.sqrt(2.0 / (channels * 9))  # kaiming_normal_(mode="fan_out", nonlinearity="relu")
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)
    lr = OPTIMIZERS[optimizer][1] if lr is None else lr
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(conv.parameters(), lr=lr, momentum=0.9)
    else:
        opt = torch.optim.Adam(conv.parameters(), lr=lr)
    losses = []
    with _single_thread():
        for _ in range(steps):
            x = torch.randn(batch, channels, size, size, generator=generator)
            y = x + conv(x) if residual else conv(x)
            loss = (y - x).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def steps_to_reach(losses: list[float], threshold: float) -> int | None:
    """The first step (1-based) whose loss is below ``threshold``; None if never."""
    return next((i + 1 for i, loss in enumerate(losses) if loss < threshold), None)


def _median_steps(values: list[int | None]) -> float | None:
    reached = [v for v in values if v is not None]
    return statistics.median(reached) if len(reached) == len(values) else None


def _speedup_sentence(name: str, threshold: float, plain: float | None, residual: float | None) -> str:
    if residual is None:
        return f"with {name} the residual layer did not reach {threshold:g} within the budget's steps"
    if plain is None:
        return (
            f"with {name} the residual layer reached a loss of {threshold:g} in {residual:g} steps while the "
            "plain layer never did"
        )
    ratio = plain / residual
    strength = "much faster" if ratio >= 2 else "faster" if ratio >= 1.2 else "about as fast"
    return (
        f"with {name} the residual layer reached {threshold:g} in {residual:g} steps against {plain:g} for "
        f"the plain layer ({ratio:.1f}x, {strength})"
    )


class IdentityToy(Experiment):
    name = "identity-toy"
    title = "Learning the identity: a plain 3x3 convolution against one with a skip connection"
    paper = "He et al. 2015, Sec. 3.1 (the residual-learning hypothesis), as student reproductions test it"
    claim = (
        "If the identity is (nearly) optimal, driving a residual branch to zero is easier than fitting an "
        "identity with a stack of nonlinear layers."
    )
    figures = (("identity_toy.png", "Loss against steps, plain (y = conv x) and residual (y = x + conv x)"),)

    def settings(self, ctx: Context) -> dict:
        s = SETTINGS[ctx.budget.name]
        return {
            "steps": s.steps,
            "seeds": s.seeds,
            "channels": s.channels,
            "map size": f"{s.size}x{s.size}",
            "batch": s.batch,
            "optimisers": ", ".join(f"{n} (lr {lr:g})" for n, lr in OPTIMIZERS.values()),
            "computed on": "one CPU thread (the problem is tiny)",
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        s = SETTINGS[ctx.budget.name]
        results: dict = {"settings": {"steps": s.steps, "seeds": s.seeds, "thresholds": list(s.thresholds)}}
        curves: dict[str, list[list[float]]] = {}
        rows, sentences, verdicts = [], [], []
        tightest = s.thresholds[-1]
        for opt, (opt_name, lr) in OPTIMIZERS.items():
            per_variant, reached = {}, {}
            for variant in ("plain", "residual"):
                runs_losses = [
                    train_identity_layer(
                        variant == "residual",
                        opt,
                        steps=s.steps,
                        seed=seed,
                        channels=s.channels,
                        size=s.size,
                        batch=s.batch,
                    )
                    for seed in range(s.seeds)
                ]
                median_curve = [statistics.median(step) for step in zip(*runs_losses, strict=True)]
                reach = {
                    t: _median_steps([steps_to_reach(losses, t) for losses in runs_losses])
                    for t in s.thresholds
                }
                # never reached: censored at one step past the budget's
                reached[variant] = [steps_to_reach(losses, tightest) or s.steps + 1 for losses in runs_losses]
                per_variant[variant] = {
                    "initial_loss": median_curve[0],
                    "final_loss": median_curve[-1],
                    "median_loss_curve": median_curve,
                    "steps_to": {f"{t:g}": reach[t] for t in s.thresholds},
                    f"steps_to_{tightest:g}_per_seed": reached[variant],
                }
                curves[f"{variant}, {opt_name}"] = runs_losses
                rows.append(
                    [
                        opt_name,
                        variant,
                        median_curve[0],
                        f"{median_curve[-1]:.2e}",
                        *[reach[t] for t in s.thresholds],
                    ]
                )
            # paired by seed (same initial weights and data): residual minus plain steps
            differences = [r - p for r, p in zip(reached["residual"], reached["plain"], strict=True)]
            verdict = sign_verdict(differences, "lower")
            wins, losses = sum(d < 0 for d in differences), sum(d > 0 for d in differences)
            verdicts.append(verdict)
            results[opt] = {
                "optimizer": opt_name,
                "lr": lr,
                **per_variant,
                "verdict": verdict,
                "residual_faster_seeds": wins,
                "plain_faster_seeds": losses,
                "sign_test_p": sign_test(wins, losses),
            }
            plain, residual = (per_variant[v]["steps_to"][f"{tightest:g}"] for v in ("plain", "residual"))
            sentences.append(
                _speedup_sentence(opt_name, tightest, plain, residual)
                + f"; the residual layer was faster in {wins} of {s.seeds} seeds and slower in {losses} "
                f"(sign test p = {sign_test(wins, losses):.2g}): {verdict}"
            )
        verdict = overall(verdicts)
        results["verdict"] = verdict
        (figure,) = self.figure_paths(ctx)
        plot_loss_curves(
            curves,
            figure,
            thresholds=s.thresholds,
            title="one 3x3 conv learning the identity (median and range over seeds)",
        )
        finding = (
            "Learning the identity with one 3x3 convolution: " + "; ".join(sentences) + ". "
            "The two problems share their curvature and differ only in where they start, so the skip "
            "connection helps in proportion to how far the plain layer's weights must travel: little under "
            "SGD, whose steps shrink with the gradient, and most under Adam, whose steps have a fixed size "
            "per weight. "
            + verdict_sentence(
                verdict,
                "The residual layer reaches the loss sooner under both optimisers, "
                "beyond the noise of seeds, as the paper's hypothesis expects.",
            )
        )
        table = Table(
            ["optimiser", "layer", "initial loss", "final loss", *[f"steps to {t:g}" for t in s.thresholds]],
            rows,
        )
        caption = "Median over seeds of the loss (mean squared error against the input)"
        notes = [
            "The paper has no numbers for this toy; it illustrates the hypothesis of its Sec. 3.1.",
            "The verdict, fixed before the runs: per optimiser, a two-sided sign test over seeds (plain and "
            "residual share each seed's initial weights and data) of the steps to "
            f"{tightest:g}; both must show.",
        ]
        return Analysis(
            results, finding, shows_flag(verdict), tables=[(caption, table)], notes=notes, verdict=verdict
        )
