"""Segmentation training on the one loop: the loss falls and the metrics are the confusion matrix's, resume is
exact (at an epoch boundary and after a SIGTERM in mid-epoch), the commands that read a run (eval, predict,
export) work on what it wrote, and bad input is one line."""

import dataclasses
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from helpers import assert_same_weights
from PIL import Image
from test_segmentation_data import bomb_png, voc_masks, write_voc

from resnets.checkpoints import load_checkpoint
from resnets.cli import main
from resnets.data import DataWarning
from resnets.detection.synthetic import SyntheticSpec
from resnets.segmentation.predict import load_segmenter, normalization
from resnets.segmentation.recipes import SEGMENTATION_RECIPES, SegmentationConfig
from resnets.segmentation.synthetic import make_fashion_segmentation
from resnets.segmentation.train import train_segmenter
from resnets.train.logging import MetricsLog
from resnets.train.recipes import RunOptions, apply_overrides

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = SyntheticSpec(canvas=48, train_images=8, val_images=4, max_items=2, min_scale=14, max_scale=28, seed=1)
# FCN on a CIFAR-style ResNet-8 at its own strides, 4 images per batch: 2 iterations per epoch
TINY = [
    "--backbone",
    "resnet_cifar",
    "--set",
    'backbone_kwargs={"depth": 8}',
    "-b",
    "4",
    "--deterministic",
    "--progress",
    "none",
    "--log-every",
    "1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The set written by `resnets segment make-data` (the same files as ``make_fashion_segmentation``)."""
    root = tmp_path_factory.mktemp("seg") / "fashion"
    flags = [f"--{f.name.replace('_', '-')}={getattr(SPEC, f.name)}" for f in dataclasses.fields(SPEC)]
    assert main(["segment", "make-data", str(root), *flags]) == 0
    assert make_fashion_segmentation(root, SPEC) == root  # found, as written with these settings
    return root


def train_stopped_after(iteration, data, folder):
    """`resnets segment train` for 2 epochs, sent a SIGTERM right after ``iteration``; its exit status."""
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
    """Two epochs straight, and the same run stopped at the end of epoch 1 and resumed. (Not a one-epoch
    run extended to two: the poly schedule's lr depends on the run's length, as a cosine one does.)"""
    root = tmp_path_factory.mktemp("segment-runs")
    straight, split = root / "straight", root / "split"
    assert (
        main(["segment", "train", *TINY, "--data-dir", str(data), "--epochs", "2", "--output", str(straight)])
        == 0
    )
    assert train_stopped_after(2, data, split) == 128 + signal.SIGTERM
    stopped = load_checkpoint(split / "last.pt")
    assert (stopped["epoch"], stopped["iteration"], stopped["batch_in_epoch"]) == (1, 2, 0)
    assert main(["segment", "train", "--resume", str(split), "--progress", "none"]) == 0
    return straight, split


def test_resume_at_an_epoch_boundary_is_exact(runs):
    straight, split = runs
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert (b["epoch"], b["iteration"]) == (2, 4) and b["config"]["task"] == "segmentation"
    assert b["model"]["name"] == "fcn" and b["model"]["kwargs"]["num_classes"] == 11
    assert_same_weights(a, b)
    # the poly schedule resumed too: lr 0.02 * (1 - 4/4)^0.9 after the last step
    lrs = [ckpt["optimizer"]["param_groups"][0]["lr"] for ckpt in (a, b)]
    assert lrs[0] == lrs[1] == pytest.approx(0.0)
    rows = [line.split(",")[:2] for line in (split / "metrics.csv").read_text().splitlines()]
    assert rows == [["epoch", "iteration"], ["1", "2"], ["2", "4"]]
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in runs]
    assert summaries[0]["final_val_miou"] == summaries[1]["final_val_miou"]
    assert (split / "model.safetensors").is_file()


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


def test_a_tiny_segmenter_learns_and_its_scores_are_the_confusion_matrixs(data, tmp_path):
    recipe = apply_overrides(
        SEGMENTATION_RECIPES["fashion-cpu"],
        {
            "backbone": "resnet_cifar",
            "backbone_kwargs": '{"depth": 8}',
            "aux_loss": "false",
            "iterations": "16",
            "batch_size": "4",
            "lr": "0.05",
        },
    )
    run = RunOptions(
        output=str(tmp_path / "learn"), data_dir=str(data), log_every=2, progress="none", plot=False
    )
    result = train_segmenter(SegmentationConfig(recipe, run))
    assert result["iterations"] == 16
    steps = [json.loads(line) for line in (tmp_path / "learn" / "steps.jsonl").read_text().splitlines()]
    assert steps[-1]["loss"] < 0.6 * steps[0]["loss"]
    assert all(step["loss"] == step["loss_out"] for step in steps)  # no auxiliary head, one part
    # mean IoU is the mean of the per-class IoUs of the classes seen
    iou = [v for v in result["final_val_iou"].values() if v is not None]
    assert result["final_val_miou"] == pytest.approx(sum(iou) / len(iou), abs=1e-4)
    assert 0 < result["final_val_pixel_acc"] <= 100


def test_eval_predict_and_export_read_the_run(runs, data, tmp_path, capsys):
    straight, _ = runs
    capsys.readouterr()
    assert main(["segment", "eval", str(straight), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    summary = json.loads((straight / "summary.json").read_text())
    assert metrics["images"] == 4 and metrics["pixels"] == 4 * 48 * 48  # nothing ignored on the canvases
    assert metrics["miou"] == pytest.approx(summary["final_val_miou"], abs=1e-4)
    assert metrics["pixel_accuracy"] == pytest.approx(summary["final_val_pixel_acc"], abs=1e-4)
    assert metrics["iou"] == pytest.approx(summary["final_val_iou"])
    seen = [v for v in metrics["iou"].values() if v is not None]
    assert metrics["miou"] == pytest.approx(sum(seen) / len(seen))

    image = data / "val" / "000001.png"
    drawn = tmp_path / "mask.png"
    assert main(["segment", "predict", str(straight), str(image), "--draw", str(drawn)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{image}: ") and out[-1] == f"  drawn: {drawn}"
    with Image.open(drawn) as picture:
        assert picture.size == (240, 240)  # 48 px enlarged 5 times

    onnx = tmp_path / "segmenter.onnx"
    assert main(["segment", "export", str(straight), "--output", str(onnx)]) == 0
    assert "onnxruntime vs PyTorch on 2 images" in capsys.readouterr().out
    ort = pytest.importorskip("onnxruntime", reason="the export's check needs onnxruntime")
    model, ckpt = load_segmenter(straight)
    mean, std = normalization(ckpt)
    x = torch.rand(2, 1, 40, 56, generator=torch.Generator().manual_seed(0))  # another size and batch
    (found,) = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(
        None, {"images": x.numpy()}
    )
    with torch.inference_mode():
        expected = model((x - mean) / std)["out"]
    np.testing.assert_allclose(found, expected.numpy(), atol=1e-4)
    assert main(["segment", "export", str(straight), "--output", str(straight / "last.pt")]) == 2


def test_a_voc_folder_trains_with_resizing_and_cropping(tmp_path):
    root = write_voc(tmp_path / "VOC2012", voc_masks())
    write_voc(root, voc_masks(), split="val")
    out = tmp_path / "voc-run"
    args = [*TINY, "-b", "2", "--data-dir", str(root), "--iterations", "1", "--output", str(out)]
    sizes = ["--set", "base_size=16", "--set", "crop_size=12"]  # 12 x 16 images resized to 16 x 21
    assert (
        main(
            ["segment", "train", "--recipe", "torchvision-voc", "--set", "output_stride=none", *args, *sizes]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 1 and not math.isnan(summary["final_val_miou"])
    assert len(summary["final_val_iou"]) == 21


@pytest.mark.parametrize(
    "case, message",
    [
        ("backbone", "unknown model"),
        ("folder", "neither a COCO folder"),
        ("label", "holds label 200"),
        ("model", "pspnet"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(case, message, data, tmp_path, capsys):
    args = ["segment", "train", *TINY, "--output", str(tmp_path / "run")]
    if case == "backbone":
        args += ["--data-dir", str(data), "--backbone", "resnet_nonesuch"]
    elif case == "folder":
        (tmp_path / "empty").mkdir()
        args += ["--data-dir", str(tmp_path / "empty")]
    elif case == "label":
        masks = voc_masks()
        masks["2007_000003"][0, 0] = 200  # a label of 200 in a 21-class set
        args += ["--data-dir", str(write_voc(tmp_path / "VOC", masks)), "--strict-data"]
    else:
        args += ["--data-dir", str(data), "--set", "model=pspnet"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


# The hostile inputs, in a VOC folder beside three good images: name -> (the reason a DataWarning
# counts, the one line --strict-data gives)
HOSTILE = {
    "bomb": (
        "unreadable or oversized mask",
        "bomb.png: 100000 x 100000 = 10,000,000,000 pixels is above the limit of 89,478,485",
    ),
    "label": ("mask label out of range", "label.png holds label 200 (classes 0..20 and 255 to ignore)"),
    "nomask": ("image without its mask", "nomask.png is missing"),
}
SKIPPED = "(skipped, or clipped where it says so); --strict-data stops at the first instead"
# a VOC run of one iteration at the backbone's own strides, its 12 x 16 images resized to 16 x 21, crops of 12
VOC_TRAIN = [
    "segment",
    "train",
    "--recipe",
    "torchvision-voc",
    *TINY,
    "-b",
    "2",
    "--iterations",
    "1",
    "--set",
    "output_stride=none",
    "--set",
    "base_size=16",
    "--set",
    "crop_size=12",
]


def hostile_voc(root, names):
    """A VOC folder (train and val lists alike) of the three good images and the hostile ``names``: a mask
    PNG whose header claims 100000 x 100000 pixels (a bomb: decoded, 10 GB; refused from its header at the
    default pixel limit), a label of 200 in a 21-class set, an image without its mask."""
    masks = voc_masks()
    masks.update({name: masks["2007_000001"] for name in names})
    if "label" in names:
        masks["label"] = np.full((12, 16), 200, np.uint8)
    for split in ("train", "val"):
        write_voc(root, masks, split=split)
    if "bomb" in names:
        bomb_png(root / "SegmentationClass" / "bomb.png")
    if "nomask" in names:
        (root / "SegmentationClass" / "nomask.png").unlink()
    return root


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    """A run trained on a good VOC folder, for `resnets segment eval` on hostile ones."""
    root = tmp_path_factory.mktemp("voc")
    data = hostile_voc(root / "VOC2012", [])
    assert main([*VOC_TRAIN, "--data-dir", str(data), "--output", str(root / "run")]) == 0
    return root / "run"


def test_hostile_masks_are_skipped_and_counted_by_train_and_eval(voc_run, tmp_path, capsys):
    """By default each split's bad masks are skipped and counted in one warning (one line); training and
    evaluation go on with the good images."""
    root = hostile_voc(tmp_path / "VOC2012", HOSTILE)
    out = tmp_path / "run"
    counted = ", ".join(f"1 {reason}" for reason, _ in sorted(HOSTILE.values()))
    capsys.readouterr()
    with pytest.warns(DataWarning) as warned:
        assert main([*VOC_TRAIN, "--data-dir", str(root), "--output", str(out)]) == 0
    assert [str(w.message) for w in warned] == [
        f"{root} ({s}): {counted} {SKIPPED}" for s in ("train", "val")
    ]
    assert "Traceback" not in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["iterations"] == 1

    with pytest.warns(DataWarning) as warned:
        assert (
            main(["segment", "eval", str(voc_run), "--data-dir", str(root), "--split", "train", "--json"])
            == 0
        )
    assert [str(w.message) for w in warned] == [f"{root} (train): {counted} {SKIPPED}"]
    printed = capsys.readouterr()
    assert printed.err == ""
    metrics = json.loads(printed.out)
    # the scores of the three good images alone (the run's own folder)
    assert main(["segment", "eval", str(voc_run), "--split", "train", "--json"]) == 0
    assert metrics == json.loads(capsys.readouterr().out) and metrics["images"] == 3


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_masks_are_one_line_under_strict_data(name, voc_run, tmp_path, capsys):
    """--strict-data refuses the first bad mask in one line naming its file, before anything is
    written: train and eval alike."""
    root = hostile_voc(tmp_path / "VOC2012", [name])
    reason, message = HOSTILE[name]
    out = tmp_path / "run"
    capsys.readouterr()
    assert main([*VOC_TRAIN, "--data-dir", str(root), "--strict-data", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and reason in err[0], err
    assert str(root / "SegmentationClass") in err[0] and not out.exists()

    evaluate = ["segment", "eval", str(voc_run), "--data-dir", str(root), "--split", "train"]
    assert main([*evaluate, "--strict-data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and reason in err[0], err


def test_the_auxiliary_head_trains_at_ten_times_the_lr_as_in_torchvisions_reference():
    """references/segmentation/train.py: params_to_optimize gets the aux_classifier at args.lr * 10; the
    poly schedule keeps the ratio; without the auxiliary head, one lr for everything."""
    from resnets.segmentation.models import fcn
    from resnets.segmentation.train import Segmentation
    from resnets.train.build import build_optimizer
    from resnets.train.schedule import LRSchedule

    recipe = apply_overrides(SEGMENTATION_RECIPES["fashion-cpu"], {"backbone_kwargs": {}, "lr": 0.01})
    model = fcn("resnet20", 11, in_chans=1, output_stride=None)
    task = Segmentation(SegmentationConfig(recipe=recipe))
    optimizer = build_optimizer(model, recipe, torch.device("cpu"), task.lr_factors())
    lrs = [group["lr"] for group in optimizer.param_groups]
    assert lrs == [pytest.approx(0.01), pytest.approx(0.1)]
    aux = {id(p) for p in model.aux_classifier.parameters()}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == aux
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    schedule = LRSchedule(optimizer, recipe, steps_per_epoch=10, total_steps=40)
    for _ in range(7):
        optimizer.step()
        schedule.step_iteration()
    first, second = (group["lr"] for group in optimizer.param_groups)
    assert 0 < first < 0.01 and second == pytest.approx(10 * first)

    plain = dataclasses.replace(recipe, aux_loss=False)
    model = fcn("resnet20", 11, in_chans=1, output_stride=None, aux_loss=False)
    factors = Segmentation(SegmentationConfig(recipe=plain)).lr_factors()
    optimizer = build_optimizer(model, plain, torch.device("cpu"), factors)
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(0.01)]
