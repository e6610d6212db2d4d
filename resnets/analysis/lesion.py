"""Lesion study of Veit, Wilber and Belongie, "Residual Networks Behave Like Ensembles of Relatively
Shallow Networks" (NeurIPS 2016), Sec. 4.

Delete one residual block at a test time (the block then computes only its shortcut, ``forward_shortcut``:
identity, or the option-A/projection mapping where the shape changes) and measure the test error; swap
adjacent blocks of equal shape (their Sec. 4.3 "re-ordering"). A residual network degrades gracefully
because most of its paths do not go through any one block; a plain network has a single path and collapses.
Sec. 4.3 goes further: delete k blocks drawn at random (Fig. 5(a), ``deletion_curve``) and re-order the
blocks by random swaps of equal-shape blocks, measured by the Kendall tau of the new order against the
original (Fig. 5(b), ``reordering_curve``); an ensemble's error grows smoothly under both.

``unit_lesions``, ``deletion_curve`` and ``reordering_curve`` keep every image's error (``image_errors``),
so that two networks scored on the same images can be compared image by image.

The patches work on any model of the zoo through the block contract (``residual_blocks()``,
``forward_shortcut``) and are undone on exit, even after an exception.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..evaluate import evaluate
from ..runtime import autocast

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # re-iterable (x, y) batches on the model's device


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
        values = [
            inc
            for inc, down in zip(self.deletion_increase, flags, strict=True)
            if downsampling is None or down is downsampling
        ]
        return sum(values) / len(values) if values else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["deletion_increase"] = self.deletion_increase
        return out


def top1_error(model: nn.Module, loader: Batches) -> float:
    """Top-1 error (percent) of ``model`` on ``loader`` (the project's ``evaluate``, no test-time tricks)."""
    return float(evaluate(model, loader)["top1_error"])


def image_errors(model: nn.Module, loader: Batches, *, dtype: torch.dtype | None = None) -> np.ndarray:
    """1 where ``model`` misclassifies an image, 0 where it is right, in ``loader``'s order (uint8): eval
    mode, no gradients, under ``dtype`` autocast (None: float32; a run's own evaluation precision makes the
    intact net's mean the run's test error)."""
    device = next(model.parameters()).device
    restore = _eval_mode(model)
    wrong = []
    try:
        with torch.no_grad(), autocast(device, dtype):
            for x, y in loader:
                wrong.append((model(x).float().argmax(1) != y).cpu())
    finally:
        restore()
    return torch.cat(wrong).numpy().astype(np.uint8)


Score = Callable[[nn.Module, Batches], np.ndarray]  # per-image 0/1 errors, as ``image_errors``


def _eval_mode(model: nn.Module) -> Callable[[], None]:
    was_training = model.training
    model.eval()
    return lambda: model.train(was_training)


def _named_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    named = list(model.residual_blocks())
    if not named:
        raise ConfigError(f"{type(model).__name__} has no residual blocks to delete or re-order")
    return named


def _each_deleted(model: nn.Module, loader: Batches, measure: Callable[[nn.Module, Batches], object]) -> list:
    """``measure`` of the intact model, then with each block deleted in turn (model in eval mode)."""
    out = [measure(model, loader)]
    for _, block in _named_blocks(model):
        with blocks_deleted([block]):
            out.append(measure(model, loader))
    return out


def lesion_study(
    model: nn.Module,
    loader: Batches,
    *,
    swaps: bool = True,
    error_fn: Callable[[nn.Module, Iterable], float] = top1_error,
) -> LesionResult:
    """Delete each block of ``model`` in turn (and swap each adjacent equal-shape pair); measure the error.

    ``loader`` yields ``(x, y)`` batches on the model's device and must be re-iterable (a list or a
    project loader). The model is left exactly as it was.
    """
    named = _named_blocks(model)
    restore = _eval_mode(model)
    try:
        baseline, *deleted = _each_deleted(model, loader, error_fn)
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
        restore()
    return LesionResult(baseline, [name for name, _ in named], deleted, pair_names, pair_errors, changes)


@dataclass
class UnitLesions:
    """Every image's error with the net intact and with each unit deleted alone (Veit et al. Sec. 4.1)."""

    block_names: list[str]
    downsampling: list[bool]  # per unit: does it change its input's shape?
    intact: np.ndarray  # images (1: misclassified)
    deleted: np.ndarray  # units x images

    @property
    def intact_error(self) -> float:
        """The intact net's error, percent."""
        return 100 * float(self.intact.mean())

    @property
    def deleted_errors(self) -> list[float]:
        """The error with each unit deleted, percent."""
        return [100 * float(e) for e in self.deleted.mean(axis=1)]

    def image_costs(self, units: Sequence[int] | None = None) -> np.ndarray:
        """Per image, the error after deleting a unit minus the intact net's, averaged over ``units`` (all by
        default): values in [-1, 1], whose mean is the mean cost of a deletion as a fraction."""
        chosen = self.deleted if units is None else self.deleted[list(units)]
        return chosen.mean(axis=0) - self.intact

    def to_dict(self) -> dict:
        return {
            "block_names": self.block_names,
            "downsampling": self.downsampling,
            "intact_error": self.intact_error,
            "deleted_errors": self.deleted_errors,
        }


def unit_lesions(model: nn.Module, loader: Batches, *, score: Score = image_errors) -> UnitLesions:
    """Score every image with the net intact and with each unit deleted in turn (its branch removed, its
    shortcut kept). The model is left exactly as it was."""
    restore = _eval_mode(model)
    try:
        intact, *deleted = _each_deleted(model, loader, score)
        changes = shape_changing(model, next(iter(loader))[0][:1])
    finally:
        restore()
    names = [name for name, _ in _named_blocks(model)]
    return UnitLesions(names, changes, np.asarray(intact), np.stack(deleted))


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


@dataclass
class DeletionCurve:
    """Every image's error with ``ks[i]`` blocks deleted at random (Veit et al. Fig. 5(a)): ``wrong[i]`` is
    draws x images (1: misclassified), ``deleted[i]`` the blocks of each draw (indices into
    ``block_names``), drawn from ``candidates``; ``intact`` the images' errors with nothing deleted (k = 0,
    when asked for, is that one draw)."""

    block_names: list[str]
    candidates: list[int]
    intact: np.ndarray
    ks: list[int]
    deleted: list[list[list[int]]]
    wrong: list[np.ndarray]

    @property
    def baseline_error(self) -> float:
        return 100 * float(self.intact.mean())

    @property
    def errors(self) -> list[list[float]]:
        """Each draw's error (percent), per k."""
        return [[100 * float(e) for e in w.mean(axis=1)] for w in self.wrong]

    def image_costs(self, k: int) -> np.ndarray:
        """Per image, the error with ``k`` blocks deleted (mean over the draws) minus the intact net's."""
        return self.wrong[self.ks.index(k)].mean(axis=0) - self.intact

    def to_dict(self) -> dict:
        return {
            "block_names": self.block_names,
            "candidates": self.candidates,
            "ks": self.ks,
            "deleted": self.deleted,
            "errors": self.errors,
            "baseline_error": self.baseline_error,
        }


def deletion_curve(
    model: nn.Module,
    loader: Batches,
    ks: Sequence[int],
    *,
    draws: int,
    seed: int = 0,
    candidates: Sequence[int] | None = None,
    intact: np.ndarray | None = None,
    score: Score = image_errors,
) -> DeletionCurve:
    """Delete ``k`` blocks drawn at random, ``draws`` times for each k of ``ks`` (distinct sets, seeded by
    ``seed``), and score every image each time: Veit et al.'s Fig. 5(a). ``candidates`` (block indices)
    defaults to the blocks that keep their input's shape (deleting a downsampling unit is the single-
    deletion study's question); ks beyond the candidates are left out (``ks`` records those measured).
    ``intact`` (the images' errors with nothing deleted, when already scored) saves one evaluation. The
    model is left exactly as it was."""
    named = _named_blocks(model)
    restore = _eval_mode(model)
    try:
        if candidates is None:
            changes = shape_changing(model, next(iter(loader))[0][:1])
            candidates = [i for i, changed in enumerate(changes) if not changed]
        candidates = sorted(set(candidates))
        intact = score(model, loader) if intact is None else intact
        rng = random.Random(seed)
        measured, deleted, wrong = [], [], []
        for k in sorted(set(ks)):
            if k > len(candidates):
                continue
            subsets = random_subsets(candidates, k, draws, rng) if k else [[]]
            rows = []
            for subset in subsets:
                with blocks_deleted(named[i][1] for i in subset):
                    rows.append(score(model, loader) if subset else intact)
            measured.append(k)
            deleted.append(subsets)
            wrong.append(np.stack(rows))
    finally:
        restore()
    names = [name for name, _ in named]
    return DeletionCurve(names, candidates, np.asarray(intact), measured, deleted, wrong)


# Swaps per random re-ordering, taken in turn (Veit et al. Fig. 5(b) spans mild to strong re-orderings):
# one swap moves the order's Kendall tau a little below 1; a few dozen make a random order of each group.
SWAP_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def orders_by_tau(
    groups: Sequence[Sequence[int]],
    n: int,
    *,
    bins: int,
    per_bin: int,
    rng: random.Random,
    ladder: Sequence[int] = SWAP_LADDER,
) -> tuple[list[list[int]], list[int]]:
    """``bins * per_bin`` random re-orderings of ``n`` blocks (the i-th made by ``ladder[i % len(ladder)]``
    random swaps within ``groups``) sorted from the highest Kendall tau to the lowest, so that consecutive
    runs of ``per_bin`` are equal-count bins of tau; and the swaps each order took."""
    made = []
    for i in range(bins * per_bin):
        swaps = ladder[i % len(ladder)]
        made.append((random_order(groups, n, swaps, rng), swaps))
    made.sort(key=lambda pair: -kendall_tau(pair[0]))
    return [order for order, _ in made], [swaps for _, swaps in made]


@dataclass
class ReorderingResult:
    """Every image's error under random re-orderings of the blocks (Veit et al. Fig. 5(b)): order i (position
    -> block, ``swaps[i]`` random swaps, Kendall tau ``taus[i]``) misclassifies the images where
    ``wrong[i]`` is 1; the orders run from the highest tau to the lowest, ``per_bin`` to a bin."""

    intact: np.ndarray
    orders: list[list[int]]
    swaps: list[int]
    taus: list[float]
    wrong: np.ndarray  # orders x images
    per_bin: int

    @property
    def baseline_error(self) -> float:
        return 100 * float(self.intact.mean())

    @property
    def errors(self) -> list[float]:
        """Each order's error, percent."""
        return [100 * float(e) for e in self.wrong.mean(axis=1)]

    def bins(self) -> list[list[int]]:
        """The orders of each tau bin (indices), from the least re-ordered bin to the most."""
        return [
            list(range(i, min(i + self.per_bin, len(self.orders))))
            for i in range(0, len(self.orders), self.per_bin)
        ]

    def to_dict(self) -> dict:
        return {
            "baseline_error": self.baseline_error,
            "orders": self.orders,
            "swaps": self.swaps,
            "taus": self.taus,
            "errors": self.errors,
            "bins": self.bins(),
        }


def reordering_curve(
    model: nn.Module,
    loader: Batches,
    *,
    bins: int,
    per_bin: int,
    seed: int = 0,
    intact: np.ndarray | None = None,
    score: Score = image_errors,
) -> ReorderingResult:
    """Re-order the blocks by random swaps of equal-shape blocks (``orders_by_tau``: ``bins`` equal-count
    bins of ``per_bin`` orders by Kendall tau, seeded by ``seed``) and score every image under each order:
    Veit et al.'s Fig. 5(b). An order drawn twice is evaluated once. The model is left exactly as it was."""
    blocks = [block for _, block in _named_blocks(model)]
    restore = _eval_mode(model)
    try:
        groups = interchangeable_groups(model, next(iter(loader))[0][:1])
        intact = score(model, loader) if intact is None else intact
        orders, swaps = orders_by_tau(
            groups, len(blocks), bins=bins, per_bin=per_bin, rng=random.Random(seed)
        )
        cache: dict[tuple[int, ...], np.ndarray] = {tuple(range(len(blocks))): np.asarray(intact)}
        for order in orders:
            if tuple(order) not in cache:
                with blocks_permuted(blocks, order):
                    cache[tuple(order)] = score(model, loader)
    finally:
        restore()
    wrong = np.stack([cache[tuple(order)] for order in orders])
    taus = [kendall_tau(order) for order in orders]
    return ReorderingResult(np.asarray(intact), orders, swaps, taus, wrong, per_bin)
