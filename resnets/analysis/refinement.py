"""Iterative refinement: Greff, Srivastava and Schmidhuber 2017, "Highway and Residual Networks learn
Unrolled Iterative Estimation" (ICLR; arXiv 1612.07771).

Their view: the units of a stage (the units between two changes of dimensionality) do not compute a new
representation each; they refine one estimate of the same features, so after the stage's first unit each
unit's change F(x) is small beside the estimate it changes. This module measures, per residual unit
y = F(x) + h(x), the relative size of the change ||F(x)|| / ||h(x)|| (norms over each image's whole
feature map, averaged over images), and the cosine between the changes of successive units of a stage
(each image's F flattened, averaged over images).

F is the branch's output as the addition receives it (after SE and the stochastic-depth module, which is
the identity in eval mode; before any gated or scaled merge). h is the unit's shortcut
(``forward_shortcut``): x itself for an identity unit, so the ratio is ||F(x)|| / ||x||; for the
downsampling first unit of a stage it is the projection or option-A output, the estimate that F is added
to, which has F's shape (x has another).

Forward hooks only (a pre-hook and a hook on each unit, a hook on its ``drop_path`` module, the one place
every zoo unit routes its branch through before the addition), all removed on exit; the model is not
edited and computes what it computes without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError

_TINY = 1e-12  # an all-zero shortcut output (possible after a ReLU) must not divide by zero


def residual_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, unit) of every residual unit of ``model`` in forward order; ConfigError for a net without
    them (plain nets: there is no F(x) + x to measure)."""
    if not hasattr(model, "residual_blocks"):
        raise ConfigError(f"{type(model).__name__} has no residual_blocks(): refinement needs residual units")
    named = list(model.residual_blocks())
    if not named:
        raise ConfigError(f"{type(model).__name__} has no residual units to measure")
    for name, unit in named:
        if not getattr(unit, "residual", True):
            raise ConfigError(
                f"unit {name} of {type(model).__name__} is a plain unit (no shortcut): the relative change "
                "||F(x)|| / ||x|| of Greff et al. is defined for residual units only"
            )
        has_branch_module = isinstance(getattr(unit, "drop_path", None), nn.Module)
        if not has_branch_module or not hasattr(unit, "forward_shortcut"):
            raise ConfigError(
                f"unit {name} ({type(unit).__name__}) has no drop_path module or forward_shortcut, so its "
                "branch output cannot be read before the addition"
            )
    return named


def stage_of(name: str) -> str:
    """The stage a unit's qualified name belongs to: ``layer2`` for ``layer2.3``."""
    return name.rsplit(".", 1)[0] if "." in name else name


def _mean_std(values: torch.Tensor) -> tuple[float, float]:
    std = float(values.std()) if values.numel() > 1 else 0.0
    return float(values.mean()), std


@dataclass
class StageRefinement:
    """One stage: its first unit's relative change against the later units', per image then averaged.

    ``later_median`` is the mean over images of the median of the later units' ratios in that image;
    ``gap`` the mean over images of (first unit's ratio - that median); ``*_std`` their spread over
    images. Stages of one unit have no later units (``later_median``, ``gap`` and their spreads None).
    """

    stage: str
    units: list[str]
    first_ratio: float
    first_projected: bool  # the first unit's shortcut is a projection / option A (the stage downsamples)
    later_median: float | None
    later_median_std: float | None
    gap: float | None
    gap_std: float | None
    images: int

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class Refinement:
    """Relative change of each unit and the cosine between successive changes within each stage."""

    names: list[str]
    stages: list[str]  # the stage of each unit
    projected: list[bool]  # per unit: its shortcut is not the identity (compared against h(x), not x)
    ratio: list[float]  # per unit: mean over images of ||F(x)|| / ||h(x)||
    ratio_std: list[float]  # per unit: std over images
    pairs: list[str]  # "layer1.0->layer1.1": successive units of one stage
    cosine: list[float]  # per pair: mean over images of cos(F_i, F_i+1)
    cosine_std: list[float]
    images: int
    per_image: torch.Tensor = field(repr=False)  # images x units ratios (float64), for the stage summaries

    def stage_units(self) -> dict[str, list[int]]:
        """Unit indices by stage, stages and units in forward order."""
        out: dict[str, list[int]] = {}
        for i, stage in enumerate(self.stages):
            out.setdefault(stage, []).append(i)
        return out

    def stage_images(self, stage: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per image: the stage's first unit's ratio and the median of its later units' ratios (None for
        a stage of one unit)."""
        idx = self.stage_units()[stage]
        first = self.per_image[:, idx[0]]
        if len(idx) == 1:
            return first, None
        # torch.quantile's 0.5 is the true median (torch.median takes the lower middle value).
        return first, torch.quantile(self.per_image[:, idx[1:]], 0.5, dim=1)

    def stage_summaries(self) -> list[StageRefinement]:
        out = []
        for stage, idx in self.stage_units().items():
            first, medians = self.stage_images(stage)
            later_median = later_std = gap = gap_std = None
            if medians is not None:
                later_median, later_std = _mean_std(medians)
                gap, gap_std = _mean_std(first - medians)
            out.append(
                StageRefinement(
                    stage,
                    [self.names[i] for i in idx],
                    float(first.mean()),
                    self.projected[idx[0]],
                    later_median,
                    later_std,
                    gap,
                    gap_std,
                    self.per_image.shape[0],
                )
            )
        return out

    def to_dict(self) -> dict:
        return {
            "names": self.names,
            "stages": self.stages,
            "projected": self.projected,
            "ratio": self.ratio,
            "ratio_std": self.ratio_std,
            "pairs": self.pairs,
            "cosine": self.cosine,
            "cosine_std": self.cosine_std,
            "images": self.images,
            "stage_summaries": [s.to_dict() for s in self.stage_summaries()],
        }


class _Recorder:
    """The hooks of one measurement: per unit, its input, its branch output, then the statistics."""

    def __init__(self, named: Sequence[tuple[str, nn.Module]]) -> None:
        self.names = [name for name, _ in named]
        self.stages = [stage_of(name) for name in self.names]
        self.ratios: list[list[torch.Tensor]] = [[] for _ in named]
        self.cosines: list[list[torch.Tensor]] = [[] for _ in named[1:]]  # pair (i, i+1), same stage only
        self.projected: list[bool | None] = [None] * len(named)
        self.inputs: dict[int, torch.Tensor] = {}
        self.branch: dict[int, list[torch.Tensor]] = {}
        self.previous: tuple[int, torch.Tensor] | None = None  # last unit's (index, flattened F)

    def pre(self, i: int):
        def hook(unit: nn.Module, inputs: tuple) -> None:
            self.inputs[i] = inputs[0]
            self.branch[i] = []

        return hook

    def on_branch(self, i: int):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if i in self.branch:  # only while unit i runs
                self.branch[i].append(output)

        return hook

    def post(self, i: int):
        def hook(unit: nn.Module, _inputs: tuple, _output: torch.Tensor) -> None:
            x, outs = self.inputs.pop(i), self.branch.pop(i)
            if len(outs) != 1:
                raise ConfigError(
                    f"unit {self.names[i]} passed {len(outs)} tensors through its drop_path module in one "
                    "forward (expected one: the branch output before the addition)"
                )
            f = outs[0].detach().flatten(1).float()
            h = unit.forward_shortcut(x)
            self.projected[i] = h is not x
            h = h.detach().flatten(1).float()
            if f.shape != h.shape:
                raise ConfigError(
                    f"unit {self.names[i]}: branch {tuple(f.shape)} and shortcut "
                    f"{tuple(h.shape)} differ in shape"
                )
            norm_f = torch.linalg.vector_norm(f, dim=1).double()
            norm_h = torch.linalg.vector_norm(h, dim=1).double().clamp_min(_TINY)
            self.ratios[i].append((norm_f / norm_h).cpu())
            if self.previous is not None:
                j, f_prev = self.previous
                if j == i - 1 and self.stages[j] == self.stages[i]:
                    # cosine_similarity gives 0 when either change is (near) zero.
                    cosine = torch.nn.functional.cosine_similarity(f_prev, f, dim=1)
                    self.cosines[j].append(cosine.double().cpu())
            self.previous = (i, f)

        return hook


@torch.no_grad()
def refinement(
    model: nn.Module,
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]],
    *,
    max_batches: int | None = None,
) -> Refinement:
    """||F(x)|| / ||h(x)|| of every residual unit and the cosine of successive units' F within each stage,
    over ``batches`` (tensors, or ``(x, y)`` pairs as a loader yields them, on the model's device), with
    ``model`` in eval mode (BN statistics, no stochastic depth); its mode is restored after."""
    named = residual_units(model)
    rec = _Recorder(named)
    hooks = []
    for i, (_, unit) in enumerate(named):
        hooks += [
            unit.register_forward_pre_hook(rec.pre(i)),
            unit.drop_path.register_forward_hook(rec.on_branch(i)),
            unit.register_forward_hook(rec.post(i)),
        ]
    was_training = model.training
    model.eval()
    try:
        for k, batch in enumerate(batches):
            if max_batches is not None and k >= max_batches:
                break
            rec.previous = None  # successive units of one forward only
            model(batch[0] if isinstance(batch, tuple | list) else batch)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    if not rec.ratios[0]:
        raise ConfigError("refinement got no batches: give it at least one")
    per_image = torch.stack([torch.cat(r) for r in rec.ratios], dim=1)
    ratio = [_mean_std(per_image[:, i]) for i in range(per_image.shape[1])]
    pairs = [i for i in range(len(named) - 1) if rec.stages[i] == rec.stages[i + 1]]
    cosine = [_mean_std(torch.cat(rec.cosines[i])) for i in pairs]
    return Refinement(
        names=rec.names,
        stages=rec.stages,
        projected=[bool(p) for p in rec.projected],
        ratio=[m for m, _ in ratio],
        ratio_std=[s for _, s in ratio],
        pairs=[f"{rec.names[i]}->{rec.names[i + 1]}" for i in pairs],
        cosine=[m for m, _ in cosine],
        cosine_std=[s for _, s in cosine],
        images=per_image.shape[0],
        per_image=per_image,
    )
