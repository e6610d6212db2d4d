"""Image folders (the user's own data) and ImageNet: scan, transform, load with workers.

Layouts, as torchvision's ``ImageFolder`` users know them (one subfolder per class):
- ``root/train/<class>/...`` with ``root/val/<class>/...`` (and/or ``root/test/<class>/...``):
  the test set is ``test/`` when present, else ``val/`` (ImageNet reports its val set);
  when both exist, ``val/`` is the validation set;
- ``root/<class>/...`` alone: a seeded, stratified train/test split.
``imagenet`` is the ILSVRC-2012 layout (``train/`` and ``val/`` as class folders).

Decoding and geometry run in DataLoader workers on uint8 tensors; the float conversion,
normalisation and PCA lighting run batched on the training device (less to copy, no per-sample
float work on the CPU). With ``encoded=True`` (automatic on CUDA, ``device_decode.py``) the workers
only read JPEG bytes and the device decodes and crops them. Unreadable images are skipped with a
warning and counted per epoch, as timm does, or stop the run with ``strict=True``.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from ..errors import DataError
from .augment import Normalization, pca_lighting_shift
from .device_decode import decode_batch, read_for_device, seeded
from .images import IMAGE_EXTENSIONS, decode_image_file, is_image_file, resize_center_crop
from .policies import ERASING_STREAM, per_sample
from .splits import repeated_shard_indices, seed_for, shard_indices, shard_size, stratified_split

Sample = tuple[str, int]
MIN_SAMPLED = 20  # images sampled before "most are unreadable" stops a run
MAX_SUBSTITUTES = 10  # unreadable training images in a row before giving up on a sample (timm: 20)
SYNSET_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")  # ImageNet wnid -> readable names


class DataWarning(UserWarning):
    """Data problems the run survives: skipped images, empty class folders."""


@dataclass
class FolderSplits:
    root: Path
    classes: list[str]
    train: list[Sample]
    val: list[Sample] | None  # a val/ folder kept for validation (when test/ exists too)
    test: list[Sample]


def _class_dirs(folder: Path) -> list[str]:
    try:
        entries = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot read image folder {folder}: {exc.strerror or exc}") from None
    return entries


@dataclass
class Scan:
    """One pass over a folder tree: each real file and folder visited once, whatever links lead to it.

    ``root`` (a real path) bounds where symbolic links may point unless ``follow_links``; what was
    skipped is counted for the warning."""

    root: str
    follow_links: bool = False
    folders: set[str] = field(default_factory=set)  # real paths visited
    files: set[str] = field(default_factory=set)  # real paths of the image files found
    outside: list[str] = field(default_factory=list)  # links pointing out of root (not followed)
    loops: list[str] = field(default_factory=list)  # links back into a folder already scanned
    duplicates: int = 0  # image files reached a second time through a link
    broken: int = 0  # links to nothing
    crossing: list[str] = field(default_factory=list)  # links into another class's folder
    classes: dict[str, str] = field(default_factory=dict)  # real path of each class folder -> class
    others: tuple[str, ...] = ()  # real paths of the other splits' folders (train/, val/, test/)

    def images(self, top: str, real: str | None = None, claimed: bool = False, owner: str = "") -> list[str]:
        """Image files under ``top`` in ``os.walk`` order (files of a folder, then its subfolders,
        sorted by name). ``real``: the real path of ``top`` when known (links resolved);
        ``claimed``: ``top`` is a class folder, registered before any was scanned; ``owner``: the
        class whose folder this is (a link into another class's folder is skipped)."""
        real = real or os.path.realpath(top)
        if real in self.folders and not claimed:
            self.loops.append(top)
            return []
        self.folders.add(real)
        try:
            entries = sorted(os.scandir(top), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"cannot read image folder {top}: {exc.strerror or exc}") from None
        files, subfolders = [], []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            link = entry.is_symlink()
            if link and not self.follow_links and not self.inside(entry.path):
                self.outside.append(entry.path)
                continue
            try:
                kind = "folder" if entry.is_dir() else "file" if entry.is_file() else None
            except OSError:
                kind = None
            if kind is None:
                self.broken += link
                continue
            if kind == "file" and not is_image_file(entry.name):
                continue
            # the real path: resolved only for links (a plain entry of a real folder is real)
            target = os.path.realpath(entry.path) if link else os.path.join(real, entry.name)
            if link and self.class_of(target) not in (None, owner):
                self.crossing.append(entry.path)
                continue
            (subfolders if kind == "folder" else files).append((entry.path, target))
        out = []
        for path, target in files:
            if target in self.files:
                self.duplicates += 1
                continue
            self.files.add(target)
            out.append(path)
        for path, target in subfolders:
            out += self.images(path, target, owner=owner)
        return out

    def class_of(self, target: str) -> str | None:
        """The class whose folder holds ``target`` (a real path), if any (or "another split")."""
        if any(target == other or target.startswith(other.rstrip(os.sep) + os.sep) for other in self.others):
            return "another split"
        for top, name in self.classes.items():
            if target == top or target.startswith(top.rstrip(os.sep) + os.sep):
                return name
        return None

    def inside(self, path: str) -> bool:
        target = os.path.realpath(path)
        return target == self.root or target.startswith(self.root.rstrip(os.sep) + os.sep)

    def report(self) -> str | None:
        """What was skipped, in one line (None: nothing)."""
        parts = []
        if self.outside:
            parts.append(
                f"{len(self.outside)} pointing outside {self.root} (e.g. {self.outside[0]}; "
                f"--follow-links follows them)"
            )
        if self.loops:
            parts.append(
                f"{len(self.loops)} leading back into a folder already scanned (e.g. {self.loops[0]})"
            )
        if self.crossing:
            parts.append(
                f"{len(self.crossing)} into another class's or split's folder (e.g. {self.crossing[0]})"
            )
        if self.duplicates:
            parts.append(f"{self.duplicates} to image files already counted")
        if self.broken:
            parts.append(f"{self.broken} leading nowhere")
        return f"skipped symbolic links: {'; '.join(parts)}" if parts else None


def scan_classes(
    folder: Path, classes: list[str] | None = None, scan: Scan | None = None
) -> tuple[list[str], list[Sample], list[str]]:
    """(class names, (path, label) samples, empty class folders) of ``folder/<class>/**/<image>``.

    Non-image files are ignored; every real file counts once (``Scan``: links that loop, lead to a
    file already seen or out of the data folder are skipped). With ``classes`` given (a val/test
    folder), labels follow that list and a folder of an unknown class is an error."""
    scan = scan or Scan(os.path.realpath(folder))
    found = _class_dirs(folder)
    if not found:
        raise DataError(
            f"{folder} has no class subfolders; an image folder dataset needs one folder per "
            f"class ({folder}/<class>/<image>.jpg)"
        )
    classes = found if classes is None else classes
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(
            f"{folder} has class folders the training set lacks: {', '.join(unknown[:10])}; "
            f"every class must have a training folder"
        )
    index = {name: i for i, name in enumerate(classes)}
    samples, empty, tops = [], [], {}
    for name in found:
        top = str(folder / name)
        if os.path.islink(top) and not scan.follow_links and not scan.inside(top):
            scan.outside.append(top)
        elif (real := os.path.realpath(top)) in scan.folders:  # a class folder linking to another one
            scan.loops.append(top)
        else:
            tops[name] = scan.classes[real] = real
            scan.folders.add(real)  # claimed by its class: a link from another class does not take it
    for name in found:
        images = scan.images(str(folder / name), tops[name], True, tops[name]) if name in tops else []
        samples += [(path, index[name]) for path in images]
        if not images:
            empty.append(str(folder / name))
    return classes, samples, empty


def _readable_names(root: Path, wnids: list[str]) -> list[str]:
    """ImageNet's readable class names from a synset mapping file when one sits in ``root``."""
    for name in SYNSET_FILES:
        path = root / name
        if path.is_file():
            mapping = {}
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                wnid, _, words = line.strip().partition(" ")
                mapping[wnid] = words.split(",")[0].strip() or wnid
            return [mapping.get(w, w) for w in wnids]
    return wnids


def scan_layout(
    root: str | os.PathLike,
    dataset: str,
    test_fraction: float,
    seed: int,
    strict: bool,
    follow_links: bool = False,
) -> FolderSplits:
    """Find the train/val/test image lists of an image folder (see the module docstring).

    Symbolic links are followed inside ``root`` (each real file counts once, loops are cut) and
    out of it only with ``follow_links``; a warning says how many were skipped."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; pass --data-dir a folder of class subfolders")
    has = {name: (root / name).is_dir() for name in ("train", "val", "test")}
    if dataset == "imagenet" and not (has["train"] and has["val"]):
        raise DataError(
            f"{root} is not in the ILSVRC-2012 layout: imagenet needs train/ and val/ folders of "
            f"class subfolders (sort the flat val/ images into class folders first, e.g. with "
            f"torchvision.datasets.ImageNet or the usual valprep.sh)"
        )
    real_root, scans = os.path.realpath(root), []

    splits = [os.path.realpath(root / name) for name in ("train", "val", "test") if has[name]]

    def scan(folder: Path, classes: list[str] | None = None):
        others = tuple(s for s in splits if s != os.path.realpath(folder))
        scans.append(Scan(real_root, follow_links, others=others))
        return scan_classes(folder, classes, scans[-1])

    train_dir = root / "train" if has["train"] else root
    classes, train, empty = scan(train_dir)
    held_dir = None
    if has["train"] and (has["test"] or has["val"]):
        held_dir = root / "test" if has["test"] else root / "val"
    val = test = None
    if held_dir is not None:
        _, test, empty_test = scan(held_dir, classes)
        empty += empty_test
        if has["test"] and has["val"]:
            _, val, empty_val = scan(root / "val", classes)
            empty += empty_val
    for report in filter(None, (s.report() for s in scans)):
        warnings.warn(DataWarning(report), stacklevel=3)
    if empty:
        message = (
            f"class folder(s) without images: {', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}"
        )
        if strict:
            raise DataError(message + " (--strict-data)")
        warnings.warn(
            DataWarning(f"{message}; the classes are kept so that labels stay aligned"), stacklevel=3
        )
    if not train:
        raise DataError(f"no images found in {train_dir} (image files end in {', '.join(IMAGE_EXTENSIONS)})")
    counts = torch.bincount(torch.tensor([label for _, label in train]), minlength=len(classes))
    if int((counts > 0).sum()) < 2:
        only = classes[int(counts.argmax())]
        raise DataError(
            f"{train_dir} has images of one class only ({only!r}): a classifier needs at "
            f"least two classes, one folder each ({train_dir}/<class>/<image>)"
        )
    if test is None:  # no held-out folder: a seeded, stratified split of everything
        single = [classes[c] for c in torch.nonzero(counts == 1).flatten().tolist()]
        if single:
            raise DataError(
                f"{len(single)} class folder(s) of {train_dir} hold a single image "
                f"({', '.join(single[:5])}{' ...' if len(single) > 5 else ''}): the automatic "
                f"train/test split keeps every class in training and needs 2 images per class; "
                f"add images, or give train/ and test/ folders"
            )
        labels = torch.tensor([label for _, label in train])
        n_test = max(1, round(test_fraction * len(train)))
        keep, held = stratified_split(labels, n_test, seed, "test split", min_kept=1)
        train, test = [train[i] for i in keep.tolist()], [train[i] for i in held.tolist()]
    if not test:
        raise DataError(f"no images found in {held_dir}")
    if dataset == "imagenet":
        classes = _readable_names(root, classes)
    return FolderSplits(root, classes, train, val, test)


Transform = Callable[[torch.Tensor], torch.Tensor]


def train_transform(kind: str, size: int, hflip: bool, policy: Transform | None = None) -> Transform:
    """Training geometry on uint8 tensors, then ``policy`` (RandAugment & co., per sample in the
    workers); colour lighting and random erasing run later, on the device batch.

    ``paper`` (Sec. 3.4): shorter side resized to a random value in [256, 480], a random 224 crop,
    horizontal flip; sizes scale with ``size / 224``. ``rrc``: RandomResizedCrop (Inception-style,
    what timm and torchvision's recipes use) and flip.
    """
    after = ([v2.RandomHorizontalFlip()] if hflip else []) + ([policy] if policy is not None else [])
    if kind == "paper":
        low, high = round(256 * size / 224), round(480 * size / 224)
        return v2.Compose(
            [v2.RandomShortestSize(list(range(low, high + 1)), antialias=True), v2.RandomCrop(size), *after]
        )
    if kind == "rrc":
        return v2.Compose([v2.RandomResizedCrop(size, antialias=True), *after])
    raise DataError(f"unknown train_transform {kind!r}; use 'paper' or 'rrc'")


def eval_resize(size: int) -> int:
    """Shorter side before the centre crop: 256 for 224 (the standard 0.875 crop ratio)."""
    return round(size * 256 / 224)


def eval_transform(size: int, resize: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    return functools.partial(resize_center_crop, resize=resize or eval_resize(size), crop=size)


class FolderDataset(Dataset):
    """(path, label) samples decoded and transformed on demand.

    Items are ``(image | None, label, failures)``; ``failures`` lists ``(path, reason)`` of the
    unreadable files met. With ``substitute`` (training) an unreadable image is replaced by the next
    readable one, as timm does; otherwise (evaluation, strict mode) the item is dropped, so that no
    sample is counted twice. A per-sample seed from the sampler makes the random transforms
    reproducible whatever the number of workers. With ``encoded`` the image part is
    ``(data, is_encoded, path, seed)`` for the loader to decode and transform on its device.
    """

    def __init__(
        self, samples: list[Sample], transform: Callable, substitute: bool, encoded: bool = False
    ) -> None:
        self.samples, self.transform, self.substitute, self.encoded = samples, transform, substitute, encoded

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]):
        index, seed = item if isinstance(item, tuple) else (item, None)
        failures = []
        for k in range(min(MAX_SUBSTITUTES, len(self.samples)) if self.substitute else 1):
            path, label = self.samples[(index + k) % len(self.samples)]
            try:
                if self.encoded:
                    data, is_encoded = read_for_device(path)
                    image = data if is_encoded else seeded(self.transform, data, seed)
                    return (image, is_encoded, path, seed), label, failures
                return seeded(self.transform, decode_image_file(path), seed), label, failures
            except DataError as exc:
                failures.append((path, str(exc)))
        return None, -1, failures


def collate_skipping(items):
    """Stack the readable images of a batch (or list them, when the device decodes them); pass the
    failures on."""
    good = [(x, y) for x, y, _ in items if x is not None]
    failures = [f for _, _, fs in items for f in fs]
    if not good:
        return None, None, failures
    images = [x for x, _ in good]
    return (
        images if isinstance(images[0], tuple) else torch.stack(images),
        torch.tensor([y for _, y in good]),
        failures,
    )


class ShardSampler(Sampler):
    """This rank's indices of the epoch (see ``shard_indices``), each with a per-sample seed."""

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        rank: int,
        world_size: int,
        repeats: int = 0,
    ):
        self.n, self.shuffle, self.drop_last, self.seed = n, shuffle, drop_last, seed
        self.rank, self.world_size, self.epoch, self.repeats = rank, world_size, 0, repeats

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.repeats > 1:  # each copy of a sample gets its own seed, so its own augmentation
            indices = repeated_shard_indices(
                self.n,
                repeats=self.repeats,
                seed=self.seed,
                epoch=self.epoch,
                rank=self.rank,
                world_size=self.world_size,
            )
            positions = torch.arange(self.rank, self.n * self.repeats, self.world_size)[: len(indices)]
        else:
            indices = shard_indices(
                self.n,
                shuffle=self.shuffle,
                drop_last=self.drop_last,
                seed=self.seed,
                epoch=self.epoch,
                rank=self.rank,
                world_size=self.world_size,
            )
            positions = indices
        generator = torch.Generator().manual_seed(seed_for(self.seed, self.epoch, 1))
        total = self.n * max(self.repeats, 1)
        seeds = torch.randint(0, 2**62, (total,), generator=generator)[positions]  # keyed by sample
        return iter(zip(indices.tolist(), seeds.tolist(), strict=True))

    def __len__(self) -> int:
        return shard_size(self.n, drop_last=self.drop_last, rank=self.rank, world_size=self.world_size)


class FolderLoader:
    """Batches ``(x, y)`` on ``device``: x float32 normalised N x C x H x W, y int64."""

    def __init__(
        self,
        dataset: FolderDataset,
        *,
        batch_size: int,
        train: bool,
        normalization: Normalization,
        device: torch.device,
        workers: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        lighting: bool = False,
        strict: bool = False,
        channels_last: bool = False,
        erasing: Callable | None = None,
        repeats: int = 0,
    ) -> None:
        self.dataset, self.batch_size, self.train, self.erasing = dataset, batch_size, train, erasing
        self.normalization, self.device, self.seed, self.rank = normalization, device, seed, rank
        self.lighting, self.strict, self.channels_last = lighting, strict, channels_last
        self.epoch = 0
        self.skipped: dict[str, str] = {}  # unreadable files of the last full epoch -> reason
        self.sampler = ShardSampler(
            len(dataset),
            shuffle=train,
            drop_last=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
            repeats=repeats if train else 0,
        )
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            drop_last=train,
            num_workers=workers,
            collate_fn=collate_skipping,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
        )

    @property
    def num_samples(self) -> int:
        return len(self.sampler)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(self.device).manual_seed(seed_for(self.seed, self.epoch, self.rank, 2))
        skipped: dict[str, str] = {}
        for batch_index, (x, y, failures) in enumerate(self.loader):
            for path, reason in failures:
                if self.strict:
                    raise DataError(
                        f"{reason} (--strict-data stops at unreadable images; without it they "
                        f"are skipped with a warning)"
                    )
                skipped.setdefault(path, reason)
            if x is None:
                continue
            if self.dataset.encoded:
                x, y, failures = self._decode(x, y)
                for path, reason in failures:
                    if self.strict:
                        raise DataError(reason)
                    skipped.setdefault(path, reason)
                if x is None:
                    continue
            x = x.to(self.device, non_blocking=True)
            shift = pca_lighting_shift(len(x), generator, self.device) if self.lighting else None
            x = self.normalization(x, shift)
            if self.erasing is not None:
                x = per_sample(
                    self.erasing, x, seed_for(self.seed, self.epoch, self.rank, ERASING_STREAM, batch_index)
                )
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)
        self.skipped = skipped
        if skipped:
            listing = ", ".join(sorted(skipped)[:5]) + (" ..." if len(skipped) > 5 else "")
            warnings.warn(
                DataWarning(
                    f"{len(skipped)} unreadable image(s) skipped in epoch "
                    f"{self.epoch + 1}: {listing} (--strict-data makes this an error)"
                ),
                stacklevel=2,
            )

    def _decode(self, items: list[tuple], labels: torch.Tensor):
        """Decode a batch of encoded items on the device and apply the geometry with each sample's seed;
        returns the stacked batch (None if nothing decoded), its labels and the failures."""
        images, failures = decode_batch(
            [(data, is_encoded, path) for data, is_encoded, path, _ in items], self.device
        )
        kept = [
            (image if not is_encoded else seeded(self.dataset.transform, image, seed), label)
            for image, (_, is_encoded, _, seed), label in zip(images, items, labels.tolist(), strict=True)
            if image is not None
        ]
        if not kept:
            return None, None, failures
        return torch.stack([x for x, _ in kept]), torch.tensor([y for _, y in kept]), failures


def fit_folder_normalization(
    samples: list[Sample], mode: str, size: int, seed: int, limit: int = 500
) -> Normalization:
    """Normalisation statistics from a seeded sample of up to ``limit`` training images, prepared
    as for evaluation (decoding a whole folder would cost an epoch)."""
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed_for(seed, 3)))
    transform, images, unreadable = eval_transform(size), [], {}
    for i in order.tolist():
        try:
            images.append(transform(decode_image_file(samples[i][0])))
        except DataError as exc:
            unreadable[samples[i][0]] = str(exc)  # counted and reported by the loaders, if the run goes on
        if len(images) == limit or len(images) + len(unreadable) == 2 * limit:
            break
    tried = len(images) + len(unreadable)
    if not images or (len(unreadable) > len(images) and tried >= MIN_SAMPLED):
        # most of the folder cannot be read: a run would skip its way through a few iterations
        example = f" (e.g. {next(iter(unreadable.values()))})" if unreadable else ""
        raise DataError(
            f"{len(unreadable)} of {tried} training images sampled are unreadable{example}; fix "
            f"or remove the damaged files (zero-byte files, say) before training"
        )
    return Normalization.fit(torch.stack(images), mode)
