"""The run plans experiments share: one training length per budget, and the CIFAR nets by kind and depth.

A run is named after everything that changes its weights (``Context.run``), so experiments that build
a network the same way here share its run when they share an output folder: degradation's plain nets
also serve responses, lesion and shortcuts; the paper-init ResNets serve depth, responses, lesion,
shortcuts and identity-mappings' original unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..models.registry import create_model, list_models
from ..summary import summary
from .base import Context, RunSpec
from .paired import Net, seeded_net

# One training length per budget, for every run, so that experiments needing the same network share
# its run. None keeps the recipe's own schedule: the cpu budget's reproduce-cpu epochs (chosen on the
# validation split: docs/reproduce.md), the paper's 64k iterations.
ITERATIONS: dict[str, int | None] = {"smoke": 4, "cpu": None, "paper": None}


def cifar_model(kind: str, depth: int) -> tuple[str, dict[str, Any]]:
    """The zoo's name for a 6n+2 CIFAR net of ``kind`` "resnet" or "plain": ``resnet56``, or
    ``resnet_cifar`` with ``depth`` for depths without a name of their own (the smoke budget's 8)."""
    name = f"{kind}{depth}"
    if name in list_models():
        return name, {}
    return f"{kind}_cifar", {"depth": depth}


def net_label(kind: str, depth: int) -> str:
    """ "ResNet-56" or "plain-56", as the paper writes them."""
    return f"{'ResNet' if kind == 'resnet' else 'plain'}-{depth}"


def cifar_run(
    ctx: Context,
    kind: str,
    depth: int,
    *,
    label: str | None = None,
    recipe: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    iterations: int | None = None,
    seed: int = 0,
) -> RunSpec:
    """The run of a 6n+2 CIFAR net of ``kind`` and ``depth`` at the budget's ``ITERATIONS`` (or
    ``iterations``, which then names a run of its own); ``label``
    defaults to the paper's name, ``model_kwargs`` adds options to the net (a shortcut kind, a unit)."""
    model, kwargs = cifar_model(kind, depth)
    return ctx.run(
        model,
        label or net_label(kind, depth),
        iterations=ITERATIONS[ctx.budget.name] if iterations is None else iterations,
        recipe=recipe,
        model_kwargs={**kwargs, **(model_kwargs or {})},
        seed=seed,
    )


def cifar_net(
    ctx: Context,
    kind: str,
    depth: int,
    *,
    label: str | None = None,
    recipe: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    seeded: bool = True,
) -> Net:
    """``cifar_run`` once per seed: the net as experiments compare it (``Net.key`` its first run's name,
    so experiments sharing the network ask for the same seeds); ``seeded=False``: seed 0 only, for nets
    that are drawn but decide nothing."""

    def make(seed: int) -> RunSpec:
        return cifar_run(ctx, kind, depth, label=label, recipe=recipe, model_kwargs=model_kwargs, seed=seed)

    first = make(0)
    return (
        seeded_net(ctx, first.name, first.label, make) if seeded else Net(first.name, first.label, (first,))
    )


# The lesion study's nets (Veit et al. 2016), shared by ``lesion`` and ``ensembles``: a ResNet and a plain
# net of one depth, and a VGG-style net of about VGG's depth (VGG-19's 16 conv and 3 fc layers, 3n+2).
LESION_DEPTH = {"smoke": 14, "cpu": 56, "paper": 56}
LESION_VGG_DEPTH = {"smoke": 8, "cpu": 20, "paper": 20}
LESION_KINDS = ("resnet", "plain")


def lesion_nets(ctx: Context) -> dict[str, Net]:
    """The lesion study's nets by kind, each with the budget's seeds: "resnet" and "plain" (paper init, the
    runs of ``degradation``) and "vgg" (the VGG-style contrast)."""
    nets = {kind: cifar_net(ctx, kind, LESION_DEPTH[ctx.budget.name]) for kind in LESION_KINDS}
    nets["vgg"] = vgg_cifar_net(ctx, LESION_VGG_DEPTH[ctx.budget.name])
    return nets


def lesion_runs(ctx: Context) -> list[RunSpec]:
    """Every run of ``lesion_nets``, seed by seed (``lesion`` and ``ensembles`` train exactly these)."""
    return [spec for net in lesion_nets(ctx).values() for spec in net.specs]


def params_cifar(spec: RunSpec) -> int:
    """Parameters of the run's network built for CIFAR-10 (3 input channels, 10 classes), as the paper
    counts them whatever the dataset."""
    model = create_model(spec.model, **spec.overrides.get("model_kwargs", {}))
    return sum(p.numel() for p in model.parameters())


def mult_adds_cifar(spec: RunSpec) -> int:
    """Multiply-adds of the run's network on one 32x32 CIFAR-10 image, as the papers count them."""
    return summary(spec.model, (3, 32, 32), **spec.overrides.get("model_kwargs", {})).total_mult_adds


def vgg_cifar_run(ctx: Context, depth: int, *, seed: int = 0) -> RunSpec:
    """The run of the VGG-style CIFAR net (3n+2 layers, max-pool downsampling, no shortcuts) at the
    budget's ``ITERATIONS``: the lesion study's VGG contrast (Veit et al. 2016, Fig. 3)."""
    name = f"vgg{depth}_cifar"
    model, kwargs = (name, {}) if name in list_models() else ("vgg_cifar", {"depth": depth})
    return ctx.run(
        model, f"VGG-{depth}", iterations=ITERATIONS[ctx.budget.name], model_kwargs=kwargs, seed=seed
    )


def vgg_cifar_net(ctx: Context, depth: int) -> Net:
    """``vgg_cifar_run`` once per seed (``Net.key`` its first run's name, as ``cifar_net``)."""
    first = vgg_cifar_run(ctx, depth)
    return seeded_net(ctx, first.name, first.label, lambda seed: vgg_cifar_run(ctx, depth, seed=seed))
