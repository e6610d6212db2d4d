"""Training throughput (images/s in steady state, data loading and augmentation included).

- resnet20 and resnet56 on Fashion-MNIST at batch 128. Ours: ``resnets train``'s engine
  (``engine.train``) with the fast-cpu recipe's speed settings, at batch 128, with the peer's
  augmentation (2-pixel crop padding + flip) so that both do the same work; images/s read from its
  steps.jsonl after the warm-up steps. The peer (benchmarks/peer.py): torchvision's FashionMNIST
  with per-sample transforms, a DataLoader with 2 workers, the same network in eager mode, the
  same optimizer.
- resnet50 at 224x224, batch 32, synthetic data: resnets' resnet50 with the fast-cpu recipe's
  speed settings against torchvision's resnet50 in eager mode.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .harness import (
    BenchOptions,
    Comparison,
    alternate,
    logged_images_per_s,
    markdown_table,
    synchronize,
    write_result,
)
from .steps import StepOptions, make_step, recipe_path, synthetic_batch

OURS, PEER = "ours (resnets train engine)", "peer (torchvision + DataLoader)"


def fast_recipe(model: str, iterations: int, opts: BenchOptions, **extra):
    """fast-cpu's speed settings at batch 128, with the peer's augmentation, for ``iterations`` steps."""
    import dataclasses

    from resnets.commands._common import parse_set_args
    from resnets.train.recipes import apply_overrides, get_recipe

    recipe = apply_overrides(get_recipe("fast-cpu"), parse_set_args(opts.recipe_set))
    # the execution path of the whole run on this machine, kept for these short ones
    path = recipe_path(recipe, opts.torch_device)
    # a small test subset and no TTA: the run's final evaluation is not what is measured
    settings = dict(
        channels_last=path.channels_last,
        compile=path.compile and not opts.quick,  # a quick run checks the benchmark, not the compiler
        model=model,
        batch_size=128,
        iterations=iterations,
        crop_padding=2,
        hflip=True,
        test_subset=512,
        tta="none",
        train_subset=2048 if opts.quick else None,
    )
    return dataclasses.replace(recipe, **{**settings, **extra})


def ours_images_per_s(
    model: str, warmup: int, steps: int, log_every: int, opts: BenchOptions, **extra
) -> float:
    """One short ``engine.train`` run (``extra``: recipe fields); images/s over the logged windows
    after ``warmup`` steps."""
    from resnets.train.engine import train
    from resnets.train.recipes import TrainConfig

    recipe = fast_recipe(model, warmup + steps, opts, **extra)
    return logged_images_per_s(
        lambda run: train(TrainConfig(recipe=recipe, run=run)),
        data_dir=opts.data_dir,
        warmup=warmup,
        log_every=log_every,
        batch=recipe.batch_size,
        opts=opts,
        what=model,
    )


def peer_runner(model_name: str, warmup: int, steps: int, opts: BenchOptions) -> Callable[[], float]:
    """The peer's training loop, built once (its DataLoader workers persist); each call: warm-up
    steps (the workers refill their queues) then ``steps`` timed steps, images/s."""
    import resnets
    from resnets.data.datasets import load_arrays

    from . import peer

    source = Path(load_arrays("fashion-mnist", "test", data_dir=opts.data_dir).source).parent
    root = peer.torchvision_root(source, Path(tempfile.gettempdir()) / "resnets-bench-torchvision")
    train_set, _ = peer.peer_datasets(root)
    batches = peer.cycle(peer.peer_loader(train_set, 128, train=True, device=opts.torch_device))
    recipe = fast_recipe(model_name, 1, opts)
    torch.manual_seed(0)
    model = resnets.create_model(model_name, num_classes=10, in_chans=1).to(opts.torch_device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=0.05,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )

    def run() -> float:
        peer.train_steps(model, batches, optimizer, warmup)
        return peer.train_steps(model, batches, optimizer, steps)

    return run


def fashion_mnist(opts: BenchOptions, model: str) -> Comparison:
    warmup, steps, log_every = opts.scale(20, 4), opts.scale(100, 6), opts.scale(10, 2)
    contenders = {
        OURS: lambda: ours_images_per_s(model, warmup, steps, log_every, opts),
        PEER: peer_runner(model, opts.scale(5, 2), steps, opts),
    }
    return alternate(contenders, opts.rounds, Comparison(f"{model} images/s", higher_is_better=True))


def resnet50_synthetic(opts: BenchOptions) -> tuple[Comparison, dict]:
    """Ours: resnets' resnet50 with fast-cpu's speed settings; peer: torchvision resnet50, eager."""
    import torchvision

    import resnets

    device = opts.torch_device
    size, batch = opts.scale(224, 64), opts.scale(256 if device.type == "cuda" else 32, 8)
    steps = opts.scale(20 if device.type == "cuda" else 5, 2)
    x, y = (t.to(device) for t in synthetic_batch(batch, 3, size, num_classes=1000))
    ours_options = StepOptions.from_recipe(fast_recipe("resnet50", 1, opts), device)
    peer_options = StepOptions(
        channels_last=False, nesterov=ours_options.nesterov, weight_decay=ours_options.weight_decay
    )
    torch.manual_seed(0)
    ours = make_step(resnets.create_model("resnet50").to(device), x, y, ours_options)
    theirs = make_step(torchvision.models.resnet50().to(device), x, y, peer_options)
    for step in (ours, theirs):  # warm-up (and compilation when the recipe compiles)
        step()
        step()

    def rate(step: Callable[[], object]) -> float:
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        return batch * steps / (time.perf_counter() - t0)

    comparison = alternate(
        {
            "ours (resnets resnet50)": lambda: rate(ours),
            "peer (torchvision resnet50 eager)": lambda: rate(theirs),
        },
        opts.rounds,
        Comparison(f"resnet50 {size}px batch {batch} images/s", True),
    )
    return comparison, {
        "ours": vars(ours_options),
        "peer": vars(peer_options),
        "image_size": size,
        "batch": batch,
    }


def run(opts: BenchOptions) -> str:
    rows, payload = [], {"quick": opts.quick}
    for model in ("resnet20", "resnet56"):
        comparison = fashion_mnist(opts, model)
        payload[model] = comparison.to_dict()
        rows.append(
            [
                f"{model}, Fashion-MNIST, batch 128",
                comparison.median(OURS),
                comparison.median(PEER),
                comparison.ratio(OURS, PEER),
            ]
        )
    r50, settings = resnet50_synthetic(opts)
    payload["resnet50"] = {**r50.to_dict(), "settings": settings}
    ours_name, peer_name = list(r50.values)
    rows.append(
        [
            f"resnet50, synthetic {settings['image_size']}px, batch {settings['batch']}",
            r50.median(ours_name),
            r50.median(peer_name),
            r50.ratio(ours_name, peer_name),
        ]
    )
    recipe = fast_recipe("resnet20", 1, opts)
    settings = ("channels_last", "amp", "compile", "optimizer", "nesterov", "crop_padding", "hflip")
    payload["ours_settings"] = {k: getattr(recipe, k) for k in settings}
    payload["recipe_set"] = list(opts.recipe_set)
    table = (
        f"Training throughput, images/s (steady state, data included), {opts.rounds} alternating "
        f"rounds, medians; ours = fast-cpu speed settings {payload['ours_settings']}\n\n"
        + markdown_table(["workload", "ours img/s", "peer img/s", "x peer"], rows)
    )
    write_result("train_throughput", payload, table, opts.results_dir)
    return table
