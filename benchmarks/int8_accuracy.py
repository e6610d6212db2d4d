"""The int8 path's accuracy and speed on a trained Fashion-MNIST resnet20.

A trained run comes from ``--checkpoint`` (a run folder or a .pt checkpoint), or is trained here
with ``resnets train --recipe fast-cpu`` shortened to one epoch (a few steps with --quick).
int8 models (ONNX Runtime static quantization, QDQ and QOperator, calibrated on 512 training
images) are compared with the eager float32 model on the test set: top-1 accuracy and its change
in points, prediction agreement, and batch-1 latency ratios (alternating rounds).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .harness import BenchOptions, Comparison, alternate, markdown_table, write_result
from .inference_speed import latency

EAGER = "float32 eager"


def trained_checkpoint(opts: BenchOptions, folder: Path) -> Path:
    """``opts.checkpoint`` or a run trained now into ``folder``; returns a checkpoint file."""
    from resnets.runs import checkpoint_candidates
    from resnets.train.engine import train
    from resnets.train.recipes import RunOptions, TrainConfig, apply_overrides, get_recipe

    if opts.checkpoint:
        return checkpoint_candidates(opts.checkpoint)[0]
    extra = {"train_subset": 2048, "test_subset": 500, "iterations": 10} if opts.quick else {}
    recipe = apply_overrides(get_recipe("fast-cpu"), {"epochs": 1, **extra})
    run = RunOptions(output=str(folder), data_dir=opts.data_dir, progress="none", plot=False, keep_last=1)
    train(TrainConfig(recipe=recipe, run=run))
    return folder / "last.pt"


def batched(fn: Callable[[Tensor], Tensor], images: Tensor, size: int = 500) -> Tensor:
    return torch.cat([fn(chunk) for chunk in images.split(size)])


def run(opts: BenchOptions) -> str:
    from resnets.checkpoints import load_model
    from resnets.data import Normalization
    from resnets.data.datasets import load_arrays
    from resnets.inference import optimize_for_inference, quantize_int8

    with tempfile.TemporaryDirectory(prefix="resnets-int8-") as tmp:
        path = trained_checkpoint(opts, Path(tmp))
        model, ckpt = load_model(path, "cpu")
    normalize = Normalization.from_dict(ckpt["data"]["normalization"])
    test = load_arrays("fashion-mnist", "test", data_dir=opts.data_dir)
    train = load_arrays("fashion-mnist", "train", data_dir=opts.data_dir)
    n_test = opts.scale(len(test.labels), 1000)
    images, labels = normalize(test.images[:n_test]), test.labels[:n_test]
    pick = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))[:512]
    calibration = normalize(train.images[pick])

    def eager(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return model(x)

    runs = {EAGER: eager, "float32 fast path (onnxruntime)": optimize_for_inference(model, images[:1])}
    flags = {name: fn.flags for name, fn in runs.items() if hasattr(fn, "flags")}
    for fmt in ("qdq", "qoperator"):
        int8 = quantize_int8(model, calibration, fmt=fmt)
        runs[f"int8 {fmt} (onnxruntime)"] = int8
        flags[f"int8 {fmt} (onnxruntime)"] = int8.flags
    predictions = {name: batched(fn, images).argmax(1) for name, fn in runs.items()}
    accuracy = {name: 100 * float((p == labels).float().mean()) for name, p in predictions.items()}
    agreement = {
        name: 100 * float((p == predictions[EAGER]).float().mean()) for name, p in predictions.items()
    }
    one = images[:1]
    lat = alternate(
        {name: (lambda f=fn: latency(f, one, opts.scale(50, 5))) for name, fn in runs.items()},
        opts.rounds,
        Comparison("batch-1 latency (ms)", higher_is_better=False),
    )
    rows = [
        [
            name,
            accuracy[name],
            accuracy[name] - accuracy[EAGER],
            agreement[name],
            lat.median(name),
            lat.median(name) / lat.median(EAGER),
        ]
        for name in runs
    ]
    table = (
        f"Trained resnet20 ({ckpt['config']['recipe']['name']}, epoch {ckpt['epoch']}) on {n_test} "
        f"Fashion-MNIST test images; int8 calibrated on 512 training images; {opts.rounds} rounds\n\n"
        + markdown_table(
            ["model", "top-1 %", "change (points)", "agrees with eager %", "batch-1 ms", "x eager latency"],
            rows,
        )
    )
    payload = {
        "checkpoint": str(opts.checkpoint or "trained by the benchmark"),
        "test_images": n_test,
        "accuracy": accuracy,
        "agreement": agreement,
        "latency": lat.to_dict(),
        "flags": flags,
        "quick": opts.quick,
    }
    write_result("int8", payload, table, opts.results_dir)
    return table
