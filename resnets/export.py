"""A deployable model: BatchNorm folded into convolutions, ONNX and ``torch.export`` (.pt2) files.

Both exporters keep the batch dimension dynamic, and every file is checked after writing:
ONNX by running it in onnxruntime, .pt2 by reloading it, each against eager PyTorch.

Exported files describe themselves (``export_metadata``): ONNX ``metadata_props`` and the .pt2 archive's
extra files hold the model name, input size and layout, the preprocessing (pixel / 255, then
(x - mean) / std), the class names, and the whole data record ``resnets predict`` needs
(``read_export_metadata``, ``load_exported``).
"""

from __future__ import annotations

import copy
import io
import json
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import CheckpointError, ResnetsError, first_line
from .io import write_atomic, write_bytes

_CONV_OPS = {torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}
_BN_OPS = {torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit_no_training.default}
ONNX_TOLERANCE = 1e-4  # logit difference accepted between an export and eager PyTorch, of max(1, |logit|)


# -- BatchNorm folding ------------------------------------------------------------------------
def conv_bn_pairs(model: nn.Module, example: Tensor | None = None) -> list[tuple[str, str]]:
    """(conv, bn) module names where the BN can be folded into the conv before it.

    That needs the BN's input to be the conv's output and nothing else to read that output.
    In an original ResNet every BN follows its conv. In a pre-activation ResNet the BN that
    opens a unit follows an addition (and feeds a ReLU before the next conv), so it stays;
    only the BNs inside the residual branch (and the stem's) fold.
    The graph comes from ``torch.export`` on ``example`` (default: one small image), which,
    unlike ``torch.fx.symbolic_trace``, follows Python control flow such as input checks.
    """
    device = next(model.parameters()).device
    if example is None:
        example = torch.zeros(1, _in_channels(model), 64, 64)
    was_training = model.training
    try:
        graph = torch.export.export(model.eval(), (example.to(device),)).graph  # eval: BN as an affine map
    except Exception as exc:
        raise ResnetsError(
            f"cannot fold BatchNorm in {type(model).__name__}: torch.export failed "
            f"({first_line(exc)}); export without --fold-bn"
        ) from None
    finally:
        model.train(was_training)
    modules = dict(model.named_modules())

    def module_of(node) -> tuple[str, nn.Module | None]:
        stack = node.meta.get("nn_module_stack") or {}
        name = list(stack.values())[-1][0] if stack else ""
        return name, modules.get(name)

    calls: Counter[str] = Counter()  # graph nodes per conv/BN module: >1 means the module is reused
    for node in graph.nodes:
        name, module = module_of(node)
        if (
            node.op == "call_function"
            and isinstance(module, (nn.Conv2d, nn.BatchNorm2d))
            and node.target in _CONV_OPS | _BN_OPS
        ):
            calls[name] += 1
    pairs = []
    for node in graph.nodes:
        bn_name, bn = module_of(node)
        if node.op != "call_function" or node.target not in _BN_OPS or not isinstance(bn, nn.BatchNorm2d):
            continue
        source = node.args[0]
        conv_name, conv = module_of(source)
        if (
            source.target in _CONV_OPS
            and isinstance(conv, nn.Conv2d)
            and len(source.users) == 1  # no shortcut or other branch reads the conv's output
            and calls[conv_name] == 1
            and calls[bn_name] == 1
            and bn.track_running_stats
            and bn.running_mean is not None  # eval BN is a fixed affine map
        ):
            pairs.append((conv_name, bn_name))
    return pairs


def _in_channels(model: nn.Module) -> int:
    if isinstance(getattr(model, "in_chans", None), int):
        return model.in_chans
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ResnetsError(f"{type(model).__name__} has no Conv2d layer; nothing to fold")
    return first.in_channels


def fold_bn(model: nn.Module, *, inplace: bool = False, example: Tensor | None = None) -> nn.Module:
    """The model in eval mode with every foldable BatchNorm folded into the conv before it.

    conv(x) * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps)) is one conv
    with rescaled filters and a bias; the folded BN becomes ``nn.Identity``. Outputs equal
    the unfolded model's in eval mode (to float rounding). BNs that cannot fold (see
    ``conv_bn_pairs``) are left as they are. Returns a copy unless ``inplace``.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for conv_name, bn_name in conv_bn_pairs(model, example):
        fused = fuse_conv_bn_eval(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _set_submodule(model, conv_name, fused)
        _set_submodule(model, bn_name, nn.Identity())
    return model


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


# -- metadata ---------------------------------------------------------------------------------
METADATA_KEYS = (
    "model_name",
    "input_size",
    "layout",
    "input_scale",
    "normalization",
    "mean",
    "std",
    "resize",
    "crop",
    "interpolation",
    "class_names",
    "resnets_data",
)


def export_metadata(
    model_name: str, input_size: tuple[int, int, int], data: Mapping | None
) -> dict[str, str]:
    """The strings an exported file carries about itself (ONNX ``metadata_props``, .pt2 extra files).

    ``model_name``; ``input_size`` (JSON [C, H, W]) and ``layout`` ("NCHW", float32); ``input_scale``
    ("1/255": pixels become [0, 1]), then ``normalization`` ("per_channel": ``mean`` and ``std`` JSON lists of
    C numbers; "per_pixel": C x H x W lists) gives the input (pixel / 255 - mean) / std; ``resize`` (shorter
    side, bilinear), ``crop`` (centre); ``class_names`` (JSON list, logit order); ``resnets_data`` (the
    checkpoint's whole data record, JSON). Without a data record only the first three are written.
    """
    meta = {"model_name": model_name, "input_size": json.dumps(list(input_size)), "layout": "NCHW"}
    if not data:
        return meta
    norm = data.get("normalization") or {}
    mean, std = norm.get("mean"), norm.get("std")
    if norm.get("mode") == "per_channel":  # stored as C x 1 x 1
        mean, std = torch.tensor(mean).flatten().tolist(), torch.tensor(std).flatten().tolist()
    prep = data.get("eval_preprocess") or {}
    classes = data.get("classes") or [str(i) for i in range(int(data.get("num_classes") or 0))]
    meta.update(
        {
            "input_scale": "1/255",
            "normalization": str(norm.get("mode")),
            "mean": json.dumps(mean),
            "std": json.dumps(std),
            "resize": str(prep.get("resize")),
            "crop": str(prep.get("crop")),
            "interpolation": str(prep.get("interpolation", "bilinear")),
            "class_names": json.dumps(list(classes)),
            "resnets_data": json.dumps(data),
        }
    )
    return meta


def read_export_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of an exported .onnx or .pt2 file (``export_metadata``'s keys; {} if it has none)."""
    path = Path(path)
    try:
        if path.suffix == ".onnx":
            import onnx  # the exporter's own dependency; imported only to read an exported file

            proto = onnx.load(str(path), load_external_data=False)
            return {p.key: p.value for p in proto.metadata_props}
        with zipfile.ZipFile(path) as archive:  # a .pt2 file: extra files are <archive>/extra/<name>
            return {
                name.rsplit("/", 1)[-1]: archive.read(name).decode()
                for name in archive.namelist()
                if "/extra/" in name and name.rsplit("/", 1)[-1] in METADATA_KEYS
            }
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"cannot read exported model {path}: {first_line(exc)}") from None


def load_exported(path: str | os.PathLike) -> tuple[Callable[[Tensor], Tensor], dict[str, str]]:
    """A function images -> logits running an exported .onnx (onnxruntime, CPU) or .pt2 file, and its
    metadata."""
    path = Path(path)
    metadata = read_export_metadata(path)
    if path.suffix == ".onnx":
        import onnxruntime  # optional extra ('resnets[export]'), imported only to run an exported file

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name

        def run_onnx(images: Tensor) -> Tensor:
            return torch.from_numpy(session.run(None, {input_name: images.cpu().float().numpy()})[0])

        return run_onnx, metadata
    try:
        module = torch.export.load(str(path)).module()
    except Exception as exc:
        raise CheckpointError(f"cannot load exported program {path}: {first_line(exc)}") from None

    def run_pt2(images: Tensor) -> Tensor:
        return module(images.cpu().float())

    return run_pt2, metadata


def _write_onnx_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    import onnx  # the exporter's own dependency; imported only when there is metadata to add

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, dict(metadata))
    onnx.save(proto, str(path))


# -- ONNX -------------------------------------------------------------------------------------
def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example: Tensor,
    *,
    tolerance: float = ONNX_TOLERANCE,
    metadata: Mapping[str, str] | None = None,
) -> float:
    """Write ``model`` (put in eval mode on the CPU) as ONNX, dynamic batch, checked in onnxruntime.

    Returns the max absolute difference between onnxruntime's and eager PyTorch's logits on a
    batch of another size than ``example`` (which checks that the batch really is dynamic).
    A difference above ``tolerance`` is an error and no file is left behind. ``metadata``
    (``export_metadata``) goes into the file's ``metadata_props``.
    """
    model = model.eval().cpu()
    example = example.cpu()
    diffs = []

    def write(tmp: Path) -> None:
        try:
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: "batch"},),
                external_data=False,
                verbose=False,
            )
        except Exception as exc:
            raise ResnetsError(
                f"ONNX export of {type(model).__name__} failed: {first_line(exc)}; "
                "--format pt2 may still work"
            ) from None
        if metadata:
            _write_onnx_metadata(tmp, metadata)
        diffs.append(onnx_max_abs_diff(tmp, model, _check_batch(example)))
        allowed = allowed_difference(model, _check_batch(example), tolerance)
        if not diffs[0] <= allowed:
            raise ResnetsError(
                f"ONNX file differs from PyTorch by {diffs[0]:.3g} (max abs logit difference, "
                f"allowed {allowed:.3g}: {tolerance:g} of the largest logit); not written to "
                f"{path}"
            )

    write_atomic(path, write)
    return diffs[0]


def onnx_max_abs_diff(onnx_path: str | os.PathLike, model: nn.Module, images: Tensor) -> float:
    """Max absolute difference between onnxruntime's output on ``images`` and the eager model's."""
    import onnxruntime  # optional extra ('resnets[export]'), imported only to check an export

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    (ort_logits,) = session.run(None, {input_name: images.cpu().numpy()})
    with torch.inference_mode():
        eager = model.eval().cpu()(images.cpu())
    return float((torch.from_numpy(ort_logits) - eager).abs().max())


# -- torch.export -----------------------------------------------------------------------------
def export_pt2(
    model: nn.Module,
    path: str | os.PathLike,
    example: Tensor,
    *,
    tolerance: float = ONNX_TOLERANCE,
    metadata: Mapping[str, str] | None = None,
) -> float:
    """Save ``model`` (put in eval mode on the CPU) as a ``torch.export`` program (.pt2, dynamic batch),
    reload it and compare with eager PyTorch. ``metadata`` (``export_metadata``) goes into the archive's
    extra files, one per key (``torch.export.load(path, extra_files={key: ""})`` reads them back).

    Returns the max absolute logit difference of the reloaded program on a batch of another size.
    """
    model = model.eval().cpu()
    example = example.cpu()
    batch = torch.export.Dim("batch")
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise ResnetsError(f"torch.export of {type(model).__name__} failed: {first_line(exc)}") from None
    buffer = io.BytesIO()  # torch.export.save wants a buffer or a name ending in .pt2, not a temp name
    torch.export.save(program, buffer, extra_files=dict(metadata or {}))
    diff = pt2_max_abs_diff(io.BytesIO(buffer.getvalue()), model, _check_batch(example))
    allowed = allowed_difference(model, _check_batch(example), tolerance)
    if not diff <= allowed:
        raise ResnetsError(
            f"reloaded .pt2 program differs from PyTorch by {diff:.3g} (allowed "
            f"{allowed:.3g}: {tolerance:g} of the largest logit); not written to {path}"
        )
    write_bytes(path, buffer.getvalue())
    return diff


def pt2_max_abs_diff(pt2: str | os.PathLike | io.BytesIO, model: nn.Module, images: Tensor) -> float:
    """Reload a .pt2 file (or buffer); the max absolute difference of its output from the model's."""
    program = torch.export.load(pt2 if isinstance(pt2, io.BytesIO) else str(pt2))
    with torch.inference_mode():
        exported = program.module()(images.cpu())
        eager = model.eval().cpu()(images.cpu())
    return float((exported - eager).abs().max())


def allowed_difference(model: nn.Module, images: Tensor, tolerance: float = ONNX_TOLERANCE) -> float:
    """The largest logit difference an export may show: ``tolerance`` relative to the output's scale
    (float32 rounding grows with the values: logits of 26,000 differ by 0.004 at 1.5e-7), absolute for
    logits below 1."""
    with torch.inference_mode():
        scale = float(model.eval().cpu()(images.cpu()).abs().max())
    return tolerance * max(1.0, scale)


def _check_batch(example: Tensor) -> Tensor:
    """A random batch one larger than the example: the exported batch dimension must be dynamic."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn((example.shape[0] + 1, *example.shape[1:]), generator=generator)
