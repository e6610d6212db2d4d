"""`torchrun -m resnets segment train`: two CPU processes (gloo) train one segmenter.

The segmenter trains its BN layers (SyncBatchNorm needs a GPU), so each process normalises its own shard
and DDP broadcasts rank 0's statistics before every forward; after the last step each rank would hold
its own shard's. The loop gives every rank rank 0's buffers before evaluating, so the ranks end bit-equal
and the validation scores, summed over both shards, are the ones one process computes from the saved
weights. (A one-process run with the same global batch cannot match the weights here, as the classifier's
test does with frozen BN: BN statistics, dropout in torchvision's FCNHead and the flips are per process.)
"""

import json
import os
import subprocess
import sys

import pytest
from test_segmentation_train import SPEC, TINY

from resnets.cli import main
from resnets.segmentation.synthetic import make_fashion_segmentation

pytestmark = pytest.mark.usefixtures("one_thread")
RUN_FILES = [
    "best.pt",
    "config.json",
    "curves.png",
    "last.pt",
    "metrics.csv",
    "model.safetensors",
    "steps.jsonl",
    "summary.json",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fashion_segmentation(tmp_path_factory.mktemp("seg") / "fashion", SPEC)


@pytest.mark.slow
def test_two_processes_under_torchrun_stay_in_sync_and_only_rank_0_writes(data, tmp_path, capsys):
    """The global batch of 4 shards over 2 processes (2 images each): 8 images are 2 iterations."""
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
            "segment",
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
    assert "different weights" not in proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert summary["iterations"] == 2 and summary["task"] == "segmentation"

    # one run folder, written once: no file of rank 1, one record per step and per epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    steps = [json.loads(line)["iteration"] for line in (out / "steps.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert len((out / "metrics.csv").read_text().splitlines()) == 2

    # the scores of the two shards, summed, are one process's on all 4 validation images
    capsys.readouterr()
    assert main(["segment", "eval", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == 4 and metrics["pixels"] == 4 * 48 * 48
    # (the summary keeps 6 digits; one pixel of the 9216 moves pixel accuracy by 0.011 points)
    assert metrics["miou"] == pytest.approx(summary["final_val_miou"], abs=1e-4)
    assert metrics["pixel_accuracy"] == pytest.approx(summary["final_val_pixel_acc"], abs=1e-4)
    assert metrics["iou"] == pytest.approx(summary["final_val_iou"], abs=1e-3)
