"""Readers for the standard small-dataset file formats, with clear errors naming the file.

- IDX (the MNIST family): ``train-images-idx3-ubyte[.gz]`` etc., big-endian header then raw data.
- CIFAR "python version": pickled dicts of ``data`` (N x 3072 uint8, channel-major) and labels,
  exactly the files torchvision reads.

Nothing here writes to disk: a truncated or corrupt file raises ``DataError`` and leaves no trace.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import math
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import DataError

# IDX type codes (LeCun's format description) -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

CIFAR_IMAGE_BYTES = 3 * 32 * 32


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


MAX_FILE_BYTES = 1 << 30  # the most one dataset file may hold unpacked (MNIST's training images: 47 MB)
MAX_OFFICIAL_BYTES = 256 << 20  # more than any official file unpacks to (CIFAR-100's train batch: 155 MB)
_HEAD_BYTES = 1024  # the longest IDX header (255 dimensions)


def read_file_bytes(
    path: Path, limit: int = MAX_FILE_BYTES, declared: Callable[[bytes], int] | None = None
) -> bytes:
    """The file's bytes, decompressed when it ends in ``.gz``, read within bounds: a regular file, at
    most ``limit`` bytes unpacked, and at most what its header declares (``declared(first bytes)`` ->
    length in bytes, for formats that say it). Reading stops at the bound, so an archive that unpacks
    to gigabytes costs no more memory than the bound; a damaged archive names the file."""
    try:
        if not path.is_file():
            raise DataError(
                f"{path} is not a regular file (a folder, a pipe or a device); give the dataset file itself"
            )
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
            cap = limit if declared is None else declared(head)
            if cap > limit:
                raise DataError(
                    f"{path}: its header declares {cap:,} bytes, more than the {limit:,} a "
                    f"dataset file may hold{_unverified_hint(limit)}; the file is damaged or not "
                    f"this dataset"
                )
            data = head + f.read(max(cap + 1 - len(head), 0))
    except OSError as exc:
        if isinstance(exc, gzip.BadGzipFile) or path.suffix == ".gz" and not exc.strerror:
            raise _bad_archive(path, exc) from None
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (EOFError, zlib.error) as exc:
        raise _bad_archive(path, exc) from None
    if len(data) > cap:
        what = (
            "is longer than its header says"
            if declared is not None
            else "holds more than the most a dataset file may hold"
        )
        raise DataError(
            f"{path} {what} ({cap:,} bytes unpacked){_unverified_hint(limit)}; the file is "
            f"damaged or not this dataset: delete it and get the file again"
        )
    return data


def _unverified_hint(limit: int) -> str:
    return (
        " (any official file; --no-verify-checksums for copies meant to differ)"
        if limit == MAX_OFFICIAL_BYTES
        else ""
    )


def _bad_archive(path: Path, exc: BaseException) -> DataError:
    return DataError(
        f"{path} is truncated or not a valid gzip archive ({exc}); delete it and get the "
        f"file again (--download, or reinstall the package it came from)"
    )


def idx_length(head: bytes, path: Path) -> int:
    """The length in bytes an IDX file's header declares (exact integers: no int64 wrap-around)."""
    _idx_header(head, path)
    dtype, ndim = _IDX_DTYPES[head[2]], head[3]
    dims = struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])
    return 4 + 4 * ndim + math.prod(dims) * dtype.itemsize


def _idx_header(data: bytes, path: Path) -> None:
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DataError(
            f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'none'}); "
            f"expected the MNIST-format files such as train-images-idx3-ubyte.gz"
        )
    if len(data) < 4 + 4 * data[3]:
        raise DataError(f"{path} is truncated: its header is incomplete ({len(data)} bytes)")


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """An IDX file's contents as an array of the shape its header declares."""
    _idx_header(data, path)
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims) * dtype.itemsize  # Python integers: a product cannot wrap
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: the header declares shape {tuple(dims)} ({expected} bytes) "
            f"but the data has {len(data)} bytes; delete it and get the file again"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: numpy arrays and plain containers, never arbitrary code
    (a pickle can run anything; this is the same idea as ``torch.load(weights_only=True)``)."""

    _reconstruct = np.ndarray((0,)).__reduce__()[0]  # numpy's array rebuild function, any version
    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }  # protocol-2 pickles from Python 3 store bytes this way

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return self._reconstruct
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def load_cifar_pickle(data: bytes, path: Path) -> dict:
    """A CIFAR python-version file's bytes (a batch or the meta file) as a dict with str keys."""
    try:
        # The official files were written by Python 2; latin1 maps its byte strings 1:1.
        obj = _CifarUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(
            f"{path} is truncated or not a CIFAR python batch ({exc}); delete it and get the "
            f"dataset again (--download)"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR python batch (holds a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def parse_cifar_batch(data: bytes, path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x 3 x 32 x 32, labels int64 N) from one CIFAR batch file's bytes."""
    batch = load_cifar_pickle(data, path)
    if "data" not in batch or label_key not in batch:
        raise DataError(
            f"{path} is not a CIFAR batch of this dataset: it lacks 'data' or {label_key!r} "
            f"(has {sorted(batch)})"
        )
    images, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != CIFAR_IMAGE_BYTES:
        raise DataError(
            f"{path}: images must be uint8 rows of {CIFAR_IMAGE_BYTES} values (3 x 32 x 32), "
            f"found {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {len(images)} images but labels of shape {labels.shape} ({labels.dtype})")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def parse_cifar_classes(data: bytes, path: Path, key: str) -> list[str]:
    """Class names from a CIFAR meta file's bytes (``batches.meta`` / ``meta``)."""
    names = load_cifar_pickle(data, path).get(key)
    if not isinstance(names, list) or not all(isinstance(n, str | bytes) for n in names):
        raise DataError(f"{path} has no list of class names under {key!r}")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
