"""A segmentation set made of real images that runs anywhere: the detection set's canvases, with masks.

The canvases are ``resnets.detection.synthetic``'s, drawn by the same code from the same seed (so a
segmentation set and a detection set of one ``SyntheticSpec`` hold the same images). An item's own pixels
give its mask: those of the resized item above ``VISIBLE`` (the threshold of the detection boxes). Where
items overlap, the later-drawn item owns the pixel, so instance masks do not overlap (COCO annotates the
visible part of each object) and the semantic mask is their union: background 0, an item of
Fashion-MNIST class k is k + 1.

Written once, beside the detection set's files: COCO instances files whose annotations carry RLE masks
(``ROOT/annotations/instances_<split>.json``, images in ``ROOT/<split>/``) and VOC-style palette PNGs of
the class indices (``ROOT/masks/<split>/<image>.png``; nothing is void, so no 255), so the COCO and the
mask-PNG readers both read it. ``generation.json`` (the settings and ``"task": "segmentation"``),
written last, marks a complete set: the same settings reuse it, others are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as coco_mask

from ..data.datasets import FASHION_MNIST_CLASSES
from ..detection.synthetic import (
    DrawnItem,
    SyntheticSpec,
    coco_document,
    draw_canvas,
    png_bytes,
    write_once,
)
from ..io import write_bytes, write_json
from .data import MaskFolderDataset, read_mask_folder, voc_palette

MASKS = "masks"
CLASSES = ("background", *FASHION_MNIST_CLASSES)


def make_fashion_segmentation(
    root: str | os.PathLike,
    spec: SyntheticSpec | None = None,
    *,
    data_dir: str | None = None,
    verify: bool = True,
) -> Path:
    """Write the set into ``root`` (or find it there, already written with ``spec``, by default
    ``SyntheticSpec()``); returns ``root``."""
    spec = spec or SyntheticSpec()
    settings = {**dataclasses.asdict(spec), "task": "segmentation"}
    write_split = functools.partial(_write_split, spec)
    return write_once(root, settings, "segmentation", write_split, data_dir=data_dir, verify=verify)


def item_masks(items: list[DrawnItem], side: int) -> list[np.ndarray]:
    """Each item's visible pixels on a ``side`` x ``side`` canvas (bool), later items covering earlier."""
    owner = np.full((side, side), -1, dtype=np.int64)
    for k, item in enumerate(items):
        size = item.pixels.shape[0]
        region = owner[item.y : item.y + size, item.x : item.x + size]
        region[item.visible().numpy()] = k
    return [owner == k for k in range(len(items))]


def read_generated_masks(root: str | os.PathLike, split: str, *, strict: bool = False) -> MaskFolderDataset:
    """A generated split read through its mask PNGs (the COCO reader reads its instances file)."""
    root = Path(root)
    images = sorted((root / split).glob("*.png"))
    pairs = [(image, root / MASKS / split / image.name) for image in images]
    return read_mask_folder(pairs, CLASSES, source=f"{root} ({split})", strict=strict, in_chans=1)


def _write_split(
    spec: SyntheticSpec,
    root: Path,
    split: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    rng: np.random.Generator,
) -> None:
    palette = voc_palette()
    records, annotations = [], []
    for index in range(spec.images(split)):
        image_id = index + 1
        canvas, items = draw_canvas(rng, spec, images)
        semantic = np.zeros((spec.canvas, spec.canvas), dtype=np.uint8)
        for item, mask in zip(items, item_masks(items, spec.canvas), strict=True):
            if not mask.any():
                continue  # hidden by later items, or nothing visible: no object
            label = int(labels[item.source]) + 1
            semantic[mask] = label
            rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            rows, cols = np.nonzero(mask)
            x0, y0 = int(cols.min()), int(rows.min())
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "segmentation": rle,
                    "bbox": [x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1],
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                }
            )
        name = f"{image_id:06d}.png"
        write_bytes(root / split / name, png_bytes(canvas.numpy()))
        write_bytes(root / MASKS / split / name, png_bytes(semantic, palette))
        records.append({"id": image_id, "file_name": name, "width": spec.canvas, "height": spec.canvas})
    document = coco_document(spec, split, records, annotations, "resnets.segmentation.synthetic")
    write_json(root / "annotations" / f"instances_{split}.json", document)
