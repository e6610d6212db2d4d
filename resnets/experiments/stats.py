"""The arithmetic behind the verdicts: the sampling noise of an error rate, how a gap compares with it,
and rank correlation.

An error rate measured on n images is a binomial proportion, so its standard error is
sqrt(p (1 - p) / n); a difference between two independent measurements has the root sum of squares
of theirs. A finding "shows" only where the gap stands above that noise.
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import RunRecord, recipe_dict


def sampling_noise(error_pct: float, images: int) -> float:
    """Standard error, in points, of an error rate measured on ``images`` independent images."""
    p = min(max(error_pct / 100, 0.0), 1.0)
    return 100 * (p * (1 - p) / max(images, 1)) ** 0.5


def gap_noise(error_a: float, images_a: int, error_b: float, images_b: int) -> float:
    """Standard error, in points, of the difference of two error rates measured independently."""
    return (sampling_noise(error_a, images_a) ** 2 + sampling_noise(error_b, images_b) ** 2) ** 0.5


def pairwise_noise(measured: Iterable[tuple[float, int]]) -> float:
    """A bound on the standard error of the difference of any two of the ``(error %, images)``
    measurements: that of two measurements as noisy as the noisiest."""
    return max(sampling_noise(error, images) for error, images in measured) * 2**0.5


def strength(gap: float, noise: float) -> str:
    """How a difference of ``gap`` points compares with ``noise``, its standard error, in words."""
    ratio = abs(gap) / noise if noise > 0 else float("inf")
    where = "well above" if ratio >= 3 else "only a little above" if ratio >= 1 else "within"
    return f"{where} the sampling noise of about {noise:.2f} points"


def last_epoch_images(record: RunRecord) -> int:
    """Training images seen in the last epoch (its training error is measured over them)."""
    rows = record.metrics
    start = rows[-2]["iteration"] if len(rows) >= 2 else 0
    return (rows[-1]["iteration"] - start) * int(recipe_dict(record.spec)["batch_size"])


def evaluated_images(record: RunRecord) -> int:
    """Test images the run was evaluated on (CIFAR-10 and Fashion-MNIST have 10,000)."""
    return int(recipe_dict(record.spec).get("test_subset") or 10_000)


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
