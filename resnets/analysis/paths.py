"""Residual networks as ensembles of paths: Veit, Wilber and Belongie (NeurIPS 2016), Sec. 3 and 5.

Unravelled, a network of n residual blocks is a collection of 2^n paths (each block is either passed
through its residual branch or skipped), and a path's length is the number of branches it goes
through: binomially distributed, Binomial(n, 1/2) (their Fig. 6a).

Their Sec. 5 measures how much gradient each path length carries: feed a batch forward through the
whole net; in the backward pass pick k blocks at random, propagate only through the branch of those
and only through the shortcut of the other n - k, and take the gradient's norm at the input of the
first block. Multiplied by the number of paths of each length this gives the total gradient per length
(their Fig. 6c): for ResNet-110 almost all of it comes from paths of 5 to 17 of its 54 blocks.

How the backward pass is split, for a block y = act(F(x) + s(x)) with act a ReLU or the identity:
the Jacobian is M (J_F + J_s) with M the ReLU's 0/1 mask (all ones without a ReLU). Write
y = skip + branch with skip = M * s(x) (M held constant) and branch = y - skip; then skip carries
exactly M J_s and branch exactly M J_F, and their sum is y, so the forward pass is unchanged. A gate
on each part lets one forward pass serve every sampled backward pass.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..models.blocks import BasicBlock, Bottleneck, PreActBlock, ReLUBeforeAddBlock, ReLUOnlyPreActBlock
from .lesion import _patched_forward


def path_length_counts(num_blocks: int) -> list[int]:
    """Number of paths of each length 0..n through n residual blocks: C(n, k), summing to 2^n."""
    if num_blocks < 0:
        raise ConfigError(f"number of residual blocks must be >= 0, got {num_blocks}")
    return [math.comb(num_blocks, k) for k in range(num_blocks + 1)]


def path_length_fractions(num_blocks: int) -> list[float]:
    """Fraction of all paths having each length 0..n: the Binomial(n, 1/2) probabilities."""
    total = 2**num_blocks
    return [count / total for count in path_length_counts(num_blocks)]


class _Gate:
    """A mutable 0/1 factor applied to a gradient in the backward pass (read when backward runs)."""

    def __init__(self) -> None:
        self.value = 1.0


class _GradGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: _Gate) -> torch.Tensor:
        ctx.gate = gate
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.gate.value, None


def _ends_in_relu(block: nn.Module) -> bool:
    """True for y = relu(F(x) + s(x)) (original blocks), False for y = F(x) + s(x) (pre-activation and
    ReLU-before-addition blocks); other blocks (BN after the addition, gated or scaled shortcuts) cannot be
    split this way and raise ConfigError."""
    if getattr(block, "merge", None) is None:
        if isinstance(block, PreActBlock | ReLUBeforeAddBlock | ReLUOnlyPreActBlock):
            return False
        if type(block) in (BasicBlock, Bottleneck):
            return True
    kind = getattr(getattr(block, "merge", None), "kind", "identity")
    raise ConfigError(
        f"gradient by path length splits blocks of the form relu(F(x) + s(x)) or F(x) + s(x); "
        f"{type(block).__name__} (shortcut kind {kind}) is neither: use an original or pre-activation "
        "ResNet with plain additive shortcuts"
    )


def _split_forward(
    block: nn.Module, skip_gate: _Gate, branch_gate: _Gate
) -> Callable[[torch.Tensor], torch.Tensor]:
    full_forward = block.forward
    # relu(F + s) passes gradients only where its output is positive: that mask belongs to both parts.
    ends_in_relu = _ends_in_relu(block)

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = full_forward(x)
        skip = block.forward_shortcut(x)
        if ends_in_relu:
            skip = skip * (y > 0).to(skip.dtype)
        branch = y - skip
        return _GradGate.apply(skip, skip_gate) + _GradGate.apply(branch, branch_gate)

    return forward


@contextmanager
def _gated_blocks(blocks: Sequence[nn.Module]) -> Iterator[list[tuple[_Gate, _Gate]]]:
    gates = [(_Gate(), _Gate()) for _ in blocks]
    with ExitStack() as stack:
        for block, (skip_gate, branch_gate) in zip(blocks, gates, strict=True):
            stack.enter_context(_patched_forward(block, _split_forward(block, skip_gate, branch_gate)))
        yield gates


@dataclass
class PathGradients:
    """Mean gradient norm at the first block's input of one path of each length, and totals per length."""

    num_blocks: int
    lengths: list[int]
    mean_norm: list[float]  # one path of that length (Veit Fig. 6b)
    total_norm: list[float]  # times the number of paths of that length (Veit Fig. 6c)

    def share_below(self, length: int) -> float:
        """Fraction of the total gradient carried by paths shorter than ``length`` blocks."""
        total = sum(self.total_norm)
        return sum(t for k, t in zip(self.lengths, self.total_norm, strict=True) if k < length) / total

    def central_range(self, mass: float = 0.9) -> tuple[int, int]:
        """Shortest and longest lengths between which the middle ``mass`` of the total gradient lies."""
        total = sum(self.total_norm)
        low_cut, high_cut = (1 - mass) / 2 * total, (1 + mass) / 2 * total
        running, low, high = 0.0, self.lengths[0], self.lengths[-1]
        for k, t in zip(self.lengths, self.total_norm, strict=True):
            if running < low_cut <= running + t:
                low = k
            if running < high_cut <= running + t:
                high = k
            running += t
        return low, high

    def to_dict(self) -> dict:
        return {
            "num_blocks": self.num_blocks,
            "lengths": self.lengths,
            "mean_norm": self.mean_norm,
            "total_norm": self.total_norm,
            "central_90": list(self.central_range(0.9)),
        }


def gradient_by_path_length(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lengths: Sequence[int] | None = None,
    samples: int = 10,
    seed: int = 0,
) -> PathGradients:
    """Veit et al. Sec. 5: gradient norm carried by paths of each length, sampled on one batch.

    The model is measured in eval mode (BN uses its running statistics, so each block is a fixed
    function of its input). The per-example loss is summed, so a norm is that of one example's gradient,
    averaged over the batch. Each (length, sample) costs one backward pass; the forward pass is shared.
    """
    named = list(model.residual_blocks())
    if not named or not all(getattr(b, "residual", False) for _, b in named):
        raise ConfigError("gradient by path length needs a residual network (a plain net has a single path)")
    blocks = [b for _, b in named]
    n = len(blocks)
    lengths = list(range(n + 1)) if lengths is None else sorted(set(lengths))
    if any(not 0 <= k <= n for k in lengths):
        raise ConfigError(f"path lengths must lie in 0..{n} for a net of {n} residual blocks, got {lengths}")
    rng = random.Random(seed)
    captured: dict[str, torch.Tensor] = {}

    def keep_input(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        inputs[0].retain_grad()
        captured["x"] = inputs[0]

    was_training = model.training
    model.eval()
    # Only the gradient at the first block's input is wanted: skip computing the weights' gradients.
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    hook = blocks[0].register_forward_pre_hook(keep_input)
    try:
        with _gated_blocks(blocks) as gates:
            x = x.detach().requires_grad_(True)  # so the first block's input is part of the graph
            loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
            first_input = captured["x"]
            means = []
            for k in lengths:
                norms = []
                for _ in range(samples):
                    through_branch = set(rng.sample(range(n), k))
                    for i, (skip_gate, branch_gate) in enumerate(gates):
                        branch_gate.value = 1.0 if i in through_branch else 0.0
                        skip_gate.value = 1.0 - branch_gate.value
                    first_input.grad = None
                    loss.backward(retain_graph=True)
                    norms.append(first_input.grad.flatten(1).norm(dim=1).mean().item())
                means.append(sum(norms) / len(norms))
    finally:
        hook.remove()
        model.train(was_training)
        for p in params:
            p.requires_grad_(True)
    counts = path_length_counts(n)
    totals = [m * counts[k] for k, m in zip(lengths, means, strict=True)]
    return PathGradients(n, lengths, means, totals)
