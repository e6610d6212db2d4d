"""``resnets predict --checkpoint PATH IMAGE...`` or ``resnets predict --weights NAME IMAGE...``: the most
likely classes of each image.

With ``--checkpoint``, images (JPEG, PNG, ...; grayscale or colour) are preprocessed exactly as the
checkpoint's evaluation data was (channels, size, normalisation come from the checkpoint's data record);
it may also be a file of ``resnets export`` (.onnx, run in onnxruntime; .pt2): its metadata carries the same
data record, the class names and the model name. With ``--weights`` (registered weights: ``fashion_mnist``,
``resnet50.tv2_in1k``, ``--model resnet50 --weights IMAGENET1K_V2``; or a weights file), images get the
weights' inference transform and class names (docs/weights.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from ..checkpoints import load_model
from ..data import load_image, preprocess_image
from ..data.images import pil_to_uint8, set_max_image_pixels
from ..errors import CheckpointError, ConfigError
from ..export import load_exported
from ..models import create_model, create_model_from_spec
from ..pretrained import InferenceTransforms, class_names, get_weights, load_requested, requested_weights
from ..pretrained.load import WeightsRequest, local_entry_file, split_name
from ..runtime import select_device
from ..weights import load_weights_metadata, read_state_dict
from ._common import add_pixel_flag, printable
from .import_weights import file_classes, file_in_chans

_CHUNK = 64  # images per forward pass


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples: resnets predict --weights fashion_mnist shirt.png | resnets predict "
        "--model resnet50 --weights IMAGENET1K_V2 cat.jpg | resnets predict --checkpoint "
        "runs/x/last.pt a.png"
    )
    parser.add_argument(
        "--checkpoint", help="a resnets training checkpoint (.pt) or an exported model (.onnx, .pt2)"
    )
    parser.add_argument(
        "--weights",
        metavar="NAME|FILE",
        help="registered weights (`resnets models --pretrained`: model.tag, a tag with "
        "--model, or a tag only one model has) or a weights file",
    )
    parser.add_argument("--model", help="with --weights: the model (default: the weights' own)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N, mps (default: CUDA, else MPS, else the CPU)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with all predictions and nothing else on stdout",
    )
    add_pixel_flag(parser)


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise ConfigError(f"--topk must be at least 1, got {args.topk}")
    if args.max_image_pixels is not None and args.max_image_pixels < 0:
        raise ConfigError(f"--max-image-pixels must be >= 0 (0: no limit), got {args.max_image_pixels}")
    set_max_image_pixels(args.max_image_pixels)
    say = print if not args.json else (lambda *a: print(*a, file=sys.stderr))  # --json: stdout is JSON only
    if bool(args.checkpoint) == bool(args.weights):
        raise ConfigError(
            "give --checkpoint (a run's checkpoint or an exported model) or --weights "
            "(registered weights or a weights file), one of them"
        )
    if args.model and not args.weights:
        raise ConfigError("--model goes with --weights (a checkpoint names its own model)")
    if args.checkpoint:
        source = str(args.checkpoint)
        device, model, preprocess, classes, name, num_outputs = _load(args.checkpoint, args.device)
    else:
        source = str(args.weights)
        device, model, preprocess, classes, name, num_outputs = _load_weights(
            args.weights, args.model, args.device, say
        )
    if num_outputs is not None and len(classes) != num_outputs:
        raise CheckpointError(
            f"{source} names {len(classes)} classes but its model has {num_outputs} outputs"
        )
    k = min(args.topk, len(classes))
    if k < args.topk:
        say(f"note: the model has only {len(classes)} classes; showing the top {k}")

    # Read every image first, so that a bad file fails before any work (DataError names the file).
    inputs = [preprocess(load_image(path)) for path in args.images]
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(inputs), _CHUNK):
            batch = torch.stack(inputs[start : start + _CHUNK]).to(device)
            logits = model(batch)
            if logits.shape[1] != len(classes):
                raise CheckpointError(
                    f"{source} names {len(classes)} classes but its model has {logits.shape[1]} outputs"
                )
            probs = logits.float().softmax(dim=1)
            top_p, top_i = probs.topk(k, dim=1)
            for offset, (ps, idx) in enumerate(zip(top_p.tolist(), top_i.tolist(), strict=True)):
                top = [
                    {"class": classes[i], "index": i, "probability": p} for p, i in zip(ps, idx, strict=True)
                ]
                predictions.append({"image": str(args.images[start + offset]), "top": top})

    if args.json:
        origin = {"checkpoint": str(args.checkpoint)} if args.checkpoint else {"weights": source}
        print(json.dumps({"model": name, **origin, "predictions": predictions}))
        return 0
    width = max(len(printable(c)) for c in classes)
    for prediction in predictions:
        print(printable(prediction["image"]))
        for entry in prediction["top"]:
            print(f"  {printable(entry['class']):<{width}}  {100 * entry['probability']:6.2f} %")
    return 0


Preprocess = Callable[[Image.Image], torch.Tensor]
Loaded = tuple[
    torch.device, Callable[[torch.Tensor], torch.Tensor], Preprocess, list[str], str | None, int | None
]


def _load(path: str, device_name: str | None) -> Loaded:
    """(device, images -> logits, image -> input, class names, model name, number of outputs or None if
    unknown) of a checkpoint, or of an exported file (CPU; its metadata holds the data record)."""
    if Path(path).suffix in (".onnx", ".pt2"):
        run_model, metadata = load_exported(path)
        meta = json.loads(metadata.get("resnets_data") or "{}")
        device, name, num_outputs = torch.device("cpu"), metadata.get("model_name"), None
    else:
        device = select_device(device_name)
        run_model, ckpt = load_model(path, device)
        meta, name = ckpt.get("data") or {}, (ckpt.get("model") or {}).get("name")
        num_outputs = run_model.num_classes
    if not meta:
        raise CheckpointError(
            f"checkpoint {path} has no data record (classes, preprocessing); it cannot be used to predict"
        )
    classes = list(meta.get("classes") or [str(i) for i in range(num_outputs or 0)])
    return device, run_model, lambda image: preprocess_image(image, meta), classes, name, num_outputs


def _load_weights(weights: str, model_name: str | None, device_name: str | None, say) -> Loaded:
    """Registered weights (their transform and class names), a copy of them, a resnets weights file (its
    data record), or another weights file for ``--model`` (the model's default preprocessing)."""
    device = select_device(device_name)
    if Path(weights).exists() or _is_path(weights):
        entry, path = local_entry_file(weights)
        if entry is None:
            return _load_file(path, model_name, device, say)
        if model_name and model_name != entry.model:
            raise ConfigError(
                f"--weights {path} is a copy of {entry.name}, for {entry.model}, not --model {model_name}"
            )
        request = WeightsRequest(entry, path)
    elif model_name:
        request = requested_weights(model_name, weights)
    else:
        owner, tag = split_name(weights)
        request = WeightsRequest(get_weights(owner, tag))
    entry = request.entry
    if not entry.num_classes:
        raise ConfigError(
            f"weights {entry.name} have no classifier ({entry.dataset}): they are for features "
            "or fine-tuning, not for predicting classes"
        )
    model = create_model(entry.model, num_classes=entry.num_classes, in_chans=entry.in_chans)
    load_requested(model, request)
    transform = entry.transform()
    classes = list(entry.classes) or [str(i) for i in range(entry.num_classes)]
    return (
        device,
        model.eval().to(device),
        _tensor_input(transform, entry.in_chans),
        classes,
        entry.name,
        entry.num_classes,
    )


def _load_file(path: Path, model_name: str | None, device: torch.device, say) -> Loaded:
    metadata = load_weights_metadata(path) if path.suffix == ".safetensors" else {}
    spec, data = metadata.get("model"), metadata.get("data")
    if spec and data and not model_name:  # a run's model.safetensors: its own model and preprocessing
        model = create_model_from_spec(json.loads(spec))
        load_requested(model, WeightsRequest(path=path))
        meta = json.loads(data)
        classes = list(meta.get("classes") or [str(i) for i in range(model.num_classes)])
        return (
            device,
            model.eval().to(device),
            lambda image: preprocess_image(image, meta),
            classes,
            model.resnets_spec["name"],
            model.num_classes,
        )
    if not model_name:
        raise ConfigError(
            f"--weights {path} is not registered weights and does not name its model: add --model"
        )
    state = read_state_dict(path)
    model = create_model(model_name, **_file_shape(state))
    del state  # load_requested reads the file again, checked against the model
    load_requested(model, WeightsRequest(path=path))
    transforms = InferenceTransforms.from_pretrained_cfg(model.pretrained_cfg)
    imagenet = class_names("imagenet-1k")
    imagenet_head = model.num_classes == len(imagenet)
    classes = list(imagenet) if imagenet_head else [str(i) for i in range(model.num_classes)]
    say(
        f"note: {path.name} is not in the weights registry: {model_name}'s default preprocessing (resize "
        f"{transforms.resize_size}, crop {transforms.crop_size}, {transforms.interpolation})"
        + (", ImageNet-1K class names" if imagenet_head else "")
    )
    return (
        device,
        model.eval().to(device),
        _tensor_input(transforms.build(), model.in_chans),
        classes,
        model_name,
        model.num_classes,
    )


def _file_shape(state: dict) -> dict[str, int]:
    classes, chans = file_classes(state), file_in_chans(state)
    return ({"num_classes": classes} if classes else {}) | ({"in_chans": chans} if chans else {})


def _tensor_input(transform: Callable[[torch.Tensor], torch.Tensor], in_chans: int) -> Preprocess:
    """An image as the weights want it: the channels (grey or RGB, alpha dropped), then the transform of the
    uint8 tensor (as the evaluation of our shipped weights computes it)."""
    return lambda image: transform(pil_to_uint8(image, in_chans))


def _is_path(text: str) -> bool:
    return "/" in text or text.endswith((".pth", ".pt", ".bin", ".safetensors"))
