"""JPEG image folders decoded on the training device: workers read file bytes, the device decodes.

On a GPU machine with few CPU cores, decoding JPEGs in DataLoader workers is what bounds ImageNet-style
training (NVIDIA's ResNet-50 reference decodes with DALI for this reason). torchvision's
``decode_jpeg(list_of_bytes, device="cuda")`` decodes a whole batch with nvJPEG; the geometry
(random crop, resize, flip) then runs on the device too, image by image with the same per-sample seeds
as the worker path, so the two give the same crops and equal pixels up to the decoders' rounding.
Other formats (PNG, ...) are still decoded in the workers. On CPU the same code runs with
``device="cpu"`` (libjpeg-turbo, as the worker path), which is how it is tested.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from ..errors import DataError
from .images import check_regular, decode_image_file, read_image_bytes

JPEG_EXTENSIONS = (".jpg", ".jpeg")


@contextlib.contextmanager
def _torchvision_io() -> Iterator[None]:
    """torchvision 0.29 announces on every call that its decoders move to TorchCodec; the project
    pins 0.29, whose decoders are the ones this module wants (nvJPEG, libjpeg-turbo)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        yield


def decodes_on_device(choice: bool | None, device: torch.device) -> bool:
    """Whether image folders decode JPEGs on ``device``: ``None`` (auto) means on CUDA only; on a
    CPU the workers decode in parallel already, and a batched decode in the main process would not."""
    return device.type == "cuda" if choice is None else choice


def read_for_device(path: str | os.PathLike) -> tuple[torch.Tensor, bool]:
    """``(data, encoded)``: a JPEG's bytes (1-D uint8) to decode on the device, or any other image
    decoded here (3 x H x W uint8). A file that does not start like a JPEG is a ``DataError``."""
    if not str(path).lower().endswith(JPEG_EXTENSIONS):
        return decode_image_file(path), False
    check_regular(path)  # a pipe would block
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if len(start) < 4 or start[:2] != b"\xff\xd8":  # the JPEG SOI marker
        raise DataError(f"cannot read image {path}: not a JPEG file (no start-of-image marker)")
    raw = read_image_bytes(path)  # the same bounds as every decode on the CPU (pixels, length)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8), True


def seeded(
    transform: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, seed: int | None
) -> torch.Tensor:
    """``transform(image)`` with its random draws seeded by the sample, the caller's RNG untouched.
    The random parameters of torchvision's transforms come from the CPU generator whatever the
    image's device, so a crop is the same on the CPU and on the GPU."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return transform(image)


def decode_batch(
    items: Sequence[tuple[torch.Tensor, bool, str]],
    device: torch.device,
) -> tuple[list[torch.Tensor | None], list[tuple[str, str]]]:
    """Decode the encoded items of a batch on ``device`` (one batched call; one by one when a file
    in it is corrupt). Returns the images (None where unreadable) and ``(path, reason)`` failures."""
    images: list[torch.Tensor | None] = [
        None if encoded else data.to(device, non_blocking=True) for data, encoded, _ in items
    ]
    encoded = [i for i, (_, is_encoded, _) in enumerate(items) if is_encoded]
    failures = []
    with _torchvision_io():
        try:
            decoded = decode_jpeg([items[i][0] for i in encoded], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = []
            for i in encoded:
                try:
                    decoded.append(decode_jpeg(items[i][0], mode=ImageReadMode.RGB, device=device))
                except RuntimeError as exc:
                    decoded.append(None)
                    failures.append((items[i][2], f"cannot decode image {items[i][2]}: {exc}"))
    for i, image in zip(encoded, decoded, strict=True):
        images[i] = image
    return images, failures
