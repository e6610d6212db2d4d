"""Detection data: COCO-format folders (read with pycocotools) and Pascal VOC XML folders.

``open_detection_data(root, split)`` recognises the layout:

- COCO: ``ROOT/annotations/instances_<split>.json`` and the images in ``ROOT/<split>/`` (COCO 2017's own
  layout: ``--split train2017``; the generated Fashion-MNIST set's: ``train`` and ``val``);
- Pascal VOC: ``ROOT/Annotations/*.xml``, ``ROOT/JPEGImages/`` and ``ROOT/ImageSets/Main/<split>.txt``
  (a VOCdevkit year folder, e.g. ``VOCdevkit/VOC2007`` with ``trainval`` / ``test``).

A file whose structure is wrong (not JSON, no ``images`` list, an XML that does not parse) is a
``DataError``. The annotations a real data set gets wrong are skipped and counted instead (one
``DataWarning`` names the counts), or with ``strict=True`` stop at the first with its location:
a missing image file (the image is skipped), an unknown category, a box of non-positive size, a box
outside the image (one partly outside is clipped to it, and counted). Crowd boxes (COCO ``iscrowd``)
and VOC's ``difficult`` ones are not trained on and are ignored by the evaluation, as COCOeval and the
VOC protocol do.

Every dataset gives ``(uint8 C x H x W image, target)`` with torchvision's detection targets
(``boxes`` float32 N x 4 as x0, y0, x1, y1 in pixels; ``labels`` int64 1..K, 0 being the background)
and ``coco()``, the ground truth as a pycocotools ``COCO`` for ``COCOeval``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO

from ..data import DataWarning, load_image
from ..data.images import pil_to_uint8
from ..errors import DataError

# Skip reasons (the counts a DataWarning reports); "clipped to the image" repairs instead of skipping.
MISSING_IMAGE = "missing image file"
UNKNOWN_CATEGORY = "unknown category"
NON_POSITIVE = "non-positive size"
OUTSIDE = "outside the image"
UNKNOWN_IMAGE = "unknown image id"
CLIPPED = "clipped to the image"
EDGE_TOLERANCE = 1.0  # pixels a box may pass the image edge by (rounding in real annotations) unnoticed

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@dataclass
class AnnotationProblems:
    """What was wrong with a data set's annotations: counts by reason, or (``strict``) the first one."""

    source: str
    strict: bool = False
    counts: Counter = field(default_factory=Counter)

    def skip(self, reason: str, where: str) -> None:
        if self.strict:
            raise DataError(
                f"{where}: {reason}; fix the annotations, or leave out --strict-data to "
                f"skip such entries and count them"
            )
        self.counts[reason] += 1

    def repair(self, where: str) -> None:
        """A box partly outside the image: clipped (strict: an error, as a box outside)."""
        if self.strict:
            self.skip(OUTSIDE, where)
        self.counts[CLIPPED] += 1

    def warn(self) -> None:
        if self.counts:
            parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
            warnings.warn(
                DataWarning(
                    f"{self.source}: {parts} (skipped, or clipped where it says so); "
                    f"--strict-data stops at the first instead"
                ),
                stacklevel=2,
            )


@dataclass
class ImageRecord:
    """One image and its boxes (torchvision's conventions: x0, y0, x1, y1 in pixels; labels from 1)."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: torch.Tensor  # float32 N x 4
    labels: torch.Tensor  # int64 N, 1..K
    ignore: torch.Tensor  # bool N: crowd / difficult boxes, neither trained on nor counted by evaluation


class DetectionDataset(torch.utils.data.Dataset):
    """Images with their boxes; images are read when asked for (in DataLoader workers)."""

    def __init__(
        self,
        records: list[ImageRecord],
        classes: Sequence[str],
        *,
        in_chans: int,
        source: str,
        layout: str,
        ground_truth: dict[str, Any],
        problems: AnnotationProblems,
        canvas: int | None = None,
    ) -> None:
        self.records, self.classes, self.in_chans = records, list(classes), in_chans
        self.source, self.layout, self.problems, self.canvas = source, layout, problems, canvas
        self._ground_truth = ground_truth
        self._coco: COCO | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        """Object classes, the background not counted."""
        return len(self.classes)

    @property
    def category_ids(self) -> list[int]:
        """The ground truth's category id of each label 1..K."""
        by_name = {c["name"]: c["id"] for c in self._ground_truth["categories"]}
        return [by_name[name] for name in self.classes]

    def image(self, index: int) -> torch.Tensor:
        """The image as uint8 C x H x W (``in_chans`` channels), checked against its recorded size."""
        record = self.records[index]
        image = pil_to_uint8(load_image(record.path), self.in_chans)
        if tuple(image.shape[1:]) != (record.height, record.width):
            raise DataError(
                f"{record.path} is {image.shape[2]} x {image.shape[1]} pixels but {self.source} "
                f"records {record.width} x {record.height}; its boxes would be misplaced: fix "
                f"the width and height of image {record.image_id}"
            )
        return image

    def target(self, index: int) -> dict[str, torch.Tensor]:
        """The boxes trained on (crowd and difficult ones left out)."""
        record = self.records[index]
        keep = ~record.ignore
        return {
            "boxes": record.boxes[keep],
            "labels": record.labels[keep],
            "image_id": torch.tensor(record.image_id),
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.image(index), self.target(index)

    def subset(self, count: int | None) -> DetectionDataset:
        """The first ``count`` images (all of them for None), for quick runs."""
        if count is None or count >= len(self.records):
            return self
        if count < 1:
            raise DataError(f"a subset of {count} images of {self.source}: give at least 1")
        kept = self.records[:count]
        ids = {r.image_id for r in kept}
        truth = dict(
            self._ground_truth,
            images=[i for i in self._ground_truth["images"] if i["id"] in ids],
            annotations=[a for a in self._ground_truth["annotations"] if a["image_id"] in ids],
        )
        return type(self)(
            kept,
            self.classes,
            in_chans=self.in_chans,
            source=self.source,
            layout=self.layout,
            ground_truth=truth,
            problems=self.problems,
            canvas=self.canvas,
        )

    @property
    def ground_truth(self) -> dict[str, Any]:
        """The COCO document of these images and of the annotations kept (in the order of their boxes)."""
        return self._ground_truth

    def coco(self) -> COCO:
        """The ground truth of these images as a pycocotools ``COCO`` (for ``COCOeval``)."""
        if self._coco is None:
            self._coco = coco_from_dict(self._ground_truth)
        return self._coco

    def meta(self) -> dict[str, Any]:
        """A plain record for checkpoints (no ``image_size``/``normalization``: the detector holds those)."""
        return {
            "dataset": self.source,
            "layout": self.layout,
            "classes": list(self.classes),
            "category_ids": self.category_ids,
            "in_chans": self.in_chans,
            "images": len(self),
        }


def coco_from_dict(document: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` of an annotation dict, without its progress prints."""
    coco = COCO()
    coco.dataset = document
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# --- finding the layout -----------------------------------------------------------------------------


def coco_paths(root: Path, split: str) -> tuple[Path, Path]:
    return root / "annotations" / f"instances_{split}.json", root / split


def open_detection_data(
    root: str | os.PathLike,
    split: str,
    *,
    strict: bool = False,
    in_chans: int | None = None,
    classes: Sequence[str] | None = None,
) -> DetectionDataset:
    """The ``split`` of the COCO or VOC folder ``root``; ``classes`` (a trained detector's) fixes the
    labels, so categories outside them count as unknown."""
    root = Path(root)
    annotations, images = coco_paths(root, split)
    if annotations.is_file():
        return read_coco(annotations, images, strict=strict, in_chans=in_chans, classes=classes)
    if (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir():
        return read_voc(root, split, strict=strict, in_chans=in_chans or 3, classes=classes)
    if not root.is_dir():
        raise DataError(
            f"detection data folder {root} does not exist; make the Fashion-MNIST set with "
            f"`resnets detect make-data {root}` or give a COCO or VOC folder"
        )
    found = sorted(p.name for p in (root / "annotations").glob("instances_*.json"))
    hint = f" (it has {', '.join(found)}: choose --split from those)" if found else ""
    raise DataError(
        f"{root} is neither a COCO folder with annotations/instances_{split}.json and {split}/"
        f"{hint} nor a Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/)"
    )


# --- COCO ------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read COCO annotations {path}: {exc}") from None
    if not isinstance(document, dict):
        raise DataError(
            f"{path} is not a COCO annotation file (a JSON object with images, annotations and categories)"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise DataError(f"{path} has no {key!r} list: not a COCO instances file")
    return document


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _category_names(path: Path, categories: list[Any]) -> dict[int, str]:
    names: dict[int, str] = {}
    for entry in categories:
        if (
            not isinstance(entry, dict)
            or not _whole(entry.get("id"))
            or not isinstance(entry.get("name"), str)
        ):
            raise DataError(f"{path}: category entry {entry!r:.80} needs an integer id and a name")
        if entry["id"] in names:
            raise DataError(f"{path}: category id {entry['id']} is listed twice")
        names[entry["id"]] = entry["name"]
    if not names:
        raise DataError(f"{path} lists no categories")
    return names


def _label_map(names: dict[int, str], classes: Sequence[str] | None, source: Path) -> tuple[list[str], dict]:
    """(class names of labels 1..K, category id -> label) from the file, or from ``classes``."""
    if classes is None:
        ids = sorted(names)
        return [names[i] for i in ids], {cid: k + 1 for k, cid in enumerate(ids)}
    by_name = {name: cid for cid, name in names.items()}
    absent = [c for c in classes if c not in by_name]
    if absent:
        raise DataError(
            f"{source} has no categories named {', '.join(absent[:5])}: the detector was trained "
            f"on other classes ({', '.join(classes[:10])})"
        )
    return list(classes), {by_name[c]: k + 1 for k, c in enumerate(classes)}


def check_box(
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    width: int,
    height: int,
    where: str,
    problems: AnnotationProblems,
) -> tuple[float, float, float, float] | None:
    """The box clipped to the image, or None (skipped and counted) when nothing of it is left."""
    if not (x1 > x0 and y1 > y0):
        problems.skip(NON_POSITIVE, f"{where}: box {[x0, y0, x1, y1]}")
        return None
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
        problems.skip(OUTSIDE, f"{where}: box {[x0, y0, x1, y1]} in a {width} x {height} image")
        return None
    beyond = max(-x0, -y0, x1 - width, y1 - height)
    if beyond > EDGE_TOLERANCE:
        problems.repair(f"{where}: box {[x0, y0, x1, y1]} in a {width} x {height} image")
    return clipped


def read_coco(
    annotations: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    strict: bool = False,
    in_chans: int | None = None,
    classes: Sequence[str] | None = None,
) -> DetectionDataset:
    """A COCO instances file and its image folder (see the module docstring for what is checked)."""
    annotations, images_dir = Path(annotations), Path(images_dir)
    document = _read_json(annotations)
    problems = AnnotationProblems(str(annotations), strict)
    names = _category_names(annotations, document["categories"])
    class_names, label_of = _label_map(names, classes, annotations)
    info = document.get("info") if isinstance(document.get("info"), dict) else {}
    channels = in_chans or info.get("channels", 3)
    if isinstance(channels, bool) or channels not in (1, 3):
        raise DataError(
            f'{annotations}: "info": {{"channels": {channels!r}}} must be 1 (grayscale) or 3 (colour)'
        )
    channels = int(channels)

    images: dict[int, dict] = {}
    for entry in document["images"]:
        if (
            not isinstance(entry, dict)
            or not _whole(entry.get("id"))
            or not isinstance(entry.get("file_name"), str)
            or not all(_whole(entry.get(k)) and entry[k] > 0 for k in ("width", "height"))
        ):
            raise DataError(
                f"{annotations}: image entry {entry!r:.100} needs an integer id, a file_name and "
                f"positive integer width and height"
            )
        if entry["id"] in images:
            raise DataError(f"{annotations}: image id {entry['id']} is listed twice")
        if not (images_dir / entry["file_name"]).is_file():
            problems.skip(
                MISSING_IMAGE, f"{annotations}: image {entry['id']}: {images_dir / entry['file_name']}"
            )
            continue
        images[entry["id"]] = entry

    boxes: dict[int, list[tuple[tuple[float, ...], int, bool]]] = {i: [] for i in images}
    kept_annotations = []
    all_ids = {e.get("id") for e in document["images"] if isinstance(e, dict)}
    for ann in document["annotations"]:
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if (
            not isinstance(ann, dict)
            or not _whole(ann.get("image_id"))
            or not _whole(ann.get("category_id"))
            or not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox
            )
        ):
            raise DataError(
                f"{annotations}: annotation {ann!r:.100} needs an integer image_id and category_id "
                f"and a bbox of 4 finite numbers [x, y, width, height]"
            )
        where = f"{annotations}: annotation {ann.get('id', '?')} (image {ann['image_id']})"
        if ann["image_id"] not in all_ids:
            problems.skip(UNKNOWN_IMAGE, where)
            continue
        if ann["image_id"] not in images:
            continue  # its image is missing: counted once, as the image
        if ann["category_id"] not in label_of:
            if (
                ann["category_id"] not in names
            ):  # a category of the file the detector does not know is no error
                problems.skip(UNKNOWN_CATEGORY, f"{where}: category_id {ann['category_id']}")
            continue
        image = images[ann["image_id"]]
        x, y, w, h = (float(v) for v in bbox)
        box = check_box(x, y, x + w, y + h, image["width"], image["height"], where, problems)
        if box is None:
            continue
        boxes[ann["image_id"]].append((box, label_of[ann["category_id"]], bool(ann.get("iscrowd", 0))))
        kept_annotations.append(ann)

    records = [
        _record(
            entry["id"], images_dir / entry["file_name"], entry["width"], entry["height"], boxes[entry["id"]]
        )
        for entry in images.values()
    ]
    kept_categories = [c for c in document["categories"] if c["id"] in label_of]
    truth = {
        "info": info,
        "images": list(images.values()),
        "annotations": kept_annotations,
        "categories": kept_categories,
    }
    problems.warn()
    canvas = info.get("canvas") if _whole(info.get("canvas")) else None
    return DetectionDataset(
        records,
        class_names,
        in_chans=channels,
        source=str(annotations),
        layout="coco",
        ground_truth=truth,
        problems=problems,
        canvas=canvas,
    )


def _record(
    image_id: int, path: Path, width: int, height: int, items: list[tuple[tuple[float, ...], int, bool]]
) -> ImageRecord:
    return ImageRecord(
        image_id=image_id,
        path=path,
        width=width,
        height=height,
        boxes=torch.tensor([b for b, _, _ in items], dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor([label for _, label, _ in items], dtype=torch.int64),
        ignore=torch.tensor([ignored for _, _, ignored in items], dtype=torch.bool),
    )


# --- Pascal VOC -------------------------------------------------------------------------------------


def _voc_ids(root: Path, split: str) -> list[str]:
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if listing.is_file():
        return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    splits = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
    raise DataError(
        f"{root} has no ImageSets/Main/{split}.txt; choose --split from: "
        f"{', '.join(splits) or '(none: the folder has no ImageSets/Main lists)'}"
    )


def _text(node: ET.Element | None, tag: str) -> str | None:
    found = node.find(tag) if node is not None else None
    return found.text.strip() if found is not None and found.text else None


def _parse_voc(path: Path) -> ET.Element:
    if not path.is_file():
        raise DataError(f"{path} is missing: the split lists an image without an annotation file")
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{path} is not a readable VOC annotation ({exc})") from None


def read_voc(
    root: str | os.PathLike,
    split: str,
    *,
    strict: bool = False,
    in_chans: int = 3,
    classes: Sequence[str] | None = None,
) -> DetectionDataset:
    """A Pascal VOC folder's ``split``. Its 20 classes unless the files name others (then those, sorted)
    or ``classes`` is given. VOC's pixel indices start at 1 and include both ends: (xmin - 1, ymin - 1,
    xmax, ymax) is the box in continuous coordinates."""
    root = Path(root)
    source = f"{root} ({split})"
    problems = AnnotationProblems(source, strict)
    parsed = [
        (image_id, _parse_voc(root / "Annotations" / f"{image_id}.xml")) for image_id in _voc_ids(root, split)
    ]
    if classes is None:
        found = {_text(obj, "name") for _, tree in parsed for obj in tree.iter("object")} - {None}
        classes = VOC_CLASSES if found <= set(VOC_CLASSES) else tuple(sorted(found))
    label_of = {name: k + 1 for k, name in enumerate(classes)}

    records, images, annotations = [], [], []
    for number, (name, tree) in enumerate(parsed, start=1):
        xml_path = root / "Annotations" / f"{name}.xml"
        path = root / "JPEGImages" / (_text(tree, "filename") or f"{name}.jpg")
        if not path.is_file():
            problems.skip(MISSING_IMAGE, f"{xml_path}: {path}")
            continue
        size = tree.find("size")
        try:
            width, height = int(_text(size, "width") or 0), int(_text(size, "height") or 0)
        except ValueError:
            width = height = 0
        if width < 1 or height < 1:
            width, height = load_image(path).size  # VOC files without a usable <size>: the image says
        items = []
        for k, obj in enumerate(tree.iter("object")):
            where = f"{xml_path}: object {k}"
            label = label_of.get(_text(obj, "name") or "")
            if label is None:
                problems.skip(UNKNOWN_CATEGORY, f"{where}: {_text(obj, 'name')!r}")
                continue
            bndbox = obj.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(_text(bndbox, t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                raise DataError(f"{where} has no bndbox of 4 numbers (xmin, ymin, xmax, ymax)") from None
            box = check_box(xmin - 1, ymin - 1, xmax, ymax, width, height, where, problems)
            if box is None:
                continue
            difficult = (_text(obj, "difficult") or "0") == "1"
            items.append((box, label, difficult))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": label,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "area": (box[2] - box[0]) * (box[3] - box[1]),
                    "iscrowd": int(difficult),
                }
            )
        records.append(_record(number, path, width, height, items))
        images.append({"id": number, "file_name": path.name, "width": width, "height": height})
    truth = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)],
    }
    problems.warn()
    return DetectionDataset(
        records,
        classes,
        in_chans=in_chans,
        source=source,
        layout="voc",
        ground_truth=truth,
        problems=problems,
    )
