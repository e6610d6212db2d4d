"""Checkpoints: atomic writes, safe loads, rotation, and rebuilding the model they hold.

A checkpoint is a ``torch.save`` dict of plain types (see docs/architecture.md, "Training"):
``format="resnets"``, ``format_version``, ``model`` (the spec), ``state_dict``, ``optimizer``,
``scheduler``, ``scaler``, ``ema``, ``epoch``, ``iteration``, ``rng``, ``config``, ``data``,
``versions``, ``metrics``. It is only ever read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

FORMAT = "resnets"
FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"
_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``.

    A crash at any moment leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` for a temporary path beside ``path``, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def link_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make ``dst`` the same file as ``src`` (a hard link, or a copy where links fail), atomically."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rotated_names(keep: int) -> list[str]:
    """``last.pt`` then the older ones kept beside it: ``last-1.pt`` ... ``last-{keep-1}.pt``."""
    return [LAST] + [f"last-{i}.pt" for i in range(1, keep)]


def save_rotating(obj: Any, folder: str | os.PathLike, keep: int) -> Path:
    """Write ``folder/last.pt``, keeping the previous ``keep - 1`` as ``last-1.pt``, ``last-2.pt``...

    Each rename is atomic, so at every moment the newest good checkpoint exists under some name
    and resume (which tries them newest first) finds it.
    """
    folder = Path(folder)
    names = rotated_names(keep)
    for stale in folder.glob("last-*.pt"):  # left over from a run with a larger keep
        if stale.name not in names:
            stale.unlink(missing_ok=True)
    for older, newer in zip(reversed(names[1:]), reversed(names[:-1]), strict=True):
        if (folder / newer).exists():
            os.replace(folder / newer, folder / older)
    return save_atomic(obj, folder / LAST)


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
    from ..models.registry import create_model_from_spec

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


def checkpoint_candidates(path: str | os.PathLike) -> list[Path]:
    """What ``--resume`` tries, best first: a file as given, or a folder's rotated ``last*.pt``."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in rotated_names(100) if (path / name).is_file()]
        if not found:
            raise CheckpointError(f"no checkpoint (last.pt) in {str(path)!r}; nothing to resume")
        return found
    if not path.exists():
        raise CheckpointError(f"--resume {str(path)!r}: no such file or folder")
    siblings = [path.parent / n for n in rotated_names(100) if (path.parent / n).is_file()]
    return [path] + [p for p in siblings if p.resolve() != path.resolve() and p.name != BEST]


def load_for_resume(path: str | os.PathLike, log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """The newest readable checkpoint among ``checkpoint_candidates(path)``; says which it skipped."""
    errors = []
    for candidate in checkpoint_candidates(path):
        try:
            ckpt = load_checkpoint(candidate)
        except CheckpointError as exc:
            errors.append(str(exc))
            log(f"warning: {exc}; falling back to the previous checkpoint")
            continue
        return candidate, ckpt
    raise CheckpointError("no usable checkpoint to resume from: " + " | ".join(errors))


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


# --- random number generators ------------------------------------------------------------------

def rng_state(loader_state: Any = None) -> dict[str, Any]:
    """Every RNG state a run depends on, as plain types (torch CPU and CUDA, numpy, Python,
    and the data loader's own generator state when it has one)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
        "loader": loader_state,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> Any:
    """Restore what ``rng_state`` captured; returns the data loader's part for the caller to apply."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    return state.get("loader")
