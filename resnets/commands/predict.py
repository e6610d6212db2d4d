"""``resnets predict --checkpoint PATH IMAGE...``: the most likely classes of each image.

Images (JPEG, PNG, ...; grayscale or colour) are preprocessed exactly as the checkpoint's
evaluation data was (channels, size, normalisation come from the checkpoint's data record).
``--checkpoint`` may also be a file of ``resnets export`` (.onnx, run in onnxruntime; .pt2): its
metadata carries the same data record, the class names and the model name.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ..checkpoints import load_model
from ..data import load_image, preprocess_image
from ..data.images import set_max_image_pixels
from ..errors import CheckpointError, ConfigError
from ..export import load_exported
from ..runtime import select_device
from ._common import add_pixel_flag, printable

_CHUNK = 64  # images per forward pass


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a resnets training checkpoint (.pt) or an exported model (.onnx, .pt2)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with all predictions and nothing else on stdout")
    add_pixel_flag(parser)


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise ConfigError(f"--topk must be at least 1, got {args.topk}")
    if args.max_image_pixels is not None and args.max_image_pixels < 0:
        raise ConfigError(f"--max-image-pixels must be >= 0 (0: no limit), got {args.max_image_pixels}")
    set_max_image_pixels(args.max_image_pixels)
    say = print if not args.json else (lambda *a: print(*a, file=sys.stderr))  # --json: stdout is JSON only
    device, model, meta, name, num_outputs = _load(args.checkpoint, args.device)
    if not meta:
        raise CheckpointError(f"checkpoint {args.checkpoint} has no data record (classes, preprocessing); "
                              "it cannot be used to predict")
    classes = list(meta.get("classes") or [str(i) for i in range(num_outputs or 0)])
    if num_outputs is not None and len(classes) != num_outputs:
        raise CheckpointError(f"checkpoint {args.checkpoint} names {len(classes)} classes but its model has "
                              f"{num_outputs} outputs")
    k = min(args.topk, len(classes))
    if k < args.topk:
        say(f"note: the model has only {len(classes)} classes; showing the top {k}")

    # Read every image first, so that a bad file fails before any work (DataError names the file).
    inputs = [preprocess_image(load_image(path), meta) for path in args.images]
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(inputs), _CHUNK):
            batch = torch.stack(inputs[start:start + _CHUNK]).to(device)
            logits = model(batch)
            if logits.shape[1] != len(classes):
                raise CheckpointError(f"{args.checkpoint} names {len(classes)} classes but its model has "
                                      f"{logits.shape[1]} outputs")
            probs = logits.float().softmax(dim=1)
            top_p, top_i = probs.topk(k, dim=1)
            for offset, (ps, idx) in enumerate(zip(top_p.tolist(), top_i.tolist(), strict=True)):
                top = [{"class": classes[i], "index": i, "probability": p}
                       for p, i in zip(ps, idx, strict=True)]
                predictions.append({"image": str(args.images[start + offset]), "top": top})

    if args.json:
        print(json.dumps({"model": name, "checkpoint": str(args.checkpoint), "predictions": predictions}))
        return 0
    width = max(len(printable(c)) for c in classes)
    for prediction in predictions:
        print(printable(prediction["image"]))
        for entry in prediction["top"]:
            print(f"  {printable(entry['class']):<{width}}  {100 * entry['probability']:6.2f} %")
    return 0


def _load(path: str, device_name: str | None) -> tuple[
    torch.device, Callable[[torch.Tensor], torch.Tensor], dict, str | None, int | None
]:
    """(device, images -> logits, data record, model name, number of outputs or None if unknown) of a
    checkpoint, or of an exported file (CPU; its metadata holds the data record)."""
    if Path(path).suffix in (".onnx", ".pt2"):
        run_model, metadata = load_exported(path)
        meta = json.loads(metadata.get("resnets_data") or "{}")
        return torch.device("cpu"), run_model, meta, metadata.get("model_name"), None
    device = select_device(device_name)
    model, ckpt = load_model(path, device)
    return device, model, ckpt.get("data") or {}, (ckpt.get("model") or {}).get("name"), model.num_classes
