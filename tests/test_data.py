"""Datasets in their real file formats: IDX (gz and raw), CIFAR pickle batches; search order,
checksums, downloads, damaged files, and the real Fashion-MNIST when it is installed."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from resnets.data import DataConfig, build_data, datasets, load_arrays
from resnets.data.formats import md5_hex
from resnets.errors import ConfigError, DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@pytest.fixture(autouse=True)
def _isolated_search_roots(tmp_path, monkeypatch):
    """Tests see neither the user's $RESNETS_DATA nor their cache."""
    monkeypatch.delenv("RESNETS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist_like(folder: Path, n_train=40, n_test=20, size=28, classes=10, seed=0, gz=True, shift=0):
    """The four files of an MNIST-format dataset with balanced labels; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) + shift) % classes
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


def cifar_pickle(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)  # the protocol of the official (Python 2) files


def write_cifar10(folder: Path, per_batch=6, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(cifar_pickle({"label_names": names, "num_vis": 3072}))
    written = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        (folder / name).write_bytes(
            cifar_pickle(
                {
                    "batch_label": name,
                    "data": data,
                    "labels": labels,
                    "filenames": [f"{i}.png" for i in range(per_batch)],
                }
            )
        )
        written[name] = (data, labels)
    return names, written


# ---------------------------------------------------------------- IDX (MNIST family)


def test_idx_gz_and_raw_files_load_with_their_contents(tmp_path):
    arrays = write_mnist_like(tmp_path / "fm", gz=True)
    raw = tmp_path / "fm" / "t10k-images-idx3-ubyte.gz"  # mix: the test images uncompressed
    raw.with_suffix("").write_bytes(gzip.decompress(raw.read_bytes()))
    raw.unlink()
    train = load_arrays("fashion-mnist", "train", data_dir=tmp_path / "fm", verify=False)
    test = load_arrays("fashion-mnist", "test", data_dir=tmp_path / "fm", verify=False)
    assert train.images.shape == (40, 1, 28, 28) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(test.images[:, 0], torch.from_numpy(arrays["t10k"][0]))
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == arrays["train"][1].tolist()
    assert train.classes == FASHION_NAMES


def test_checksums_are_of_the_contents_so_any_gzip_of_the_official_data_passes(tmp_path, monkeypatch):
    write_mnist_like(tmp_path, gz=True)
    spec = datasets.ARRAY_DATASETS["mnist"]
    sums = {
        name: md5_hex(gzip.decompress((tmp_path / f"{name}.gz").read_bytes()))
        for files in spec.files.values()
        for name, _ in files
    }
    files = {split: tuple((name, sums[name]) for name, _ in fs) for split, fs in spec.files.items()}
    monkeypatch.setitem(datasets.ARRAY_DATASETS, "mnist", replace(spec, files=files))
    assert len(load_arrays("mnist", "train", data_dir=tmp_path)) == 40
    # a re-compressed copy (other gzip level, other header) of the same contents passes too
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=123))
    assert len(load_arrays("mnist", "train", data_dir=tmp_path)) == 40


def test_checksum_mismatch_names_the_file(tmp_path):
    write_mnist_like(tmp_path)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: checksum mismatch.*verify_checksums"):
        load_arrays("mnist", "train", data_dir=tmp_path)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"Fashion-MNIST is not installed in {FASHION_DIR}")
def test_checksum_mismatch_says_which_dataset_the_file_belongs_to(tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(FASHION_DIR / name, tmp_path / name)
    with pytest.raises(DataError, match=r"it is fashion-mnist's t10k-images-idx3-ubyte, not mnist's"):
        load_arrays("mnist", "test", data_dir=tmp_path)


def test_truncated_gzip_names_the_file_and_caches_nothing(tmp_path):
    write_mnist_like(tmp_path / "d")
    path = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    before = sorted(p.name for p in (tmp_path / "d").iterdir())
    with pytest.raises(DataError, match=rf"{path}.*truncated"):
        load_arrays("mnist", "train", data_dir=tmp_path / "d", verify=False)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == before
    assert not (tmp_path / "cache").exists()


def test_truncated_raw_idx_and_wrong_magic_name_the_file(tmp_path):
    write_mnist_like(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=rf"{path} is truncated.*\(40, 28, 28\)"):
        load_arrays("mnist", "train", data_dir=tmp_path, verify=False)
    path.write_bytes(b"\x12\x34\x56\x78" + b"\0" * 100)
    with pytest.raises(DataError, match=rf"{path} is not an IDX file"):
        load_arrays("mnist", "train", data_dir=tmp_path, verify=False)


def test_label_count_mismatch_and_labels_out_of_range(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(39))
    with pytest.raises(DataError, match="holds .*39.* labels but .* holds 40 images"):
        load_arrays("mnist", "train", data_dir=tmp_path, verify=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(40, 10))
    with pytest.raises(
        DataError,
        match=r"train-labels-idx1-ubyte\.gz: labels out of range: found 10\.\.\.10 "
        r"but the dataset has 10 classes",
    ):
        load_arrays("mnist", "train", data_dir=tmp_path, verify=False)


def test_train_and_test_images_of_different_sizes_are_an_error(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((20, 20, 20)))
    cfg = DataConfig(dataset="mnist", data_dir=str(tmp_path), verify_checksums=False, batch_size=8)
    with pytest.raises(DataError, match="inconsistent size.*28x28.*1x20x20"):
        build_data(cfg, "cpu")


# ---------------------------------------------------------------- CIFAR pickle batches


def test_cifar10_batches_load_channel_major_with_their_class_names(tmp_path):
    names, written = write_cifar10(tmp_path / "cifar-10-batches-py")
    train = load_arrays("cifar10", "train", data_dir=tmp_path, verify=False)
    test = load_arrays("cifar10", "test", data_dir=tmp_path, verify=False)
    assert train.images.shape == (30, 3, 32, 32) and len(test) == 6
    assert train.classes == names
    data, labels = written["data_batch_2"]
    row = data[1]  # the 2nd image of the 2nd batch: R plane, then G, then B, each row-major
    image = train.images[6 + 1]
    assert image[0, 0, 0] == row[0] and image[1, 0, 0] == row[1024] and image[2, 31, 31] == row[3071]
    assert image[0, 3, 5] == row[3 * 32 + 5]
    assert train.labels[7] == labels[1]


def test_cifar100_uses_fine_labels_and_names(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"class{i}" for i in range(100)]
    (folder / "meta").write_bytes(cifar_pickle({"fine_label_names": fine, "coarse_label_names": ["c"] * 20}))
    data = np.arange(4 * 3072, dtype=np.int64).astype(np.uint8).reshape(4, 3072)
    for name in ("train", "test"):
        (folder / name).write_bytes(
            cifar_pickle({"data": data, "fine_labels": [99, 0, 5, 7], "coarse_labels": [19, 0, 1, 1]})
        )
    train = load_arrays("cifar100", "train", data_dir=tmp_path, verify=False)
    assert train.classes == fine and train.labels.tolist() == [99, 0, 5, 7]


def test_cifar_python2_style_pickles_load(tmp_path):
    """The official files name numpy's rebuild function numpy.core.multiarray (NumPy 1) and were
    written by Python 2 (bytes keys decoded as latin1)."""
    names, _ = write_cifar10(tmp_path)
    path = tmp_path / "test_batch"
    data = np.full((2, 3072), 7, dtype=np.uint8)
    blob = cifar_pickle({b"data": data, b"labels": [3, 4]})
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    test = load_arrays("cifar10", "test", data_dir=tmp_path, verify=False)
    assert test.labels.tolist() == [3, 4] and int(test.images.float().mean()) == 7


def test_cifar_truncated_or_hostile_pickles_are_refused(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=rf"{path} is truncated or not a CIFAR python batch"):
        load_arrays("cifar10", "test", data_dir=tmp_path, verify=False)

    class Hostile:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    path.write_bytes(cifar_pickle({"data": Hostile(), "labels": []}))
    with pytest.raises(DataError, match="unexpected object"):
        load_arrays("cifar10", "test", data_dir=tmp_path, verify=False)
    assert not Path("pwned").exists()


def test_cifar_checksums_are_verified(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match=r"batches\.meta: checksum mismatch"):
        load_arrays("cifar10", "train", data_dir=tmp_path)


# ---------------------------------------------------------------- locating, downloading


def test_search_order_data_dir_then_env_then_cache_then_system(tmp_path, monkeypatch):
    dirs = {name: tmp_path / name for name in ("cli", "env", "cache", "system")}
    for shift, name in enumerate(dirs):
        # torchvision's layout under the env root; ours (<root>/<dataset>) elsewhere
        folder = dirs[name] / ("FashionMNIST/raw" if name == "env" else "fashion-mnist")
        if name == "system":
            folder = dirs[name]
        write_mnist_like(folder, shift=shift)
    spec = datasets.ARRAY_DATASETS["fashion-mnist"]
    monkeypatch.setitem(
        datasets.ARRAY_DATASETS, "fashion-mnist", replace(spec, system_dirs=(str(dirs["system"]),))
    )
    monkeypatch.setenv("RESNETS_DATA", str(dirs["env"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # cache = tmp_path/resnets
    shutil.move(dirs["cache"] / "fashion-mnist", tmp_path / "resnets" / "fashion-mnist")

    def first_label(data_dir=None):
        return int(load_arrays("fashion-mnist", "train", data_dir=data_dir, verify=False).labels[0])

    assert first_label(dirs["cli"]) == 0
    assert first_label() == 1  # $RESNETS_DATA
    monkeypatch.delenv("RESNETS_DATA")
    assert first_label() == 2  # the user cache
    shutil.rmtree(tmp_path / "resnets")
    assert first_label() == 3  # the system location


def test_dataset_not_found_names_every_place_and_how_to_get_it(tmp_path, monkeypatch):
    spec = datasets.ARRAY_DATASETS["fashion-mnist"]
    system = tmp_path / "usr-share"
    monkeypatch.setitem(datasets.ARRAY_DATASETS, "fashion-mnist", replace(spec, system_dirs=(str(system),)))
    monkeypatch.setenv("RESNETS_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        load_arrays("fashion-mnist", "train", data_dir=tmp_path / "mine")
    message = str(info.value)
    mine, cache = tmp_path / "mine", tmp_path / "cache" / "resnets"
    env = tmp_path / "env"
    for place in (mine / "fashion-mnist", mine):  # --data-dir is used alone
        assert str(place) in message
    looked = message.split("Looked in: ")[1].split(". Get it")[0]
    assert looked.split(", ") == [str(mine / "fashion-mnist"), str(mine / "FashionMNIST/raw"), str(mine)]
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message
    assert "--data-dir" in message
    with pytest.raises(DataError) as info:
        load_arrays("fashion-mnist", "train")
    message = str(info.value)
    for place in (env / "FashionMNIST/raw", cache / "fashion-mnist", system):
        assert str(place) in message
    with pytest.raises(DataError, match="cifar-10-batches-py.*--download.*--data-dir") as info:
        load_arrays("cifar10", "test")
    assert "apt-get" not in str(info.value)


def test_unknown_dataset_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown dataset 'fashion_mnist'. Did you mean: fashion-mnist"):
        load_arrays("fashion_mnist", "train")
    with pytest.raises(ConfigError, match="unknown dataset 'cifar-10'"):
        DataConfig(dataset="cifar-10")


def _fake_torchvision_download(files: dict[str, bytes], calls: list):
    """Stands in for torchvision's network fetch: writes what a download would leave behind."""

    def fake(url, download_root, filename=None, md5=None, **kwargs):
        calls.append(url)
        name = filename or os.path.basename(url)
        os.makedirs(download_root, exist_ok=True)
        Path(download_root, name).write_bytes(files[name])
        Path(download_root, name[:-3]).write_bytes(gzip.decompress(files[name]))  # torchvision extracts

    return fake


def test_download_goes_through_torchvision_and_keeps_only_verified_files(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    source = tmp_path / "source"
    write_mnist_like(source)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    calls = []
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", _fake_torchvision_download(files, calls))
    root = tmp_path / "root"
    with pytest.raises(DataError, match="not found"):
        load_arrays("mnist", "train", data_dir=root)  # never downloads unless asked
    assert not calls
    # with checksums on, the fake files are not the official ones: nothing is kept
    with pytest.raises(DataError, match="checksum mismatch"):
        load_arrays("mnist", "train", data_dir=root, download=True)
    assert calls and list(root.iterdir()) == []
    train = load_arrays("mnist", "train", data_dir=root, download=True, verify=False)
    assert len(train) == 40
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(files)  # the archives only
    assert [p.name for p in root.iterdir()] == ["mnist"]  # no temporary folder left


def test_failed_download_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="downloading mnist through torchvision failed.*unreachable"):
        datasets.ensure_downloaded("mnist", tmp_path / "root")
    assert list((tmp_path / "root").iterdir()) == []


# ---------------------------------------------------------------- build_data on in-memory datasets


def test_build_data_val_split_is_stratified_seeded_and_carved_from_train(tmp_path):
    write_mnist_like(tmp_path, n_train=200, n_test=30)
    cfg = DataConfig(
        dataset="mnist",
        data_dir=str(tmp_path),
        verify_checksums=False,
        val_split=50,
        batch_size=16,
        eval_batch_size=64,
        seed=3,
        crop_padding=0,
    )  # unpadded: compare images
    bundle = build_data(cfg, "cpu")
    assert bundle.train.num_samples == 150 and bundle.val.num_samples == 50 and bundle.test.num_samples == 30
    val_labels = torch.cat([y for _, y in bundle.val])
    assert torch.bincount(val_labels).tolist() == [5] * 10
    val_images = {bytes(img.numpy()) for img in bundle.val.images}
    train_images = {bytes(img.numpy()) for img in bundle.train.images}
    assert len(val_images) == 50 and not val_images & train_images
    again = build_data(cfg, "cpu")
    assert torch.equal(again.val.images, bundle.val.images)
    other = build_data(replace(cfg, seed=4), "cpu")
    assert not torch.equal(other.val.images, bundle.val.images)


def test_build_data_normalises_with_training_statistics_only(tmp_path):
    write_mnist_like(tmp_path, n_train=100, n_test=20)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full((20, 28, 28), 255))))
    cfg = DataConfig(dataset="mnist", data_dir=str(tmp_path), verify_checksums=False, batch_size=10)
    bundle = build_data(cfg, "cpu")
    train = load_arrays("mnist", "train", data_dir=tmp_path, verify=False).images.double() / 255
    assert bundle.normalization.mean.item() == pytest.approx(train.mean().item(), abs=1e-6)
    assert bundle.normalization.std.item() == pytest.approx(train.std(unbiased=False).item(), rel=1e-5)
    meta = bundle.meta()
    assert json.loads(json.dumps(meta)) == meta  # plain types only
    assert meta["dataset"] == "mnist" and meta["num_classes"] == 10 and meta["in_chans"] == 1
    assert meta["image_size"] == 28 and meta["eval_preprocess"]["crop"] == 28
    assert bundle.train.padding == 3 and bundle.train.hflip is False  # digits are not mirrored
    fashion = tmp_path / "fashion"
    fashion.mkdir()
    for p in tmp_path.glob("*.gz"):
        shutil.copy(p, fashion / p.name)
    bundle = build_data(replace(cfg, dataset="fashion-mnist", data_dir=str(fashion)), "cpu")
    assert bundle.train.hflip is True and bundle.classes == FASHION_NAMES


def test_build_data_rejects_options_that_would_be_ignored(tmp_path):
    with pytest.raises(ConfigError, match="crop_padding applies to the in-memory datasets"):
        DataConfig(dataset="imagefolder", crop_padding=4)
    # "no pad-and-crop" (the fast-cpu recipe's 0) holds for folders, so `resnets train --dataset
    # imagefolder` works with the default recipe
    assert DataConfig(dataset="imagefolder", crop_padding=0).crop_padding == 0
    with pytest.raises(ConfigError, match="train_transform='rrc' applies to image folders"):
        DataConfig(dataset="cifar10", train_transform="rrc")
    with pytest.raises(ConfigError, match="unknown normalization 'pixel'"):
        DataConfig(normalization="pixel")
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        DataConfig(batch_size=0)
    write_mnist_like(tmp_path, n_train=20)
    base = DataConfig(dataset="mnist", data_dir=str(tmp_path), verify_checksums=False)
    with pytest.raises(ConfigError, match="image_size applies to image folders"):
        build_data(replace(base, image_size=32), "cpu")
    with pytest.raises(ConfigError, match="20 images per process, fewer than one batch of 128"):
        build_data(base, "cpu")
    with pytest.raises(ConfigError, match="val_split of 20 images is impossible with 20 images"):
        build_data(replace(base, val_split=20, batch_size=4), "cpu")
    too_large = (
        "train_crop_size=35 is larger than mnist's 28x28 images padded by crop_padding=3; use at most 34"
    )
    with pytest.raises(ConfigError, match=too_large):
        build_data(replace(base, train_crop_size=35, batch_size=4), "cpu")
    with pytest.raises(ConfigError, match="per_pixel normalization subtracts a 28x28 mean image"):
        build_data(replace(base, train_crop_size=24, normalization="per_pixel", batch_size=4), "cpu")
    with pytest.raises(ConfigError, match="eval_resize applies to image folders"):
        DataConfig(dataset="cifar10", eval_resize=36)
    cropped = build_data(replace(base, train_crop_size=24, crop_padding=0, batch_size=4), "cpu")
    assert next(iter(cropped.train))[0].shape[-2:] == (24, 24) and cropped.image_size == 28


# ---------------------------------------------------------------- the real Fashion-MNIST


@pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason=f"Fashion-MNIST is not installed in {FASHION_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist():
    train = load_arrays("fashion-mnist", "train")  # found in the system location, checksums verified
    test = load_arrays("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.classes == FASHION_NAMES and len(train.classes) == 10
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    bundle = build_data(DataConfig(val_split=5000, test_subset=1000), "cpu")
    assert bundle.train.num_samples == 55000 and len(bundle.train) == 55000 // 128
    assert torch.bincount(bundle.val.labels).tolist() == [500] * 10
    assert torch.bincount(bundle.test.labels).tolist() == [100] * 10


def test_a_file_read_again_unchanged_is_not_read_again_and_a_changed_one_is(tmp_path, monkeypatch):
    """read_verified keeps what it read (an experiment's runs read the same files); a rewritten file
    (another size, or the same size at another modification time) is read and checked again, and a file
    that fails its check is never kept."""
    from resnets.data import formats

    reads = []
    real = formats.read_file_bytes
    monkeypatch.setattr(formats, "read_file_bytes", lambda *a, **k: reads.append(1) or real(*a, **k))
    path = tmp_path / "file.bin"
    path.write_bytes(b"abc")
    assert datasets.read_verified(path, md5_hex(b"abc"), "x", True) == b"abc"
    assert datasets.read_verified(path, md5_hex(b"abc"), "x", True) == b"abc"
    assert len(reads) == 1
    path.write_bytes(b"abcd")
    assert datasets.read_verified(path, md5_hex(b"abcd"), "x", True) == b"abcd" and len(reads) == 2
    stamp = path.stat().st_mtime_ns
    path.write_bytes(b"abce")  # the same size
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    with pytest.raises(DataError, match="checksum mismatch"):
        datasets.read_verified(path, md5_hex(b"abcd"), "x", True)
    with pytest.raises(DataError, match="checksum mismatch"):
        datasets.read_verified(path, md5_hex(b"abcd"), "x", True)
    assert len(reads) == 4
