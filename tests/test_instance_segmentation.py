"""Mask R-CNN on the one training loop, through `resnets segment`: its mask AP is COCO's on its own
predictions, resume is exact (at an epoch boundary and after a SIGTERM in mid-epoch), eval / predict --draw /
export read the run, the loader flips masks with their images, and bad input is one line."""

import json
import math
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from helpers import assert_same_weights
from PIL import Image
from test_segmentation_data import voc_masks, write_voc

from resnets.checkpoints import load_checkpoint
from resnets.cli import main
from resnets.detection.loader import DetectionLoader
from resnets.detection.plots import PALETTE, draw_boxes
from resnets.detection.synthetic import SyntheticSpec
from resnets.io import save_torch
from resnets.runs import read_metrics
from resnets.segmentation.instance_train import open_instance_data, train_mask_rcnn
from resnets.segmentation.metrics import mask_average_precision
from resnets.segmentation.predict import load_segmenter
from resnets.segmentation.recipes import MASK_RCNN_RECIPES, MaskRCNNConfig
from resnets.segmentation.synthetic import make_fashion_segmentation
from resnets.train.logging import MetricsLog
from resnets.train.recipes import RunOptions, apply_overrides

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = SyntheticSpec(canvas=48, train_images=8, val_images=4, max_items=2, min_scale=14, max_scale=28, seed=1)
# Mask R-CNN on a CIFAR-style ResNet-8's FPN, narrow heads, 4 images per batch: 2 iterations per epoch; every
# region score kept (so there are masks to score and to export), lr / 10 after epoch 1
TINY = [
    "--model",
    "mask_rcnn",
    "--backbone",
    "resnet_cifar",
    "--set",
    'backbone_kwargs={"depth": 8}',
    "-b",
    "4",
    "--deterministic",
    "--set",
    "milestones=1",
    "--set",
    "warmup=0",
    "--set",
    "box_score_thresh=0.0",
    "--set",
    "proposals_test=30",
    "--set",
    "box_detections_per_img=10",
    "--set",
    "fpn_channels=16",
    "--set",
    "representation_size=32",
    "--set",
    "mask_head_width=16",
    "--progress",
    "none",
    "--log-every",
    "1",
]
LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fashion_segmentation(tmp_path_factory.mktemp("instances") / "fashion", SPEC)


def train_stopped_after(iteration, data, folder):
    """`resnets segment train` of Mask R-CNN for 2 epochs, sent a SIGTERM right after ``iteration``."""
    log_step = MetricsLog.log_step

    def signalled(self, record):
        log_step(self, record)
        if record["iteration"] == iteration:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MetricsLog, "log_step", signalled)
        args = ["segment", "train", *TINY, "--data-dir", str(data), "--epochs", "2", "--output", str(folder)]
        return main(args)


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Two epochs straight, and the same run stopped at the end of epoch 1 and resumed."""
    root = tmp_path_factory.mktemp("mask-rcnn-runs")
    straight, split = root / "straight", root / "split"
    args = ["segment", "train", *TINY, "--data-dir", str(data), "--epochs", "2", "--output", str(straight)]
    assert main(args) == 0
    assert train_stopped_after(2, data, split) == 128 + signal.SIGTERM
    stopped = load_checkpoint(split / "last.pt")
    assert (stopped["epoch"], stopped["iteration"], stopped["batch_in_epoch"]) == (1, 2, 0)
    assert main(["segment", "train", "--resume", str(split), "--progress", "none"]) == 0
    return straight, split


def test_resume_at_an_epoch_boundary_is_exact(runs):
    straight, split = runs
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert (b["epoch"], b["iteration"]) == (2, 4) and b["config"]["task"] == "instance_segmentation"
    assert b["model"]["name"] == "mask_rcnn" and b["model"]["kwargs"]["num_classes"] == 10
    assert b["model"]["kwargs"]["mask_head_width"] == 16
    assert_same_weights(a, b)
    lrs = [ckpt["optimizer"]["param_groups"][0]["lr"] for ckpt in (a, b)]
    assert lrs == [pytest.approx(0.002)] * 2  # lr 0.02 / 10 after epoch 1: the schedule resumed too
    rows = [line.split(",")[:2] for line in (split / "metrics.csv").read_text().splitlines()]
    assert rows == [["epoch", "iteration"], ["1", "2"], ["2", "4"]]
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in runs]
    for key in ("final_val_mask_ap", "final_val_box_ap", "best_val_mask_ap", "best_val_epoch"):
        assert summaries[0][key] == summaries[1][key], key


def test_sigterm_in_mid_epoch_resumes_exactly(runs, data, tmp_path):
    straight, _ = runs
    folder = tmp_path / "stopped"
    assert train_stopped_after(3, data, folder) == 128 + signal.SIGTERM  # the first step of epoch 2
    stopped = load_checkpoint(folder / "last.pt")
    assert (stopped["epoch"], stopped["iteration"], stopped["batch_in_epoch"]) == (1, 3, 1)
    assert main(["segment", "train", "--resume", str(folder), "--progress", "none"]) == 0
    assert_same_weights(load_checkpoint(straight / "last.pt"), load_checkpoint(folder / "last.pt"))
    steps = [json.loads(line)["iteration"] for line in (folder / "steps.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_the_summarys_mask_ap_is_cocos_on_the_runs_own_predictions(runs, data):
    straight, _ = runs
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["task"] == "instance_segmentation"
    # the step minimises the five losses' sum, and logs each
    for step in map(json.loads, (straight / "steps.jsonl").read_text().splitlines()):
        assert step["loss"] == pytest.approx(sum(step[name] for name in LOSSES), rel=1e-5)
    # best by mask AP: best.pt is the epoch of the highest val_mask_ap
    rows = read_metrics(straight / "metrics.csv")
    assert all(row["val_box_ap"] is not None and row["val_mask_ap"] is not None for row in rows)
    best = max(rows, key=lambda row: row["val_mask_ap"])
    assert summary["best_val_mask_ap"] == pytest.approx(best["val_mask_ap"])
    assert load_checkpoint(straight / "best.pt")["epoch"] == summary["best_val_epoch"] == best["epoch"]

    # the last epoch's mask AP, recomputed from the final weights' predictions on the validation images
    model, _ = load_segmenter(straight)
    val = open_instance_data(data, "val")
    loader = DetectionLoader(val, batch_size=16, train=False, device=torch.device("cpu"))  # as in training
    predictions, targets = [], []
    with torch.inference_mode():
        for images, batch_targets in loader:
            predictions += model(images)
            targets += batch_targets
    assert all(t["masks"].shape[0] == len(t["boxes"]) > 0 for t in targets)
    recomputed = mask_average_precision(predictions, targets)
    assert recomputed["AR100"] > 0  # some masks found their objects: not a comparison of zeros
    assert summary["final_val_mask_ap"] == pytest.approx(
        100 * recomputed["AP"], abs=1e-4
    )  # summary.json rounds
    assert summary["final_val_mask_ap50"] == pytest.approx(
        100 * recomputed["AP50"], abs=1e-4
    )  # summary.json rounds


def test_a_tiny_mask_rcnn_learns_its_masks(data, tmp_path):
    options = {"backbone": "resnet_cifar", "backbone_kwargs": '{"depth": 8}', "iterations": "20"}
    options |= {"batch_size": "4", "lr": "0.05", "warmup": "0", "eval_split": "none"}
    options |= {"fpn_channels": "16", "representation_size": "32", "mask_head_width": "32"}
    recipe = apply_overrides(MASK_RCNN_RECIPES["mask-rcnn-fashion-cpu"], options)
    run = RunOptions(
        output=str(tmp_path / "learn"), data_dir=str(data), log_every=1, progress="none", plot=False
    )
    assert train_mask_rcnn(MaskRCNNConfig(recipe, run))["iterations"] == 20
    steps = [json.loads(line) for line in (tmp_path / "learn" / "steps.jsonl").read_text().splitlines()]
    assert np.mean([s["loss"] for s in steps[-5:]]) < 0.5 * steps[0]["loss"]
    # the mask branch's per-pixel cross-entropy below log 2, that of predicting 0.5 everywhere
    assert np.mean([s["loss_mask"] for s in steps[-5:]]) < math.log(2) - 0.02


def test_eval_predict_draw_and_export_read_the_run(runs, data, tmp_path, capsys):
    straight, _ = runs
    summary = json.loads((straight / "summary.json").read_text())
    capsys.readouterr()
    assert main(["segment", "eval", str(straight), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == 4 and metrics["detections"] > 0
    assert metrics["mask"]["AP"] == pytest.approx(
        summary["final_val_mask_ap"], abs=1e-4
    )  # summary.json rounds
    assert metrics["box"]["AP"] == pytest.approx(summary["final_val_box_ap"], abs=1e-4)  # summary.json rounds
    assert main(["segment", "eval", str(straight)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["box", "mask"] and table[2].startswith("  AP @[.50:.95]")

    image = data / "val" / "000001.png"
    drawn = tmp_path / "objects.png"
    assert main(["segment", "predict", str(straight), str(image), "--score", "0", "--draw", str(drawn)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{image}: 10 objects" and out[-1] == f"  drawn: {drawn}"  # box_detections_per_img
    assert all(" box " in line and line.endswith(" pixels") for line in out[1:-1])
    with Image.open(drawn) as picture:
        assert picture.size == (240, 240)  # 48 px enlarged 5 times
        assert np.ptp(np.asarray(picture.convert("RGB"), dtype=int), axis=2).max() > 0  # colour on grey

    onnx = tmp_path / "mask_rcnn.onnx"
    assert main(["segment", "export", str(straight), "--output", str(onnx)]) == 0
    assert "onnxruntime vs PyTorch on 2 images" in capsys.readouterr().out
    ort = pytest.importorskip("onnxruntime", reason="the export's check needs onnxruntime")
    image = torch.rand(1, 40, 56, generator=torch.Generator().manual_seed(0))  # another size than the run's
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    boxes, labels, scores, masks = session.run(None, {"image": image.numpy()})
    model, _ = load_segmenter(straight)
    with torch.inference_mode():
        expected = model([image])[0]
    assert len(boxes) == len(expected["boxes"]) > 0 and masks.shape == (len(boxes), 1, 40, 56)
    assert labels.tolist() == expected["labels"].tolist()
    np.testing.assert_allclose(boxes, expected["boxes"].numpy(), atol=1e-2)
    np.testing.assert_allclose(scores, expected["scores"].numpy(), atol=1e-3)
    np.testing.assert_allclose(masks, expected["masks"].numpy(), atol=1e-3)
    assert main(["segment", "export", str(straight), "--output", str(straight / "last.pt")]) == 2


def test_the_loader_flips_masks_with_their_boxes(data):
    dataset = open_instance_data(data, "train")
    loader = DetectionLoader(dataset, batch_size=4, train=True, flip=True, device=torch.device("cpu"), seed=3)
    _, flips = loader.plan()
    assert any(sum(flips, [])) and not all(sum(flips, []))  # both kinds to compare
    for _, targets in loader:
        for target in targets:
            assert target["masks"].dtype == torch.uint8 and target["masks"].shape[1:] == (48, 48)
            for box, mask in zip(target["boxes"], target["masks"], strict=True):
                rows, cols = torch.nonzero(mask, as_tuple=True)
                extent = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]  # the set's boxes
                assert box.tolist() == pytest.approx([float(v) for v in extent])


def test_drawn_masks_are_painted_in_their_objects_colour(tmp_path):
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, :4] = 0.9  # the top four rows, away from the box and its label
    path = draw_boxes(
        torch.zeros(1, 16, 16, dtype=torch.uint8),
        torch.tensor([[8.0, 8, 15, 15]]),
        [1],
        [0.5],
        ["a"],
        tmp_path / "a.png",
        masks=mask,
    )
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB"), dtype=int)
    assert np.abs(pixels[:4, :8] - np.array(PALETTE[0]) / 2).max() <= 1  # half opaque over black
    assert pixels[4:8, :8].max() == 0


@pytest.mark.parametrize(
    "case, message",
    [
        ("voc", "semantic only"),
        ("boxes only", "boxes without masks"),
        ("two models", "--model fcn does not go with --recipe mask-rcnn-fashion-cpu"),
        ("output stride", "--output-stride is FCN and DeepLabV3's"),
        ("resumed as fcn", "--model fcn does not go with the resumed run (Mask R-CNN)"),
        ("detection checkpoint", "not a segmentation checkpoint; read it with `resnets detect`"),
        ("detect eval", "mask_rcnn segmenter's checkpoint"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(case, message, runs, data, tmp_path, capsys):
    straight, _ = runs
    before = (straight / "last.pt").stat().st_mtime_ns
    out = tmp_path / "run"
    args = ["segment", "train", *TINY, "--output", str(out)]
    if case == "voc":
        args += ["--data-dir", str(write_voc(tmp_path / "VOC", voc_masks()))]
    elif case == "boxes only":  # a detection set: the same images, annotations without segmentation
        shutil.copytree(data / "train", tmp_path / "boxes" / "train")
        document = json.loads((data / "annotations" / "instances_train.json").read_text())
        for annotation in document["annotations"]:
            del annotation["segmentation"]
        (tmp_path / "boxes" / "annotations").mkdir()
        (tmp_path / "boxes" / "annotations" / "instances_train.json").write_text(json.dumps(document))
        args += ["--data-dir", str(tmp_path / "boxes")]
    elif case == "two models":
        args += ["--data-dir", str(data), "--recipe", "mask-rcnn-fashion-cpu", "--model", "fcn"]
    elif case == "output stride":
        args += ["--data-dir", str(data), "--output-stride", "8"]
    elif case == "resumed as fcn":
        args = ["segment", "train", "--resume", str(straight), "--model", "fcn"]
    elif case == "detection checkpoint":  # the run's checkpoint as if `resnets detect train` had written it
        ckpt = load_checkpoint(straight / "last.pt")
        ckpt["config"]["task"] = "detection"
        save_torch(ckpt, tmp_path / "detector.pt")
        args = ["segment", "eval", str(tmp_path / "detector.pt")]
    else:
        args = ["detect", "eval", str(straight)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
    assert (straight / "last.pt").stat().st_mtime_ns == before
