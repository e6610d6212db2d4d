"""Model weights in and out: torchvision/timm state dicts, resnets checkpoints, safetensors files.

``load_weights_into`` is what ``resnets train --init-weights`` and ``resnets import-weights`` call:
it reads a file safely (``torch.load(weights_only=True)`` or safetensors), checks every key and
shape against the model, and either loads it or raises a ``CheckpointError`` that lists what
does not fit. Our own weights files are safetensors written atomically by ``save_weights``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .checkpoints import clean_state_dict, ema_model_weights
from .errors import CheckpointError, ResnetsError, first_line
from .io import save_safetensors
from .models.interop import is_timm_v2_state_dict, timm_v2_state_dict
from .models.registry import model_spec

WEIGHTS_FORMAT = "resnets-weights"
# Wrappers other tools put around a state dict: resnets/timm train checkpoints ("state_dict"),
# and the common {"model": ...} / {"model_state_dict": ...} layouts.
_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
# timm heads that are not ResNet's plain `fc` (ClassifierHead in resnetv2 and newer nets).
_KEY_RENAMES = {"head.fc.": "fc."}
_HEAD = "fc."
_LIST_LIMIT = 8  # keys shown per kind in an error message


@dataclass
class ImportReport:
    """What ``load_weights_into`` did, for the run to print (and for tests to check)."""

    path: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    renamed: int = 0
    head_replaced: bool = False
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"loaded {self.loaded} tensors from {self.path}"]
        if self.renamed:
            out.append(f"renamed {self.renamed} keys (DDP/compile prefixes, timm head and resnetv2 names)")
        return out + self.notes


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (.safetensors, or .pth/.pt/.bin loaded with weights_only=True).

    Accepts plain state dicts (torchvision, timm), checkpoints that wrap one (resnets, timm
    train checkpoints), and strips DDP/compile prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist (or is not a file)")
    if path.suffix == ".safetensors":
        obj: object = load_weights(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any failure here means the file is not a readable weights file
            raise CheckpointError(
                f"cannot read weights file {path}: {first_line(exc)}. It must be a PyTorch state dict "
                "(.pth/.pt saved with torch.save, loadable with weights_only=True) or a .safetensors file; "
                "the file may be truncated or of another kind."
            ) from None
    state = _unwrap(obj, path)
    return clean_state_dict(state)


def load_weights_into(
    model: nn.Module, path: str | os.PathLike, *, replace_head: bool = True
) -> ImportReport:
    """Load the weights in ``path`` into ``model``, checking every key and shape first.

    When only the classifier (``fc``) differs (another number of classes, or a head-less
    feature-extractor file) and ``replace_head`` is True, the model keeps its freshly
    initialised head and the report says so: the usual fine-tuning case. When only the stem
    convolution differs in input channels (ImageNet RGB weights, grayscale model), its filters
    are adapted as timm does (summed for one channel, repeated and rescaled otherwise).
    Anything else that does not fit raises ``CheckpointError`` naming the file and the keys.
    """
    state = read_state_dict(path)
    report = ImportReport(path=str(path))
    state, report.renamed = _map_key_names(state, model)
    target = model.state_dict()
    _check_values(path, state, target)

    report.missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    report.unexpected = [k for k in state if k not in target]
    report.mismatched = [
        (k, tuple(v.shape), tuple(target[k].shape))
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    state = _adapt_input_conv(model, state, report)
    if replace_head:
        _drop_head_for_headless_model(model, state, report)
    _resolve_head(model, state, report, replace_head)
    if report.missing or report.unexpected or report.mismatched:
        raise CheckpointError(_mismatch_message(path, model, report))

    head_keys = [k for k in state if k.startswith(_HEAD)] if report.head_replaced else []
    for key in head_keys:
        del state[key]
    result = model.load_state_dict(state, strict=False)
    leftover = [k for k in result.missing_keys if not k.startswith(_HEAD) or not report.head_replaced]
    leftover = [k for k in leftover if not k.endswith("num_batches_tracked")]
    if leftover or result.unexpected_keys:  # cannot happen after the checks above; guard anyway
        raise CheckpointError(f"weights file {path}: keys did not load: {leftover + result.unexpected_keys}")
    report.loaded = len(state)
    return report


def save_weights(
    model: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write the model's state dict (or a state dict) as safetensors, atomically.

    The file's metadata holds ``format`` and, for a model of the zoo, its ``model`` spec
    (JSON), so that the weights say which architecture they belong to.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {"format": WEIGHTS_FORMAT}
    if isinstance(model, nn.Module):
        spec = _model_spec_or_none(model)
        if spec is not None:
            meta["model"] = json.dumps(spec)
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return save_safetensors(tensors, path, metadata=meta)


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (on CPU); ``CheckpointError`` if it is not one."""
    try:
        return load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} does not exist") from None
    except Exception as exc:
        raise CheckpointError(
            f"cannot read safetensors file {path}: {first_line(exc)} (truncated, or not a safetensors file)"
        ) from None


def load_weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors file (``format``, ``model`` spec as JSON ...)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"cannot read safetensors file {path}: {first_line(exc)}") from None


# ---------------------------------------------------------------------------------------------
def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if (
        isinstance(obj, Mapping)
        and obj.get("format") == "resnets"
        and obj.get("eval_weights") == "ema"
        and isinstance(obj.get("ema"), Mapping)
    ):  # a run with EMA evaluated (and exports) its EMA weights
        return _unwrap(ema_model_weights(obj["ema"]), path)
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                return _unwrap(inner, path)
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path} holds no state dict (found {type(obj).__name__}); expected a mapping "
            "of parameter names to tensors"
        )
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path} is not a state dict: entries {not_tensors[:_LIST_LIMIT]} are not tensors"
        )
    return dict(obj)


def _check_values(path, state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> None:
    """Weights must be floating point where the model's are, and finite: an int or bool tensor would be
    cast silently, a NaN would only show as a NaN loss."""
    kinds = [
        f"{k} ({v.dtype})"
        for k, v in state.items()
        if k in target and target[k].is_floating_point() and not v.is_floating_point()
    ]
    if kinds:
        raise CheckpointError(
            f"weights file {path} holds non-floating-point tensors where the model has "
            f"weights: {', '.join(kinds[:_LIST_LIMIT])}{_more(kinds)}; it is not a weights "
            f"file of this model (or it was damaged)"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not _finite(v)]
    if bad:
        raise CheckpointError(
            f"weights file {path} holds NaN or infinite values in {len(bad)} tensor(s): "
            f"{', '.join(bad[:_LIST_LIMIT])}{_more(bad)}; these weights are unusable "
            f"(a diverged run?): use an earlier checkpoint"
        )


def _finite(tensor: torch.Tensor) -> bool:
    """Every value finite; float8 tensors (no ``isfinite`` kernel) are checked in float32."""
    if tensor.element_size() == 1:
        tensor = tensor.float()
    return bool(torch.isfinite(tensor).all())


def _map_key_names(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], int]:
    """Rename keys that other libraries spell differently; timm's ResNets already match torchvision, its
    pre-activation ``resnetv2_*`` nets have names of their own (``stages.0.blocks.0.norm1`` ...)."""
    target = model.state_dict()
    out, renamed = {}, 0
    if is_timm_v2_state_dict(state):
        translated = timm_v2_state_dict(state, set(target))
        renamed = sum(old != new for old, new in zip(state, translated, strict=True))
        state = translated
    for key, value in state.items():
        new = key
        if key not in target:
            for old_prefix, new_prefix in _KEY_RENAMES.items():
                if key.startswith(old_prefix):
                    new = new_prefix + key[len(old_prefix) :]
        # A classifier stored as a 1x1 convolution (timm ClassifierHead with use_conv) is our Linear.
        if new in target and value.dim() == 4 and value.shape[2:] == (1, 1) and target[new].dim() == 2:
            value = value.flatten(1)
        renamed += new != key
        out[new] = value
    return out, renamed


def _adapt_input_conv(model: nn.Module, state: dict[str, torch.Tensor], report: ImportReport):
    """Adapt stem filters to another number of input channels (as timm's ``adapt_input_conv``)."""
    stem = _first_conv(model)
    if stem is None:
        return state
    key = f"{stem[0]}.weight"
    bad = [m for m in report.mismatched if m[0] == key]
    if not bad:
        return state
    weight, want = state[key], stem[1].weight.shape
    if weight.shape[0] != want[0] or weight.shape[2:] != want[2:]:
        return state
    have_c, want_c = weight.shape[1], want[1]
    if want_c == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:  # repeat the filters over the new channels and rescale so activations keep their size
        repeats = -(-want_c // have_c)
        adapted = weight.repeat(1, repeats, 1, 1)[:, :want_c] * (have_c / want_c)
    state[key] = adapted
    report.mismatched = [m for m in report.mismatched if m[0] != key]
    report.notes.append(
        f"adapted {key} from {have_c} to {want_c} input channels "
        f"({'summed over channels' if want_c == 1 else 'repeated and rescaled'})"
    )
    return state


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    return None


def _drop_head_for_headless_model(model: nn.Module, state: dict, report: ImportReport) -> None:
    """A model without a classifier (timm's num_classes=0) takes a file's backbone and leaves its fc."""
    file_head = [k for k in report.unexpected if k.startswith(_HEAD)]
    if not file_head or any(k.startswith(_HEAD) for k in model.state_dict()):
        return
    for key in file_head:
        del state[key]
    report.unexpected = [k for k in report.unexpected if not k.startswith(_HEAD)]
    report.notes.append("the model has no classifier (num_classes=0): the file's fc was left out")


def _resolve_head(model: nn.Module, state: dict, report: ImportReport, replace_head: bool) -> None:
    """Accept a head that differs only in class count (or is absent) when ``replace_head``."""
    head_missing = [k for k in report.missing if k.startswith(_HEAD)]
    head_bad = [m for m in report.mismatched if m[0].startswith(_HEAD)]
    if not (head_missing or head_bad):
        return
    others = (
        [k for k in report.missing if not k.startswith(_HEAD)]
        or report.unexpected
        or [m for m in report.mismatched if not m[0].startswith(_HEAD)]
    )
    # The head differs only in its output size when its input size (num_features) matches.
    same_features = all(m[1][1:] == m[2][1:] for m in head_bad)
    if others or not same_features or not replace_head:
        return
    file_classes = state[f"{_HEAD}weight"].shape[0] if f"{_HEAD}weight" in state else None
    model_classes = getattr(model, "num_classes", None) or model.state_dict()[f"{_HEAD}weight"].shape[0]
    if file_classes is None:
        why = "the file has no classifier (fc)"
    else:
        why = f"the file's classifier has {file_classes} classes, the model {model_classes}"
    report.missing = [k for k in report.missing if not k.startswith(_HEAD)]
    report.mismatched = [m for m in report.mismatched if not m[0].startswith(_HEAD)]
    report.head_replaced = True
    report.notes.append(f"replaced the head: {why}; fc keeps its fresh initialisation and must be trained")


def _mismatch_message(path, model: nn.Module, report: ImportReport) -> str:
    name = (_model_spec_or_none(model) or {}).get("name", type(model).__name__)
    parts = []
    if report.mismatched:
        shown = ", ".join(
            f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in report.mismatched[:_LIST_LIMIT]
        )
        parts.append(f"{len(report.mismatched)} mis-shaped ({shown}{_more(report.mismatched)})")
    if report.missing:
        parts.append(
            f"{len(report.missing)} missing from the file "
            f"({', '.join(report.missing[:_LIST_LIMIT])}{_more(report.missing)})"
        )
    if report.unexpected:
        parts.append(
            f"{len(report.unexpected)} unexpected in the file "
            f"({', '.join(report.unexpected[:_LIST_LIMIT])}{_more(report.unexpected)})"
        )
    only_head = (
        all(k.startswith(_HEAD) for k in report.missing + [m[0] for m in report.mismatched])
        and not report.unexpected
    )
    hint = (
        "only the classifier differs: allow replacing the head"
        if only_head
        else f"are these weights for another architecture than {name}?"
    )
    return f"weights file {path} does not fit model {name}: {'; '.join(parts)}. {hint[0].upper()}{hint[1:]}"


def _more(items: list) -> str:
    return f", ... {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""


def _model_spec_or_none(model: nn.Module) -> dict | None:
    try:
        return model_spec(model)
    except ResnetsError:  # a model built outside the zoo has no spec
        return None
