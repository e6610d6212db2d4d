"""Lesion study of Veit, Wilber and Belongie, "Residual Networks Behave Like Ensembles of Relatively
Shallow Networks" (NeurIPS 2016), Sec. 4.

Delete one residual block at a test time (the block then computes only its shortcut, ``forward_shortcut``:
identity, or the option-A/projection mapping where the shape changes) and measure the test error; swap
adjacent blocks of equal shape (their Sec. 4.3 "re-ordering"). A residual network degrades gracefully
because most of its paths do not go through any one block; a plain network has a single path and collapses.

The patches work on any model of the zoo through the block contract (``residual_blocks()``,
``forward_shortcut``) and are undone on exit, even after an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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
