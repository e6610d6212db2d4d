"""Segmentation data: Pascal VOC mask folders, COCO masks, the generated Fashion-MNIST set, and what the
readers do with bad masks (skipped and counted in one warning, or refused under strict)."""

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data import DataWarning
from resnets.data.images import set_max_image_pixels
from resnets.errors import DataError
from resnets.segmentation.data import (
    IGNORE_INDEX,
    VOC_SEGMENTATION_CLASSES,
    read_voc_segmentation,
    voc_palette,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def palette_png(path, mask: np.ndarray) -> None:
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


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
    return root


BAD_MASKS = {
    "size": ("mask of another size than its image", r"bad.png is 16 x 10, its image 16 x 12"),
    "label": ("mask label out of range", r"bad.png holds label 200 \(classes 0..20 and 255 to ignore\)"),
    "rgb": ("mask not a palette or grayscale PNG", r"bad.png is a RGB image"),
    "missing": ("image without its mask", r"bad.png is missing"),
    "bomb": ("unreadable or oversized mask", r"bad.png: 400 x 300 = 120,000 pixels is above the limit"),
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
