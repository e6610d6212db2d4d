"""``resnets export --checkpoint PATH --format onnx|pt2``: a deployable model file, checked after writing.

ONNX goes through ``torch.onnx.export(dynamo=True)`` and is run in onnxruntime against eager
PyTorch; .pt2 is a ``torch.export`` program, reloaded and compared the same way. The batch
dimension is dynamic in both. ``--fold-bn`` folds BatchNorm into the convolutions first. Both files
carry the model name, input size, layout, mean/std and class names (``resnets.export.export_metadata``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..checkpoints import load_model
from ..data.images import MAX_SIDE
from ..errors import ConfigError
from ..export import conv_bn_pairs, export_metadata, export_onnx, export_pt2, fold_bn
from ._common import check_output_file


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a resnets training checkpoint (.pt)")
    parser.add_argument(
        "--format", required=True, choices=("onnx", "pt2"), help="ONNX or a torch.export program"
    )
    parser.add_argument(
        "--fold-bn",
        action="store_true",
        help="fold BatchNorm into the preceding convolutions (inference only)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="file to write (default: the checkpoint's path with .onnx / .pt2)",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=3,
        metavar=("C", "H", "W"),
        default=None,
        help="example input size (default: the checkpoint's channels and image size)",
    )


def run(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else Path(args.checkpoint).with_suffix(f".{args.format}")
    check_output_file(output, "--output", reads=[args.checkpoint])  # before any work
    model, ckpt = load_model(args.checkpoint, "cpu")
    size = args.input_size or _checkpoint_input_size(ckpt, model)
    if size is None:
        raise ConfigError(
            f"checkpoint {args.checkpoint} does not record its image size; pass --input-size C H W"
        )
    channels, height, width = size
    if channels != model.in_chans or not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise ConfigError(
            f"--input-size {channels} {height} {width} does not fit the model: it takes "
            f"{model.in_chans} input channels and sizes of 1 to {MAX_SIDE} pixels"
        )
    example = torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(0))
    name = ckpt["model"].get("name", type(model).__name__)
    # The file describes itself: name, input size, layout, mean/std, class names (resnets predict reads them)
    metadata = export_metadata(name, (channels, height, width), ckpt.get("data"))

    if args.fold_bn:
        folded_pairs = len(conv_bn_pairs(model))
        total = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        folded = fold_bn(model)
        with torch.inference_mode():
            fold_diff = float((folded(example) - model(example)).abs().max())
        kept = ""
        if total > folded_pairs:
            kept = f"; {total - folded_pairs} stay (their input is not a conv output alone, e.g. a sum)"
        print(
            f"folded {folded_pairs} of {total} BatchNorm layers into the convolution before them{kept} "
            f"(max abs diff vs unfolded: {fold_diff:.3g})"
        )
        model = folded

    if args.format == "onnx":
        diff = export_onnx(model, output, example, metadata=metadata)
        print(
            f"wrote {output} ({name}, input N x {channels} x {height} x {width}, dynamic batch); "
            f"onnxruntime vs PyTorch max abs diff: {diff:.3g}"
        )
    else:
        diff = export_pt2(model, output, example, metadata=metadata)
        print(
            f"wrote {output} ({name}, input N x {channels} x {height} x {width}, dynamic batch); "
            f"reloaded program vs PyTorch max abs diff: {diff:.3g}"
        )
    return 0


def _checkpoint_input_size(ckpt: dict, model) -> tuple[int, int, int] | None:
    data = ckpt.get("data") or {}
    image_size = data.get("image_size")
    if image_size is None:
        return None
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)[-2:]
    return int(data.get("in_chans", model.in_chans)), int(height), int(width)
