"""The detection training loop: the loss falls, resume is exact (at an epoch boundary and after a SIGTERM in
mid-epoch), and the commands that read a run (eval, predict, export) work on what it wrote."""

import json
import os
import signal

import pytest
from helpers import assert_same_weights

from resnets.checkpoints import load_checkpoint
from resnets.cli import main
from resnets.detection.recipes import DETECTION_RECIPES, DetectionConfig
from resnets.detection.synthetic import SyntheticSpec, make_fashion_detection
from resnets.detection.train import train_detector
from resnets.train.logging import MetricsLog
from resnets.train.recipes import RunOptions, get_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = SyntheticSpec(canvas=48, train_images=8, val_images=4, max_items=2, min_scale=14, max_scale=28, seed=1)
# a CIFAR-style ResNet-8 C4 detector, 4 images per batch: 2 iterations per epoch; every region score kept
TINY = [
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
    "--progress",
    "none",
    "--log-every",
    "1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fashion_detection(tmp_path_factory.mktemp("det") / "fashion", SPEC)


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Two epochs straight, and one epoch then a resume to two."""
    root = tmp_path_factory.mktemp("detect-runs")
    straight, split = root / "straight", root / "split"
    common = ["detect", "train", *TINY, "--data-dir", str(data)]
    assert main([*common, "--epochs", "2", "--output", str(straight)]) == 0
    assert main([*common, "--epochs", "1", "--output", str(split)]) == 0
    assert main(["detect", "train", "--resume", str(split), "--epochs", "2", "--progress", "none"]) == 0
    return straight, split


def test_resume_at_an_epoch_boundary_is_exact(runs):
    straight, split = runs
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert (b["epoch"], b["iteration"]) == (2, 4) and b["config"]["task"] == "detection"
    assert_same_weights(a, b)
    lrs = [ckpt["optimizer"]["param_groups"][0]["lr"] for ckpt in (a, b)]
    assert lrs == [pytest.approx(0.002)] * 2  # lr 0.02 / 10 after epoch 1: the schedule resumed too
    rows = [line.split(",")[:2] for line in (split / "metrics.csv").read_text().splitlines()]
    assert rows == [["epoch", "iteration"], ["1", "2"], ["2", "4"]]
    summary = json.loads((split / "summary.json").read_text())
    assert summary["iterations"] == 4 and summary["final_val_ap"] is not None


def test_sigterm_in_mid_epoch_resumes_exactly(runs, data, tmp_path, monkeypatch):
    straight, _ = runs
    folder = tmp_path / "stopped"
    log_step = MetricsLog.log_step

    def signalled(self, record):  # a SIGTERM right after iteration 3: the first step of epoch 2
        log_step(self, record)
        if record["iteration"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(MetricsLog, "log_step", signalled)
    code = main(["detect", "train", *TINY, "--data-dir", str(data), "--epochs", "2", "--output", str(folder)])
    assert code == 128 + signal.SIGTERM
    stopped = load_checkpoint(folder / "last.pt")
    assert (stopped["epoch"], stopped["iteration"], stopped["batch_in_epoch"]) == (1, 3, 1)
    monkeypatch.setattr(MetricsLog, "log_step", log_step)
    assert main(["detect", "train", "--resume", str(folder), "--progress", "none"]) == 0
    assert_same_weights(load_checkpoint(straight / "last.pt"), load_checkpoint(folder / "last.pt"))
    steps = [json.loads(line)["iteration"] for line in (folder / "steps.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_tiny_detector_learns(data, tmp_path):
    recipe = get_recipe("fashion-cpu", DETECTION_RECIPES)
    recipe = type(recipe)(
        **{
            **recipe.__dict__,
            "backbone": "resnet_cifar",
            "backbone_kwargs": {"depth": 8},
            "backbone_norm": "batchnorm",
            "lr": 0.01,
            "iterations": 40,
            "batch_size": 4,
            "train_subset": 4,
            "eval_split": None,
            "milestones": (),
            "warmup": 0.0,
            "hflip": False,
        }
    )
    run = RunOptions(
        output=str(tmp_path / "learn"), data_dir=str(data), log_every=5, progress="none", plot=False
    )
    result = train_detector(DetectionConfig(recipe, run))
    assert result["iterations"] == 40
    steps = [json.loads(line) for line in (tmp_path / "learn" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 8
    first, last = steps[0], steps[-2:]
    assert sum(s["loss"] for s in last) / 2 < 0.7 * first["loss"]  # measured: 1.65 -> 0.79
    assert sum(s["loss_objectness"] for s in last) / 2 < 0.85 * first["loss_objectness"]  # 0.69 -> 0.49


def test_eval_predict_and_export_read_the_run(runs, data, tmp_path, capsys):
    straight, _ = runs
    capsys.readouterr()
    assert main(["detect", "eval", str(straight), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    summary = json.loads((straight / "summary.json").read_text())
    assert metrics["images"] == 4 and metrics["detections"] > 0
    assert metrics["AP"] == pytest.approx(summary["final_val_ap"], abs=1e-6)

    image = data / "val" / "000001.png"
    drawn = tmp_path / "boxes.png"
    assert main(["detect", "predict", str(straight), str(image), "--score", "0", "--draw", str(drawn)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{image}: 10 objects"  # box_detections_per_img=10, every score kept
    assert out[1].split()[-5] == "box" and out[-1] == f"  drawn: {drawn}"
    from PIL import Image

    with Image.open(drawn) as picture:
        assert picture.size == (240, 240)  # 48 px enlarged 5 times

    onnx = tmp_path / "detector.onnx"
    assert main(["detect", "export", str(straight), "--output", str(onnx)]) == 0
    line = capsys.readouterr().out
    assert onnx.is_file() and "onnxruntime vs PyTorch on 2 images" in line
    assert main(["detect", "export", str(straight), "--output", str(straight / "last.pt")]) == 2


@pytest.mark.slow
def test_two_processes_under_torchrun_stay_in_sync_and_only_rank_0_writes(data, tmp_path):
    """`torchrun -m resnets detect train`, as for classification: the global batch of 4 shards over 2
    gloo processes, the ranks end with equal weights (DDP averaged every step), one run folder."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "resnets",
            "detect",
            "train",
            *TINY,
            "--data-dir",
            str(data),
            "--epochs",
            "1",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert summary["iterations"] == 2  # 8 images, 2 per process per step
    assert not any(out.glob("*rank*")), "only rank 0 writes"
