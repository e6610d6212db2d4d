"""A detection set made of real images that runs anywhere: Fashion-MNIST items on black canvases.

Each canvas holds one to several Fashion-MNIST items at random scales and positions (items overlap
little: a placement whose box overlaps an earlier one by more than ``max_overlap`` IoU is drawn
again), and each item's box is the tight box of its visible pixels. Training canvases use the
Fashion-MNIST training images, the ``val`` canvases its test images, so a backbone first trained as a
Fashion-MNIST classifier (the experiment's stand-in for ImageNet pre-training, paper Sec. 4.3) never
saw an item it is evaluated on. Everything comes from one seed.

The set is written once, in COCO format (``ROOT/annotations/instances_<split>.json`` and the PNGs in
``ROOT/<split>/``), so the COCO loader reads it like any other folder; ``ROOT/generation.json``, written
last, records the settings and marks a complete set: asking again with the same settings reuses it,
with other settings is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data import load_arrays
from ..data.datasets import FASHION_MNIST_CLASSES
from ..errors import ConfigError, DataError
from ..io import write_bytes, write_json
from ..runs import check_output

GENERATION = "generation.json"
PENDING = ".generation.pending"
SPLITS = ("train", "val")
VISIBLE = 24  # pixel value (of 255) above which a pixel of an item counts as visible for its box
PLACEMENT_TRIES = 50


@dataclass(frozen=True)
class SyntheticSpec:
    """How a generated set is made; every field changes the images."""

    canvas: int = 64  # canvas side in pixels
    train_images: int = 2000
    val_images: int = 500
    min_items: int = 1
    max_items: int = 3
    min_scale: int = 16  # item side in pixels (Fashion-MNIST items are 28 x 28)
    max_scale: int = 36
    max_overlap: float = 0.3  # IoU above which a placement is drawn again
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.canvas < 16:
            problems.append(f"canvas must be at least 16 pixels, got {self.canvas}")
        if self.train_images < 1 or self.val_images < 1:
            problems.append("train_images and val_images must be >= 1")
        if not 1 <= self.min_items <= self.max_items:
            problems.append(f"need 1 <= min_items <= max_items, got {self.min_items}, {self.max_items}")
        if not 4 <= self.min_scale <= self.max_scale <= self.canvas:
            problems.append(
                f"need 4 <= min_scale <= max_scale <= canvas, got {self.min_scale}, "
                f"{self.max_scale}, {self.canvas}"
            )
        if not 0 < self.max_overlap <= 1:
            problems.append(f"max_overlap must be in (0, 1], got {self.max_overlap}")
        if problems:
            raise ConfigError("synthetic detection set: " + "; ".join(problems))

    def images(self, split: str) -> int:
        return self.train_images if split == "train" else self.val_images


def make_fashion_detection(
    root: str | os.PathLike,
    spec: SyntheticSpec = SyntheticSpec(),
    *,
    data_dir: str | None = None,
    verify: bool = True,
) -> Path:
    """Write the set into ``root`` (or find it there, already written with ``spec``); returns ``root``."""
    write_split = functools.partial(_write_split, spec)
    return write_once(
        root, dataclasses.asdict(spec), "detection", write_split, data_dir=data_dir, verify=verify
    )


# (root, split, Fashion-MNIST images, their labels, the generator): writes one split of a generated set
SplitWriter = Callable[[Path, str, torch.Tensor, torch.Tensor, np.random.Generator], None]


def write_once(
    root: str | os.PathLike,
    settings: dict[str, Any],
    kind: str,
    write_split: SplitWriter,
    *,
    data_dir: str | None = None,
    verify: bool = True,
) -> Path:
    """Write a generated ``kind`` set (detection, segmentation) of ``settings`` (its ``seed`` the one random
    seed) with ``write_split`` once: a folder already holding it with the same settings is reused, with
    other settings refused; ``generation.json``, written last, marks a complete set."""
    root = Path(root)
    stored = read_generation(root)
    if stored is not None:
        if stored != settings:
            changed = ", ".join(
                f"{k}: {stored.get(k)!r} -> {settings.get(k)!r}"
                for k in {**stored, **settings}
                if stored.get(k) != settings.get(k)
            )
            raise ConfigError(
                f"{root} holds a generated set made with other settings ({changed}); "
                f"choose another folder, or delete {root} to generate it again"
            )
        return root
    check_output(root, "make-data FOLDER", folder=True)
    pending = root / PENDING  # written first: a folder holding it is an interrupted generation of ours
    if root.exists() and any(root.iterdir()) and not pending.is_file():
        found = sorted(p.name for p in root.iterdir())
        raise ConfigError(
            f"{root} is not empty and holds no generated {kind} set ({', '.join(found[:5])}); "
            "nothing was written: choose an empty or new folder"
        )
    sources = {  # every input read before anything is written
        split: load_arrays(
            "fashion-mnist", "train" if split == "train" else "test", data_dir=data_dir, verify=verify
        )
        for split in SPLITS
    }
    write_json(pending, settings)
    rng = np.random.default_rng(settings["seed"])
    for split in SPLITS:
        write_split(root, split, sources[split].images, sources[split].labels, rng)
    write_json(root / GENERATION, settings)  # last: marks the set complete
    pending.unlink(missing_ok=True)
    return root


def read_generation(root: Path) -> dict | None:
    path = root / GENERATION
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not readable ({exc}); delete {root} to generate the set again") from None


def place_items(rng: np.random.Generator, spec: SyntheticSpec) -> list[tuple[int, int, int]]:
    """(x, y, side) of each item on one canvas: its count, sizes and positions."""
    count = int(rng.integers(spec.min_items, spec.max_items + 1))
    placed: list[tuple[int, int, int]] = []
    for _ in range(count):
        for _ in range(PLACEMENT_TRIES):
            side = int(rng.integers(spec.min_scale, spec.max_scale + 1))
            x, y = (int(v) for v in rng.integers(0, spec.canvas - side + 1, size=2))
            if all(
                box_iou((x, y, side, side), (px, py, ps, ps)) <= spec.max_overlap for px, py, ps in placed
            ):
                placed.append((x, y, side))
                break
    return placed


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two (x, y, w, h) boxes."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _resized(item: torch.Tensor, side: int) -> torch.Tensor:
    """A 1 x 28 x 28 uint8 item as side x side uint8 (antialiased bilinear)."""
    x = F.interpolate(
        item[None].float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False
    )
    return x[0, 0].round().clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class DrawnItem:
    """One Fashion-MNIST item on a canvas: its place, its source image and its resized pixels."""

    x: int
    y: int
    source: int  # index of its Fashion-MNIST image
    pixels: torch.Tensor  # side x side uint8

    def visible(self) -> torch.Tensor:
        """Its pixels that count as the item (bool side x side): the box's, and the segmentation's mask."""
        return self.pixels > VISIBLE


def draw_canvas(
    rng: np.random.Generator, spec: SyntheticSpec, images: torch.Tensor
) -> tuple[torch.Tensor, list[DrawnItem]]:
    """One canvas (uint8 canvas x canvas) and its items in drawing order."""
    canvas = torch.zeros(spec.canvas, spec.canvas, dtype=torch.uint8)
    items = []
    for x, y, side in place_items(rng, spec):
        source = int(rng.integers(0, len(images)))
        item = DrawnItem(x, y, source, _resized(images[source], side))
        region = canvas[y : y + side, x : x + side]
        torch.maximum(region, item.pixels, out=region)  # overlapping items: the brighter pixel shows
        items.append(item)
    return canvas, items


def png_bytes(array: np.ndarray, palette: list[int] | None = None) -> bytes:
    """A uint8 H x W array as a grayscale PNG, or a palette PNG of its indices with ``palette``."""
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette)  # an L image given a palette becomes P, its values the indices
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def coco_document(
    spec: SyntheticSpec, split: str, images: list[dict], annotations: list[dict], generator: str
) -> dict[str, Any]:
    """A generated split's COCO instances file (grayscale canvases, the Fashion-MNIST classes)."""
    return {
        "info": {
            "description": f"Fashion-MNIST items on {spec.canvas}x{spec.canvas} canvases ({split})",
            "channels": 1,
            "canvas": spec.canvas,
            "generator": generator,
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(FASHION_MNIST_CLASSES)],
    }


def _write_split(
    spec: SyntheticSpec,
    root: Path,
    split: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    rng: np.random.Generator,
) -> None:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    records, annotations = [], []
    for index in range(spec.images(split)):
        image_id = index + 1
        canvas, items = draw_canvas(rng, spec, images)
        for item in items:
            rows, cols = torch.nonzero(item.visible(), as_tuple=True)
            if len(rows) == 0:
                continue  # an item with nothing visible has no box
            x0, y0 = item.x + int(cols.min()), item.y + int(rows.min())
            w, h = int(cols.max()) - int(cols.min()) + 1, int(rows.max()) - int(rows.min()) + 1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(labels[item.source]) + 1,
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        name = f"{image_id:06d}.png"
        write_bytes(folder / name, png_bytes(canvas.numpy()))
        records.append({"id": image_id, "file_name": name, "width": spec.canvas, "height": spec.canvas})
    document = coco_document(spec, split, records, annotations, "resnets.detection.synthetic")
    write_json(root / "annotations" / f"instances_{split}.json", document)
