"""The fast inference path: a trained model turned into the quickest callable images -> logits.

Every backend starts from the same deployable graph: BatchNorm folded into the convolutions
(``resnets.export.fold_bn``; in eval mode BN is a fixed affine map, so this is exact up to
float rounding). The PyTorch backends run it channels-last (oneDNN's preferred layout on CPUs);
ONNX Runtime and OpenVINO choose their own blocked layouts. Then:

- ``"onnxruntime"`` (default): the folded graph exported to ONNX (dynamic batch) and run by
  ONNX Runtime, which fuses conv+add+ReLU and runs its own blocked-layout kernels with little
  per-operator overhead; the fastest float32 path measured here (docs/performance.md).
- ``"openvino"``: the same graph through OpenVINO (``pip install openvino``), also float32.
- ``"compile"``: ``torch.compile`` (inductor) with ``freezing`` (weights become constants, so
  oneDNN convolutions get pre-packed weights); stays in PyTorch and runs on CUDA too.
- ``"eager"``: the folded, channels-last model as it is.

``quantize_int8`` is the opt-in int8 path: ONNX Runtime static quantization (QDQ or QOperator),
calibrated on training images; its accuracy change must be measured on the task (it is small
for ResNets with per-channel weight scales, but not zero).
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError, ResnetsError, unknown_name
from .export import export_onnx, fold_bn
from .io import write_bytes
from .runtime import compile_module

BACKENDS = ("onnxruntime", "openvino", "compile", "eager")
DEFAULT_BACKEND = "onnxruntime"
INT8_FORMATS = ("qdq", "qoperator")
ONNX_INPUT = "input"  # the input name resnets.export.export_onnx gives


class FastModel:
    """A callable ``images -> logits`` made for inference, with the flags that made it.

    ``flags`` is a plain dict (JSON-ready) recording the backend and every option that affects
    speed or results, so a benchmark or a deployment says exactly what ran.
    """

    def __init__(self, run: Callable[[Tensor], Tensor], flags: dict[str, Any]) -> None:
        self._run = run
        self.flags = flags

    def __call__(self, images: Tensor) -> Tensor:
        return self._run(images)

    def __repr__(self) -> str:
        return f"FastModel({', '.join(f'{k}={v!r}' for k, v in self.flags.items())})"


def optimize_for_inference(
    model: nn.Module, example: Tensor, *, backend: str = DEFAULT_BACKEND, threads: int | None = None
) -> FastModel:
    """The fastest way to run ``model`` (any image classifier) on inputs shaped like ``example``.

    ``example`` fixes the image size and channels; the batch stays dynamic. ``threads`` (ONNX
    Runtime and OpenVINO; default: torch's thread count) sets the intra-op threads. The model
    itself is not changed (folding works on a copy).
    """
    if backend not in BACKENDS:
        raise unknown_name("inference backend", backend, BACKENDS)
    _check_example(example)
    threads = threads or torch.get_num_threads()
    device = _device_of(model)
    if backend in ("onnxruntime", "openvino") and device.type != "cpu":
        raise ConfigError(
            f"the {backend} backend runs on the CPU; move the model to the CPU or use "
            f"backend='compile' on {device}"
        )
    folded = fold_bn(model, example=example[:1].to(device))
    flags: dict[str, Any] = {
        "backend": backend,
        "fold_bn": True,
        "dtype": "float32",
        "channels_last": backend in ("compile", "eager"),
        "torch": str(torch.__version__),
    }
    if backend == "onnxruntime":
        return _onnxruntime_model(_onnx_bytes(folded, example), threads, flags)
    if backend == "openvino":
        return _openvino_model(folded, example, threads, flags)
    folded = folded.to(memory_format=torch.channels_last)
    run: Callable[[Tensor], Tensor] = folded
    if backend == "compile":
        # freezing: parameters become graph constants, which lets inductor fold them and pre-pack
        # the convolution weights for oneDNN (its largest CPU inference gain)
        run = compile_module(folded, options={"freezing": True})
        flags["compile"] = {"backend": "inductor", "freezing": True}

    def forward(images: Tensor) -> Tensor:
        with torch.inference_mode():
            return run(images.to(device).contiguous(memory_format=torch.channels_last))

    return FastModel(forward, flags)


def quantize_int8(
    model: nn.Module,
    calibration: Iterable[Tensor] | Tensor,
    *,
    fmt: str = "qdq",
    per_channel: bool = True,
    threads: int | None = None,
    path: str | Path | None = None,
) -> FastModel:
    """Opt-in int8 inference: ONNX Runtime static quantization of the BN-folded model.

    ``calibration``: batches of preprocessed training images (or one tensor, split into batches
    of 32), from which the activation ranges are taken (MinMax). Weights are signed int8 per
    output channel, activations unsigned int8 (u8s8: the form VNNI's dot-product instructions
    take). ``fmt``: "qdq" (QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into
    int8 kernels, the portable form) or "qoperator" (QLinearConv and friends). ``path`` also
    writes the quantized model there. Accuracy changes a little: measure it on the task.
    """
    try:  # onnxruntime is an optional extra ('resnets[export]'), imported only when asked for
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise ResnetsError(
            f"int8 inference needs onnxruntime ({exc}); pip install 'resnets[export]'"
        ) from None

    if fmt not in INT8_FORMATS:
        raise ConfigError(f"int8 format {fmt!r} is not one of {', '.join(INT8_FORMATS)}")
    batches = list(calibration.split(32) if isinstance(calibration, Tensor) else calibration)
    if not batches:
        raise ConfigError("int8 calibration needs at least one batch of images")
    for batch in batches:
        _check_example(batch)
    model_cpu = _cpu_copy(model)
    folded = fold_bn(model_cpu, example=batches[0][:1].cpu())
    with tempfile.TemporaryDirectory(prefix="resnets-int8-") as tmp:
        fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        fp32_path.write_bytes(_onnx_bytes(folded, batches[0]))
        quantize_static(
            str(fp32_path),
            str(int8_path),
            _CalibrationReader(batches),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            per_channel=per_channel,
            reduce_range=False,  # VNNI: no 7-bit workaround needed
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        data = int8_path.read_bytes()
    if path is not None:
        write_bytes(path, data)
    flags = {
        "backend": "onnxruntime",
        "fold_bn": True,
        "dtype": "int8",
        "int8_format": fmt,
        "per_channel": per_channel,
        "activations": "uint8",
        "weights": "int8",
        "calibration": "minmax",
        "calibration_images": sum(len(b) for b in batches),
    }
    return _onnxruntime_model(data, threads or torch.get_num_threads(), flags)


def max_abs_diff(fast: Callable[[Tensor], Tensor], model: nn.Module, images: Tensor) -> float:
    """Largest absolute difference between ``fast``'s logits and the eager model's (eval mode)."""
    was_training = model.training
    try:
        with torch.inference_mode():
            eager = model.eval()(images.to(_device_of(model)))
            return float((fast(images).float().to(eager.device) - eager).abs().max())
    finally:
        model.train(was_training)


# -- backends ------------------------------------------------------------------------------------
def _onnx_bytes(model: nn.Module, example: Tensor) -> bytes:
    """ONNX (dynamic batch) of ``model``, checked against it in ONNX Runtime by export_onnx."""
    with tempfile.TemporaryDirectory(prefix="resnets-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, path, example[:1].cpu())
        return path.read_bytes()


def _onnxruntime_model(onnx_model: bytes, threads: int, flags: dict[str, Any]) -> FastModel:
    try:  # optional extra, imported only for this backend
        import onnxruntime as ort
    except ImportError as exc:
        raise ResnetsError(
            f"the onnxruntime backend needs onnxruntime ({exc}); "
            "pip install 'resnets[export]' or choose backend='compile'"
        ) from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    flags = {
        **flags,
        "onnxruntime": ort.__version__,
        "graph_optimization": "ORT_ENABLE_ALL",
        "intra_op_threads": threads,
        "execution_mode": "sequential",
    }

    def forward(images: Tensor) -> Tensor:
        array = images.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(session.run(None, {name: array})[0])

    return FastModel(forward, flags)


def _openvino_model(model: nn.Module, example: Tensor, threads: int, flags: dict[str, Any]) -> FastModel:
    try:  # optional ('resnets[bench]'), imported only for this backend
        import openvino as ov
    except ImportError as exc:
        raise ResnetsError(
            f"the openvino backend needs OpenVINO ({exc}); pip install 'resnets[bench]' "
            "or choose backend='onnxruntime'"
        ) from None
    example = example[:1].cpu()
    # OpenVINO traces the model with torch.jit.trace, which warns that it is deprecated and about the
    # models' Python input checks (they hold for the traced shapes); neither is the user's concern
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        converted = ov.convert_model(model.cpu().eval(), example_input=example)
    converted.reshape({converted.inputs[0]: ov.PartialShape([-1, *example.shape[1:]])})  # dynamic batch
    # f32 explicitly: on CPUs with bfloat16 instructions OpenVINO's default precision is bf16
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",
    }
    compiled = ov.Core().compile_model(converted, "CPU", config)
    request = compiled.create_infer_request()
    flags = {**flags, "openvino": ov.__version__, **{k.lower(): v for k, v in config.items()}}

    def forward(images: Tensor) -> Tensor:
        array = images.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(request.infer([array])[0].copy())

    return FastModel(forward, flags)


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over a list of image batches."""

    def __init__(self, batches: list[Tensor]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self._batches, None)
        return None if batch is None else {ONNX_INPUT: batch.detach().cpu().float().contiguous().numpy()}


# -- checks --------------------------------------------------------------------------------------
def _check_example(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"expected a float batch of images N x C x H x W, got {shape}")


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _cpu_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).cpu() if _device_of(model).type != "cpu" else model
