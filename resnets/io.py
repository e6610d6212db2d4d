"""Atomic file writes: the one place that writes a file a reader may see half-written.

Every writer makes a temporary file in the target's folder, fsyncs it, then ``os.replace``s it over the
target, so a crash at any moment leaves either the old file or the new one, never a partial file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


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


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON with a final newline."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)``, atomically."""
    return write_atomic(path, lambda tmp: torch.save(obj, tmp))


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> Path:
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A matplotlib ``Figure`` as PNG (the Figure API needs no pyplot state, so it is thread-safe)."""
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


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
    """Make the rename itself durable (POSIX needs the folder fsynced too)."""
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
