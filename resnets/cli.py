"""The ``resnets`` command: argparse subcommands, one module each under ``resnets.commands``.

Each command module exposes ``configure(parser)`` and ``run(args) -> int``. User errors
(``ResnetsError``) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from .commands import evaluate, export, import_weights, models, predict, reproduce, summary, train
from .errors import ResnetsError

# name -> (its module, one-line help)
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "train": (train, "train a model (default: resnet20 on Fashion-MNIST, fast-cpu recipe)"),
    "eval": (evaluate, "evaluate a checkpoint: top-1/top-5 error, 10-crop and multi-scale testing"),
    "predict": (predict, "top-5 classes of images with a trained checkpoint"),
    "summary": (summary, "per-stage parameters and multiply-adds of a model (paper Table 1)"),
    "reproduce": (reproduce, "reproduce a paper's experiment as figures and tables"),
    "export": (export, "export a checkpoint to ONNX or torch.export (.pt2), optionally BN-folded"),
    "import-weights": (import_weights, "convert torchvision/timm weights into a resnets weights file"),
    "models": (models, "list the registered model names"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnets", description="Deep Residual Networks: train, evaluate, "
                                     "reproduce the papers, export.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._run(args) or 0)
    except ResnetsError as exc:
        print(f"resnets {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resnets {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
