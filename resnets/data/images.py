"""Single images: decode a file, convert its colour mode, prepare it exactly as evaluation does.

Decoding uses ``torchvision.io.decode_image`` (libjpeg-turbo, libpng) for the common formats and
PIL for the rest or when torchvision refuses a file PIL can still read. Grayscale, palette, RGBA,
CMYK and 16-bit images are converted to the channel count the model was trained with.
"""

from __future__ import annotations

import os
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
_TORCHVISION_FORMATS = (".jpg", ".jpeg", ".png", ".webp", ".gif")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def load_image(path: str | os.PathLike) -> Image.Image:
    """A fully decoded PIL image, or a ``DataError`` naming the file when it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later in a transform
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
        peak = 65535.0 if levels.max(initial=0) > 255 else 255.0
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
        try:
            with warnings.catch_warnings():
                # torchvision 0.29 announces (once per file) that its decoders move to TorchCodec;
                # the project pins 0.29, whose libjpeg-turbo decoder is faster than PIL's.
                warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
                return decode_image(str(path), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # unusual encodings PIL may still read; a damaged file fails there with a clear reason
    return pil_to_uint8(load_image(path), 3)


def resize_center_crop(image: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """Evaluation geometry: shorter side to ``resize`` (antialiased bilinear), centre ``crop`` square."""
    if min(image.shape[-2:]) != resize:
        image = TF.resize(image, [resize], antialias=True)
    return TF.center_crop(image, [crop, crop])


def preprocess_image(image: str | Path | Image.Image, meta: dict) -> torch.Tensor:
    """One image as the model saw images at evaluation: C x H x W float32, normalised.

    ``meta`` is ``DataBundle.meta()`` (as stored in checkpoints).
    """
    try:
        in_chans, prep, norm = meta["in_chans"], meta["eval_preprocess"], meta["normalization"]
        resize, crop = int(prep["resize"]), int(prep["crop"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"the data record has no usable preprocessing ({exc!r}); was it written by "
                        f"DataBundle.meta()?") from None
    pil = image if isinstance(image, Image.Image) else load_image(image)
    x = resize_center_crop(pil_to_uint8(pil, in_chans), resize, crop)
    return Normalization.from_dict(norm)(x[None])[0]
