"""Image folders decoded on the training device (workers read JPEG bytes only): the automatic choice,
and equal batches to the worker-decoded path (on CPU both decode with libjpeg-turbo)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data import DataConfig, build_data
from resnets.data.device_decode import decode_batch, decodes_on_device, read_for_device
from resnets.data.images import set_max_image_pixels
from resnets.errors import DataError


def _save(path, size, seed, mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    return path


@pytest.fixture()
def folder(tmp_path):
    """JPEGs of several sizes (one CMYK) and a PNG, which the workers still decode."""
    root = tmp_path / "pets"
    for i in range(10):
        for k, cls in enumerate(("cat", "dog")):
            _save(root / "train" / cls / f"{i}.jpg", (24 + 3 * i, 20 + 2 * k), seed=10 * i + k)
        if i < 3:
            for cls in ("cat", "dog"):
                _save(root / "val" / cls / f"{i}.jpg", (30, 22), seed=100 + i)
    _save(root / "train" / "cat" / "cmyk.jpg", (26, 26), seed=7, mode="CMYK")
    _save(root / "train" / "dog" / "drawing.png", (28, 21), seed=8)
    return root


def _batches(root, device_decode, split, transform="rrc"):
    cfg = DataConfig(
        dataset="imagefolder",
        data_dir=str(root),
        image_size=16,
        workers=0,
        batch_size=5,
        eval_batch_size=4,
        train_transform=transform,
        seed=3,
        device_decode=device_decode,
    )
    bundle = build_data(cfg, "cpu")
    loader = getattr(bundle, split)
    loader.set_epoch(1)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_the_device_decodes_only_on_cuda_unless_asked():
    assert decodes_on_device(None, torch.device("cuda")) and decodes_on_device(None, torch.device("cuda:1"))
    assert not decodes_on_device(None, torch.device("cpu"))
    assert decodes_on_device(True, torch.device("cpu")) and not decodes_on_device(False, torch.device("cuda"))
    cfg = DataConfig(dataset="imagefolder", data_dir=".", device_decode=None)
    assert cfg.device_decode is None  # the default: decided by the device at build time


@pytest.mark.parametrize("transform", ["rrc", "paper"])
def test_device_decoding_gives_the_worker_paths_batches(folder, transform):
    workers = _batches(folder, False, "train", transform)
    device = _batches(folder, True, "train", transform)
    assert len(workers) == len(device) == 4  # 22 images, batches of 5, last partial batch dropped
    for (xa, ya), (xb, yb) in zip(workers, device, strict=True):
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)  # same seeded crops, same decoder on CPU: bit-equal


def test_device_decoding_of_the_evaluation_split(folder):
    workers, device = _batches(folder, False, "test"), _batches(folder, True, "test")
    assert sum(len(y) for _, y in device) == 6
    for (xa, ya), (xb, yb) in zip(workers, device, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_bytes_for_jpegs_pixels_for_other_formats_and_corrupt_files(folder, tmp_path):
    data, encoded = read_for_device(folder / "train" / "cat" / "0.jpg")
    assert encoded and data.dim() == 1 and data.dtype == torch.uint8
    image, encoded = read_for_device(folder / "train" / "dog" / "drawing.png")
    assert not encoded and image.shape == (3, 21, 28)
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"GIF89a not a jpeg")
    with pytest.raises(DataError, match="fake.jpg.*not a JPEG"):
        read_for_device(fake)
    set_max_image_pixels(27 * 20 - 1)  # 1.jpg is 27 x 20: one pixel over the limit
    try:
        with pytest.raises(DataError, match="1.jpg: 27 x 20 = 540 pixels is above the limit"):
            read_for_device(folder / "train" / "cat" / "1.jpg")
    finally:
        set_max_image_pixels(None)
    good = read_for_device(folder / "train" / "cat" / "1.jpg")[0]
    broken = torch.cat([good[:30], torch.zeros(200, dtype=torch.uint8)])  # a JPEG header, then garbage
    images, failures = decode_batch(
        [(good, True, "good.jpg"), (broken, True, "broken.jpg"), (image, False, "drawing.png")],
        torch.device("cpu"),
    )
    assert images[0].shape == (3, 20, 27) and images[1] is None and torch.equal(images[2], image)
    assert [path for path, _ in failures] == ["broken.jpg"] and "broken.jpg" in failures[0][1]
