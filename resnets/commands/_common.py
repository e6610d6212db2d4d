"""Argument helpers shared by several commands."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.images import DEFAULT_MAX_PIXELS
from ..detection.synthetic import SyntheticSpec
from ..errors import ConfigError
from ..runs import check_output, check_writable_folder, same_file  # noqa: F401 (re-exported)
from ..train.recipes import RunOptions, field_types
from ._flags import Flag, add_flags


def parse_set_args(items: Sequence[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` from repeated ``--set k=v`` flags into a dict of raw strings.

    Typing is the consumer's job (a recipe checks values against its field types).
    """
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.replace("-", "_")] = value.strip()
    return out


def input_flags(defaults: str) -> tuple[Flag, ...]:
    """How a command accepts its inputs (``RunOptions``' fields): the flags that the data's warnings and
    errors suggest. ``defaults`` completes each help text ("" for train's own; "the run's" for eval)."""
    return (
        Flag(
            "strict_data",
            f"stop at an unreadable image or an empty class folder instead of skipping it with a warning "
            f"(default: {defaults or 'off'})",
            switch=True,
        ),
        Flag(
            "verify_checksums",
            f"check the MD5 of the official mnist/fashion-mnist/cifar files (default: {defaults or 'on'}); "
            f"--no-verify-checksums for copies meant to differ",
        ),
        Flag(
            "follow_links",
            f"image folders: follow symbolic links that point out of --data-dir (default: "
            f"{defaults or 'skipped, and counted in a warning'})",
            switch=True,
        ),
        _pixel_flag(defaults),
    )


def add_input_flags(group: argparse._ActionsContainer, *, defaults: str) -> None:
    add_flags(group, input_flags(defaults), field_types(RunOptions))


def add_pixel_flag(group: argparse._ActionsContainer, defaults: str = "") -> None:
    add_flags(group, [_pixel_flag(defaults)], field_types(RunOptions))


def _pixel_flag(defaults: str) -> Flag:
    return Flag(
        "max_image_pixels",
        f"refuse images of more than N pixels, from their header, before decoding "
        f"(default: {defaults or f'{DEFAULT_MAX_PIXELS:,}, as PIL'}; 0: no limit)",
        metavar="N",
    )


def input_options(args: argparse.Namespace) -> dict[str, object]:
    """The input flags given (the others stay None: the default, or the run's)."""
    if args.max_image_pixels is not None and args.max_image_pixels < 0:
        raise ConfigError(f"--max-image-pixels must be >= 0 (0: no limit), got {args.max_image_pixels}")
    return {
        key: getattr(args, key, None)
        for key in ("strict_data", "verify_checksums", "follow_links", "max_image_pixels")
    }


def check_output_file(
    path: str | os.PathLike, flag: str, reads: Sequence[str | os.PathLike | None] = ()
) -> Path:
    """Before any work: ``runs.check_output``, the one check of every output path."""
    return check_output(path, flag, reads=reads)


def printable(name: object) -> str:
    """A name (a class folder, a file) as one printable line: control characters such as a newline are
    shown escaped (``\\n``), so that a crafted name cannot fake lines of a result table."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(name))


# --- the detection and segmentation commands' shared arguments ------------------------------------


def add_synthetic_flags(p: argparse.ArgumentParser) -> None:
    """make-data's DIR, one flag per ``SyntheticSpec`` field and --fashion-dir."""
    p.add_argument("folder", metavar="DIR")
    defaults = SyntheticSpec()
    for field in dataclasses.fields(SyntheticSpec):
        p.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=type(getattr(defaults, field.name)),
            default=getattr(defaults, field.name),
            help=f"(default {getattr(defaults, field.name)})",
        )
    p.add_argument("--fashion-dir", help="where the Fashion-MNIST files are (default: the usual places)")


def synthetic_spec(args: argparse.Namespace) -> SyntheticSpec:
    return SyntheticSpec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticSpec)})


def add_checkpoint_argument(p: argparse.ArgumentParser, what: str) -> None:
    """RUN|FILE or --checkpoint RUN|FILE: ``what`` ("a detection run or checkpoint") the action reads."""
    # As `resnets eval/predict/export --checkpoint`; the positional spelling stays.
    p.add_argument("checkpoint", nargs="?", metavar="RUN|FILE", help=what)
    p.add_argument("--checkpoint", dest="checkpoint_option", metavar="RUN|FILE", help="the same, as a flag")


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """eval's data (the run's validation split by default), batch, device and output flags."""
    p.add_argument("--data-dir", help="default: the run's")
    p.add_argument("--split", help="default: the run's validation split")
    p.add_argument(
        "--eval-subset",
        "--subset",
        dest="subset",
        type=int,
        metavar="N",
        help="the first N images (train's --eval-subset)",
    )
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--device")
    p.add_argument("--strict-data", action="store_true")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


def resolve_checkpoint(args: argparse.Namespace, what: str) -> None:
    """``args.checkpoint`` from either spelling of ``add_checkpoint_argument`` (nothing for actions
    without one)."""
    if "checkpoint_option" not in vars(args):  # make-data, train
        return
    option = args.checkpoint_option
    if option is not None and args.checkpoint is not None:
        if getattr(args, "images", None) is None:
            raise ConfigError("give the checkpoint once: as RUN|FILE or as --checkpoint")
        args.images = [args.checkpoint, *args.images]  # predict: the first image was read as the checkpoint
        args.checkpoint = None
    args.checkpoint = args.checkpoint or option
    if args.checkpoint is None:
        raise ConfigError(f"give {what}: RUN|FILE or --checkpoint RUN|FILE")


def export_output(args: argparse.Namespace) -> Path:
    """export's --output, by default beside the checkpoint (RUN/model.onnx, FILE.onnx), checked before any
    work."""
    source = Path(args.checkpoint)
    default = (source / "model.onnx") if source.is_dir() else source.with_suffix(".onnx")
    output = Path(args.output) if args.output else default
    checkpoint = source / "last.pt" if source.is_dir() else source
    check_output_file(output, "--output", reads=[args.checkpoint, checkpoint])
    return output


def drawing_targets(draw: str | None, images: Sequence[str]) -> list[Path | None]:
    """Where predict --draw puts each image's drawing: the PNG (one image) or FOLDER/<image>.png, the PNG
    checked before any work; None for each without --draw."""
    if not draw:
        return [None] * len(images)
    target = Path(draw)
    if len(images) > 1 or target.is_dir() or target.suffix.lower() != ".png":
        return [target / f"{Path(path).stem}.png" for path in images]
    check_output_file(target, "--draw", reads=images)
    return [target]


def drawing_scale(image: torch.Tensor) -> int:
    """How much a drawing enlarges an image: small images to about 256 px, so that what is drawn shows."""
    return max(1, 256 // max(image.shape[1:]))
