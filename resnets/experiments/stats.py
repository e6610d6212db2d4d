"""The arithmetic behind the verdicts: the sampling noise of an error rate, rank correlation, and the
paired statistics a reproducibility report stands on.

An error rate measured on n images is a binomial proportion, so its standard error is
sqrt(p (1 - p) / n).

Two nets evaluated on the same test images are compared pairedly: McNemar's exact test on the images
one gets right and the other wrong, and a hierarchical paired bootstrap over seeds and images for an
interval on the difference of error rates. A verdict is two-sided and fixed before the runs
(:func:`judge`): "shows", "contradicts" or "cannot be judged", the last naming the smallest effect the
budget could detect (:func:`detectable_effect`). All functions here are pure.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import torch


def sampling_noise(error_pct: float, images: int) -> float:
    """Standard error, in points, of an error rate measured on ``images`` independent images."""
    p = min(max(error_pct / 100, 0.0), 1.0)
    return 100 * (p * (1 - p) / max(images, 1)) ** 0.5


def rank_correlation(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (no ties expected among depths; errors' ties get average ranks)."""

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else 0.0


# --- Paired statistics for reproductions -------------------------------------------------------------

ArrayLike: TypeAlias = (
    Sequence[bool] | Sequence[float] | Sequence[Sequence[float]] | np.ndarray | torch.Tensor
)
Verdict: TypeAlias = Literal["shows", "contradicts", "cannot be judged"]
Direction: TypeAlias = Literal["lower", "higher"]


def _array(values: ArrayLike, ndim: int, what: str) -> np.ndarray:
    """``values`` as a float64 numpy array of ``ndim`` dimensions holding only 0s and 1s."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {tuple(array.shape)}")
    if array.size and not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{what} must hold only 0/1 (or booleans)")
    return array


@dataclass(frozen=True)
class McNemar:
    """The discordant pairs of two classifiers on the same images and McNemar's exact p-value."""

    a_only: int  # images A gets right and B gets wrong
    b_only: int  # images B gets right and A gets wrong
    p_value: float


def _binomial_lower_tail(k: int, n: int) -> float:
    """P[X <= k] for X ~ Binomial(n, 1/2), exactly (integer arithmetic, one rounding at the end)."""
    term, total = 1, 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)  # C(n, i + 1), exact
        total += term
    return total / 2**n


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> McNemar:
    """McNemar's exact two-sided test (McNemar 1947; the exact binomial form, e.g. Dietterich 1998).

    ``correct_a`` and ``correct_b`` are 1-D per-image correctness of two classifiers on the same
    images. Under the null hypothesis each discordant image is equally likely to favour either, so
    ``a_only ~ Binomial(a_only + b_only, 1/2)``; p = min(1, 2 P[X <= min(a_only, b_only)]), and 1 when
    there are no discordant pairs.
    """
    a = _array(correct_a, 1, "correct_a").astype(bool)
    b = _array(correct_b, 1, "correct_b").astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"correct_a has {a.size} images but correct_b has {b.size}")
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else min(1.0, 2 * _binomial_lower_tail(min(a_only, b_only), n))
    return McNemar(a_only=a_only, b_only=b_only, p_value=p)


@dataclass(frozen=True)
class Interval:
    """A difference of error rates, B - A in points, with its bootstrap interval and standard error."""

    difference: float
    low: float
    high: float
    standard_error: float
    level: float = 0.95


def paired_bootstrap(
    errors_a: ArrayLike,
    errors_b: ArrayLike,
    *,
    resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Hierarchical paired bootstrap of B's mean error minus A's, in points (Efron & Tibshirani 1993,
    percentile interval; resampling seeds and images as in Bouthillier et al. 2021).

    ``errors_a`` and ``errors_b`` are (seeds x images) per-image 0/1 errors of two nets on the same
    images; their seed counts may differ. Each resample draws each net's seeds with replacement (as
    many as it has) and one set of image indices with replacement shared by both nets (the pairing).
    ``difference`` is the point estimate (per-seed mean errors averaged over seeds), ``low``/``high``
    the percentile interval at ``level``, ``standard_error`` the std of the resampled differences.
    Seeded by ``seed`` (numpy ``default_rng``), so the same inputs give the same interval.
    """
    a = _array(errors_a, 2, "errors_a")
    b = _array(errors_b, 2, "errors_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"errors_a has {a.shape[1]} images but errors_b has {b.shape[1]}")
    if 0 in a.shape or 0 in b.shape:
        raise ValueError("errors_a and errors_b need at least one seed and one image")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    (seeds_a, images), seeds_b = a.shape, b.shape[0]
    rng = np.random.default_rng(seed)
    # Both nets' seeds side by side: a resample's difference is sum_s w_s * (errors of seed s on the
    # drawn images), w_s = (times seed s was drawn) / (seeds of its net), negative for A.
    stacked = np.concatenate([a, b]).T.astype(np.float32)  # images x (seeds_a + seeds_b)
    weights = np.concatenate(
        [
            -rng.multinomial(seeds_a, np.full(seeds_a, 1 / seeds_a), size=resamples) / seeds_a,
            rng.multinomial(seeds_b, np.full(seeds_b, 1 / seeds_b), size=resamples) / seeds_b,
        ],
        axis=1,
    )
    chunk = max(1, 2_000_000 // images)  # resamples per chunk: ~16 MB of image indices
    diffs = np.empty(resamples)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        picks = rng.integers(0, images, size=(rows, images))
        picks += np.arange(rows)[:, None] * images
        counts = np.bincount(picks.ravel(), minlength=rows * images).reshape(rows, images)
        per_seed = counts.astype(np.float32) @ stacked  # rows x seeds: errors on the drawn images
        diffs[start : start + rows] = (per_seed * weights[start : start + rows]).sum(axis=1)
    diffs *= 100 / images
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return Interval(
        difference=float(100 * (b.mean() - a.mean())),
        low=float(low),
        high=float(high),
        standard_error=float(diffs.std(ddof=1)) if resamples > 1 else 0.0,
        level=level,
    )


def bootstrap_difference(
    values_a: Sequence[Sequence[float]],
    values_b: Sequence[Sequence[float]],
    *,
    paired: bool,
    resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Hierarchical bootstrap of B's mean minus A's for real-valued measurements of units (e.g. each
    layer's response std), seeds x units per net, in the values' own units.

    Each resample draws each net's seeds with replacement, then units with replacement: one set of unit
    indices shared by both nets when ``paired`` (the same layers of two nets of one architecture), else
    drawn for each net separately (nets of different depths). Percentile interval at ``level``.
    """
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or 0 in a.shape or 0 in b.shape:
        raise ValueError("values_a and values_b must be non-empty seeds x units arrays")
    if paired and a.shape[1] != b.shape[1]:
        raise ValueError(f"paired values need the same units: {a.shape[1]} against {b.shape[1]}")
    if not 0 < level < 1 or resamples < 2:
        raise ValueError("level must lie in (0, 1) and resamples be at least 2")
    rng = np.random.default_rng(seed)

    def draw(values: np.ndarray, units: np.ndarray) -> np.ndarray:  # resamples of the mean
        seeds = rng.integers(0, len(values), size=(resamples, len(values)))
        return values[seeds[:, :, None], units[:, None, :]].mean(axis=(1, 2))

    units_a = rng.integers(0, a.shape[1], size=(resamples, a.shape[1]))
    units_b = units_a if paired else rng.integers(0, b.shape[1], size=(resamples, b.shape[1]))
    diffs = draw(b, units_b) - draw(a, units_a)
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return Interval(float(b.mean() - a.mean()), float(low), float(high), float(diffs.std(ddof=1)), level)


def image_blocks(values: ArrayLike, blocks: int) -> np.ndarray:
    """Seeds x images -> seeds x blocks: the mean of each interleaved block of images (image i in block
    i % blocks; one image a block where there are fewer images than blocks).

    ``bootstrap_difference`` holds a resamples x seeds x units array, too large with 10,000 images as
    units; with independent images the block means are independent, so resampling them gives the mean's
    sampling variance as resampling single images would. The blocks are the same for every net of a
    comparison, so the pairing holds."""
    array = np.asarray(values, dtype=np.float64)
    count = min(blocks, array.shape[1])
    return np.stack([array[:, b::count].mean(axis=1) for b in range(count)], axis=1)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test (ties left out): p of ``wins`` against ``losses`` under a fair coin."""
    n = wins + losses
    return 1.0 if n == 0 else min(1.0, 2 * _binomial_lower_tail(min(wins, losses), n))


def sign_verdict(differences: Sequence[float], expected: Direction, *, alpha: float = 0.05) -> Verdict:
    """Two-sided verdict from paired differences (B - A, one per seed): "shows" when more go the
    paper's way and the sign test rejects a fair coin at ``alpha``, "contradicts" when more go the other
    way and it rejects, else "cannot be judged"."""
    sign = 1.0 if expected == "higher" else -1.0
    wins = sum(sign * d > 0 for d in differences)
    losses = sum(sign * d < 0 for d in differences)
    if sign_test(wins, losses) >= alpha:
        return "cannot be judged"
    return "shows" if wins > losses else "contradicts"


def detectable_effect(standard_error: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference (points) a two-sided z-test at ``alpha`` detects with probability
    ``power`` (a standard power analysis, Cohen 1988): (z_{1-alpha/2} + z_{power}) * SE, 2.80 SE at
    the defaults."""
    z = statistics.NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * standard_error


def seeds_needed(interval: Interval, minimum: int = 2) -> int:
    """Seeds per net to train: 3 (or ``minimum`` if larger) when the gap lies within twice its standard
    error, else ``minimum``."""
    return max(3, minimum) if abs(interval.difference) < 2 * interval.standard_error else minimum


@dataclass(frozen=True)
class Judgement:
    """A two-sided verdict on a paper's claim about B - A, fixed before the runs (see :func:`judge`)."""

    verdict: Verdict
    interval: Interval
    detectable: float  # smallest effect (points) this budget detects: detectable_effect(SE)
    paper_effect: float | None = None  # the paper's B - A, points (magnitude used)
    expected: Direction = "higher"

    def to_dict(self) -> dict[str, object]:
        """The verdict with its interval, as results.json stores it."""
        i = self.interval
        return {
            "verdict": self.verdict,
            "difference": i.difference,
            "interval": [i.low, i.high],
            "standard_error": i.standard_error,
            "detectable_effect": self.detectable,
        }

    def sentence(self) -> str:
        """One sentence stating the difference, its interval and the verdict."""
        i = self.interval
        diff, low, high = (round(v, 2) + 0.0 for v in (i.difference, i.low, i.high))  # no "-0.00"
        head = (
            f"B - A = {diff:+.2f} points ({i.level * 100:g}% interval {low:+.2f} to {high:+.2f}, "
            "paired bootstrap over seeds and images)"
        )
        if self.verdict != "cannot be judged":
            return f"{head}; {self.verdict} the paper's direction beyond the noise"
        tail = f"; cannot be judged: the smallest effect this budget could detect is {self.detectable:.2f}"
        tail += " points"
        if self.paper_effect is not None:
            tail += f", beside the paper's effect of {abs(self.paper_effect):.2f} points"
        return head + tail


def judge(
    interval: Interval,
    expected: Direction,
    *,
    per_seed_differences: Sequence[float] = (),
    paper_effect: float | None = None,
) -> Judgement:
    """Two-sided verdict on the paper's claim that B's error is ``expected`` ("higher": B - A > 0,
    "lower": B - A < 0) than A's.

    "shows" when the whole interval lies on the paper's side of 0 and every per-seed difference (if
    given) has the paper's sign; "contradicts" when the whole interval lies on the other side and every
    per-seed difference has the other sign; otherwise "cannot be judged".
    """
    if expected not in ("lower", "higher"):
        raise ValueError(f"expected must be 'lower' or 'higher', got {expected!r}")
    sign = 1.0 if expected == "higher" else -1.0
    low, high = sorted((sign * interval.low, sign * interval.high))  # paper's side is now > 0
    signed = [sign * d for d in per_seed_differences]
    verdict: Verdict
    if low > 0 and all(d > 0 for d in signed):
        verdict = "shows"
    elif high < 0 and all(d < 0 for d in signed):
        verdict = "contradicts"
    else:
        verdict = "cannot be judged"
    return Judgement(
        verdict=verdict,
        interval=interval,
        detectable=detectable_effect(interval.standard_error),
        paper_effect=paper_effect,
        expected=expected,
    )


@dataclass(frozen=True)
class Spread:
    """Per-seed test errors of one net: mean, extremes, count and sample standard deviation."""

    mean: float
    min: float
    max: float
    n: int
    std: float


def seed_spread(errors: Sequence[float]) -> Spread:
    """Mean, min, max, count and sample std (n - 1 denominator; 0 for one seed) of per-seed errors."""
    values = [float(e) for e in errors]
    if not values:
        raise ValueError("seed_spread needs at least one error")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Spread(mean=statistics.fmean(values), min=min(values), max=max(values), n=len(values), std=std)
