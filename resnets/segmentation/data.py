"""Segmentation data: Pascal VOC ``SegmentationClass`` folders, COCO masks (pycocotools) and mask PNG folders.

- Pascal VOC (``VOCdevkit/VOC20xx``): ``ImageSets/Segmentation/<split>.txt``, ``JPEGImages/<id>.jpg`` and
  ``SegmentationClass/<id>.png``, palette PNGs whose pixel values are the class indices (0 the background,
  1..20 the VOC classes, 255 the void border, ignored), read as indices, never as the palette's colours.
- COCO (``annotations/instances_<split>.json``, images in ``<split>/``): read by ``resnets.detection``'s COCO
  reader (its boxes, labels and checks), each object's ``segmentation`` (polygons, or RLE for crowds)
  decoded by pycocotools. Instance targets are torchvision's Mask R-CNN targets (``boxes``, ``labels``,
  ``masks`` N x H x W uint8), crowds left out as detection leaves them out. Semantic masks are built as
  torchvision's ``references/segmentation/coco_utils.py`` builds them (labels 1..K in category-id order,
  0 the background, pixels of two or more objects 255) and crowd regions are 255 too: they are neither
  trained on nor counted, as COCOeval ignores them.

Bad masks are skipped and counted in one ``DataWarning`` (detection's ``AnnotationProblems``), or with
``strict=True`` refused at the first with its file: an image without its mask, a mask that cannot be
read or is above the pixel limit (``--max-image-pixels``: a decompression bomb), a mask that is not a
palette or grayscale PNG (an RGB mask holds colours, not class indices), a mask of another size than its
image, and a label other than 0..K and 255. Every mask PNG is checked when the set is opened, so a
training run never meets one of them halfway through an epoch.

Semantic datasets give ``(uint8 C x H x W image, int64 H x W mask)``; the loaders convert images to
float, as detection's do.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..data import load_image
from ..data.images import check_pixels, header_size_pil, pil_to_uint8
from ..detection.data import (
    MISSING_IMAGE,
    VOC_CLASSES,
    AnnotationProblems,
    DetectionDataset,
    coco_paths,
    read_coco,
)
from ..errors import DataError, first_line

IGNORE_INDEX = 255  # VOC's void label; torchvision's segmentation losses and metrics ignore it
VOC_SEGMENTATION_CLASSES = ("background", *VOC_CLASSES)
MASK_MODES = ("P", "L")  # a palette's or a grayscale PNG's pixel values are the class indices

# Skip reasons (the counts a DataWarning reports).
MISSING_MASK = "image without its mask"
UNREADABLE = "unreadable or oversized mask"
NOT_INDEXED = "mask not a palette or grayscale PNG"
SIZE_MISMATCH = "mask of another size than its image"
OUT_OF_RANGE = "mask label out of range"


def voc_palette() -> list[int]:
    """The VOC devkit's colour map (``VOClabelcolormap.m``) as PIL's 768-value palette: only for writing
    masks that look like VOC's; reading never uses colours."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """A mask PNG's class indices as int64 H x W (within the pixel limit; ``DataError`` if unreadable)."""
    image = load_image(path)
    if image.mode not in MASK_MODES:
        raise DataError(f"{path} is a {image.mode} image, not a palette or grayscale mask")
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).astype(np.int64))


def check_mask(
    mask_path: Path, image_size: tuple[int, int], num_classes: int, problems: AnnotationProblems
) -> bool:
    """Whether ``mask_path`` is a usable mask for an image of ``image_size`` (width, height); a bad one is
    counted (or, strict, refused)."""
    if not mask_path.is_file():
        problems.skip(MISSING_MASK, f"{mask_path} is missing")
        return False
    try:
        image = load_image(mask_path)
    except DataError as exc:
        problems.skip(UNREADABLE, first_line(exc))
        return False
    if image.mode not in MASK_MODES:
        problems.skip(NOT_INDEXED, f"{mask_path} is a {image.mode} image (its colours are not class indices)")
        return False
    if image.size != image_size:
        problems.skip(
            SIZE_MISMATCH,
            f"{mask_path} is {image.size[0]} x {image.size[1]}, its image {image_size[0]} x {image_size[1]}",
        )
        return False
    values = np.unique(np.asarray(image, dtype=np.uint8))
    wrong = [int(v) for v in values if v >= num_classes and v != IGNORE_INDEX]
    if wrong:
        problems.skip(
            OUT_OF_RANGE,
            f"{mask_path} holds label {wrong[0]} (classes 0..{num_classes - 1} and {IGNORE_INDEX} to ignore)",
        )
        return False
    return True


@dataclass(frozen=True)
class MaskSample:
    """One image and its mask PNG."""

    image: Path
    mask: Path


class MaskFolderDataset(torch.utils.data.Dataset):
    """Images with mask PNGs of class indices (``classes[0]`` the background, 255 ignored)."""

    def __init__(
        self,
        samples: list[MaskSample],
        classes: Sequence[str],
        *,
        in_chans: int,
        source: str,
        layout: str,
        problems: AnnotationProblems,
    ) -> None:
        self.samples, self.classes, self.in_chans = samples, list(classes), in_chans
        self.source, self.layout, self.problems = source, layout, problems

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        """Classes of the masks, the background included (a model's output channels)."""
        return len(self.classes)

    def image(self, index: int) -> torch.Tensor:
        return pil_to_uint8(load_image(self.samples[index].image), self.in_chans)

    def mask(self, index: int) -> torch.Tensor:
        return read_mask(self.samples[index].mask)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(index), self.mask(index)


def read_mask_folder(
    pairs: Sequence[tuple[Path, Path]],
    classes: Sequence[str],
    *,
    source: str,
    layout: str = "masks",
    strict: bool = False,
    in_chans: int = 3,
) -> MaskFolderDataset:
    """Images and their mask PNGs (``pairs`` of paths), every mask checked (module docstring)."""
    problems = AnnotationProblems(source, strict)
    samples = []
    for image_path, mask_path in pairs:
        if not image_path.is_file():
            problems.skip(MISSING_IMAGE, f"{image_path} is missing (its mask {mask_path.name} is not)")
            continue
        size = header_size_pil(image_path)
        if size is None:
            raise DataError(f"{image_path} is not a readable image (no image header PIL recognises)")
        check_pixels(*size, image_path)
        if check_mask(mask_path, size, len(classes), problems):
            samples.append(MaskSample(image_path, mask_path))
    problems.warn()
    return MaskFolderDataset(
        samples, classes, in_chans=in_chans, source=source, layout=layout, problems=problems
    )


def read_voc_segmentation(
    root: str | os.PathLike, split: str, *, strict: bool = False, in_chans: int = 3
) -> MaskFolderDataset:
    """A VOC year folder's segmentation ``split`` (``train``, ``val``, ``trainval``): 21 classes."""
    root = Path(root)
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        found = sorted(p.stem for p in (root / "ImageSets" / "Segmentation").glob("*.txt"))
        raise DataError(
            f"{root} has no ImageSets/Segmentation/{split}.txt; choose --split from: "
            f"{', '.join(found) or '(none: the folder has no ImageSets/Segmentation lists)'}"
        )
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    pairs = [
        (root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClass" / f"{name}.png") for name in ids
    ]
    return read_mask_folder(
        pairs,
        VOC_SEGMENTATION_CLASSES,
        source=f"{root} ({split})",
        layout="voc",
        strict=strict,
        in_chans=in_chans,
    )


# --- COCO --------------------------------------------------------------------------------------------


class CocoMasksDataset(DetectionDataset):
    """A COCO folder's images with their objects' masks: ``target`` is torchvision's Mask R-CNN target
    (``boxes``, ``labels``, ``masks`` uint8 N x H x W, ``image_id``; crowds left out)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._objects: dict[int, list[dict]] = defaultdict(list)  # in the order of each record's boxes
        for annotation in self.ground_truth["annotations"]:
            self._objects[annotation["image_id"]].append(annotation)

    def object_masks(self, index: int) -> torch.Tensor:
        """Every object's mask (uint8 N x H x W, crowds included), in the order of the record's boxes."""
        record = self.records[index]
        coco = self.coco()  # pycocotools decodes polygons, RLE and uncompressed RLE (annToMask)
        masks = [torch.from_numpy(coco.annToMask(a)) for a in self._objects[record.image_id]]
        if not masks:
            return torch.zeros(0, record.height, record.width, dtype=torch.uint8)
        return torch.stack(masks)

    def target(self, index: int) -> dict[str, torch.Tensor]:
        keep = ~self.records[index].ignore
        return {**super().target(index), "masks": self.object_masks(index)[keep]}

    def semantic_mask(self, index: int) -> torch.Tensor:
        """Class indices (int64 H x W): labels 1..K, 0 the background, 255 where objects overlap (as
        torchvision's references/segmentation/coco_utils.py) and on crowds (ignored, as COCOeval does)."""
        record = self.records[index]
        masks = self.object_masks(index).bool()
        objects, labels = masks[~record.ignore], record.labels[~record.ignore]
        semantic = torch.zeros(record.height, record.width, dtype=torch.int64)
        if len(objects):
            semantic = (objects * labels[:, None, None]).amax(0)
            semantic[objects.sum(0) > 1] = IGNORE_INDEX
        semantic[masks[record.ignore].any(0)] = IGNORE_INDEX
        return semantic


class CocoSemanticDataset(torch.utils.data.Dataset):
    """A COCO folder as semantic segmentation: (uint8 image, int64 mask), ``classes[0]`` the background."""

    def __init__(self, objects: CocoMasksDataset) -> None:
        self.objects = objects
        self.classes = ["background", *objects.classes]
        self.in_chans, self.source, self.problems = objects.in_chans, objects.source, objects.problems
        self.layout = "coco"

    def __len__(self) -> int:
        return len(self.objects)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image(self, index: int) -> torch.Tensor:
        return self.objects.image(index)

    def mask(self, index: int) -> torch.Tensor:
        return self.objects.semantic_mask(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(index), self.mask(index)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def check_segmentation(annotation: dict, width: int, height: int, where: str) -> None:
    """A ``DataError`` unless ``segmentation`` is polygons (each at least 3 points) or an RLE of the
    image's size, so pycocotools never meets one it would fail on."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list) and segmentation:
        if all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_number(v) for v in p)
            for p in segmentation
        ):
            return
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str | list):
        if segmentation.get("size") == [height, width]:
            return
        raise DataError(
            f"{where}: its RLE mask is of size {segmentation.get('size')!r}, its image [{height}, {width}]"
        )
    raise DataError(
        f"{where}: segmentation {segmentation!r:.60} needs polygons [[x0, y0, x1, y1, x2, y2, ...], ...] "
        f"or an RLE {{'size': [height, width], 'counts': ...}}"
    )


def read_coco_masks(
    annotations: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    strict: bool = False,
    in_chans: int | None = None,
    classes: Sequence[str] | None = None,
) -> CocoMasksDataset:
    """A COCO instances file with masks: detection's reader and checks, then every kept object's
    ``segmentation`` checked."""
    found = read_coco(annotations, images_dir, strict=strict, in_chans=in_chans, classes=classes)
    truth = found.ground_truth
    if truth["annotations"] and not any("segmentation" in a for a in truth["annotations"]):
        raise DataError(
            f"{annotations} holds boxes without masks (no annotation has a 'segmentation'): a detection "
            f"set; segmentation needs COCO instance masks (`resnets segment make-data DIR` writes a set)"
        )
    sizes = {image["id"]: (image["width"], image["height"]) for image in truth["images"]}
    for annotation in truth["annotations"]:
        where = f"{annotations}: annotation {annotation.get('id', '?')} (image {annotation['image_id']})"
        check_segmentation(annotation, *sizes[annotation["image_id"]], where)
    return CocoMasksDataset(
        found.records,
        found.classes,
        in_chans=found.in_chans,
        source=found.source,
        layout=found.layout,
        ground_truth=truth,
        problems=found.problems,
        canvas=found.canvas,
    )


def open_segmentation_data(
    root: str | os.PathLike,
    split: str,
    *,
    task: Literal["semantic", "instance"] = "semantic",
    strict: bool = False,
    in_chans: int | None = None,
    classes: Sequence[str] | None = None,
) -> MaskFolderDataset | CocoSemanticDataset | CocoMasksDataset:
    """The ``split`` of the COCO folder (semantic or instance) or VOC year folder (semantic) ``root``.
    ``classes``: a trained Mask R-CNN's object classes, which fix the labels of an instance set."""
    root = Path(root)
    annotations, images = coco_paths(root, split)
    if annotations.is_file():
        objects = read_coco_masks(annotations, images, strict=strict, in_chans=in_chans, classes=classes)
        return objects if task == "instance" else CocoSemanticDataset(objects)
    if (root / "ImageSets" / "Segmentation").is_dir():
        if task == "instance":
            raise DataError(
                f"{root} is a Pascal VOC folder: its SegmentationClass masks are semantic only; Mask R-CNN "
                f"needs a COCO folder with instance masks (annotations/instances_{split}.json)"
            )
        return read_voc_segmentation(root, split, strict=strict, in_chans=in_chans or 3)
    raise DataError(
        f"{root} is neither a COCO folder with annotations/instances_{split}.json and {split}/ nor a "
        f"Pascal VOC year folder (ImageSets/Segmentation/, JPEGImages/, SegmentationClass/)"
    )
