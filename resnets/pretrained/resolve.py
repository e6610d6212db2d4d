"""Where a weights entry's file is, in this order: inside the package (our shipped weights), torch's hub
cache (``torch.hub.get_dir()/checkpoints/<file>``, which honours ``$TORCH_HOME``; torchvision's downloads
land there), the Hugging Face cache (timm's files), then a download where the network allows
(``torch.hub.download_url_to_file`` with torchvision's hash prefix, ``huggingface_hub.hf_hub_download``
for timm's hub ids). Otherwise one line says which file to put where.

Every file found is checked against what is known of its SHA-256 before it is used: the full digest
(ours), torchvision's 8-hex prefix, or for a file of the Hugging Face cache the digest the hub named it
by. A file that fails is refused with one line naming the expected hash; a failed download leaves
nothing in the cache (torch.hub writes a temporary file and renames it only when the hash matches; a
Hugging Face file that fails the check is removed).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.error import URLError

import torch

from ..errors import CheckpointError, first_line
from .registry import WeightsEntry

OFFLINE_VARIABLES = ("RESNETS_OFFLINE", "HF_HUB_OFFLINE")  # set to 1: never download
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_verified: dict[tuple, str] = {}  # (real path, size, mtime, inode) -> SHA-256, so a file is hashed once


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def cache_path(entry: WeightsEntry) -> Path:
    """The file's place in torch's hub cache (torchvision's own file name, or ``model.tag.safetensors``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / entry.file


def weights_file(entry: WeightsEntry, *, download: bool | None = None, progress: bool = True) -> Path:
    """The checked local file of ``entry``; ``download=None``: download unless offline (``$RESNETS_OFFLINE``
    or ``$HF_HUB_OFFLINE``). Raises ``CheckpointError`` (one line) when there is none or it fails its hash."""
    if entry.shipped:
        path = entry.package_path
        if path is None or not path.is_file() or entry.card is None:
            raise CheckpointError(
                f"weights {entry.name}: {path} or its model card is missing from this "
                "installation of resnets; reinstall it (pip install resnets) or pass a weights "
                "file's path"
            )
        return check_file(path, entry)
    cached = cache_path(entry)
    if cached.is_file():
        return check_file(cached, entry)
    hf_cached = _hf_cached(entry)
    if hf_cached is not None:
        return check_file(hf_cached, entry)
    if download is None:
        download = not offline()
    reason = "downloads are off ($RESNETS_OFFLINE or $HF_HUB_OFFLINE)"
    if download:
        try:
            return _download_hf(entry) if entry.hf_hub_id else _download_url(entry, cached, progress)
        except _NoDownload as exc:
            reason = str(exc)
    caches = (
        "neither in torch's hub cache nor in the Hugging Face cache"
        if entry.hf_hub_id
        else "not in torch's hub cache"
    )
    raise CheckpointError(
        f"weights {entry.name}: {entry.file} is {caches} and could not be "
        f"downloaded ({reason}); download {entry.url} and put it at {cached}, or pass the "
        "file's path"
    )


def check_file(path: str | os.PathLike, entry: WeightsEntry) -> Path:
    """``path`` if its SHA-256 agrees with the entry's (or, for a Hugging Face cache file, with the digest
    the hub named it by), else a one-line ``CheckpointError`` naming the expected hash."""
    path = Path(path)
    expected = entry.sha256 or _hf_blob_digest(path)
    if not expected:
        return path
    digest = sha256_of(path)
    if not digest.startswith(expected):
        which = "the SHA-256" if len(expected) == 64 else "a SHA-256 starting with"
        raise CheckpointError(
            f"weights file {path} has SHA-256 {digest}, but {entry.name} expects {which} "
            f"{expected}: it is damaged or another file; delete it and fetch "
            f"{entry.url or entry.file} again"
        )
    return path


def sha256_of(path: str | os.PathLike) -> str:
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _verified[key] = digest.hexdigest()
    return _verified[key]


class _NoDownload(Exception):
    """Why a download did not happen (the network, the server); becomes part of the one-line error."""


def _download_url(entry: WeightsEntry, target: Path, progress: bool) -> Path:
    """torch.hub's download: a temporary file, renamed into the cache only when its hash prefix matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(
            entry.url, str(target), hash_prefix=entry.sha256 or None, progress=progress
        )
    except RuntimeError as exc:
        if "invalid hash value" in str(exc):
            raise CheckpointError(
                f"weights {entry.name}: the download from {entry.url} has the wrong hash "
                f"(expected a SHA-256 starting with {entry.sha256}); nothing was kept"
            ) from None
        raise
    except (URLError, OSError, ValueError) as exc:
        raise _NoDownload(first_line(exc)) from None
    return check_file(target, entry)


def _hf_cached(entry: WeightsEntry) -> Path | None:
    if not entry.hf_hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache  # optional: only timm's hub files need it
    except ImportError:
        return None
    found = try_to_load_from_cache(entry.hf_hub_id, entry.hf_filename)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _download_hf(entry: WeightsEntry) -> Path:
    try:
        from huggingface_hub import hf_hub_download  # optional: only timm's hub files need it
    except ImportError:
        raise _NoDownload("huggingface_hub is not installed: pip install huggingface_hub") from None
    try:
        # $HF_ENDPOINT read now, not when huggingface_hub was imported (a mirror chosen at run time)
        found = Path(
            hf_hub_download(entry.hf_hub_id, entry.hf_filename, endpoint=os.environ.get("HF_ENDPOINT"))
        )
    except Exception as exc:  # huggingface_hub's errors (network, offline, missing repo) have no common base
        raise _NoDownload(first_line(exc)) from None
    try:
        return check_file(found, entry)
    except CheckpointError:
        for path in {found.resolve(), found}:  # the blob, then the snapshot's link to it
            path.unlink(missing_ok=True)
        raise


def _hf_blob_digest(path: Path) -> str:
    """The SHA-256 a Hugging Face cache file is named by (its blob, for files stored with Git LFS)."""
    if path.is_symlink() and "snapshots" in path.parts:
        name = path.resolve().name
        return name if _SHA256.fullmatch(name) else ""
    return ""
