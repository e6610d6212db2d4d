"""A trained detector as an ONNX file, checked in onnxruntime against PyTorch.

torchvision's detectors export through the TorchScript-based exporter (``dynamo=False``; the
``torch.export`` one stops at their data-dependent shapes: the number of boxes left after NMS), as
torchvision's own ONNX tests do. The file takes one image (C x H x W, float in [0, 1], any size: the
resizing and normalisation are inside) and returns ``boxes`` (N x 4, x0 y0 x1 y1 in the input's pixels),
``labels`` (N, 1..K) and ``scores`` (N), and for a Mask R-CNN ``masks`` (N x 1 x H x W, each object's
probabilities pasted into the input's frame; torchvision traces its own ONNX-friendly paste loop). It is
written only once onnxruntime gives PyTorch's detections on each check image.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import ResnetsError, first_line
from ..io import write_bytes

OPSET = 17
BOX_TOLERANCE = 1e-2  # pixels
SCORE_TOLERANCE = 1e-3
MASK_TOLERANCE = 1e-3  # of a mask's probabilities


def output_names(detector: nn.Module) -> list[str]:
    """torchvision's detections: boxes, labels, scores, and masks where the detector has a mask branch."""
    heads = getattr(detector, "roi_heads", None)
    masks = heads is not None and heads.has_mask()
    return ["boxes", "labels", "scores", *(["masks"] if masks else [])]


def onnx_bytes(detector: nn.Module, example: torch.Tensor, opset: int = OPSET) -> bytes:
    """The detector (eval mode) as ONNX, traced on ``example`` (C x H x W) with dynamic image sizes."""
    buffer = io.BytesIO()
    detector = detector.eval()
    outputs = output_names(detector)
    dynamic = {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in outputs}}
    if "masks" in outputs:
        dynamic["masks"].update({2: "height", 3: "width"})
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice and tracer warnings
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                detector,
                ([example],),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=outputs,
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        except Exception as exc:  # the exporter's failure on this architecture: say so on one line
            raise ResnetsError(
                f"torchvision's detector did not export to ONNX ({first_line(exc)[:300]})"
            ) from None
    return buffer.getvalue()


def check_onnx(model: bytes, detector: nn.Module, images: Sequence[torch.Tensor]) -> dict[str, float]:
    """Run ``model`` in onnxruntime and the detector in PyTorch on each image; the largest box and score
    differences (``ResnetsError`` when the detections differ)."""
    import onnxruntime as ort  # heavy: imported when a file is checked

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = output_names(detector)
    worst = {"boxes": 0.0, "scores": 0.0, "detections": 0.0, **({"masks": 0.0} if "masks" in names else {})}
    for image in images:
        with torch.inference_mode():
            reference = detector.eval()([image])[0]
        found = dict(zip(names, session.run(None, {"image": image.numpy()}), strict=True))
        boxes, labels, scores = found["boxes"], found["labels"], found["scores"]
        if len(boxes) != len(reference["boxes"]) or labels.tolist() != reference["labels"].tolist():
            raise ResnetsError(
                f"the ONNX detector finds {len(boxes)} objects where PyTorch finds "
                f"{len(reference['boxes'])} (or other classes); the file was not written"
            )
        if len(boxes):
            worst["boxes"] = max(
                worst["boxes"], float((torch.from_numpy(boxes) - reference["boxes"]).abs().max())
            )
            worst["scores"] = max(
                worst["scores"], float((torch.from_numpy(scores) - reference["scores"]).abs().max())
            )
            if "masks" in found:
                difference = (torch.from_numpy(found["masks"]) - reference["masks"]).abs().max()
                worst["masks"] = max(worst["masks"], float(difference))
        worst["detections"] = max(worst["detections"], float(len(boxes)))
    if (
        worst["boxes"] > BOX_TOLERANCE
        or worst["scores"] > SCORE_TOLERANCE
        or worst.get("masks", 0.0) > MASK_TOLERANCE
    ):
        masks = f" and its masks by {worst['masks']:.3g}" if "masks" in worst else ""
        raise ResnetsError(
            f"the ONNX detector's boxes differ from PyTorch's by {worst['boxes']:.3g} pixels and "
            f"its scores by {worst['scores']:.3g}{masks}; the file was not written"
        )
    return worst


def export_detector_onnx(
    detector: nn.Module, path: str | os.PathLike, images: Sequence[torch.Tensor]
) -> dict:
    """Export (traced on the first image), check on every image, then write ``path`` atomically."""
    detector = detector.cpu().eval()
    images = [image.cpu() for image in images]
    model = onnx_bytes(detector, images[0])
    differences = check_onnx(model, detector, images)
    write_bytes(Path(path), model)
    return differences
