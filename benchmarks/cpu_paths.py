"""Which execution path is fastest on this processor, and whether ``auto`` takes it.

The main job's training step (resnet20, 28x28, fast-cpu's batch, loss and optimiser) under every
candidate path of this CPU, alternately: float32, and bfloat16 autocast where the CPU computes it
natively (emulated bfloat16 is slower than float32: docs/training.md), each in NCHW and channels-last,
eager and ``torch.compile``d. It prints images/s, each path's speed relative to PyTorch's default
(float32, NCHW, eager), and the path ``runtime.execution_path`` chooses for the main job here beside the
fastest one measured. Run it on each kind of CPU; an AVX2-only CPU can be emulated on a newer one with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (the table's heading says which kind it ran as).
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import torch

from resnets.train.recipes import get_recipe

from .harness import BenchOptions, Comparison, alternate
from .step_options import StepConfig, images_per_s, measure
from .steps import recipe_path

BATCH = get_recipe("fast-cpu").batch_size


def spec(precision: str | None, channels_last: bool, compiled: bool) -> str:
    """A step_options setting: ``bs=128,cl=1,amp=bf16,compile=1``."""
    parts = [f"bs={BATCH}", f"cl={int(channels_last)}", f"compile={int(compiled)}"]
    return ",".join(parts + ([f"amp={precision}"] if precision else []))


def candidates(bfloat16: bool) -> list[str]:
    """PyTorch's default path first, then every other combination this CPU can run fast."""
    precisions = [None, "bf16"] if bfloat16 else [None]
    return [spec(p, cl, c) for p, cl, c in itertools.product(precisions, (False, True), (False, True))]


def run(opts: BenchOptions) -> str:
    from resnets.runtime import cpu_kind

    kind = cpu_kind()
    path = recipe_path(get_recipe("fast-cpu"), torch.device("cpu"))
    chosen = spec("bf16" if path.precision is torch.bfloat16 else None, path.channels_last, path.compile)
    specs = candidates(kind.bfloat16)
    table, comparison = measure(opts, specs, "cpu_paths")
    fastest = max(specs, key=comparison.median)
    allocator = allocator_comparison(opts, chosen) if path.keeps_freed_memory else None
    lines = [
        f"Execution paths on this {kind.describe()} (ATen {kind.capability}, a C++ compiler: "
        f"{'yes' if kind.compiler else 'no'})",
        "",
        table,
        "",
        f"auto chooses for the main job: {chosen} ({path.describe()})",
        f"fastest measured: {fastest}; auto's path runs at {comparison.ratio(chosen, fastest):.2f}x the "
        f"fastest and {comparison.ratio(chosen, specs[0]):.2f}x PyTorch's default ({specs[0]})",
    ]
    if allocator is not None:
        kept, default = (allocator.values[name] for name in ALLOCATORS)
        lines += [
            "",
            f"{chosen} in two processes, {opts.rounds} alternating rounds: freed memory kept (auto) "
            f"{', '.join(f'{v:.0f}' for v in kept)} images/s, glibc's default "
            f"{', '.join(f'{v:.0f}' for v in default)}; kept/default "
            f"{allocator.ratio(*ALLOCATORS):.2f}x on the medians",
        ]
    return "\n".join(lines)


ALLOCATORS = ("kept", "default")


def allocator_comparison(opts: BenchOptions, spec: str) -> Comparison:
    """``spec``'s step with freed memory kept and with glibc's default, each in its own process (the
    setting is process-wide), measured in alternating rounds."""
    images = opts.scale(2560, 512)
    children = {}
    for name in ALLOCATORS:  # one after the other: their compilations do not compete
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.cpu_paths", spec, name, str(images), str(opts.scale(5, 2))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout.readline().strip() == "ready", f"the {name} child failed to start"
        children[name] = child

    def round_of(child: subprocess.Popen) -> float:
        child.stdin.write("go\n")
        child.stdin.flush()
        return float(child.stdout.readline())

    try:
        runners = {name: (lambda c=child: round_of(c)) for name, child in children.items()}
        return alternate(runners, opts.rounds, Comparison("images/s", higher_is_better=True))
    finally:
        for child in children.values():
            child.stdin.close()
            child.wait()


def child(spec: str, allocator: str, images: int, warmup: int) -> None:
    """A child of ``allocator_comparison``: warm up, then one round of ``images`` per line read."""
    from resnets.runtime import keep_freed_memory

    if allocator == "kept" and not keep_freed_memory():
        raise SystemExit("freed memory cannot be kept here (not glibc, or MALLOC_* set)")
    cfg = StepConfig.parse(spec)
    step = cfg.build()
    for _ in range(warmup):
        step()
    print("ready", flush=True)
    for _ in sys.stdin:
        print(images_per_s(step, cfg.batch_size, max(1, images // cfg.batch_size)), flush=True)


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
