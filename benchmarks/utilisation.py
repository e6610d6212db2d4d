"""Utilisation: resnet20's training-step multiply-add rate as a share of this machine's sgemm peak.

The step's work is counted by ``FlopCounterMode`` (forward + backward; FLOPs = 2 x multiply-adds);
its time is the step with the fast-cpu recipe's speed settings at batch 128 on 28x28 images. The
peak is a float32 matrix product of 2048x2048 by 2048x2048 (MKL sgemm) on the same threads,
timed alternately with the step in the same run.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .harness import BenchOptions, Comparison, alternate, markdown_table, write_result
from .steps import StepOptions, make_step, synthetic_batch


def step_flops(batch: int, size: int) -> int:
    """FLOPs of one forward + backward of resnet20 (FlopCounterMode; the optimizer step is negligible)."""
    import resnets

    model = resnets.create_model("resnet20", num_classes=10, in_chans=1)
    x, y = synthetic_batch(batch, 1, size)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def gemm_gflops(n: int, repeat: int, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e9


def run(opts: BenchOptions) -> str:
    import resnets
    from resnets.train.recipes import get_recipe

    batch, size, n = 128, 28, 2048
    recipe = get_recipe("fast-cpu")
    options = StepOptions.from_recipe(recipe)
    flops = step_flops(batch, size)
    torch.manual_seed(0)
    x, y = synthetic_batch(batch, 1, size)
    step = make_step(resnets.create_model("resnet20", num_classes=10, in_chans=1), x, y, options)
    steps = opts.scale(20, 3)
    for _ in range(opts.scale(5, 2)):
        step()

    def step_gflops() -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return flops * steps / (time.perf_counter() - t0) / 1e9

    contenders = {
        "resnet20 training step": step_gflops,
        f"sgemm {n}x{n}": lambda: gemm_gflops(n, opts.scale(10, 3)),
    }
    if options.amp == "bf16":  # the step computes in bfloat16: say how far that dtype's own peak is too
        contenders[f"bf16 gemm {n}x{n}"] = lambda: gemm_gflops(n, opts.scale(10, 3), torch.bfloat16)
    comparison = alternate(contenders, opts.rounds, Comparison("GFLOP/s", higher_is_better=True))
    achieved, peak = comparison.median("resnet20 training step"), comparison.median(f"sgemm {n}x{n}")
    share = 100 * achieved / peak
    rows = [
        ["resnet20 training step (fwd+bwd, batch 128, 28x28)", achieved, flops / 2 / batch / 1e6],
        [f"sgemm {n}x{n} (float32)", peak, ""],
    ]
    bf16_note = ""
    if options.amp == "bf16":
        bf16_peak = comparison.median(f"bf16 gemm {n}x{n}")
        rows.append([f"bf16 gemm {n}x{n}", bf16_peak, ""])
        bf16_note = f", {100 * achieved / bf16_peak:.0f}% of the bf16 gemm's"
    table = (
        f"Utilisation on {torch.get_num_threads()} threads, {opts.rounds} alternating rounds, medians: "
        f"the training step runs at **{share:.0f}%** of the sgemm peak{bf16_note} "
        f"(step settings {vars(options)})\n\n"
        + markdown_table(["work", "GFLOP/s", "M multiply-adds per image (fwd+bwd)"], rows)
    )
    payload = {
        "flops_per_step": flops,
        "batch": batch,
        "image_size": size,
        "share_of_peak_percent": share,
        "step_options": vars(options),
        "result": comparison.to_dict(),
        "quick": opts.quick,
    }
    write_result("utilisation", payload, table, opts.results_dir)
    return table
