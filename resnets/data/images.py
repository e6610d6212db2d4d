"""Single images: decode a file, convert its colour mode, prepare it exactly as evaluation does.

Decoding uses ``torchvision.io.decode_image`` (libjpeg-turbo, libpng) for the common formats and
PIL for the rest or when torchvision refuses a file PIL can still read. Grayscale, palette, RGBA,
CMYK, 16-bit and floating-point images are converted to 8-bit, with the channel count the model was
trained with. One pixel limit holds on every path (``set_max_image_pixels``; PIL's 89,478,485 by
default): a larger image is refused from its header, before anything is decoded (a 389 KB PNG can
hold 20000 x 20000 pixels).
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError
from .augment import Normalization

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_TORCHVISION_FORMATS = (".jpg", ".jpeg", ".png", ".webp")  # GIF through PIL: its first frame only
HEADER_BYTES = 1 << 16  # read first: enough for a PNG's or a JPEG's size in nearly every file
SLACK_BYTES = 64 << 20  # metadata (ICC profiles, EXIF, text chunks) an image file may carry beside pixels
MAX_SIDE = 4096  # the largest crop (pixels) a data record may ask for; its resize up to twice that
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS (a decompression-bomb guard)
_max_pixels: int | None = DEFAULT_MAX_PIXELS
Image.MAX_IMAGE_PIXELS = None  # check_pixels (the same default) replaces PIL's check: one limit, one message


def set_max_image_pixels(limit: int | None) -> None:
    """The pixel limit of every decode (``None``: PIL's default, ``0``: no limit). DataLoader workers
    forked afterwards inherit it."""
    global _max_pixels
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise DataError(f"max_image_pixels must be a whole number >= 0 (0: no limit), got {limit!r}")
    _max_pixels = DEFAULT_MAX_PIXELS if limit is None else (limit or None)


def check_pixels(width: int, height: int, path: str | os.PathLike) -> None:
    """``DataError`` when a ``width`` x ``height`` image is above the pixel limit."""
    if _max_pixels is not None and width * height > _max_pixels:
        raise DataError(
            f"{path}: {width} x {height} = {width * height:,} pixels is above the limit of "
            f"{_max_pixels:,} (a decompression bomb?); raise it with --max-image-pixels N "
            f"(0: no limit) if the image is genuine"
        )


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's or a JPEG's header (microseconds: no decoding), else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def check_regular(path: str | os.PathLike) -> int:
    """The size in bytes of ``path``, a regular file; a ``DataError`` for a pipe, a device or a socket
    (reading one blocks or never ends) and for a file that is missing or is a folder."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"{path} is not a readable image ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{path} is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path} is not a regular file (a pipe, a device or a socket); give an image file")
    return info.st_size


def check_file_size(path: str | os.PathLike, length: int, width: int, height: int) -> None:
    """A ``DataError`` when a file is far longer than a ``width`` x ``height`` image can be (8 bytes a
    pixel, 16-bit RGBA uncompressed, plus ``SLACK_BYTES`` of metadata): a damaged or padded file,
    refused before it is read."""
    if length > 8 * width * height + SLACK_BYTES:
        raise DataError(
            f"{path}: {length:,} bytes is far more than a {width} x {height} image takes; "
            f"the file is damaged or is not an image"
        )


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, read within bounds: a regular file, its pixel count (from its header)
    within the limit, and its length within what those pixels can take. Nothing is read past the
    header of a file that fails."""
    length = check_regular(path)
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
            size = header_size(head)
            if size is None:
                size = header_size_pil(path)
            if size is None:
                raise DataError(f"{path} is not a readable image (no image header PIL recognises)")
            check_pixels(*size, path)
            check_file_size(path, length, *size)
            return head + f.read()
    except OSError as exc:
        raise DataError(f"{path} is not a readable image ({exc.strerror or exc})") from None


def header_size_pil(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the header PIL reads lazily (nothing decoded), or None if it cannot."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def load_image(path: str | os.PathLike) -> Image.Image:
    """A fully decoded PIL image, or a ``DataError`` naming the file when it cannot be read."""
    length = check_regular(path)  # a pipe would block, a device never end
    try:
        with Image.open(path) as image:
            check_pixels(*image.size, path)  # from the header, before any decoding
            check_file_size(path, length, *image.size)
            image.load()  # decode now (the first frame of an animation): a truncated file fails here
            return image
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not an image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path} is not a readable image ({exc})") from None


def convert_mode(image: Image.Image, in_chans: int) -> Image.Image:
    """The image as ``L`` (1 channel) or ``RGB`` (3 channels), whatever its mode."""
    if in_chans not in (1, 3):
        raise DataError(f"images can be converted to 1 or 3 channels, not {in_chans}")
    target = "L" if in_chans == 1 else "RGB"
    if image.mode == target:
        return image
    if image.mode.startswith("I"):  # 16/32-bit grayscale: PIL's convert would clip at 255
        levels = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or levels.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(levels * (255.0 / peak), 0, 255).round().astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image) * 255.0, 0, 255).round().astype(np.uint8), "L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL asks for this path for palettes with transparency
    return image.convert(target)  # CMYK, YCbCr, LA, RGBA (alpha dropped, as torchvision/timm do) ...


def pil_to_uint8(image: Image.Image, in_chans: int) -> torch.Tensor:
    """C x H x W uint8 tensor of a PIL image converted to ``in_chans`` channels."""
    array = np.asarray(convert_mode(image, in_chans), dtype=np.uint8)
    return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1).copy()).permute(2, 0, 1)


def decode_image_file(path: str | os.PathLike) -> torch.Tensor:
    """3 x H x W uint8 RGB of an image file, or a ``DataError`` naming it."""
    if str(path).lower().endswith(_TORCHVISION_FORMATS):
        data = read_image_bytes(path)  # bounded: a regular file, its pixels and length checked first
        if data:
            try:
                with warnings.catch_warnings():
                    # torchvision 0.29 announces (once per file) that its decoders move to TorchCodec;
                    # the project pins 0.29, whose libjpeg-turbo decoder is faster than PIL's.
                    warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
                    warnings.filterwarnings("ignore", "The given buffer is not writable", UserWarning)
                    image = decode_image(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
                if image.dim() == 4:  # an animation (WebP): its first frame, as PIL and predict give
                    image = image[0]
                return image if image.dtype == torch.uint8 else to_uint8(image)
            except RuntimeError:
                pass  # unusual encodings PIL may still read; a damaged file fails there with a clear reason
    return pil_to_uint8(load_image(path), 3)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A 16-bit (or float in [0, 1]) image tensor as uint8, full range to full range."""
    if image.is_floating_point():
        return (image.clamp(0, 1) * 255).round().to(torch.uint8)
    peak = float(torch.iinfo(image.dtype).max)
    return (image.to(torch.float32) * (255.0 / peak)).round().to(torch.uint8)


def resize_center_crop(image: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """Evaluation geometry: shorter side to ``resize`` (antialiased bilinear), centre ``crop`` square."""
    if min(image.shape[-2:]) != resize:
        image = TF.resize(image, [resize], antialias=True)
    return TF.center_crop(image, [crop, crop])


def preprocess_image(image: str | Path | Image.Image, meta: dict) -> torch.Tensor:
    """One image as the model saw images at evaluation: C x H x W float32, normalised.

    ``meta`` is ``DataBundle.meta()`` (as stored in checkpoints).
    """
    in_chans, resize, crop = check_preprocess(meta)
    norm = meta["normalization"]
    pil = image if isinstance(image, Image.Image) else load_image(image)
    x = resize_center_crop(pil_to_uint8(pil, in_chans), resize, crop)
    return Normalization.from_dict(norm)(x[None])[0]


def check_preprocess(meta: dict) -> tuple[int, int, int]:
    """``(in_chans, resize, crop)`` of a data record (``DataBundle.meta()``), or a ``DataError``: 1 or 3
    channels, a crop of 1 to ``MAX_SIDE`` pixels and a resize from it to twice ``MAX_SIDE``."""
    try:
        in_chans, prep, norm = meta["in_chans"], meta["eval_preprocess"], meta["normalization"]
        for name, value in (("eval_preprocess", prep), ("normalization", norm)):
            if not isinstance(value, dict):
                raise TypeError(f"{name} is a {type(value).__name__}, not a dict")
        resize, crop = prep["resize"], prep["crop"]
    except (KeyError, TypeError) as exc:
        raise DataError(
            f"the data record has no usable preprocessing ({exc!r}); was it written by DataBundle.meta()?"
        ) from None
    if (
        not all(isinstance(v, int) and not isinstance(v, bool) for v in (in_chans, resize, crop))
        or in_chans not in (1, 3)
        or not 1 <= crop <= MAX_SIDE
        or not crop <= resize <= 2 * MAX_SIDE
    ):
        raise DataError(
            f"the data record asks for {in_chans!r} channels, a resize to {resize!r} and a "
            f"crop of {crop!r} pixels; expected 1 or 3 channels and 1 <= crop <= resize, crop <= "
            f"{MAX_SIDE}, resize <= {2 * MAX_SIDE}"
        )
    return in_chans, resize, crop
