"""GPU utilisation: resnet50's training step at 224x224 against the card's measured bf16 matmul rate.

Ours: resnets' resnet50 with the fast-cpu recipe's speed settings as they resolve on the GPU (bf16
autocast, channels-last, fused SGD). Peers: torchvision's resnet50 in the reference script's eager loop
(``references/classification/train.py``): float32 by default, and with its ``--amp`` (float16 autocast
and a GradScaler). The step's FLOPs come from ``FlopCounterMode`` (forward + backward); model-FLOP
utilisation = achieved FLOP/s / a bf16 8192^3 matmul's FLOP/s timed on the same card in the same run.
Synthetic data: this measures the step, not the input pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from .harness import BenchOptions, Comparison, alternate, markdown_table, synchronize, write_result
from .steps import StepOptions, make_step, synthetic_batch
from .train_throughput import fast_recipe

OURS = "ours (resnets resnet50, fast-cpu settings)"
PEER_FP32 = "peer (torchvision reference loop, fp32)"
PEER_AMP = "peer (torchvision reference loop, --amp fp16)"


def matmul_tflops(device: torch.device, n: int, repeat: int, dtype: torch.dtype = torch.bfloat16) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e12


def step_flops(batch: int, size: int) -> int:
    """FLOPs of one forward + backward of resnet50 at ``batch`` x 3 x ``size`` x ``size`` (meta tensors)."""
    import resnets

    with torch.device("meta"):
        model = resnets.create_model("resnet50")
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def amp_reference_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """The reference script's --amp step: float16 autocast and a GradScaler."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(x.device.type)
    model.train()

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def run(opts: BenchOptions) -> str:
    import resnets

    device = opts.torch_device
    cuda = device.type == "cuda"
    size, batch = opts.scale(224, 64), opts.scale(256 if cuda else 16, 4)
    steps, n = opts.scale(20 if cuda else 3, 2), opts.scale(8192 if cuda else 1024, 256)
    x, y = (t.to(device) for t in synthetic_batch(batch, 3, size, num_classes=1000))
    ours_options = StepOptions.from_recipe(fast_recipe("resnet50", 1, opts), device)
    torch.manual_seed(0)
    contenders_steps = {
        OURS: make_step(resnets.create_model("resnet50").to(device), x, y, ours_options),
        PEER_FP32: make_step(
            torchvision.models.resnet50().to(device),
            x,
            y,
            StepOptions(channels_last=False, nesterov=False, weight_decay=1e-4),
        ),
    }
    if cuda:  # float16 autocast with a GradScaler is a CUDA recipe
        contenders_steps[PEER_AMP] = amp_reference_step(torchvision.models.resnet50().to(device), x, y)
    for step in contenders_steps.values():  # warm-up: cuDNN autotuning, allocator
        for _ in range(3):
            step()

    def rate(step: Callable[[], object]) -> Callable[[], float]:
        def timed() -> float:
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            synchronize(device)
            return batch * steps / (time.perf_counter() - t0)

        return timed

    images = alternate(
        {name: rate(step) for name, step in contenders_steps.items()},
        opts.rounds,
        Comparison(f"resnet50 {size}px batch {batch} images/s", higher_is_better=True),
    )
    peak = alternate(
        {"bf16 matmul": lambda: matmul_tflops(device, n, opts.scale(50, 3))},
        opts.rounds,
        Comparison("TFLOP/s", higher_is_better=True),
    ).median("bf16 matmul")
    flops_per_image = step_flops(batch, size) / batch
    rows = []
    for name in images.values:
        achieved = images.median(name) * flops_per_image / 1e12
        rows.append(
            [
                name,
                images.median(name),
                images.ratio(OURS, name) if name != OURS else 1.0,
                achieved,
                100 * achieved / peak,
            ]
        )
    card = torch.cuda.get_device_name(device) if cuda else "CPU"
    table = (
        f"resnet50 training step on {card}, {size}x{size}, batch {batch}, synthetic data, "
        f"{opts.rounds} alternating rounds, medians; bf16 {n}^3 matmul: {peak:.1f} TFLOP/s; "
        f"ours = {vars(ours_options)}\n\n"
        + markdown_table(["contender", "images/s", "ours x", "TFLOP/s", "% of bf16 matmul (MFU)"], rows)
    )
    payload = {
        "device": card,
        "images_per_s": images.to_dict(),
        "bf16_matmul_tflops": peak,
        "flops_per_image": flops_per_image,
        "batch": batch,
        "image_size": size,
        "ours_options": vars(ours_options),
        "quick": opts.quick,
    }
    write_result("gpu_utilisation", payload, table, opts.results_dir)
    return table
