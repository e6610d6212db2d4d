"""A trained semantic segmenter as an ONNX file, checked in onnxruntime against PyTorch.

The file takes a batch of images (B x C x H x W, float in [0, 1], any size: the run's normalisation is
inside) and returns ``out``, the class scores of every pixel (B x K x H x W; argmax over K gives the
mask), as torchvision's FCN and DeepLabV3 do without their auxiliary head. It is written only once
onnxruntime gives PyTorch's scores on each check image.
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
SCORE_TOLERANCE = 1e-3


class Normalized(nn.Module):
    """The segmenter on [0, 1] images: normalised as in training, the ``out`` scores only."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)["out"]


def onnx_bytes(model: nn.Module, example: torch.Tensor, opset: int = OPSET) -> bytes:
    """``model`` (eval mode) as ONNX, traced on ``example`` (B x C x H x W) with dynamic batch and size."""
    buffer = io.BytesIO()
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}, "out": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice and tracer warnings
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model.eval(),
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=["out"],
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        except Exception as exc:  # the exporter's failure on this architecture: say so on one line
            raise ResnetsError(f"the segmenter did not export to ONNX ({first_line(exc)[:300]})") from None
    return buffer.getvalue()


def check_onnx(model: bytes, reference: nn.Module, images: Sequence[torch.Tensor]) -> float:
    """The largest score difference between onnxruntime and PyTorch on each image (``ResnetsError`` above
    the tolerance)."""
    import onnxruntime as ort  # heavy: imported when a file is checked

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    worst = 0.0
    for image in images:
        with torch.inference_mode():
            expected = reference.eval()(image[None])
        (found,) = session.run(None, {"images": image[None].numpy()})
        worst = max(worst, float((torch.from_numpy(found) - expected).abs().max()))
    if worst > SCORE_TOLERANCE:
        raise ResnetsError(
            f"the ONNX segmenter's scores differ from PyTorch's by {worst:.3g}; the file was not written"
        )
    return worst


def export_segmenter_onnx(
    model: nn.Module,
    mean: torch.Tensor,
    std: torch.Tensor,
    path: str | os.PathLike,
    images: Sequence[torch.Tensor],
) -> float:
    """Export (traced on the first image), check on every image, then write ``path`` atomically; the
    largest score difference."""
    wrapped = Normalized(model.cpu().eval(), mean, std).eval()
    images = [image.cpu() for image in images]
    onnx = onnx_bytes(wrapped, images[0][None])
    difference = check_onnx(onnx, wrapped, images)
    write_bytes(Path(path), onnx)
    return difference
