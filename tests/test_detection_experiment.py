"""`resnets reproduce detection`: the smoke budget writes every artefact; the cpu and paper budgets plan
(the paper's detectors build) without training."""

import json

import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.experiments import get_experiment
from resnets.experiments.detection import DetectionExperiment, detector_runs, paper_detectors_build
from resnets.experiments.runner import ReproduceOptions, make_context, reproduce

pytestmark = pytest.mark.usefixtures("one_thread")


def test_smoke_budget_writes_every_artefact(tmp_path):
    messages = []
    written = reproduce(
        "detection", ReproduceOptions(budget="smoke", output=tmp_path, device="cpu"), log=messages.append
    )
    folder = tmp_path / "detection"
    assert written["results"] == folder / "results.json" and written["report"] == folder / "report.md"
    with Image.open(written["detection.png"]) as figure:
        assert figure.format == "PNG" and figure.size[0] > 300
    with Image.open(written["detection_ap.png"]) as figure:
        assert figure.format == "PNG" and figure.size[0] > 300
    results = json.loads(written["results"].read_text())
    labels = ["VGG-style-8", "plain-8", "ResNet-8"]
    assert list(results["runs"]) and len(results["runs"]) == 6  # the classifiers, two seeds each
    for label in labels:
        entry = results["results"][label]
        assert 0 <= entry["AP"] <= 100 and 0 <= entry["AP50"] <= 100
        assert len(entry["per_seed_folds"]) == 2 and all(len(f) == 8 for f in entry["per_seed_folds"])
        assert entry["AP"] == pytest.approx(sum(entry["per_seed_AP"]) / 2)
        assert 0 <= entry["classifier_test_error"] <= 100
        assert len(entry["runs"]) == 2 and entry["runs"][1].endswith("-seed1")
        for folder in entry["runs"]:
            run = tmp_path / "runs" / folder.split("/")[-1]
            assert (run / "summary.json").is_file() and (run / "model.safetensors").is_file()
    assert set(results["results"]["gaps"]) == {"VGG-style-8", "plain-8"}
    assert results["finding"]["shows"] is None  # the smoke budget judges nothing
    report = written["report"].read_text()
    for text in (
        "Tables 7 and 8",
        "| ResNet-8 (ResNet-101) |",
        "| plain-8 |",
        "73.20",
        "48.40",
        "27.20",
        "![",
        "resnets detect train",
    ):
        assert text in report
    # the generated set was written once, under the output folder
    assert len(list((tmp_path / "data").glob("fashion-det-*/generation.json"))) == 1
    # again: every run, classifier and detector, is found finished and nothing is retrained
    again = []
    reproduce("detection", ReproduceOptions(budget="smoke", output=tmp_path, device="cpu"), log=again.append)
    assert sum("finished run found" in m for m in again) == 6  # the detectors, two seeds each
    assert not any("training" in m for m in again)


def test_cpu_and_paper_budgets_plan_without_training(tmp_path, capsys):
    assert main(["reproduce", "detection", "--budget", "cpu", "--plan", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    trains = [line for line in out.splitlines() if line.startswith("resnets train")]
    # the backbones are degradation's and lesion's classifiers (the recipe normalises per channel)
    folders = sorted(line.split("--output ")[1].split("/")[-1] for line in trains)
    assert (
        folders
        == [
            "plain20-fashion-mnist-cpu",
            "plain20-fashion-mnist-cpu-seed1",
            "resnet20-fashion-mnist-cpu",
            "resnet20-fashion-mnist-cpu-seed1",
            *sorted(n for n in folders if n.startswith("vgg")),
        ]
        and len(folders) == 6
    )
    assert "# detection data: resnets detect make-data" in out and "--train-images 4000" in out
    detectors = [line for line in out.splitlines() if line.startswith("# detector ")]
    assert [line.split(":")[0] for line in detectors] == [
        "# detector VGG-style-20",
        "# detector VGG-style-20 seed 1",
        "# detector plain-20",
        "# detector plain-20 seed 1",
        "# detector ResNet-20",
        "# detector ResNet-20 seed 1",
    ]
    assert "--set seed=1" in detectors[1] and "seed=" not in detectors[0]
    assert all("--set iterations=800" in line and "--backbone-weights" in line for line in detectors)
    assert not (tmp_path / "runs").exists()

    voc = tmp_path / "VOCdevkit" / "VOC2007"
    assert (
        main(
            [
                "reproduce",
                "detection",
                "--budget",
                "paper",
                "--plan",
                "--output",
                str(tmp_path),
                "--detection-data",
                str(voc),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"# detection data: {voc} (--detection-data), recipe paper-voc" in out
    assert f"--data-dir {voc}" in out
    trains = [line for line in out.splitlines() if line.startswith("resnets train")]
    assert len(trains) == 4 and all(
        "--recipe paper-imagenet" in line and "dataset=imagenet" in line for line in trains
    )
    assert "--recipe paper-voc" in out and "--set backbone=resnet101" in out and "--set backbone=vgg16" in out
    ctx = make_context(
        get_experiment("detection"),
        ReproduceOptions(budget="paper", output=tmp_path, detection_data=tmp_path / "coco"),
    )
    assert {run.recipe for seeds in detector_runs(ctx) for run in seeds} == {"paper-coco"}
    # where no detection data is read, the flag is refused rather than ignored
    for argv in (["detection", "--budget", "cpu"], ["depth", "--budget", "paper"]):
        flags = ["--plan", "--detection-data", str(voc), "--output", str(tmp_path)]
        assert main(["reproduce", *argv, *flags]) == 2
        assert "reads no detection data: drop --detection-data" in capsys.readouterr().err


def test_the_papers_detectors_build_at_smoke_scale(tmp_path):
    ctx = make_context(get_experiment("detection"), ReproduceOptions(budget="paper", output=tmp_path))
    detectors = paper_detectors_build(ctx, min_size=64)
    assert list(detectors) == ["VGG-16", "ResNet-101"]
    resnet = detectors["ResNet-101"].eval()
    assert resnet.resnets_spec["kwargs"]["head"] == "c4"
    assert resnet.rpn.anchor_generator.sizes == ((128, 256, 512),)  # the paper's anchors at stride 16
    assert len(resnet.roi_heads.box_head.stage) == 3  # conv5_x: the three blocks of layer4
    with torch.no_grad():
        output = resnet([torch.rand(3, 64, 64)])[0]
    assert set(output) == {"boxes", "labels", "scores"}
    assert detectors["VGG-16"].roi_heads.box_predictor.cls_score.in_features == 512


def _backbone(folds_per_seed, ap_per_seed):
    return {
        "AP": sum(ap_per_seed) / len(ap_per_seed),
        "AP50": sum(ap_per_seed) / len(ap_per_seed) + 20,
        "per_seed_AP": ap_per_seed,
        "per_seed_folds": folds_per_seed,
    }


@pytest.mark.parametrize(
    ("resnet_shift", "expected"),
    [(+6.0, "shows"), (-6.0, "contradicts"), (+0.1, "cannot be judged")],
)
def test_verdict_is_two_sided_over_seeds_and_folds(resnet_shift, expected):
    """The ResNet's per-fold APs shifted against two backbones whose folds vary by about 2 points."""
    base = [[30 + (k % 5) - 2 + 0.3 * s for k in range(10)] for s in range(2)]
    shifted = [[v + resnet_shift + (0.4 if k % 2 else -0.4) for k, v in enumerate(row)] for row in base]
    results = {
        "VGG": _backbone(base, [sum(r) / 10 for r in base]),
        "plain": _backbone(base, [sum(r) / 10 for r in base]),
        "ResNet": _backbone(shifted, [sum(r) / 10 for r in shifted]),
    }
    finding, verdict, gaps = DetectionExperiment._finding(["VGG", "plain", "ResNet"], results)
    assert verdict == expected
    assert gaps["VGG"]["fold_gap"] == pytest.approx(resnet_shift, abs=1e-9)
    low, high = gaps["VGG"]["interval"][1:]
    assert low <= resnet_shift <= high
    if expected == "cannot be judged":
        assert gaps["VGG"]["detectable_effect"] > 0.1 and "cannot be judged" in finding
