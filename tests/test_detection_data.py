"""Detection data: the generated Fashion-MNIST set, the COCO and VOC loaders (and what they do with bad
annotations), and the batches (flips, a mid-epoch start)."""

import json
import shutil

import pytest
import torch
from PIL import Image

from resnets.data import DataWarning
from resnets.detection.data import VOC_CLASSES, open_detection_data, read_coco
from resnets.detection.loader import DetectionLoader, hflip
from resnets.detection.synthetic import SyntheticSpec, make_fashion_detection
from resnets.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = SyntheticSpec(
    canvas=48, train_images=12, val_images=6, max_items=3, min_scale=12, max_scale=24, seed=3
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return make_fashion_detection(tmp_path_factory.mktemp("det") / "fashion", SPEC)


def test_generated_set_is_coco_with_tight_boxes_inside_the_canvas(generated):
    train, val = open_detection_data(generated, "train"), open_detection_data(generated, "val")
    assert (len(train), len(val)) == (12, 6)
    assert train.classes[0] == "T-shirt/top" and train.num_classes == 10 and train.in_chans == 1
    assert train.canvas == 48
    for data in (train, val):
        for index, record in enumerate(data.records):
            image = data.image(index)
            assert image.shape == (1, 48, 48) and image.dtype == torch.uint8
            assert 1 <= len(record.boxes) <= 3
            for x0, y0, x1, y1 in record.boxes.tolist():
                assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
                # tight: the box's border rows and columns hold visible pixels of the item
                crop = image[0, int(y0) : int(y1), int(x0) : int(x1)]
                assert int(crop[0].max()) > 24 and int(crop[-1].max()) > 24
                assert int(crop[:, 0].max()) > 24 and int(crop[:, -1].max()) > 24
    document = json.loads((generated / "annotations" / "instances_train.json").read_text())
    assert len(document["annotations"]) == sum(len(r.boxes) for r in train.records)


def test_generation_is_seeded_written_once_and_refuses_other_settings(generated, tmp_path):
    again = make_fashion_detection(tmp_path / "again", SPEC)
    for split in ("train", "val"):
        a = (generated / "annotations" / f"instances_{split}.json").read_text()
        assert a == (again / "annotations" / f"instances_{split}.json").read_text()
    assert (generated / "train" / "000001.png").read_bytes() == (again / "train" / "000001.png").read_bytes()
    stamp = (again / "generation.json").stat().st_mtime_ns
    make_fashion_detection(again, SPEC)  # same settings: found, not rewritten
    assert (again / "generation.json").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="other settings .*seed: 3 -> 4"):
        make_fashion_detection(again, SyntheticSpec(**{**SPEC.__dict__, "seed": 4}))


def _bad_coco(tmp_path, generated):
    """A copy of the generated train split with one of each bad annotation and a missing image."""
    root = tmp_path / "bad"
    shutil.copytree(generated, root)
    path = root / "annotations" / "instances_train.json"
    document = json.loads(path.read_text())
    (root / "train" / "000002.png").unlink()
    first = document["annotations"][0]
    extra = [
        {**first, "id": 901, "bbox": [5, 5, 0, 10]},  # non-positive size
        {**first, "id": 902, "bbox": [60, 60, 10, 10]},  # outside the 48 x 48 image
        {**first, "id": 903, "bbox": [40, 40, 20, 20]},  # partly outside: clipped
        {**first, "id": 904, "category_id": 77},  # unknown category
    ]
    document["annotations"] += extra
    path.write_text(json.dumps(document))
    return root


def test_bad_annotations_are_skipped_and_counted(generated, tmp_path):
    root = _bad_coco(tmp_path, generated)
    with pytest.warns(DataWarning) as caught:
        data = open_detection_data(root, "train")
    message = str(caught[0].message)
    for part in (
        "1 missing image file",
        "1 non-positive size",
        "1 outside the image",
        "1 unknown category",
        "1 clipped to the image",
    ):
        assert part in message
    assert len(data) == 11 and 2 not in [r.image_id for r in data.records]
    clean = open_detection_data(generated, "train")
    first = next(r for r in clean.records if r.image_id == 1)
    mine = next(r for r in data.records if r.image_id == 1)
    assert len(mine.boxes) == len(first.boxes) + 1  # only the clipped one joined
    assert mine.boxes[-1].tolist() == [40.0, 40.0, 48.0, 48.0]


def test_strict_data_stops_at_the_first_bad_entry(generated, tmp_path):
    root = _bad_coco(tmp_path, generated)
    with pytest.raises(DataError, match="image 2: .*000002.png: missing image file; fix the annotations"):
        open_detection_data(root, "train", strict=True)
    (root / "train" / "000002.png").write_bytes((generated / "train" / "000002.png").read_bytes())
    with pytest.raises(
        DataError, match=r"annotation 901 \(image 1\): box \[5.0, 5.0, 5.0, 15.0\]: non-positive"
    ):
        open_detection_data(root, "train", strict=True)


def test_structural_problems_are_errors(tmp_path):
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "instances_train.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="cannot read COCO annotations"):
        read_coco(path, tmp_path)
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DataError, match="has no 'annotations' list"):
        read_coco(path, tmp_path)
    with pytest.raises(DataError, match="neither a COCO folder .*instances_val.json"):
        open_detection_data(tmp_path, "val")


def _voc(tmp_path):
    root = tmp_path / "VOC2007"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    Image.new("RGB", (40, 30), (90, 20, 200)).save(root / "JPEGImages" / "000005.jpg")
    objects = [
        ("dog", 0, (3, 4, 20, 25)),
        ("person", 1, (10, 2, 40, 30)),
        ("dragon", 0, (1, 1, 5, 5)),
        ("cat", 0, (30, 10, 20, 20)),
    ]
    xml = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>"
        for n, d, (a, b, c, e) in objects
    )
    (root / "Annotations" / "000005.xml").write_text(
        f"<annotation><filename>000005.jpg</filename><size><width>40</width><height>30</height></size>{xml}"
        "</annotation>"
    )
    (root / "Annotations" / "000007.xml").write_text(
        "<annotation><filename>000007.jpg</filename></annotation>"
    )
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n000007\n")
    return root


def test_voc_folder_coordinates_difficult_and_unknown_classes(tmp_path):
    root = _voc(tmp_path)
    with pytest.warns(DataWarning, match="1 missing image file.*1 non-positive size.*1 unknown category"):
        data = open_detection_data(root, "trainval", classes=VOC_CLASSES)
    assert len(data) == 1 and data.classes == list(VOC_CLASSES)
    record = data.records[0]
    # VOC's 1-based inclusive pixel indices: (xmin - 1, ymin - 1, xmax, ymax)
    assert record.boxes.tolist() == [[2.0, 3.0, 20.0, 25.0], [9.0, 1.0, 40.0, 30.0]]
    assert record.labels.tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1]
    assert record.ignore.tolist() == [False, True]  # difficult: not trained on, ignored by COCOeval
    image, target = data[0]
    assert image.shape == (3, 30, 40) and target["boxes"].tolist() == [[2.0, 3.0, 20.0, 25.0]]
    truth = data.coco().dataset["annotations"]
    assert [a["iscrowd"] for a in truth] == [0, 1] and truth[0]["bbox"] == [2.0, 3.0, 18.0, 22.0]
    with pytest.raises(DataError, match="no ImageSets/Main/test.txt; choose --split from: trainval"):
        open_detection_data(root, "test")


def test_batches_flip_boxes_and_restart_in_the_middle_of_an_epoch(generated):
    data = open_detection_data(generated, "train")
    image, target = data[0]
    flipped, moved = hflip(image, target)
    assert torch.equal(flipped.flip(-1), image)
    x0, _, x1, _ = target["boxes"][0].tolist()
    assert moved["boxes"][0, [0, 2]].tolist() == [48 - x1, 48 - x0]

    loader = DetectionLoader(data, batch_size=4, train=True, device=torch.device("cpu"), seed=5, flip=True)
    loader.set_epoch(2)
    whole = list(loader.batches())
    later = list(loader.batches(start=1))
    assert len(whole) == 3 and len(later) == 2
    for (a_images, a_targets), (b_images, b_targets) in zip(whole[1:], later, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(a_images, b_images, strict=True))
        assert [int(t["image_id"]) for t in a_targets] == [int(t["image_id"]) for t in b_targets]
    batches, flips = loader.plan()
    assert sorted(i for b in batches for i in b) == list(range(12))
    assert any(f for fs in flips for f in fs) and not all(f for fs in flips for f in fs)
    loader.set_epoch(3)
    assert loader.plan()[0] != batches  # another epoch, another order
    assert whole[0][0][0].max() <= 1.0 and whole[0][0][0].dtype == torch.float32
