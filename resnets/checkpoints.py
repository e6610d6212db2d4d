"""The checkpoint file: what it holds, reading it safely, and rebuilding the model it holds.

A checkpoint is a ``torch.save`` dict of plain types (see docs/architecture.md, "Run folders"):
``format="resnets"``, ``format_version``, ``model`` (the spec), ``state_dict``, ``optimizer``,
``scheduler``, ``scaler``, ``ema``, ``epoch``, ``iteration``, ``rng``, ``config``, ``data``,
``versions``, ``metrics``. It is only ever read with ``torch.load(weights_only=True)``.
Where a run keeps its checkpoints (rotation, resume) is ``runs.py``'s concern.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .models.registry import create_model_from_spec

FORMAT = "resnets"
FORMAT_VERSION = 1
_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile


def clean_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Strip the ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) prefixes."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read one of our checkpoints safely (``weights_only=True``), or raise a clear CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = next((line for line in lines if "Unsupported global" in line), lines[0])
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: the file is truncated, corrupt or not a safe "
            f"PyTorch checkpoint ({detail[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a resnets checkpoint (no format='resnets' entry); for torchvision/timm "
            f"weights use --init-weights or `resnets import-weights`")
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{str(path)!r} has format version {ckpt['format_version']}, newer than this "
                              f"resnets ({FORMAT_VERSION}); upgrade resnets")
    for key in ("model", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {str(path)!r} has no {key!r} entry")
    ckpt["state_dict"] = clean_state_dict(ckpt["state_dict"])
    return ckpt


def load_state_into(model: torch.nn.Module, state_dict: Mapping[str, Any],
                    source: str = "checkpoint") -> None:
    """``model.load_state_dict`` (strict) with a CheckpointError listing what does not match."""
    state_dict = clean_state_dict(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a checkpoint was trained with and load its weights (EMA weights when the
    run used EMA, since those are what it evaluated). Returns ``(model in eval mode, checkpoint)``."""
    ckpt = load_checkpoint(path, map_location="cpu")
    try:
        model = create_model_from_spec(ckpt["model"])
    except Exception as exc:  # a spec we cannot rebuild is the checkpoint's fault, not a bug here
        raise CheckpointError(f"checkpoint {str(path)!r} holds a model spec this resnets cannot build "
                              f"({ckpt['model']!r}): {exc}") from None
    weights = ckpt["state_dict"]
    if ckpt.get("ema") and ckpt.get("eval_weights") == "ema":
        weights = ema_model_weights(ckpt["ema"])
    load_state_into(model, weights, source=f"checkpoint {str(path)!r}")
    return model.to(device).eval(), ckpt


def ema_model_weights(ema_state: Mapping[str, Any]) -> dict[str, Any]:
    """The model weights inside an ``AveragedModel`` state dict (``module.*``, without ``n_averaged``)."""
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}


def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from iter_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from iter_tensors(v)


def all_finite(state_dict: Mapping[str, Any]) -> bool:
    """True when every floating-point tensor in ``state_dict`` is finite."""
    return all(bool(torch.isfinite(t).all()) for t in iter_tensors(state_dict) if t.is_floating_point())
