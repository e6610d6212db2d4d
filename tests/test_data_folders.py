"""Image folders and single images: layouts, colour modes, damaged files, transforms, and the
agreement between the evaluation loader and ``preprocess_image`` (what predict uses)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data import DataConfig, DataWarning, build_data, load_image, preprocess_image
from resnets.data.folders import FolderDataset, scan_layout, train_transform
from resnets.data.images import convert_mode, decode_image_file
from resnets.errors import ConfigError, DataError


def save(path: Path, mode: str = "RGB", size=(20, 16), seed=0, fmt=None) -> Path:
    """A random image of ``size`` (w, h) saved in ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    image.convert(mode).save(path, format=fmt)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture()
def tree(tmp_path):
    """train/ and val/ class folders with every kind of file a user's folder may hold."""
    root = tmp_path / "shapes"
    seed = 0
    for split, n in (("train", 6), ("val", 3)):
        for cls in ("circle", "square"):
            for i in range(n):
                seed += 1
                save(root / split / cls / f"{i}.jpg", seed=seed)
    save(root / "train" / "circle" / "cmyk.jpg", "CMYK", seed=100)
    save(root / "train" / "square" / "rgba.png", "RGBA", seed=101)
    save(root / "train" / "square" / "palette.png", "P", seed=102)
    save(root / "train" / "square" / "gray.png", "L", seed=103)
    save(root / "train" / "square" / "nested" / "deep.bmp", seed=104)  # subfolders count, like ImageFolder
    truncate(save(root / "train" / "circle" / "broken.jpg", seed=105))
    (root / "train" / "circle" / "notes.txt").write_text("not an image")
    (root / "train" / "circle" / ".DS_Store").write_bytes(b"\0\1")
    (root / "train" / "triangle").mkdir()  # an empty class folder
    return root


def config(root, **kwargs) -> DataConfig:
    options = dict(
        dataset="imagefolder", data_dir=str(root), image_size=16, workers=0, batch_size=4, eval_batch_size=4
    )
    options.update(kwargs)
    return DataConfig(**options)


def test_layout_classes_files_and_the_empty_class_folder_warning(tree):
    with pytest.warns(DataWarning, match=r"without images: .*train/triangle"):
        splits = scan_layout(tree, "imagefolder", 0.2, 0, strict=False)
    assert splits.classes == ["circle", "square", "triangle"]
    names = sorted(Path(p).name for p, _ in splits.train)
    assert "notes.txt" not in names and ".DS_Store" not in names
    assert {"cmyk.jpg", "rgba.png", "palette.png", "gray.png", "deep.bmp", "broken.jpg"} <= set(names)
    assert len(splits.train) == 18 and len(splits.test) == 6 and splits.val is None
    assert all(label == (0 if "circle" in p else 1) for p, label in splits.train)
    with pytest.raises(DataError, match="without images: .*triangle.*strict-data"):
        scan_layout(tree, "imagefolder", 0.2, 0, strict=True)


def test_training_skips_a_truncated_image_with_a_warning_and_a_count(tree):
    with pytest.warns(DataWarning, match="empty|without images"):
        bundle = build_data(config(tree, train_transform="rrc"), "cpu")
    assert bundle.in_chans == 3 and bundle.num_classes == 3 and bundle.image_size == 16
    skipped = r"1 unreadable image\(s\) skipped in epoch 1: .*broken\.jpg"  # epochs count from 1
    with pytest.warns(DataWarning, match=skipped) as caught:
        batches = list(bundle.train)
    assert len(caught) == 1
    assert len(batches) == len(bundle.train) == 18 // 4
    for x, y in batches:
        assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.isfinite(x).all()
    assert list(bundle.train.skipped) == [str(tree / "train" / "circle" / "broken.jpg")]


def test_strict_data_stops_at_the_unreadable_image_naming_it(tree):
    (tree / "train" / "triangle").rmdir()  # strict mode refuses empty class folders too (tested above)
    strict = build_data(config(tree, batch_size=6, strict_data=True), "cpu")
    assert strict.train.num_samples == 18
    with pytest.raises(DataError, match=r"broken\.jpg is not a readable image.*strict-data"):
        list(strict.train)


def test_evaluation_drops_unreadable_images_instead_of_counting_a_neighbour_twice(tree):
    truncate(tree / "val" / "square" / "0.jpg")
    with pytest.warns(DataWarning):
        bundle = build_data(config(tree), "cpu")
    with pytest.warns(DataWarning, match=r"val/square/0\.jpg"):
        labels = torch.cat([y for _, y in bundle.test])
    assert bundle.test.num_samples == 6 and len(labels) == 5
    assert torch.bincount(labels).tolist() == [3, 2]


def test_flat_folder_is_split_seeded_stratified_and_disjoint(tmp_path):
    for cls, n in (("a", 10), ("b", 20)):
        for i in range(n):
            save(tmp_path / "flat" / cls / f"{i}.png", seed=i + 100 * len(cls) + n)
    first = scan_layout(tmp_path / "flat", "imagefolder", 0.2, seed=1, strict=False)
    assert len(first.test) == 6 and len(first.train) == 24
    assert [label for _, label in first.test].count(0) == 2  # a keeps its third of the share
    assert not {p for p, _ in first.train} & {p for p, _ in first.test}
    again = scan_layout(tmp_path / "flat", "imagefolder", 0.2, seed=1, strict=False)
    other = scan_layout(tmp_path / "flat", "imagefolder", 0.2, seed=2, strict=False)
    assert again.test == first.test and other.test != first.test


def test_val_and_test_folders_and_a_held_out_val_split(tree):
    save(tree / "test" / "circle" / "t.jpg")
    with pytest.warns(DataWarning):
        splits = scan_layout(tree, "imagefolder", 0.2, 0, strict=False)
    assert [Path(p).name for p, _ in splits.test] == ["t.jpg"] and len(splits.val) == 6
    with pytest.warns(DataWarning), pytest.raises(ConfigError, match="val/ is the validation set"):
        build_data(config(tree, val_split=2), "cpu")
    (tree / "test" / "circle" / "t.jpg").unlink()
    (tree / "test" / "circle").rmdir()
    (tree / "test").rmdir()
    with pytest.warns(DataWarning):
        bundle = build_data(config(tree, val_split=4), "cpu")
    assert bundle.val.num_samples == 4 and bundle.train.num_samples == 14


def test_folder_errors(tmp_path, tree):
    save(tree / "val" / "hexagon" / "h.jpg")
    with pytest.raises(DataError, match="class folders the training set lacks: hexagon"):
        scan_layout(tree, "imagefolder", 0.2, 0, strict=False)
    with pytest.raises(DataError, match="imagefolder' needs --data-dir"):
        build_data(DataConfig(dataset="imagefolder"), "cpu")
    with pytest.raises(DataError, match="does not exist"):
        build_data(config(tmp_path / "nowhere"), "cpu")
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="has no class subfolders"):
        build_data(config(tmp_path / "bare"), "cpu")
    (tmp_path / "bare" / "cls").mkdir()
    (tmp_path / "bare" / "cls" / "readme.md").write_text("x")
    with pytest.raises(DataError, match="no images found"), pytest.warns(DataWarning):
        build_data(config(tmp_path / "bare"), "cpu")
    with pytest.raises(ConfigError, match="cannot be downloaded"):
        build_data(config(tree, download=True), "cpu")


def test_imagenet_layout_and_readable_class_names(tmp_path):
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for i, wnid in enumerate(("n01440764", "n01443537")):
            for j in range(2):
                save(root / split / wnid / f"{wnid}_{j}.JPEG", seed=10 * i + j)
    (root / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
    )
    bundle = build_data(
        DataConfig(dataset="imagenet", data_dir=str(root), image_size=16, workers=0, batch_size=2), "cpu"
    )
    assert bundle.classes == ["tench", "goldfish"]
    assert bundle.normalization.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    x, y = next(iter(bundle.train))
    assert x.shape == (2, 3, 16, 16)
    flat = tmp_path / "flat_val"
    save(flat / "train" / "n01440764" / "a.JPEG")
    save(flat / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataError, match="has no class subfolders"):
        build_data(DataConfig(dataset="imagenet", data_dir=str(flat), workers=0, batch_size=1), "cpu")
    save(flat / "val" / "n01440764" / "b.JPEG")
    (flat / "train").rename(flat / "training")
    with pytest.raises(DataError, match="not in the ILSVRC-2012 layout"):
        build_data(DataConfig(dataset="imagenet", data_dir=str(flat), workers=0, batch_size=1), "cpu")


def test_paper_transform_scales_then_crops_and_is_reproducible_per_sample(tmp_path):
    path = save(tmp_path / "wide.png", size=(60, 30))
    transform = train_transform("paper", 16, hflip=True)
    dataset = FolderDataset([(str(path), 0)], transform, substitute=True)
    a, label, failures = dataset[(0, 1234)]
    torch.manual_seed(99)  # the global RNG state must not matter, nor be consumed
    state = torch.get_rng_state()
    b, _, _ = dataset[(0, 1234)]
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (3, 16, 16) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert label == 0 and failures == []
    outputs = {bytes(dataset[(0, seed)][0].numpy()) for seed in range(8)}
    assert len(outputs) > 4
    rrc = FolderDataset([(str(path), 0)], train_transform("rrc", 16, hflip=False), substitute=True)
    assert rrc[(0, 1)][0].shape == (3, 16, 16)


def test_colour_modes_become_the_models_channel_count(tmp_path):
    for mode in ("L", "P", "RGBA", "CMYK", "LA", "I;16"):
        image = Image.new("RGB", (5, 4), (200, 100, 50)).convert(mode)
        if mode == "I;16":
            image = Image.fromarray(np.full((4, 5), 60000, dtype=np.uint16))
        for channels, target in ((1, "L"), (3, "RGB")):
            converted = convert_mode(image, channels)
            assert converted.mode == target and converted.size == (5, 4)
    sixteen = convert_mode(Image.fromarray(np.full((4, 5), 60000, dtype=np.uint16)), 1)
    assert np.asarray(sixteen).max() == round(60000 * 255 / 65535)  # scaled, not clipped at 255
    cmyk = decode_image_file(save(tmp_path / "c.jpg", "CMYK"))
    rgba = decode_image_file(save(tmp_path / "c.png", "RGBA"))
    assert cmyk.shape == (3, 16, 20) and rgba.shape == (3, 16, 20) and cmyk.dtype == torch.uint8


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"image file not found: .*missing\.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt is not a readable image"):
        load_image(tmp_path / "notes.txt")
    broken = truncate(save(tmp_path / "broken.jpg"))
    with pytest.raises(DataError, match=r"broken\.jpg is not a readable image"):
        load_image(broken)
    with pytest.raises(DataError, match=r"broken\.jpg is not a readable image"):
        decode_image_file(broken)


def test_preprocess_image_matches_the_evaluation_loader(tree):
    with pytest.warns(DataWarning):
        bundle = build_data(config(tree), "cpu")
    meta = json.loads(json.dumps(bundle.meta()))  # as read back from a checkpoint
    x, _ = next(iter(bundle.test))
    first = sorted((tree / "val" / "circle").iterdir())[0]
    assert torch.allclose(preprocess_image(first, meta), x[0], atol=1e-5)
    assert torch.allclose(preprocess_image(Image.open(first), meta), x[0], atol=1e-5)
    gray = preprocess_image(save(tree / "g.png", "L", size=(40, 30)), meta)
    cmyk = preprocess_image(save(tree / "k.jpg", "CMYK"), meta)
    assert gray.shape == cmyk.shape == (3, 16, 16)
    one_channel = dict(
        meta, in_chans=1, normalization={"mode": "per_channel", "mean": [[[0.5]]], "std": [[[0.5]]]}
    )
    assert preprocess_image(save(tree / "r.png", "RGBA"), one_channel).shape == (1, 16, 16)
    with pytest.raises(DataError, match="no usable preprocessing"):
        preprocess_image(first, {"classes": []})


def test_preprocess_image_matches_the_in_memory_test_loader(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    labels = np.arange(4, dtype=np.uint8)
    for prefix in ("train", "t10k"):  # uncompressed IDX: magic (type 8 = uint8, ndim), sizes, data
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">BBBBIII", 0, 0, 8, 3, 4, 28, 28) + images.tobytes()
        )
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">BBBBI", 0, 0, 8, 1, 4) + labels.tobytes()
        )
    bundle = build_data(
        DataConfig(dataset="mnist", data_dir=str(tmp_path), verify_checksums=False, batch_size=2), "cpu"
    )
    x, _ = next(iter(bundle.test))
    assert torch.allclose(preprocess_image(Image.fromarray(images[2]), bundle.meta()), x[2], atol=1e-6)
