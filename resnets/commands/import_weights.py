"""``resnets import-weights FILE --model NAME --output OUT.safetensors``: torchvision/timm weights in.

The file is loaded safely (``torch.load(weights_only=True)`` or safetensors), checked key by key
against the model (missing, unexpected and mis-shaped keys are listed), and written as our
safetensors weights file, which ``resnets train --init-weights`` accepts. FILE may also be registered
weights (``resnet50.tv2_in1k``; docs/weights.md): their file is found in the caches or downloaded with its
hash checked (``resnets.pretrained.weights_file``), ``--model`` is theirs, and the key translation is the
same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import create_model
from ..errors import ConfigError
from ..pretrained import check_file, find_file, get_weights, weights_file
from ..pretrained.load import split_name
from ..weights import load_weights_into, read_state_dict, save_weights
from ._common import check_output_file

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; a 2048-feature head of 100,000 classes is 800 MB
MAX_IN_CHANS = 64


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        metavar="FILE",
        help="state dict from torchvision or timm (.pth, .pt, .bin, "
        ".safetensors), a resnets checkpoint, or registered weights (model.tag: `resnets "
        "models --pretrained`)",
    )
    parser.add_argument("--model", help="model name (see `resnets models`; default: registered weights' own)")
    parser.add_argument("--output", required=True, metavar="OUT.safetensors", help="weights file to write")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes of the model (default: the file's); another count replaces the head",
    )
    parser.add_argument(
        "--in-chans",
        type=int,
        default=None,
        help="input channels (default: the file's); another count adapts the stem filters as timm does",
    )


def run(args: argparse.Namespace) -> int:
    for flag, most in (("num_classes", MAX_CLASSES), ("in_chans", MAX_IN_CHANS)):
        value = getattr(args, flag)
        if value is not None and not 1 <= value <= most:  # bounded before a head of that size is allocated
            raise ConfigError(f"--{flag.replace('_', '-')} must be from 1 to {most:,}, got {value:,}")
    check_output_file(args.output, "--output", reads=[args.file])  # before any work
    path, model_name, source = _source(args.file, args.model)
    state = read_state_dict(path)
    num_classes = args.num_classes or file_classes(state)
    in_chans = args.in_chans or file_in_chans(state) or 3
    kwargs = {"in_chans": in_chans} | ({"num_classes": num_classes} if num_classes else {})
    model = create_model(model_name, **kwargs)
    del state  # load_weights_into reads the file again, checked against the model
    report = load_weights_into(model, path, replace_head=True)
    for line in report.lines():
        print(line)
    out = save_weights(model, args.output, metadata={"source": source})
    print(f"wrote {out} ({model_name}, {model.num_classes} classes, {in_chans} input channels)")
    return 0


def _source(file: str, model: str | None) -> tuple[Path, str, str]:
    """(local file, model name, what the output's metadata names as its source): a file as given, or the
    checked file of registered weights."""
    if Path(file).exists() or "/" in file or Path(file).suffix in (".pth", ".pt", ".bin", ".safetensors"):
        entry = find_file(file)
        model = model or (entry.model if entry is not None else None)
        if not model:
            raise ConfigError(f"--model is needed for the file {file} (registered weights name their own)")
        if entry is not None and Path(file).is_file():
            check_file(file, entry)  # a copy of registered weights (torchvision's name carries its hash)
        return Path(file), model, str(file)
    owner, tag = split_name(file)
    entry = get_weights(owner, tag)
    if model and model != entry.model:
        raise ConfigError(f"weights {entry.name} are for {entry.model}, not --model {model}")
    return weights_file(entry), entry.model, entry.name


def file_classes(state: dict) -> int | None:
    """The class count of a state dict's classifier (``fc``, or timm's ``head.fc``), or None."""
    weight = state.get("fc.weight")
    if weight is None:
        weight = state.get("head.fc.weight")
    return int(weight.shape[0]) if weight is not None else None


def file_in_chans(state: dict) -> int | None:
    """The input channels of a state dict's stem convolution (``conv1``), or None."""
    weight = state.get("conv1.weight")
    return int(weight.shape[1]) if weight is not None and weight.dim() == 4 else None
