"""Segmentation data: Pascal VOC mask folders, COCO masks, the generated Fashion-MNIST set, and what the
readers do with bad masks (skipped and counted in one warning, or refused under strict)."""

import dataclasses
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from resnets.data import DataWarning, load_arrays
from resnets.data.images import set_max_image_pixels
from resnets.detection.synthetic import SyntheticSpec, draw_canvas, make_fashion_detection, png_bytes
from resnets.errors import ConfigError, DataError
from resnets.segmentation.data import (
    IGNORE_INDEX,
    VOC_SEGMENTATION_CLASSES,
    open_segmentation_data,
    read_voc_segmentation,
    voc_palette,
)
from resnets.segmentation.synthetic import make_fashion_segmentation, read_generated_masks

pytestmark = pytest.mark.usefixtures("one_thread")


def palette_png(path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(mask.astype(np.uint8), voc_palette()))


def bomb_png(path, width: int = 100_000, height: int = 100_000) -> None:
    """A 60-byte grayscale PNG whose header claims ``width`` x ``height`` pixels (10 G by default): decoded,
    it would ask for that much memory; only its header may be read."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def voc_masks() -> dict[str, np.ndarray]:
    """Three 12 x 16 masks: a person with VOC's 255 border, a cat and a dog, an empty one."""
    person = np.zeros((12, 16), np.uint8)
    person[2:9, 3:10] = 15
    person[1, 2:11] = person[9, 2:11] = person[1:10, 2] = person[1:10, 10] = IGNORE_INDEX
    pets = np.zeros((12, 16), np.uint8)
    pets[:, :8], pets[6:, 10:] = 8, 12
    return {"2007_000001": person, "2007_000002": pets, "2007_000003": np.zeros((12, 16), np.uint8)}


def write_voc(root, masks, split="train"):
    for name, mask in masks.items():
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (mask.shape[1], mask.shape[0]), (90, 120, 30)).save(
            root / "JPEGImages" / f"{name}.jpg"
        )
        palette_png(root / "SegmentationClass" / f"{name}.png", mask)
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{name}\n" for name in masks))
    return root


def test_voc_masks_are_read_as_class_indices_with_the_void_border_kept(tmp_path):
    masks = voc_masks()
    data = read_voc_segmentation(write_voc(tmp_path / "VOC2012", masks), "train")
    assert len(data) == 3 and data.num_classes == 21 and data.classes[15] == "person"
    assert VOC_SEGMENTATION_CLASSES[0] == "background" and data.problems.counts == {}
    for index, expected in enumerate(masks.values()):
        image, mask = data[index]
        assert image.shape == (3, 12, 16) and image.dtype == torch.uint8
        assert mask.dtype == torch.int64 and torch.equal(mask, torch.from_numpy(expected).long())
    assert int((data[0][1] == IGNORE_INDEX).sum()) == 32  # the border: read as 255, not as its colour
    with pytest.raises(DataError, match=r"no ImageSets/Segmentation/val.txt; choose --split from: train"):
        read_voc_segmentation(tmp_path / "VOC2012", "val")


def bad_voc(root, case):
    """A VOC folder with one good image and one bad mask of ``case``."""
    masks = voc_masks()
    write_voc(root, {"good": masks["2007_000001"], "bad": masks["2007_000002"]})
    bad = root / "SegmentationClass" / "bad.png"
    if case == "size":
        palette_png(bad, np.zeros((10, 16), np.uint8))
    elif case == "label":
        palette_png(bad, np.full((12, 16), 200, np.uint8))
    elif case == "rgb":
        Image.new("RGB", (16, 12), (128, 0, 0)).save(bad)
    elif case == "missing":
        bad.unlink()
    elif case == "bomb":
        palette_png(bad, np.zeros((300, 400), np.uint8))  # above the limit the test sets
    elif case == "header":
        bomb_png(bad)
    return root


BAD_MASKS = {
    "size": ("mask of another size than its image", r"bad.png is 16 x 10, its image 16 x 12"),
    "label": ("mask label out of range", r"bad.png holds label 200 \(classes 0..20 and 255 to ignore\)"),
    "rgb": ("mask not a palette or grayscale PNG", r"bad.png is a RGB image"),
    "missing": ("image without its mask", r"bad.png is missing"),
    "bomb": ("unreadable or oversized mask", r"bad.png: 400 x 300 = 120,000 pixels is above the limit"),
    "header": (
        "unreadable or oversized mask",
        r"bad.png: 100000 x 100000 = 10,000,000,000 pixels is above the limit",
    ),
}


@pytest.fixture
def small_pixel_limit():
    set_max_image_pixels(100_000)
    yield
    set_max_image_pixels(None)


@pytest.mark.usefixtures("small_pixel_limit")
@pytest.mark.parametrize("case", sorted(BAD_MASKS))
def test_a_bad_mask_is_skipped_and_counted_or_refused_when_strict(tmp_path, case):
    reason, message = BAD_MASKS[case]
    root = bad_voc(tmp_path / "VOC2012", case)
    with pytest.warns(DataWarning, match=rf"\(train\): 1 {reason} \(skipped"):
        data = read_voc_segmentation(root, "train")
    assert len(data) == 1 and data.samples[0].mask.name == "good.png"
    with pytest.raises(DataError, match=message) as refused:
        read_voc_segmentation(root, "train", strict=True)
    assert "\n" not in str(refused.value) and "--strict-data" in str(refused.value)


# --- COCO --------------------------------------------------------------------------------------------


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (run lengths over the column-major pixels, zeros first), as crowds are."""
    flat = mask.flatten(order="F").astype(np.int64)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def write_coco(root):
    """Two 20 x 24 images: a square polygon (cat), a compressed-RLE dog and a crowd of cats; two
    overlapping polygon cats."""
    dog = np.zeros((20, 24), np.uint8)
    dog[12:16, 12:19] = 1
    crowd = np.zeros((20, 24), np.uint8)
    crowd[0:3, 14:22] = 1
    rle = coco_mask.encode(np.asfortranarray(dog))
    rle["counts"] = rle["counts"].decode("ascii")
    square = [[2, 2, 10, 2, 10, 10, 2, 10]]
    annotations = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 3,
            "segmentation": square,
            "bbox": [2, 2, 8, 8],
            "iscrowd": 0,
        },
        {"id": 2, "image_id": 1, "category_id": 7, "segmentation": rle, "bbox": [12, 12, 7, 4], "iscrowd": 0},
        {
            "id": 3,
            "image_id": 1,
            "category_id": 3,
            "segmentation": uncompressed_rle(crowd),
            "bbox": [14, 0, 8, 3],
            "iscrowd": 1,
        },
        {
            "id": 4,
            "image_id": 2,
            "category_id": 3,
            "segmentation": square,
            "bbox": [2, 2, 8, 8],
            "iscrowd": 0,
        },
        {
            "id": 5,
            "image_id": 2,
            "category_id": 3,
            "segmentation": [[6, 6, 14, 6, 14, 14, 6, 14]],
            "bbox": [6, 6, 8, 8],
            "iscrowd": 0,
        },
    ]
    document = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 24, "height": 20} for i in (1, 2)],
        "annotations": annotations,
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    (root / "train").mkdir(parents=True)
    for i in (1, 2):
        Image.new("RGB", (24, 20), (10 * i, 0, 0)).save(root / "train" / f"{i}.jpg")
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train.json").write_text(json.dumps(document))
    return root, dog, crowd


def test_coco_polygons_and_rle_become_instance_targets_and_semantic_masks(tmp_path):
    root, dog, crowd = write_coco(tmp_path / "coco")
    objects = open_segmentation_data(root, "train", task="instance")
    assert objects.classes == ["cat", "dog"]
    image, target = objects[0]
    assert image.shape == (3, 20, 24)
    assert target["labels"].tolist() == [1, 2] and target["boxes"].tolist()[1] == [12, 12, 19, 16]
    masks = target["masks"]
    assert masks.shape == (2, 20, 24) and masks.dtype == torch.uint8  # the crowd left out
    assert int(masks[0].sum()) == 64 and int(masks[0, 2:10, 2:10].sum()) == 64  # the 8 x 8 square
    assert torch.equal(masks[1], torch.from_numpy(dog))
    for box, mask in zip(target["boxes"].tolist(), masks, strict=True):
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert box == [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]

    semantic = open_segmentation_data(root, "train")
    assert semantic.classes == ["background", "cat", "dog"] and semantic.num_classes == 3
    mask = semantic[0][1]
    expected = torch.zeros(20, 24, dtype=torch.int64)
    expected[2:10, 2:10], expected[torch.from_numpy(dog).bool()] = 1, 2
    expected[torch.from_numpy(crowd).bool()] = IGNORE_INDEX  # crowds: ignored
    assert torch.equal(mask, expected)
    overlap = semantic[1][1]  # two cats overlapping on [6, 10) x [6, 10): 255, as torchvision's references
    assert int((overlap == IGNORE_INDEX).sum()) == 16 and int((overlap == 1).sum()) == 2 * 64 - 2 * 16


def test_a_malformed_coco_segmentation_is_one_line(tmp_path):
    root, _, _ = write_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_train.json"
    document = json.loads(path.read_text())
    document["annotations"][1]["segmentation"]["size"] = [10, 10]
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=r"annotation 2 \(image 1\): its RLE mask is of size \[10, 10\]"):
        open_segmentation_data(root, "train", task="instance")


# --- the generated Fashion-MNIST set -----------------------------------------------------------------

SPEC = SyntheticSpec(canvas=32, train_images=3, val_images=2, max_items=3, min_scale=10, max_scale=20, seed=5)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return make_fashion_segmentation(tmp_path_factory.mktemp("seg") / "fashion", SPEC)


def test_generated_masks_are_the_items_own_pixels_later_items_on_top(generated):
    rng = np.random.default_rng(SPEC.seed)  # the first training canvas, drawn again
    fashion = load_arrays("fashion-mnist", "train")
    canvas, items = draw_canvas(rng, SPEC, fashion.images)
    expected = torch.zeros(32, 32, dtype=torch.int64)
    for item in items:
        side = item.pixels.shape[0]
        expected[item.y : item.y + side, item.x : item.x + side][item.pixels > 24] = (
            int(fashion.labels[item.source]) + 1
        )
    pngs, coco = read_generated_masks(generated, "train"), open_segmentation_data(generated, "train")
    image, mask = pngs[0]
    assert torch.equal(image[0], canvas) and torch.equal(mask, expected) and int((mask > 0).sum()) > 0
    assert torch.equal(coco[0][1], expected)


def test_generated_semantic_and_instance_views_agree(generated):
    for split in ("train", "val"):
        pngs = read_generated_masks(generated, split)
        objects = open_segmentation_data(generated, split, task="instance")
        assert len(pngs) == len(objects) == SPEC.images(split) and pngs.num_classes == 11
        for index in range(len(pngs)):
            target = objects.target(index)
            assert int(target["masks"].sum(0).max()) <= 1  # instance masks do not overlap
            painted = (target["masks"].long() * target["labels"][:, None, None]).sum(0)
            assert torch.equal(painted, pngs.mask(index))
            assert torch.equal(objects.semantic_mask(index), pngs.mask(index))


def test_generation_is_seeded_written_once_and_refuses_other_settings(generated, tmp_path):
    again = make_fashion_segmentation(tmp_path / "again", SPEC)
    files = sorted(p.relative_to(generated) for p in generated.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((generated / f).read_bytes() == (again / f).read_bytes() for f in files)
    detection = make_fashion_detection(tmp_path / "detection", SPEC)  # the same canvases
    assert (detection / "val" / "000002.png").read_bytes() == (again / "val" / "000002.png").read_bytes()
    stamp = (again / "generation.json").stat().st_mtime_ns
    make_fashion_segmentation(again, SPEC)  # same settings: found, not rewritten
    assert (again / "generation.json").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match=r"other settings \(seed: 5 -> 6\)"):
        make_fashion_segmentation(again, dataclasses.replace(SPEC, seed=6))
    with pytest.raises(ConfigError, match=r"other settings \(task: 'segmentation' -> None\)"):
        make_fashion_detection(again, SPEC)
