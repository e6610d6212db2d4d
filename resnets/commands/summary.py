"""``resnets summary NAME``: per-stage output sizes, parameters and multiply-adds (paper Table 1)."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ..summary import summary
from ..train.recipes import parse_literal
from ._common import parse_set_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples: resnets summary resnet50 --set stride_in_1x1=true | "
        "resnets summary resnet20 --in-chans 1 --input-size 1 28 28"
    )
    parser.add_argument("model", metavar="NAME", help="model name (see `resnets models`)")
    parser.add_argument(
        "--input-size",
        nargs=3,
        type=int,
        metavar=("C", "H", "W"),
        help="input size (default: 3 224 224 for ImageNet nets, 3 32 32 for CIFAR nets)",
    )
    parser.add_argument("--num-classes", type=int, help="classifier outputs (default: the family's)")
    parser.add_argument("--in-chans", type=int, help="input channels (default: C of --input-size, or 3)")
    parser.add_argument(
        "--set",
        dest="set_items",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="any model option, e.g. --set shortcut=A (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    options = {key: parse_literal(value) for key, value in parse_set_args(args.set_items).items()}
    in_chans = args.in_chans
    if in_chans is None and args.input_size is not None:
        in_chans = args.input_size[0]
    for key, value in (("num_classes", args.num_classes), ("in_chans", in_chans)):
        if value is None:
            continue
        if key in options and options[key] != value:
            raise ConfigError(f"{key} given twice with different values ({options[key]!r} and {value!r})")
        options[key] = value
    result = summary(args.model, input_size=args.input_size, **options)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    return 0
