"""`resnets reproduce segmentation`: the smoke budget writes every artefact and its numbers are the
confusion matrices'; the cpu and paper budgets plan without training."""

import json
import math

import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.experiments import get_experiment
from resnets.experiments.runner import ReproduceOptions, make_context, reproduce
from resnets.experiments.segmentation import fold_mious, image_confusions, segmenter_runs
from resnets.segmentation.data import open_segmentation_data
from resnets.segmentation.evaluate import evaluate_segmenter
from resnets.segmentation.loader import Augmentation, SegmentationLoader
from resnets.segmentation.metrics import segmentation_scores
from resnets.segmentation.predict import load_segmenter

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = ["VGG-style-8", "plain-8", "ResNet-8"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("segmentation")
    messages: list[str] = []
    written = reproduce(
        "segmentation", ReproduceOptions(budget="smoke", output=output, device="cpu"), log=messages.append
    )
    return output, written


def test_smoke_budget_writes_every_artefact_and_finished_runs_are_not_redone(smoke, capsys):
    output, written = smoke
    folder = output / "segmentation"
    assert written["results"] == folder / "results.json" and written["report"] == folder / "report.md"
    for name in ("segmentation.png", "segmentation_miou.png"):
        with Image.open(written[name]) as figure:
            assert figure.format == "PNG" and figure.size[0] > 300
    results = json.loads(written["results"].read_text())
    assert len(results["runs"]) == 6  # the classifiers, two seeds each
    assert results["results"]["test_images"] == 8
    for label in LABELS:
        entry = results["results"][label]
        assert 0 <= entry["miou"] <= 100 and 0 <= entry["pixel_accuracy"] <= 100
        assert entry["miou"] == pytest.approx(sum(entry["per_seed_miou"]) / 2)
        assert len(entry["per_seed_folds"]) == 2 and all(len(f) == 8 for f in entry["per_seed_folds"])
        for seed in entry["seeds"]:
            assert len(seed["train_loss"]) == 1 and math.isfinite(seed["train_loss"][0])
            run = output / "runs" / seed["run"].split("/")[-1]
            assert (run / "summary.json").is_file() and (run / "model.safetensors").is_file()
    assert set(results["results"]["gaps"]) == {"VGG-style-8", "plain-8"}
    assert results["finding"]["shows"] is None  # the smoke budget judges nothing
    report = written["report"].read_text()
    for text in ("Multi-task Network Cascades", "| ResNet-8 (ResNet-101) |", "| plain-8 |", "24.60", "19.50"):
        assert text in report
    assert report.count("resnets segment train --recipe fashion-cpu") == 6
    assert len(list((output / "data").glob("fashion-seg-*/generation.json"))) == 1
    again: list[str] = []
    reproduce("segmentation", ReproduceOptions(budget="smoke", output=output, device="cpu"), log=again.append)
    assert sum("finished run found" in m for m in again) == 6  # the classifiers
    assert capsys.readouterr().err.count("segmenter: finished run found") == 6
    assert not any("training" in m for m in again)


def test_the_folds_and_the_whole_test_set_are_the_confusion_matrix_of_their_images(smoke):
    """Per-image matrices summed give the evaluation's scores on the whole set, and each fold's mean IoU
    is that of its own images."""
    output, written = smoke
    results = json.loads(written["results"].read_text())
    entry = results["results"]["ResNet-8"]["seeds"][0]
    model, ckpt = load_segmenter(entry["run"])
    meta = ckpt["data"]
    test_set = open_segmentation_data(next((output / "data").glob("fashion-seg-*")), "val", in_chans=1)
    loader = SegmentationLoader(
        test_set,
        batch_size=3,  # batches that do not divide the 8 images
        train=False,
        augment=Augmentation(),
        device=torch.device("cpu"),
        mean=meta["image_mean"],
        std=meta["image_std"],
    )
    confusions = image_confusions(model, loader, len(meta["classes"]))
    assert len(confusions) == len(test_set) == 8
    whole, matrix = evaluate_segmenter(model, loader.batches(), len(meta["classes"]))
    assert torch.equal(sum(confusions), matrix)
    assert 100 * whole.mean_iou == pytest.approx(entry["miou"])
    folds = fold_mious(confusions)
    assert folds == pytest.approx(entry["folds"])
    assert folds[3] == pytest.approx(100 * segmentation_scores(confusions[3]).mean_iou)  # 8 images, 8 folds


def test_cpu_and_paper_budgets_plan_without_training(tmp_path, capsys):
    assert main(["reproduce", "segmentation", "--budget", "cpu", "--plan", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    trains = sorted(
        line.split("--output ")[1].split("/")[-1] for line in out.splitlines() if "resnets train" in line
    )
    assert trains[:4] == [  # the detection experiment's classifiers, shared
        "plain20-fashion-mnist-cpu",
        "plain20-fashion-mnist-cpu-seed1",
        "resnet20-fashion-mnist-cpu",
        "resnet20-fashion-mnist-cpu-seed1",
    ]
    assert "# segmentation data: resnets segment make-data" in out and "--train-images 4000" in out
    segmenters = [line for line in out.splitlines() if line.startswith("# segmenter ")]
    assert [line.split(":")[0] for line in segmenters] == [
        "# segmenter VGG-style-20",
        "# segmenter VGG-style-20 seed 1",
        "# segmenter plain-20",
        "# segmenter plain-20 seed 1",
        "# segmenter ResNet-20",
        "# segmenter ResNet-20 seed 1",
    ]
    # one recipe for every backbone, fixed before the run, nothing evaluated during training
    for line in segmenters:
        assert (
            "--set epochs=16" in line
            and "--set eval_split=None" in line
            and "--set output_stride=None" in line
        )
    assert "--set seed=1" in segmenters[1] and "seed=" not in segmenters[0]
    assert not (tmp_path / "runs").exists()

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    argv = ["reproduce", "segmentation", "--budget", "paper", "--plan", "--output", str(tmp_path)]
    assert main([*argv, "--detection-data", str(voc)]) == 0
    out = capsys.readouterr().out
    assert f"# segmentation data: {voc} (--detection-data), recipe torchvision-voc" in out
    assert "--set backbone=resnet101" in out and "--set backbone=vgg16" in out
    ctx = make_context(
        get_experiment("segmentation"),
        ReproduceOptions(budget="paper", output=tmp_path, detection_data=tmp_path / "coco"),
    )
    recipes = [run.resolved() for seeds in segmenter_runs(ctx) for run in seeds]
    assert {r.name for r in recipes} == {"torchvision-coco"} and {r.backbone for r in recipes} == {
        "vgg16",
        "resnet101",
    }
