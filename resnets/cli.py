"""The ``resnets`` command: argparse subcommands, one module each under ``resnets.commands``.

Each command module exposes ``configure(parser)`` and ``run(args) -> int``. User errors
(``ResnetsError``) and the operating system's (``OSError``: a full disk, a permission) print one
clear line and exit 2; warnings print as one plain line too (``resnets train: warning: ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from types import ModuleType

from .commands import (
    detect,
    evaluate,
    export,
    import_weights,
    models,
    predict,
    reproduce,
    segment,
    summary,
    train,
)
from .errors import ResnetsError, Terminated, os_error

# name -> (its module, one-line help)
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "train": (train, "train a model (default: resnet20 on Fashion-MNIST, fast-cpu recipe)"),
    "eval": (evaluate, "evaluate a checkpoint: top-1/top-5 error, 10-crop and multi-scale testing"),
    "predict": (predict, "top-5 classes of images with a checkpoint or registered weights"),
    "summary": (summary, "per-stage parameters and multiply-adds of a model (paper Table 1)"),
    "reproduce": (reproduce, "reproduce a paper's experiment as figures and tables"),
    "export": (export, "export a checkpoint to ONNX or torch.export (.pt2), optionally BN-folded"),
    "import-weights": (import_weights, "convert torchvision/timm weights into a resnets weights file"),
    "models": (models, "list the registered model names"),
    "detect": (detect, "object detection with Faster R-CNN: make-data, train, eval, predict, export"),
    "segment": (
        segment,
        "FCN and DeepLabV3 (semantic), Mask R-CNN (instances): make-data, train, eval, predict, export",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnets", description="Deep Residual Networks: train, evaluate, reproduce the papers, export."
    )
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
        with plain_warnings(args.command), terminated_as_exception():
            return int(args._run(args) or 0)
    except Terminated:
        print(
            f"resnets {args.command}: terminated (SIGTERM); files being written were removed, finished "
            "ones kept",
            file=sys.stderr,
        )
        return 128 + signal.SIGTERM
    except ResnetsError as exc:
        print(f"resnets {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resnets {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error of ours
        sys.stderr.close()
        return 0
    except OSError as exc:  # the machine's, not a bug: a full disk, a permission, a missing folder
        print(f"resnets {args.command}: error: {one_line(os_error(exc))}", file=sys.stderr)
        return 2


def one_line(exc: BaseException) -> str:
    """The message on one line (a file name may hold a newline: shown as \\n)."""
    return str(exc).replace("\r", "\\r").replace("\n", "\\n")


@contextlib.contextmanager
def terminated_as_exception() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` (training installs its own handler: it saves a checkpoint first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def plain_warnings(command: str) -> Iterator[None]:
    """Warnings as ``resnets COMMAND: warning: message``: no source path, no code line."""
    previous = warnings.formatwarning

    def format_plain(message, category, filename, lineno, line=None) -> str:
        return f"resnets {command}: warning: {one_line(message)}\n"

    warnings.formatwarning = format_plain
    try:
        yield
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
