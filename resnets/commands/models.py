"""``resnets models [PATTERN]``: the registered model names, optionally filtered (fnmatch, e.g. 'wrn*')."""

from __future__ import annotations

import argparse

from ..errors import unknown_name
from ..models import list_models


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "examples: resnets models | resnets models 'resnet*' | resnets models '*preact*'"
    parser.add_argument("pattern", nargs="?", default=None,
                        help="fnmatch pattern; a pattern without wildcards matches names containing it")


def run(args: argparse.Namespace) -> int:
    pattern = args.pattern
    if pattern is not None and not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    names = list_models(pattern)
    if not names:
        raise unknown_name("model", args.pattern, list_models())
    print("\n".join(names))
    return 0
