"""Where resnet20's training step spends its time (torch.profiler), data loading included.

The engine's loader (in-memory uint8 Fashion-MNIST, batched crop + flip, normalisation) feeds
resnet20 with the fast-cpu recipe's settings at batch 128. Each step is split into ranges
(data, forward, backward, optimizer); inside them the operators' own (self) CPU time is grouped
into convolution forward and backward, BatchNorm, elementwise, and the rest. What no operator
accounts for inside a range is Python and dispatch overhead.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from .harness import BenchOptions, markdown_table, write_result

RANGES = ("data", "forward", "backward", "optimizer")
ELEMENTWISE = ("relu", "threshold", "add", "mul", "div", "sub", "lerp", "copy", "fill", "zero")


def category(op: str) -> str:
    """The group an ATen operator's self time goes to."""
    name = op.lower()
    if "convolution_backward" in name or ("conv" in name and "backward" in name):
        return "conv backward"
    if "conv" in name:
        return "conv forward"
    if "batch_norm" in name:
        return "batch norm"
    if any(k in name for k in ELEMENTWISE):
        return "elementwise (relu, add, copy...)"
    return "other ops"


def breakdown(events) -> dict[str, float]:
    """Milliseconds per (range, category) over all profiled steps; '<range>: python' is the range's
    own time outside any operator."""
    totals: dict[str, float] = defaultdict(float)

    def walk(event, label: str) -> None:
        for child in event.cpu_children:
            totals[f"{label}: {category(child.name)}"] += child.self_cpu_time_total / 1000
            walk(child, label)

    for event in events:
        if event.name in RANGES and event.cpu_parent is None:
            totals[f"{event.name}: python/dispatch"] += event.self_cpu_time_total / 1000
            walk(event, event.name)
    return dict(totals)


def run(opts: BenchOptions) -> str:
    import resnets
    from resnets.data import DataConfig, build_data
    from resnets.runtime import compile_module
    from resnets.train.recipes import get_recipe

    from .steps import StepOptions

    recipe = get_recipe("fast-cpu")
    options = StepOptions.from_recipe(recipe)
    cfg = DataConfig(
        dataset="fashion-mnist",
        data_dir=opts.data_dir,
        batch_size=128,
        crop_padding=2,
        hflip=True,
        channels_last=options.channels_last,
        train_subset=2048 if opts.quick else None,
    )
    data = build_data(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    model = resnets.create_model("resnet20", num_classes=10, in_chans=1)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    forward = compile_module(model) if options.compile else model
    model.train()

    def batches():
        while True:
            yield from data.train

    stream = batches()

    def step() -> None:
        with record_function("data"):
            x, y = next(stream)
        with record_function("forward"):
            loss = F.cross_entropy(forward(x), y, label_smoothing=options.label_smoothing)
        with record_function("backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("optimizer"):
            optimizer.step()

    for _ in range(opts.scale(5, 2)):
        step()
    steps = opts.scale(20, 3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall_ms = (time.perf_counter() - t0) * 1000
    parts = breakdown(prof.events())
    accounted = sum(parts.values())
    parts["outside the ranges (loop, profiler)"] = max(wall_ms - accounted, 0.0)
    ordered = sorted(parts.items(), key=lambda kv: -kv[1])
    rows = [[name, ms / steps, 100 * ms / wall_ms] for name, ms in ordered]
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    table = (
        f"resnet20 training step at batch 128 (fast-cpu settings {vars(options)}), "
        f"{steps} profiled steps, {wall_ms / steps:.1f} ms per step wall "
        "(profiler overhead included)\n\n" + markdown_table(["where", "ms per step", "% of wall"], rows)
    )
    payload = {
        "steps": steps,
        "wall_ms_per_step": wall_ms / steps,
        "breakdown_ms_per_step": {k: v / steps for k, v in parts.items()},
        "step_options": vars(options),
        "top_ops": top,
        "quick": opts.quick,
    }
    write_result("profile", payload, table, opts.results_dir)
    return table
