"""Small datasets held in memory: locate the standard files, verify them, load uint8 tensors.

Search order for every dataset (the first place holding the split's files wins): ``$RESNETS_DATA``,
the user cache (``~/.cache/resnets``), then system locations (Debian's
``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST). A ``data_dir`` (``--data-dir``) is used
alone: a file missing there is an error naming it, never a silent fallback to another copy. Under each
root the standard layouts are accepted: ``<root>/<name>/``, torchvision's own layout
(``<root>/FashionMNIST/raw/``, ``<root>/cifar-10-batches-py/``) and the root itself.
Downloads happen only when asked (``download=True``), through torchvision, into a temporary
folder that is verified before anything is moved into the first search root.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets as tv_datasets

from ..errors import DataError, unknown_name
from . import formats

FOLDER_DATASETS = ("imagefolder", "imagenet")


@dataclass(frozen=True)
class ArraySpec:
    """Where a small dataset's files live and what they must contain."""

    name: str
    kind: str  # "idx" or "cifar"
    # split -> ((file name, MD5 of its contents), ...). IDX sums are of the decompressed file so that
    # any gzip of the official data passes (Debian re-compressed Fashion-MNIST; the contents match).
    files: dict[str, tuple[tuple[str, str], ...]]
    subdirs: tuple[str, ...]  # layouts under a search root, most specific first; "" is the root itself
    torchvision_class: str
    torchvision_subdir: str  # where torchvision's download puts the files under its root
    classes: tuple[str, ...] = ()  # IDX: known names; CIFAR: read from the meta file
    meta_file: tuple[str, str, str] | None = None  # CIFAR: (file, md5, key of the class names)
    label_key: str = "labels"
    system_dirs: tuple[str, ...] = ()
    apt_package: str | None = None


_MNIST_CLASSES = (
    "0 - zero",
    "1 - one",
    "2 - two",
    "3 - three",
    "4 - four",
    "5 - five",
    "6 - six",
    "7 - seven",
    "8 - eight",
    "9 - nine",
)  # torchvision's names
FASHION_MNIST_CLASSES = (
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
)


def _idx_files(train_images: str, train_labels: str, test_images: str, test_labels: str):
    return {
        "train": (("train-images-idx3-ubyte", train_images), ("train-labels-idx1-ubyte", train_labels)),
        "test": (("t10k-images-idx3-ubyte", test_images), ("t10k-labels-idx1-ubyte", test_labels)),
    }


ARRAY_DATASETS: dict[str, ArraySpec] = {
    "mnist": ArraySpec(
        "mnist",
        "idx",
        _idx_files(
            "6bbc9ace898e44ae57da46a324031adb",
            "a25bea736e30d166cdddb491f175f624",
            "2646ac647ad5339dbf082846283269ea",
            "27ae3e4e09519cfbb04c329615203637",
        ),
        subdirs=("mnist", "MNIST/raw", ""),
        torchvision_class="MNIST",
        torchvision_subdir="MNIST/raw",
        classes=_MNIST_CLASSES,
    ),
    "fashion-mnist": ArraySpec(
        "fashion-mnist",
        "idx",
        _idx_files(
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "9018921c3c673c538a1fc5bad174d6f9",
            "8181f5470baa50b63fa0f6fddb340f0a",
            "15d484375f8d13e6eb1aabb0c3f46965",
        ),
        subdirs=("fashion-mnist", "FashionMNIST/raw", ""),
        torchvision_class="FashionMNIST",
        torchvision_subdir="FashionMNIST/raw",
        classes=FASHION_MNIST_CLASSES,
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        apt_package="dataset-fashion-mnist",
    ),
    "cifar10": ArraySpec(
        "cifar10",
        "cifar",
        {
            "train": (
                ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ),
            "test": (("test_batch", "40351d587109b95175f43aff81a1287e"),),
        },
        subdirs=("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10", ""),
        torchvision_class="CIFAR10",
        torchvision_subdir="cifar-10-batches-py",
        meta_file=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888", "label_names"),
    ),
    "cifar100": ArraySpec(
        "cifar100",
        "cifar",
        {
            "train": (("train", "16019d7e3df5f24257cddd939b257f8d"),),
            "test": (("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        },
        subdirs=("cifar-100-python", "cifar100/cifar-100-python", "cifar100", ""),
        torchvision_class="CIFAR100",
        torchvision_subdir="cifar-100-python",
        meta_file=("meta", "7973b15100ade9c7d40fb424638fde48", "fine_label_names"),
        label_key="fine_labels",
    ),
}

DATASET_NAMES = (*ARRAY_DATASETS, *FOLDER_DATASETS)


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """One split in memory: ``images`` uint8 N x C x H x W, ``labels`` int64 N, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str = field(default="", compare=False)  # where it came from, for error messages

    def __post_init__(self) -> None:
        where = self.source or "in-memory dataset"
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"{where}: images must be uint8 N x C x H x W, got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise DataError(
                f"{where}: {len(self.images)} images but labels of shape "
                f"{tuple(self.labels.shape)} ({self.labels.dtype}); they must match one to one"
            )
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DataError(
                f"{where}: labels out of range: found {int(self.labels.min())}..."
                f"{int(self.labels.max())} but the dataset has {len(self.classes)} classes "
                f"(labels must be 0..{len(self.classes) - 1})"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, indices: torch.Tensor) -> ArrayDataset:
        return ArrayDataset(self.images[indices], self.labels[indices], self.classes, self.source)

    def to(self, device: torch.device) -> ArrayDataset:
        return ArrayDataset(self.images.to(device), self.labels.to(device), self.classes, self.source)


def cache_dir() -> Path:
    """The user cache, ``~/.cache/resnets`` (``$XDG_CACHE_HOME/resnets`` when that is set)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "resnets"


def search_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """``[data_dir]`` alone when given (the folder named on the command line is the one used);
    otherwise ``$RESNETS_DATA``, then the user cache shared by every run."""
    if data_dir:
        return [Path(data_dir).expanduser()]
    roots = []
    if os.environ.get("RESNETS_DATA"):
        roots.append(Path(os.environ["RESNETS_DATA"]).expanduser())
    roots.append(cache_dir())
    return roots


def get_spec(name: str) -> ArraySpec:
    if name not in ARRAY_DATASETS:
        raise unknown_name("dataset", name, DATASET_NAMES)
    return ARRAY_DATASETS[name]


def _split_files(spec: ArraySpec, split: str) -> tuple[tuple[str, str], ...]:
    if split not in spec.files:
        raise unknown_name("split", split, spec.files)
    return spec.files[split] + ((spec.meta_file[:2],) if spec.meta_file else ())


def _existing(folder: Path, filename: str) -> Path | None:
    """``folder/filename``, or its ``.gz`` (the raw file wins: torchvision keeps both)."""
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        try:
            if candidate.is_file():
                return candidate
        except PermissionError:  # a search location this user may not read: as if absent
            return None
    return None


def locate(spec: ArraySpec, split: str, data_dir=None) -> tuple[Path | None, list[Path]]:
    """(first folder holding every file of the split, every folder looked in)."""
    folders = [root / sub if sub else root for root in search_roots(data_dir) for sub in spec.subdirs]
    if not data_dir:
        folders += [Path(d) for d in spec.system_dirs]
    looked: list[Path] = []
    for folder in folders:
        if folder in looked:
            continue
        looked.append(folder)
        if all(_existing(folder, name) for name, _ in _split_files(spec, split)):
            return folder, looked
    return None, looked


def _not_found(spec: ArraySpec, split: str, looked: list[Path], data_dir) -> DataError:
    files = [name for name, _ in _split_files(spec, split)]
    names = ", ".join(files)
    partial = [(folder, [n for n in files if not _existing(folder, n)]) for folder in looked]
    partial = [(folder, missing) for folder, missing in partial if len(missing) < len(files)]
    if data_dir and partial:  # the files are there in part: say which one is missing
        folder, missing = partial[0]
        return DataError(
            f"dataset {spec.name!r} ({split} split) in --data-dir {data_dir} is incomplete: "
            f"{', '.join(str(folder / m) for m in missing)} (or .gz) missing. --data-dir is "
            f"used alone: put the file(s) there, rerun with --download, or drop --data-dir to "
            f"use the standard locations"
        )
    ways = []
    if spec.apt_package:
        elsewhere = " and drop --data-dir, which is used alone" if data_dir else ""
        ways.append(
            f"`sudo apt-get install {spec.apt_package}` (Debian/Ubuntu; installs into "
            f"{spec.system_dirs[0]}{elsewhere})"
        )
    ways.append(f"rerun with --download (fetches it through torchvision into {search_roots(data_dir)[0]})")
    ways.append(f"pass --data-dir DIR for a folder holding {names} (or DIR/{spec.subdirs[0]}/ holding them)")
    return DataError(
        f"dataset {spec.name!r} ({split} split) not found. Looked in: "
        f"{', '.join(str(p) for p in looked)}. Get it with one of: {'; or '.join(ways)}"
    )


# Every known file, for saying which dataset a mismatching file belongs to.
_KNOWN_MD5 = {
    md5: (spec.name, name)
    for spec in ARRAY_DATASETS.values()
    for files in (*spec.files.values(), (spec.meta_file[:2],) if spec.meta_file else ())
    for name, md5 in files
}


def read_verified(path: Path, md5: str, dataset: str, verify: bool, idx: bool = False) -> bytes:
    """The file's (decompressed) bytes, checked against the official contents' MD5. Bounded before it is
    read: no more than any official file (unchecked copies: ``formats.MAX_FILE_BYTES``), nor than an IDX
    header declares. A file read before in this process, unchanged since (same inode, size and
    modification time), is not decompressed and checked again: an experiment's many runs read the same
    files (Fashion-MNIST's training images took 0.2 s a read, 40% of a smoke run)."""
    try:
        stat = path.stat()
    except OSError:
        stat = None
    if stat is None:
        return _read_verified(path, md5, dataset, verify, idx)
    stamp = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return _read_verified_cached(path.resolve(), stamp, md5, dataset, verify, idx)


@functools.lru_cache(maxsize=8)  # a dataset's files (CIFAR-10: 7), at most about 400 MB
def _read_verified_cached(
    path: Path, stamp: tuple[int, int, int, int], md5: str, dataset: str, verify: bool, idx: bool
) -> bytes:
    return _read_verified(path, md5, dataset, verify, idx)


def _read_verified(path: Path, md5: str, dataset: str, verify: bool, idx: bool) -> bytes:
    limit = formats.MAX_OFFICIAL_BYTES if verify else formats.MAX_FILE_BYTES
    declared = functools.partial(formats.idx_length, path=path) if idx else None
    data = formats.read_file_bytes(path, limit, declared)
    if verify and (got := formats.md5_hex(data)) != md5:
        other = _KNOWN_MD5.get(got)
        hint = f" (it is {other[0]}'s {other[1]}, not {dataset}'s)" if other else ""
        contents = "decompressed contents" if path.suffix == ".gz" else "contents"
        raise DataError(
            f"{path}: checksum mismatch{hint}: MD5 of its {contents} is {got}, the official "
            f"{dataset} file has {md5}. The file is corrupt or not the official release: delete "
            f"it and get it again (--download), or, if it is meant to differ, turn the check off "
            f"with --no-verify-checksums (verify_checksums=False in Python)"
        )
    return data


def _load_idx(spec: ArraySpec, folder: Path, split: str, verify: bool) -> ArrayDataset:
    (images_name, images_md5), (labels_name, labels_md5) = spec.files[split]
    images_path, labels_path = _existing(folder, images_name), _existing(folder, labels_name)
    images = formats.parse_idx(read_verified(images_path, images_md5, spec.name, verify, True), images_path)
    labels = formats.parse_idx(read_verified(labels_path, labels_md5, spec.name, verify, True), labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected uint8 images N x H x W, found {images.dtype} of shape {images.shape}"
        )
    if 0 in images.shape:
        count, height, width = images.shape
        raise DataError(
            f"{images_path} holds {count} images of {height} x {width} pixels; a dataset needs "
            f"at least one image of at least 1 x 1 pixel"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path} holds {labels.shape} labels but {images_path} holds {len(images)} "
            f"images; they must match one to one"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{labels_path} stores its labels as {labels.dtype}; class labels are whole numbers "
            f"(an IDX file of type 0x08 ubyte, as MNIST's): labels such as 3.7 would be cut to 3"
        )
    images_t = torch.from_numpy(images.copy()).unsqueeze(1)  # copy: frombuffer arrays are read-only
    return ArrayDataset(
        images_t, torch.from_numpy(labels.astype(np.int64)), list(spec.classes), source=str(labels_path)
    )


def _load_cifar(spec: ArraySpec, folder: Path, split: str, verify: bool) -> ArrayDataset:
    meta_name, meta_md5, key = spec.meta_file
    meta_path = _existing(folder, meta_name)
    meta = read_verified(meta_path, meta_md5, spec.name, verify)
    classes = formats.parse_cifar_classes(meta, meta_path, key)
    images, labels = [], []
    for name, md5 in spec.files[split]:
        path = _existing(folder, name)
        x, y = formats.parse_cifar_batch(read_verified(path, md5, spec.name, verify), path, spec.label_key)
        images.append(x)
        labels.append(y)
    return ArrayDataset(
        torch.from_numpy(np.concatenate(images)),
        torch.from_numpy(np.concatenate(labels)),
        classes,
        source=f"{folder} ({split} batches)",
    )


def read_split(spec: ArraySpec, folder: Path, split: str, verify: bool = True) -> ArrayDataset:
    loader = _load_idx if spec.kind == "idx" else _load_cifar
    return loader(spec, folder, split, verify)


def download_dataset(spec: ArraySpec, root: Path, verify: bool = True) -> Path:
    """Fetch the dataset through torchvision into ``root/<subdirs[0]>``; nothing lands there unverified."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-download-", dir=root))
    except OSError as exc:
        raise DataError(
            f"cannot download {spec.name} into {root}: {exc.strerror or exc}; pass --data-dir "
            f"a writable folder"
        ) from None
    try:
        try:
            getattr(tv_datasets, spec.torchvision_class)(root=str(tmp), train=True, download=True)
        except Exception as exc:  # network errors, torchvision's own MD5 check on the archive
            raise DataError(
                f"downloading {spec.name} through torchvision failed: {exc}. Check the network "
                f"or get the files by hand and pass --data-dir"
            ) from None
        fetched = tmp / spec.torchvision_subdir
        names = {name for split in spec.files for name, _ in _split_files(spec, split)}
        for split in spec.files:  # verify everything before anything is kept
            read_split(spec, fetched, split, verify)
        final = root / spec.subdirs[0]
        final.mkdir(parents=True, exist_ok=True)
        for name in sorted(names):  # the MNIST family keeps only the archives (torchvision also unpacks)
            gz = fetched / f"{name}.gz"
            path = gz if spec.kind == "idx" and gz.is_file() else fetched / name
            os.replace(path, final / path.name)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_downloaded(name: str, data_dir=None, verify: bool = True) -> None:
    """Download the dataset (into the first search root) unless every split is already there."""
    spec = get_spec(name)
    if any(locate(spec, split, data_dir)[0] is None for split in spec.files):
        download_dataset(spec, search_roots(data_dir)[0], verify)


def load_arrays(
    name: str, split: str, data_dir=None, download: bool = False, verify: bool = True
) -> ArrayDataset:
    """One split ("train" or "test") of mnist, fashion-mnist, cifar10 or cifar100, on the CPU."""
    spec = get_spec(name)
    folder, looked = locate(spec, split, data_dir)
    if folder is None and download:
        ensure_downloaded(name, data_dir, verify)
        folder, looked = locate(spec, split, data_dir)
    if folder is None:
        raise _not_found(spec, split, looked, data_dir)
    return read_split(spec, folder, split, verify)
