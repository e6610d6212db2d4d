"""``resnets models [PATTERN]``: the registered model names, optionally filtered (fnmatch, e.g. 'wrn*').

``resnets models --pretrained [PATTERN]``: the weights registry (docs/weights.md): each entry's name
(``model.tag``), source, dataset, top-1 accuracy (the publisher's, or ours as measured for shipped
weights), whether it ships inside the package, and the model's default weights.
"""

from __future__ import annotations

import argparse
import json

from ..errors import unknown_name
from ..models import list_models
from ..pretrained import get_weights, list_pretrained
from ._common import printable


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples: resnets models | resnets models 'resnet*' | resnets models '*preact*' | "
        "resnets models --pretrained resnet50"
    )
    parser.add_argument(
        "pattern",
        nargs="?",
        default=None,
        help="fnmatch pattern; a pattern without wildcards matches names containing it",
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="list the weights (model.tag) instead: source, dataset, top-1, shipped or not",
    )
    parser.add_argument("--json", action="store_true", help="with --pretrained: one JSON list of the entries")


def run(args: argparse.Namespace) -> int:
    pattern = args.pattern
    if pattern is not None and not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    if args.pretrained:
        return _list_weights(args.pattern, pattern, args.json)
    names = list_models(pattern)
    if not names:
        raise unknown_name("model", args.pattern, list_models())
    print("\n".join(names))
    return 0


def _list_weights(given: str | None, pattern: str | None, as_json: bool) -> int:
    names = list_pretrained(pattern)
    if not names:
        raise unknown_name("weights name", given, list_pretrained())
    entries = [get_weights(name) for name in names]
    if as_json:
        print(json.dumps([e.to_dict() for e in entries]))
        return 0
    rows = [("name", "source", "dataset", "top-1", "shipped", "default")]
    for e in entries:
        top1 = e.metrics.get("acc@1")
        shipped = ("yes" if e.card is not None else "missing") if e.shipped else ""
        top1_text = f"{top1:.2f}" if isinstance(top1, int | float) else "-"
        rows.append(
            (
                printable(e.name + "".join(f" ({a})" for a in e.aliases)),
                e.source,
                e.dataset.split(" (")[0],
                top1_text,
                shipped,
                "default" if e.default else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0
