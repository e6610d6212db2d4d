"""The checkpoint file: what it holds, reading it safely, and rebuilding the model it holds.

A checkpoint is a ``torch.save`` dict of plain types (see docs/architecture.md, "Run folders"):
``format="resnets"``, ``format_version``, ``model`` (the spec), ``state_dict``, ``optimizer``,
``scheduler``, ``scaler``, ``ema``, ``epoch``, ``iteration``, ``rng``, ``config``, ``data``,
``versions``, ``metrics``. It is only ever read with ``torch.load(weights_only=True)``.
Where a run keeps its checkpoints (rotation, resume) is ``runs.py``'s concern.

Every checkpoint read is checked against that schema (``check_schema``; ``check_resumable`` adds what
resuming needs), so that a crafted or damaged file is a ``CheckpointError`` naming the file and the
entry, never a crash somewhere later.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .data import Normalization
from .data.images import MAX_SIDE, check_preprocess
from .errors import CheckpointError, ResnetsError, first_line
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
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read one of our checkpoints safely (``weights_only=True``), or raise a clear CheckpointError."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {str(path)!r} {what}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError as exc:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: {exc.strerror} (not readable by this "
            f"user); ask its owner for read access (chmod a+r) or use a copy"
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EISDIR, errno.EIO, errno.ELOOP, errno.ENAMETOOLONG):
            raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {exc.strerror or exc}") from None
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {unreadable_reason(exc)}") from None
    except Exception as exc:  # damage: RuntimeError, EOFError, BadZipFile, UnpicklingError ...
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {unreadable_reason(exc)}") from None
    check_schema(ckpt, path)
    ckpt["state_dict"] = clean_state_dict(ckpt["state_dict"])
    return ckpt


def unreadable_reason(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    unsafe = next(
        (
            line
            for line in lines
            if "global" in line.lower() and ("unsupported" in line.lower() or "allowed" in line.lower())
        ),
        None,
    )
    if unsafe is not None:
        detail = unsafe
        return (
            f"it is not a safe PyTorch checkpoint: loading it would create objects that "
            f"weights_only=True refuses ({detail.rstrip('.')[:300]}); resnets never runs code from a "
            f"checkpoint, so only files of plain tensors and types are accepted"
        )
    return f"the file is truncated or corrupt ({lines[0][:300]})"


# --- the schema -----------------------------------------------------------------------------------


def _bad(path: Path, message: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {str(path)!r} is malformed: {message}; it was not written by "
        f"this resnets, or it was damaged"
    )


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _tensor_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def check_schema(ckpt: Any, path: Path) -> None:
    """The entries every reader relies on: format, version, model spec, weights, data record."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a resnets checkpoint (no format='resnets' entry); for torchvision/timm "
            f"weights use --init-weights or `resnets import-weights`"
        )
    version = ckpt.get("format_version", 0)
    if not _is_int(version):
        raise _bad(path, f"format_version is {version!r}, not a whole number")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format version {version}, newer than this "
            f"resnets ({FORMAT_VERSION}); upgrade resnets"
        )
    for key in ("model", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {str(path)!r} has no {key!r} entry")
    spec = ckpt["model"]
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("name"), str)
        or not isinstance(spec.get("kwargs", {}), dict)
    ):
        raise _bad(path, f"'model' is {spec!r:.100}, not a spec {{'name': str, 'kwargs': dict}}")
    try:
        json.dumps(spec)  # a spec is plain JSON (model_spec's contract)
    except (TypeError, ValueError):
        raise _bad(
            path, f"'model' holds values that are not plain numbers, strings, lists or dicts ({spec!r:.100})"
        ) from None
    if not _tensor_map(ckpt["state_dict"]) or not ckpt["state_dict"]:
        raise _bad(
            path,
            f"'state_dict' is a {type(ckpt['state_dict']).__name__}, not a mapping of "
            f"parameter names to tensors",
        )
    if ckpt.get("ema") is not None and not _tensor_map(ckpt["ema"]):
        raise _bad(path, "'ema' is not a mapping of names to tensors")
    if ckpt.get("eval_weights", "model") not in ("model", "ema") or (
        ckpt.get("eval_weights") == "ema" and ckpt.get("ema") is None
    ):
        raise _bad(
            path,
            f"'eval_weights' is {ckpt.get('eval_weights')!r} (expected 'model', or 'ema' with "
            f"an 'ema' entry)",
        )
    for key in ("epoch", "iteration", "batch_in_epoch"):
        if key in ckpt and not _is_int(ckpt[key]):
            raise _bad(path, f"{key!r} is {ckpt[key]!r}, not a whole number >= 0")
    for key in ("config", "train_state", "versions"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            raise _bad(path, f"{key!r} is a {type(ckpt[key]).__name__}, not a dict")
    config = ckpt.get("config") or {}
    for key in ("recipe", "run"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise _bad(path, f"config[{key!r}] is a {type(config[key]).__name__}, not a dict")
    _check_config_fields(config, path)
    if ckpt.get("metrics") is not None and not isinstance(ckpt["metrics"], dict):
        raise _bad(path, "'metrics' is not a dict")
    if ckpt.get("data") is not None:
        check_data_record(ckpt["data"], path)


# the run's settings that the readers of a checkpoint use (eval, evaluation data): allowed values
_RECIPE_FIELDS = {
    "tta": lambda v: v in ("none", "flip"),
    "amp": lambda v: v in (True, False, "auto"),
    "amp_dtype": lambda v: v in ("bfloat16", "float16"),
    "val_split": lambda v: _is_int(v),
    "seed": lambda v: _is_int(v, -(2**63)),
    "channels_last": lambda v: v in (True, False, "auto"),
}
_RUN_FIELDS = {
    "data_dir": lambda v: v is None or isinstance(v, str),
    "strict_data": lambda v: isinstance(v, bool),
    "verify_checksums": lambda v: isinstance(v, bool),
    "follow_links": lambda v: isinstance(v, bool),
    "max_image_pixels": lambda v: v is None or _is_int(v),
}


def _check_config_fields(config: dict, path: Path) -> None:
    for part, fields in (("recipe", _RECIPE_FIELDS), ("run", _RUN_FIELDS)):
        values = config.get(part) or {}
        for key, valid in fields.items():
            if key in values and not valid(values[key]):
                raise _bad(path, f"config[{part!r}][{key!r}] is {values[key]!r:.60}")


def check_data_record(meta: Any, path: Path) -> None:
    """``DataBundle.meta()``: classes, channels, sizes, normalisation and preprocessing that make sense."""
    if not isinstance(meta, dict):
        raise _bad(path, f"'data' is a {type(meta).__name__}, not a dict")
    if not meta:
        return
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise _bad(path, "data['classes'] is not a list of names")
    size = meta.get("image_size")
    if size is not None and not (_is_int(size, 1) and size <= MAX_SIDE):
        raise _bad(path, f"data['image_size'] is {size!r}, not a size of 1 to {MAX_SIDE} pixels")
    try:
        if "eval_preprocess" in meta:
            check_preprocess(meta)
        if "normalization" in meta:
            norm = meta["normalization"]
            if not isinstance(norm, dict):
                raise TypeError(f"data['normalization'] is a {type(norm).__name__}, not a dict")
            Normalization.from_dict(norm)
    except (ResnetsError, TypeError, ValueError, RuntimeError) as exc:
        raise _bad(path, str(exc)) from None


RESUME_ENTRIES = ("epoch", "iteration", "optimizer", "scheduler", "scaler", "rng", "config")


def check_resumable(ckpt: dict[str, Any], path: Path) -> None:
    """What ``--resume`` restores, on top of ``check_schema``: the optimiser, schedule and RNG states
    that the checkpoint holds must have the right types and sizes (``missing_for_resume`` lists the
    entries it lacks)."""
    for key in ("optimizer", "scheduler", "scaler"):
        if key in ckpt and not isinstance(ckpt[key], dict):
            raise _bad(path, f"{key!r} is a {type(ckpt[key]).__name__}, not a dict")
    optimizer = ckpt.get("optimizer", {"param_groups": []})
    if not (isinstance(optimizer.get("state", {}), dict) and isinstance(optimizer.get("param_groups"), list)):
        raise _bad(path, "'optimizer' has no 'state' dict and 'param_groups' list")
    if "rng" in ckpt:
        check_rng(ckpt["rng"], path, "rng")
    if ckpt.get("epoch_rng") is not None:
        check_rng(ckpt["epoch_rng"], path, "epoch_rng")
    partial = (ckpt.get("train_state") or {}).get("partial")
    if partial is not None and not isinstance(partial, (dict, list, tuple)):
        raise _bad(path, "train_state['partial'] is neither a dict nor a list")


def check_rng(state: Any, path: Path, key: str) -> None:
    """An ``rng_state()`` record: torch's, numpy's and Python's generator states of the right sizes."""
    expected = torch.get_rng_state().numel()
    if not isinstance(state, dict):
        raise _bad(path, f"{key!r} is a {type(state).__name__}, not a dict of generator states")
    t = state.get("torch")
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.numel() != expected:
        what = f"{t.dtype} of {t.numel()} values" if isinstance(t, torch.Tensor) else type(t).__name__
        raise _bad(path, f"{key}['torch'] is {what}, not torch's {expected}-byte generator state")
    n = state.get("numpy")
    if not (
        isinstance(n, (list, tuple))
        and len(n) == 5
        and isinstance(n[0], str)
        and isinstance(n[1], torch.Tensor)
        and n[1].numel() == 624
        and not n[1].is_floating_point()
        and _is_int(n[2])
        and n[2] <= 624
        and _is_int(n[3])
        and isinstance(n[4], (int, float))
    ):
        raise _bad(path, f"{key}['numpy'] is not numpy's MT19937 state (a 624-word key and its position)")
    p = state.get("python")
    if not (
        isinstance(p, (list, tuple))
        and len(p) == 3
        and _is_int(p[0])
        and isinstance(p[1], (list, tuple))
        and len(p[1]) == 625
        and all(_is_int(v) for v in p[1])
        and p[1][-1] <= 624
        and (p[2] is None or isinstance(p[2], float))
    ):
        raise _bad(path, f"{key}['python'] is not Python's random state (625 words)")
    cuda = state.get("cuda")
    if cuda is not None and not (
        isinstance(cuda, (list, tuple))
        and all(isinstance(c, torch.Tensor) and c.dtype == torch.uint8 for c in cuda)
    ):
        raise _bad(path, f"{key}['cuda'] is not a list of CUDA generator states")
    mps = state.get("mps")
    if mps is not None and not (isinstance(mps, torch.Tensor) and mps.dtype == torch.uint8):
        raise _bad(path, f"{key}['mps'] is not an MPS generator state")


def load_state_into(
    model: torch.nn.Module, state_dict: Mapping[str, Any], source: str = "checkpoint"
) -> None:
    """``model.load_state_dict`` (strict) with a CheckpointError listing what does not match."""
    state_dict = clean_state_dict(state_dict)
    check_fits(model, state_dict, source)
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError) as exc:  # e.g. a complex tensor where the model has floats
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise CheckpointError(f"{source} does not fit the model: {reason}") from None


def check_fits(model: torch.nn.Module, state_dict: Mapping[str, Any], source: str = "checkpoint") -> None:
    """A CheckpointError listing the missing, unexpected and mis-shaped keys of ``state_dict`` (cleaned)
    against ``model``'s, which may live on the meta device (nothing allocated)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a checkpoint was trained with and load its weights (EMA weights when the
    run used EMA, since those are what it evaluated). Returns ``(model in eval mode, checkpoint)``."""
    ckpt = load_checkpoint(path, map_location="cpu")
    check_classifier(ckpt, path)
    weights = ckpt["state_dict"]
    if ckpt.get("ema") and ckpt.get("eval_weights") == "ema":
        weights = ema_model_weights(ckpt["ema"])
    source = f"checkpoint {str(path)!r}"
    # The spec's sizes bounded before memory is allocated for them: the model built on the meta device
    # first (no storage) must fit the weights the file holds (num_classes=20,000,000 would take 5 GB).
    skeleton = None
    with contextlib.suppress(Exception), torch.device("meta"):
        skeleton = create_model_from_spec(ckpt["model"])
    if skeleton is not None:
        check_fits(skeleton, clean_state_dict(weights), source)
    try:
        model = create_model_from_spec(ckpt["model"])
    except Exception as exc:  # a spec we cannot rebuild is the checkpoint's fault, not a bug here
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a model spec this resnets cannot build ({first_line(exc)})"
        ) from None
    load_state_into(model, weights, source=source)
    return model.to(device).eval(), ckpt


DETECTORS = ("faster_rcnn",)  # model names of resnets.detection's checkpoints (``resnets detect``)


def check_classifier(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """A ``CheckpointError`` saying to use ``resnets detect`` for a detector's checkpoint."""
    model, config = ckpt.get("model"), ckpt.get("config")
    name = model.get("name") if isinstance(model, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if task == "detection" or name in DETECTORS:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is an object detector's ({name}), not a "
            f"classifier's; use `resnets detect eval|predict|export` for it"
        )


def ema_model_weights(ema_state: Mapping[str, Any]) -> dict[str, Any]:
    """The model weights inside an ``AveragedModel`` state dict (``module.*``, without ``n_averaged``)."""
    return {k[len("module.") :]: v for k, v in ema_state.items() if k.startswith("module.")}


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
