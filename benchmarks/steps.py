"""A training step with the speed options the fast-cpu recipe chooses between, on a fixed batch.

It does what ``resnets.train.engine.train_step`` does (channels-last input, autocast, forward,
cross-entropy, backward, SGD step), without the engine's bookkeeping, so that one option at a
time can be measured, and so that models outside the zoo (torchvision's) run the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnets.runtime import compile_module

AMP_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
OPTIMIZER_IMPLS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


@dataclass(frozen=True)
class StepOptions:
    channels_last: bool = True
    amp: str | None = None  # "bf16" / "fp16": torch.autocast dtype
    compile: bool = False
    optimizer: str = "loop"  # torch.optim.SGD implementation: "loop" (CPU default), "foreach", "fused"
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0

    @classmethod
    def from_recipe(cls, recipe, device: torch.device | None = None) -> StepOptions:
        """The speed settings of a resnets training recipe on ``device`` (default CPU), "auto" resolved
        as for a run of the recipe's own length on Fashion-MNIST."""
        from resnets.train.build import fused_optimizer

        path = recipe_path(recipe, device)
        return cls(
            channels_last=path.channels_last,
            amp=amp_name(recipe, device),
            optimizer="fused" if fused_optimizer(device or torch.device("cpu")) else "loop",
            compile=path.compile,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
            label_smoothing=recipe.label_smoothing,
        )


def recipe_path(recipe, device: torch.device | None = None, images: int = 60_000):
    """The execution path a run of ``recipe`` takes on ``device``: ``images`` a training epoch."""
    from resnets.runtime import execution_path

    device = device or torch.device("cpu")
    length = recipe.iterations * recipe.batch_size if recipe.iterations else recipe.epochs * images
    return execution_path(recipe.amp, recipe.amp_dtype, recipe.channels_last, recipe.compile, device, length)


def amp_name(recipe, device: torch.device | None = None) -> str | None:
    """The recipe's autocast dtype on ``device`` (default CPU; "auto" resolved), as StepOptions names it."""
    from resnets.runtime import autocast_dtype

    dtype = autocast_dtype(recipe.amp, recipe.amp_dtype, device or torch.device("cpu"))
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: None}[dtype]


def make_step(
    model: nn.Module, x: Tensor, y: Tensor, opts: StepOptions, lr: float = 0.05
) -> Callable[[], Tensor]:
    """A closure running one training step of ``model`` on ``(x, y)``; returns the (detached) loss."""
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=0.9,
        nesterov=opts.nesterov,
        weight_decay=opts.weight_decay,
        **OPTIMIZER_IMPLS[opts.optimizer],
    )
    forward = compile_module(model) if opts.compile else model
    dtype = AMP_DTYPES[opts.amp] if opts.amp else None
    model.train()

    def step() -> Tensor:
        with torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = F.cross_entropy(forward(x), y, label_smoothing=opts.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def synthetic_batch(
    batch_size: int, in_chans: int, size: int, num_classes: int = 10, seed: int = 0
) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch_size, in_chans, size, size, generator=generator),
        torch.randint(0, num_classes, (batch_size,), generator=generator),
    )
