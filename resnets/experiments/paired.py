"""Networks trained with several seeds, scored image by image, and the paired comparisons behind verdicts.

A ``Net`` is one network of an experiment trained once per seed (``RunSpec``s differing only in their
seed, named ``...-seed1`` and so on, so every experiment that needs the same network shares its runs).
Each run's final weights are scored on every test image; two nets scored on the same images are compared
with a paired bootstrap over seeds and images, McNemar's exact test per seed pair, and a two-sided verdict
whose direction is the paper's, fixed in code before the runs (``stats.judge``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import save_torch
from ..runs import RunFolder
from .base import Context, RunRecord, Runs, RunSpec
from .stats import (
    Direction,
    Interval,
    Judgement,
    McNemar,
    Spread,
    judge,
    mcnemar,
    paired_bootstrap,
    seed_spread,
    seeds_needed,
)
from .trained import TrainedNets

PRECISIONS = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def run_precision(record: RunRecord) -> torch.dtype | None:
    """The autocast dtype a run evaluated in (its summary says "bfloat16 autocast", "float32", ...);
    None for float32."""
    return PRECISIONS.get(str(record.summary.get("precision")).removesuffix(" autocast"))


@dataclass(frozen=True)
class Net:
    """One network of an experiment, trained once per seed; ``key`` names it within the experiment."""

    key: str
    label: str
    specs: tuple[RunSpec, ...]


def seeded_net(ctx: Context, key: str, label: str, make: Callable[[int], RunSpec]) -> Net:
    """``make(seed)`` for each of the seeds the context gives ``key`` (seed 0 first)."""
    return Net(key, label, tuple(make(seed) for seed in range(ctx.seeds_for(key))))


@dataclass(frozen=True)
class Comparison:
    """Two nets on the same test images; ``expected``: the paper's B has "higher" or "lower" error than A."""

    a: Net
    b: Net
    expected: Direction
    paper_effect: float | None = None  # B's error minus A's in the paper, points (None: not given)

    @property
    def name(self) -> str:
        return f"{self.b.label} vs {self.a.label}"


@dataclass(frozen=True)
class Compared:
    """A comparison measured: the paired interval, the verdict, and the per-seed numbers."""

    comparison: Comparison
    interval: Interval
    judgement: Judgement
    spread_a: Spread
    spread_b: Spread
    per_seed_differences: tuple[float, ...]  # seed s of B minus seed s of A, points
    mcnemar: tuple[McNemar, ...]  # one per seed pair

    @property
    def verdict(self) -> str:
        return self.judgement.verdict

    def sentence(self) -> str:
        c = self.comparison
        p_values = ", ".join(f"{m.p_value:.2g}" for m in self.mcnemar)
        return (
            f"{c.b.label} {self.spread_b.mean:.2f}% against {c.a.label} {self.spread_a.mean:.2f}% "
            f"({self.spread_b.n} and {self.spread_a.n} seeds; McNemar p per seed pair: {p_values}): "
            + self.judgement.sentence()
            + "."
        )

    def to_dict(self) -> dict[str, Any]:
        c, i = self.comparison, self.interval
        return {
            "a": c.a.label,
            "b": c.b.label,
            "expected": c.expected,
            "paper_effect": c.paper_effect,
            "verdict": self.verdict,
            "difference": i.difference,
            "interval": [i.low, i.high],
            "standard_error": i.standard_error,
            "detectable_effect": self.judgement.detectable,
            "per_seed_differences": list(self.per_seed_differences),
            "mcnemar_p": [m.p_value for m in self.mcnemar],
            "errors_a": {"mean": self.spread_a.mean, "min": self.spread_a.min, "max": self.spread_a.max},
            "errors_b": {"mean": self.spread_b.mean, "min": self.spread_b.min, "max": self.spread_b.max},
        }


def _load_cache(path: Path) -> dict[str, Any] | None:
    """A cached scoring, or None where there is none or it is unreadable (then it is scored again)."""
    try:
        stored = torch.load(path, weights_only=True) if path.is_file() else None
    except (OSError, RuntimeError, EOFError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Scores:
    """Per-image test errors of finished runs, cached in ``OUTPUT/predictions/<run>.pt`` beside the
    digest of the weights they score (a retrained run is scored again)."""

    def __init__(self, ctx: Context, runs: Runs) -> None:
        self.ctx, self.runs, self.nets = ctx, runs, TrainedNets(ctx)
        self._memo: dict[str, np.ndarray] = {}

    def _cache(self, spec: RunSpec) -> Path:
        return self.ctx.output / "predictions" / f"{spec.name}.pt"

    def image_errors(self, spec: RunSpec) -> np.ndarray:
        """1 where the run's final weights misclassify the test image, in the test split's order."""
        if spec.name in self._memo:
            return self._memo[spec.name]
        record = self.runs[spec.name]
        digest = _digest(RunFolder(record.folder).weights_path)
        cache = self._cache(spec)
        stored = _load_cache(cache)
        if stored is not None and stored.get("weights_sha256") == digest:
            errors = stored["errors"].numpy()
        else:
            errors = self._score(record)
            save_torch({"weights_sha256": digest, "errors": torch.from_numpy(errors)}, cache)
        self._memo[spec.name] = errors
        return errors

    def _score(self, record: RunRecord) -> np.ndarray:
        # float32, whatever precision the run trained and logged its test error in: the per-image errors
        # (and the cache) then do not depend on the scoring CPU's bfloat16 arithmetic. Their mean can
        # differ from a bfloat16 run's logged test error by a few images (docs/reproduce.md).
        model, out = self.nets.model(record), []
        with torch.no_grad():
            for x, y in self.nets.test_loader(record):
                out.append((model(x).float().argmax(1) != y).cpu())
        return torch.cat(out).numpy().astype(np.uint8)

    def net_errors(self, net: Net) -> np.ndarray:
        """Seeds x images."""
        return np.stack([self.image_errors(spec) for spec in net.specs])

    def test_errors(self, net: Net) -> list[float]:
        """Each seed's test error, percent."""
        return [100 * float(row.mean()) for row in self.net_errors(net)]


def compare(scores: Scores, comparison: Comparison, *, resamples: int = 10_000) -> Compared:
    """Measure ``comparison`` on the test images and judge it in the paper's direction."""
    a, b = scores.net_errors(comparison.a), scores.net_errors(comparison.b)
    interval = paired_bootstrap(a, b, resamples=resamples)
    pairs = range(min(len(a), len(b)))
    differences = tuple(100 * float(b[s].mean() - a[s].mean()) for s in pairs)
    tests = tuple(mcnemar(a[s] == 0, b[s] == 0) for s in pairs)
    judgement = judge(
        interval, comparison.expected, per_seed_differences=differences, paper_effect=comparison.paper_effect
    )
    return Compared(
        comparison,
        interval,
        judgement,
        seed_spread(scores.test_errors(comparison.a)),
        seed_spread(scores.test_errors(comparison.b)),
        differences,
        tests,
    )


def more_seeds(ctx: Context, measured: Sequence[Compared]) -> dict[str, int]:
    """Seeds each net of a deciding comparison needs beyond what it has (3 where the gap is within twice
    its standard error), by ``Net.key``; empty when every comparison has enough."""
    wanted: dict[str, int] = {}
    if not ctx.budget.adaptive_seeds:
        return {}
    for result in measured:
        need = seeds_needed(result.interval, ctx.seeds)
        for net in (result.comparison.a, result.comparison.b):
            if need > len(net.specs):
                wanted[net.key] = max(wanted.get(net.key, 0), need)
    return wanted


def overall(verdicts: Sequence[str], *, required: int | None = None) -> str:
    """One verdict from several parts of a claim: "shows" when at least ``required`` (default: all)
    show and none contradicts; "contradicts" when at least that many contradict; else undecided."""
    need = len(verdicts) if required is None else required
    shows, contradicts = verdicts.count("shows"), verdicts.count("contradicts")
    if shows >= need and contradicts == 0:
        return "shows"
    if contradicts >= need:
        return "contradicts"
    return "cannot be judged"


def shows_flag(verdict: str) -> bool | None:
    """The report's ``shows`` field: True, False (contradicts) or None (cannot be judged)."""
    return {"shows": True, "contradicts": False}.get(verdict)


def spread_cell(values: Sequence[float]) -> str:
    """A table cell: the mean over seeds, with the seed range where there are several."""
    spread = seed_spread(values)
    if spread.n == 1:
        return f"{spread.mean:.2f}"
    return f"{spread.mean:.2f} ({spread.min:.2f}-{spread.max:.2f})"


def verdict_sentence(verdict: str, shows: str) -> str:
    """The closing sentence of a finding: ``shows`` (what the paper's finding is, seen) or the other
    two verdicts' common words."""
    if verdict == "shows":
        return shows
    if verdict == "contradicts":
        return "The opposite of the paper's finding holds beyond the noise in at least one part."
    return (
        "At least one part is within the noise of this budget, so the finding cannot be judged as a whole "
        "(the smallest detectable effects are given above)."
    )


def differences_of(measured: Sequence[Compared]) -> dict[str, tuple[float, float, float]]:
    """What the figures' comparison panel draws: B - A with its interval, by name and the paper's side."""
    return {
        f"{m.comparison.name}\n(paper: B {m.comparison.expected})": (
            m.interval.difference,
            m.interval.low,
            m.interval.high,
        )
        for m in measured
    }
