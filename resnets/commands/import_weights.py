"""``resnets import-weights FILE --model NAME --output OUT.safetensors``: torchvision/timm weights in.

The file is loaded safely (``torch.load(weights_only=True)`` or safetensors), checked key by key
against the model (missing, unexpected and mis-shaped keys are listed), and written as our
safetensors weights file, which ``resnets train --init-weights`` accepts.
"""

from __future__ import annotations

import argparse

from .. import create_model
from ..errors import ConfigError
from ..weights import load_weights_into, read_state_dict, save_weights
from ._common import check_output_file

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; a 2048-feature head of 100,000 classes is 800 MB
MAX_IN_CHANS = 64


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="state dict from torchvision or timm (.pth, .pt, .bin, "
                        ".safetensors), or a resnets checkpoint")
    parser.add_argument("--model", required=True, help="model name (see `resnets models`)")
    parser.add_argument("--output", required=True, metavar="OUT.safetensors", help="weights file to write")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of the model (default: the file's); another count replaces the head")
    parser.add_argument("--in-chans", type=int, default=None,
                        help="input channels (default: the file's); another count adapts the stem "
                        "filters as timm does")


def run(args: argparse.Namespace) -> int:
    for flag, most in (("num_classes", MAX_CLASSES), ("in_chans", MAX_IN_CHANS)):
        value = getattr(args, flag)
        if value is not None and not 1 <= value <= most:  # bounded before a head of that size is allocated
            raise ConfigError(f"--{flag.replace('_', '-')} must be from 1 to {most:,}, got {value:,}")
    check_output_file(args.output, "--output", reads=[args.file])  # before any work
    state = read_state_dict(args.file)
    num_classes = args.num_classes or _file_classes(state)
    in_chans = args.in_chans or _file_in_chans(state) or 3
    kwargs = {"in_chans": in_chans} | ({"num_classes": num_classes} if num_classes else {})
    model = create_model(args.model, **kwargs)
    del state  # load_weights_into reads the file again, checked against the model
    report = load_weights_into(model, args.file, replace_head=True)
    for line in report.lines():
        print(line)
    out = save_weights(model, args.output, metadata={"source": str(args.file)})
    print(f"wrote {out} ({args.model}, {model.num_classes} classes, {in_chans} input channels)")
    return 0


def _file_classes(state: dict) -> int | None:
    weight = state.get("fc.weight")
    if weight is None:
        weight = state.get("head.fc.weight")
    return int(weight.shape[0]) if weight is not None else None


def _file_in_chans(state: dict) -> int | None:
    weight = state.get("conv1.weight")
    return int(weight.shape[1]) if weight is not None and weight.dim() == 4 else None
