"""Per-stage parameters and multiply-adds of a model, like "Deep Residual Learning" Table 1.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per
multiply-add of conv, matmul and linear layers; BN, ReLU, pooling and additions count 0, as in the
paper's FLOPs). Each piece (stem, each stage, head) runs under its own counter, in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ConfigError
from .models.registry import create_model, model_spec, unwrap_model


@dataclass(frozen=True)
class StageSummary:
    """One row: a piece of the network, its output size (C, H, W), units, parameters, multiply-adds."""

    name: str
    output_size: tuple[int, ...]
    blocks: int
    params: int
    mult_adds: int


@dataclass(frozen=True)
class ModelSummary:
    """Rows stem / layer1..layerN / head and the totals; ``str()`` prints the table."""

    model: str
    input_size: tuple[int, int, int]
    stages: list[StageSummary] = field(default_factory=list)
    total_params: int = 0
    total_mult_adds: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        header = ("stage", "output size", "blocks", "params", "mult-adds")
        rows = [
            (
                s.name,
                "x".join(map(str, s.output_size)),
                str(s.blocks) if s.blocks else "",
                f"{s.params:,}",
                _si(s.mult_adds),
            )
            for s in self.stages
        ]
        rows.append(("total", "", "", f"{self.total_params:,}", _si(self.total_mult_adds)))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            f"{self.model}: input {'x'.join(map(str, self.input_size))}, {self.total_params / 1e6:.2f}M "
            f"parameters, {_si(self.total_mult_adds)} multiply-adds"
        ]
        for i, row in enumerate([header, *rows]):
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
            if i == len(rows):  # rule above the totals
                lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


def _si(n: int) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(n)


def _params(modules: Sequence[nn.Module | None]) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


def _count(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, int]:
    with FlopCounterMode(display=False) as counter:
        y = fn(x)
    return y, counter.get_total_flops() // 2


def summary(
    name_or_model: str | nn.Module, input_size: Sequence[int] | None = None, **overrides: Any
) -> ModelSummary:
    """Per-stage table of a model name (built with ``overrides``, e.g. ``num_classes``, ``in_chans``,
    ``stride_in_1x1``) or of a built model.

    ``input_size`` is (C, H, W); ``None`` means the model's natural input: 224x224 for the ImageNet
    family, 32x32 for the CIFAR nets, with the model's ``in_chans`` channels.
    """
    if isinstance(name_or_model, str):
        # Built on the meta device: shapes, parameter counts and FLOPs need no memory or arithmetic,
        # so even resnet152 at 224x224 is summarised at once.
        with torch.device("meta"):
            model = create_model(name_or_model, **overrides)
        name = name_or_model
    else:
        if overrides:
            raise ConfigError(f"options {sorted(overrides)} apply only when building the model by name")
        model = unwrap_model(name_or_model)
        name = model_spec(model)["name"] if getattr(model, "resnets_spec", None) else type(model).__name__
    if input_size is None:
        input_size = getattr(model, "default_input_size", None)
        if input_size is None:
            raise ConfigError(f"{name} has no default input size; pass input_size=(C, H, W)")
    input_size = tuple(int(v) for v in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ConfigError(f"input_size must be (channels, height, width), got {input_size}")
    param = next(model.parameters())
    x = torch.zeros((1, *input_size), device=param.device, dtype=param.dtype)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            stages = _stage_rows(model, x) if hasattr(model, "stage_names") else _whole_model_row(model, x)
    except RuntimeError as exc:  # e.g. an input too small for the network's downsampling
        raise ConfigError(f"{name} cannot run on input size {input_size}: {exc}") from None
    finally:
        model.train(was_training)
    return ModelSummary(
        model=name,
        input_size=input_size,
        stages=stages,
        total_params=sum(p.numel() for p in model.parameters()),
        total_mult_adds=sum(s.mult_adds for s in stages),
    )


def _stage_rows(model: nn.Module, x: torch.Tensor) -> list[StageSummary]:
    rows = []
    x, macs = _count(model.forward_stem, x)
    rows.append(StageSummary("stem", tuple(x.shape[1:]), 0, _params([model.conv1, model.bn1]), macs))
    for stage_name in model.stage_names:
        stage = getattr(model, stage_name)
        x, macs = _count(stage, x)
        rows.append(StageSummary(stage_name, tuple(x.shape[1:]), len(stage), _params([stage]), macs))
    y, macs = _count(lambda f: model.forward_head(model.final_act(f)), x)
    rows.append(StageSummary("head", tuple(y.shape[1:]), 0, _params([model.final_bn, model.fc]), macs))
    return rows


def _whole_model_row(model: nn.Module, x: torch.Tensor) -> list[StageSummary]:
    y, macs = _count(model, x)
    return [StageSummary("model", tuple(y.shape[1:]), 0, _params([model]), macs)]
