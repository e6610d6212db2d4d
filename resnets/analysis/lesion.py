"""Lesion study of Veit, Wilber and Belongie, "Residual Networks Behave Like Ensembles of Relatively
Shallow Networks" (NeurIPS 2016), Sec. 4.

Delete one residual block at a test time (the block then computes only its shortcut, ``forward_shortcut``:
identity, or the option-A/projection mapping where the shape changes) and measure the test error; swap
adjacent blocks of equal shape (their Sec. 4.3 "re-ordering"). A residual network degrades gracefully
because most of its paths do not go through any one block; a plain network has a single path and collapses.
Sec. 4.3 goes further: delete k blocks drawn at random (Fig. 5(a), ``deletion_curve``) and re-order the
blocks by random swaps of equal-shape blocks, measured by the Kendall tau of the new order against the
original (Fig. 5(b), ``reordering_curve``); an ensemble's error grows smoothly under both.

The patches work on any model of the zoo through the block contract (``residual_blocks()``,
``forward_shortcut``) and are undone on exit, even after an exception.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..evaluate import evaluate


@contextmanager
def _patched_forward(block: nn.Module, forward: Callable[..., torch.Tensor]) -> Iterator[None]:
    # An instance attribute shadows the class's ``forward``; nn.Module.__call__ looks it up per call.
    had_own = "forward" in block.__dict__
    previous = block.__dict__.get("forward")
    block.forward = forward
    try:
        yield
    finally:
        if had_own:
            block.forward = previous
        else:
            del block.forward


@contextmanager
def blocks_deleted(blocks: Iterable[nn.Module]) -> Iterator[None]:
    """Within the context each block computes only its shortcut (its residual branch is deleted)."""
    blocks = list(blocks)
    if not blocks:
        yield
        return
    first, rest = blocks[0], blocks[1:]
    with _patched_forward(first, first.forward_shortcut), blocks_deleted(rest):
        yield


@contextmanager
def blocks_swapped(first: nn.Module, second: nn.Module) -> Iterator[None]:
    """Within the context, two consecutive blocks run in the other order (``second`` then ``first``)."""
    run_first, run_second = first.forward, second.forward
    # The first position now computes the second block and vice versa.
    with _patched_forward(first, run_second), _patched_forward(second, run_first):
        yield


def block_shapes(model: nn.Module, example: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) of every block of ``model`` on ``example`` (one forward pass)."""
    blocks = [block for _, block in model.residual_blocks()]
    shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    def recorder(i: int):
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            shapes[i] = (tuple(inputs[0].shape), tuple(output.shape))

        return record

    hooks = [block.register_forward_hook(recorder(i)) for i, block in enumerate(blocks)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return [shapes[i] for i in range(len(blocks))]


def shape_changing(model: nn.Module, example: torch.Tensor) -> list[bool]:
    """For each block, whether its output's shape differs from its input's (the downsampling blocks)."""
    return [inp != out for inp, out in block_shapes(model, example)]


def swappable_pairs(model: nn.Module, example: torch.Tensor) -> list[int]:
    """Indices i such that blocks i and i+1 both keep their input's shape, so they can trade places."""
    changes = shape_changing(model, example)
    return [i for i in range(len(changes) - 1) if not changes[i] and not changes[i + 1]]


@dataclass
class LesionResult:
    """Test errors (percent) of the intact net, with each block deleted, and with adjacent blocks swapped."""

    baseline_error: float
    block_names: list[str]
    deleted_errors: list[float]
    swapped_pairs: list[str] = field(default_factory=list)  # "name_i<->name_j"
    swapped_errors: list[float] = field(default_factory=list)
    downsampling: list[bool] = field(default_factory=list)  # per block: does it change the shape?

    @property
    def deletion_increase(self) -> list[float]:
        """Error increase caused by deleting each block, in points."""
        return [e - self.baseline_error for e in self.deleted_errors]

    def mean_increase(self, downsampling: bool | None = None) -> float | None:
        """Mean error increase over all blocks, or over the (non-)downsampling ones only; None if none."""
        flags = self.downsampling or [False] * len(self.deleted_errors)
        values = [inc for inc, down in zip(self.deletion_increase, flags, strict=True)
                  if downsampling is None or down is downsampling]
        return sum(values) / len(values) if values else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["deletion_increase"] = self.deletion_increase
        return out


def top1_error(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 error (percent) of ``model`` on ``loader`` (the project's ``evaluate``, no test-time tricks)."""
    return float(evaluate(model, loader)["top1_error"])


def lesion_study(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    swaps: bool = True,
    error_fn: Callable[[nn.Module, Iterable], float] = top1_error,
) -> LesionResult:
    """Delete each block of ``model`` in turn (and swap each adjacent equal-shape pair); measure the error.

    ``loader`` yields ``(x, y)`` batches on the model's device and must be re-iterable (a list or a
    project loader). The model is left exactly as it was.
    """
    named = list(model.residual_blocks())
    if not named:
        raise ConfigError(f"{type(model).__name__} has no residual blocks to delete")
    was_training = model.training
    model.eval()
    try:
        baseline = error_fn(model, loader)
        deleted = []
        for _, block in named:
            with blocks_deleted([block]):
                deleted.append(error_fn(model, loader))
        pair_names: list[str] = []
        pair_errors: list[float] = []
        changes = shape_changing(model, next(iter(loader))[0][:1])
        if swaps:
            for i in range(len(named) - 1):
                if changes[i] or changes[i + 1]:
                    continue
                with blocks_swapped(named[i][1], named[i + 1][1]):
                    pair_errors.append(error_fn(model, loader))
                pair_names.append(f"{named[i][0]}<->{named[i + 1][0]}")
    finally:
        model.train(was_training)
    return LesionResult(baseline, [name for name, _ in named], deleted, pair_names, pair_errors, changes)


# --- many units at once: random deletions and random re-orderings (Veit et al. Sec. 4.3, Fig. 5) ---------


def kendall_tau(xs: Sequence[float], ys: Sequence[float] | None = None) -> float:
    """Kendall's tau (tau-a) of two rankings: (concordant - discordant pairs) / (n (n - 1) / 2); tied pairs
    count as neither. ``ys`` None ranks ``xs`` against 0, 1, 2, ...: the tau of a re-ordering ``order``
    (position i runs unit ``order[i]``) against the original order, Veit et al.'s measure in Fig. 5(b)."""
    ys = range(len(xs)) if ys is None else ys
    if len(xs) != len(ys):
        raise ConfigError(f"kendall_tau needs two rankings of one length, got {len(xs)} and {len(ys)}")
    n = len(xs)
    if n < 2:
        return 1.0
    score = 0
    for i, j in itertools.combinations(range(n), 2):
        product = (xs[i] - xs[j]) * (ys[i] - ys[j])
        score += (product > 0) - (product < 0)
    return score / (n * (n - 1) / 2)


@contextmanager
def blocks_permuted(blocks: Sequence[nn.Module], order: Sequence[int]) -> Iterator[None]:
    """Within the context, the block at position i computes block ``order[i]`` (a permutation of the
    positions; ``blocks_swapped`` is the case of two neighbours). Blocks are moved only among places of
    their own shape by the callers (``random_order``), so every block still receives its input's shape."""
    blocks = list(blocks)
    if sorted(order) != list(range(len(blocks))):
        raise ConfigError(f"order {list(order)} is not a permutation of the {len(blocks)} blocks")
    forwards = [block.forward for block in blocks]  # each block's own computation, taken before patching
    with ExitStack() as stack:
        for i, j in enumerate(order):
            if i != j:
                stack.enter_context(_patched_forward(blocks[i], forwards[j]))
        yield


def interchangeable_groups(model: nn.Module, example: torch.Tensor) -> list[list[int]]:
    """Blocks that can take each other's places: those that keep their input's shape, grouped by that
    shape (in the CIFAR nets, the units of one stage after its downsampling unit); groups of 2 or more."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (inp, out) in enumerate(block_shapes(model, example)):
        if inp == out:
            groups.setdefault(inp, []).append(i)
    return [group for group in groups.values() if len(group) >= 2]


def random_subsets(candidates: Sequence[int], k: int, draws: int, rng: random.Random) -> list[list[int]]:
    """``draws`` distinct random sets of ``k`` of ``candidates`` (all of them when fewer sets exist), each
    sorted, drawn from ``rng`` (seeded by the caller, so a study is repeatable)."""
    pool = sorted(set(candidates))
    if not 0 <= k <= len(pool):
        raise ConfigError(f"cannot draw {k} of {len(pool)} units")
    wanted = min(draws, math.comb(len(pool), k))
    seen: set[tuple[int, ...]] = set()
    out: list[list[int]] = []
    while len(out) < wanted:
        subset = tuple(sorted(rng.sample(pool, k)))
        if subset not in seen:
            seen.add(subset)
            out.append(list(subset))
    return out


def random_order(groups: Sequence[Sequence[int]], n: int, swaps: int, rng: random.Random) -> list[int]:
    """The order of ``n`` blocks after ``swaps`` random transpositions, each of two places of one group
    (drawn uniformly among all such pairs), so a block only moves among places of its own shape."""
    order = list(range(n))
    pairs = [pair for group in groups for pair in itertools.combinations(group, 2)]
    if swaps and not pairs:
        raise ConfigError("no two blocks of this model keep one shape, so none can trade places")
    for _ in range(swaps):
        a, b = rng.choice(pairs)
        order[a], order[b] = order[b], order[a]
    return order


def _spread(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) >= 2 else 0.0


@dataclass
class DeletionCurve:
    """Test errors (percent) with ``ks[i]`` blocks deleted at random (Veit et al. Fig. 5(a)): ``errors[i]``
    one error per draw, ``deleted[i]`` the blocks of each draw (indices into ``block_names``), drawn from
    ``candidates``. k = 0 is the intact net."""

    baseline_error: float
    block_names: list[str]
    candidates: list[int]
    ks: list[int]
    errors: list[list[float]]
    deleted: list[list[list[int]]]

    @property
    def mean_errors(self) -> list[float]:
        return [statistics.mean(e) for e in self.errors]

    @property
    def std_errors(self) -> list[float]:
        """The spread over draws: the sample standard deviation (0 for a single draw)."""
        return [_spread(e) for e in self.errors]

    def mean_at(self, k: int) -> float | None:
        """Mean error with ``k`` blocks deleted; None where k was not measured."""
        return self.mean_errors[self.ks.index(k)] if k in self.ks else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(mean_errors=self.mean_errors, std_errors=self.std_errors)
        return out


@dataclass
class ReorderingResult:
    """Test errors (percent) of random re-orderings (Veit et al. Fig. 5(b)): sample i made ``swaps[i]``
    random swaps, giving ``orders[i]`` (position -> block) with Kendall tau ``taus[i]``."""

    baseline_error: float
    swaps: list[int]
    orders: list[list[int]]
    taus: list[float]
    errors: list[float]

    def by_swaps(self) -> list[tuple[int, float, float, float]]:
        """(swaps, mean tau, mean error, spread of the error) per number of swaps, in increasing order."""
        out = []
        for s in sorted(set(self.swaps)):
            idx = [i for i, v in enumerate(self.swaps) if v == s]
            errors = [self.errors[i] for i in idx]
            taus = [self.taus[i] for i in idx]
            out.append((s, statistics.mean(taus), statistics.mean(errors), _spread(errors)))
        return out

    def to_dict(self) -> dict:
        out = asdict(self)
        out["by_swaps"] = [dict(zip(("swaps", "mean_tau", "mean_error", "std_error"), row, strict=True))
                           for row in self.by_swaps()]
        return out


def _eval_mode(model: nn.Module) -> Callable[[], None]:
    was_training = model.training
    model.eval()
    return lambda: model.train(was_training)


def deletion_curve(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    ks: Sequence[int],
    *,
    draws: int,
    seed: int = 0,
    candidates: Sequence[int] | None = None,
    baseline_error: float | None = None,
    error_fn: Callable[[nn.Module, Iterable], float] = top1_error,
) -> DeletionCurve:
    """Delete ``k`` blocks drawn at random, ``draws`` times for each k of ``ks`` (distinct sets, seeded by
    ``seed``), and measure the error each time: Veit et al.'s Fig. 5(a). ``candidates`` (block indices)
    defaults to the blocks that keep their input's shape (deleting a downsampling unit is the single-
    deletion study's question); ks beyond the candidates are left out (``ks`` records those measured).
    ``baseline_error`` (the intact net's, when already measured) saves one evaluation. The model is left
    exactly as it was."""
    named = list(model.residual_blocks())
    if not named:
        raise ConfigError(f"{type(model).__name__} has no residual blocks to delete")
    restore = _eval_mode(model)
    try:
        if candidates is None:
            changes = shape_changing(model, next(iter(loader))[0][:1])
            candidates = [i for i, changed in enumerate(changes) if not changed]
        candidates = sorted(set(candidates))
        baseline = error_fn(model, loader) if baseline_error is None else baseline_error
        rng = random.Random(seed)
        measured, errors, deleted = [], [], []
        for k in sorted(set(ks)):
            if k > len(candidates):
                continue
            subsets = random_subsets(candidates, k, draws, rng) if k else [[]]
            row = []
            for subset in subsets:
                if not subset:
                    row.append(baseline)
                    continue
                with blocks_deleted(named[i][1] for i in subset):
                    row.append(error_fn(model, loader))
            measured.append(k)
            errors.append(row)
            deleted.append(subsets)
    finally:
        restore()
    return DeletionCurve(baseline, [name for name, _ in named], candidates, measured, errors, deleted)


def reordering_curve(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    swaps: Sequence[int],
    *,
    draws: int,
    seed: int = 0,
    baseline_error: float | None = None,
    error_fn: Callable[[nn.Module, Iterable], float] = top1_error,
) -> ReorderingResult:
    """Re-order the blocks by ``s`` random swaps of equal-shape blocks, ``draws`` times for each ``s`` of
    ``swaps`` (seeded by ``seed``), and measure the error against the Kendall tau of each order: Veit et
    al.'s Fig. 5(b). An order drawn twice is evaluated once. The model is left exactly as it was."""
    named = list(model.residual_blocks())
    if not named:
        raise ConfigError(f"{type(model).__name__} has no residual blocks to re-order")
    blocks = [block for _, block in named]
    restore = _eval_mode(model)
    try:
        groups = interchangeable_groups(model, next(iter(loader))[0][:1])
        baseline = error_fn(model, loader) if baseline_error is None else baseline_error
        rng = random.Random(seed)
        cache: dict[tuple[int, ...], float] = {tuple(range(len(blocks))): baseline}
        result = ReorderingResult(baseline, [], [], [], [])
        for s in swaps:
            for _ in range(draws):
                order = random_order(groups, len(blocks), s, rng)
                key = tuple(order)
                if key not in cache:
                    with blocks_permuted(blocks, order):
                        cache[key] = error_fn(model, loader)
                result.swaps.append(s)
                result.orders.append(order)
                result.taus.append(kendall_tau(order))
                result.errors.append(cache[key])
    finally:
        restore()
    return result
