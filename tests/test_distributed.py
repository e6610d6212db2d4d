"""DDP under torchrun: 2 CPU processes (gloo) against 1 process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from resnets.cli import main
from resnets.train import distributed
from resnets.weights import load_weights

# Frozen BN statistics and no random augmentation: then the 2 x 32 shards of each step are exactly
# the 64 images one process sees, and DDP's averaged gradient equals the single-process gradient up
# to float rounding. Any error in sharding, gradient averaging or seeding shows up as a difference.
# float32 (--no-amp): bfloat16's rounding alone would move the weights by ~1e-5.
ARGS = [
    "train",
    "--model",
    "resnet_cifar",
    "--set",
    'model_kwargs={"depth": 8}',
    "--train-subset",
    "256",
    "--test-subset",
    "128",
    "--batch-size",
    "64",
    "--iterations",
    "3",
    "--schedule",
    "constant",
    "--lr",
    "0.05",
    "--freeze-bn",
    "--no-hflip",
    "--crop-padding",
    "0",
    "--no-amp",
    "--progress",
    "none",
]


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [[], ["--grad-accum-steps", "2"]], ids=["plain", "accumulated"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, accumulate):
    """With accumulation each process runs 2 micro-batches of 16 per update (no_sync on the first):
    still the 64 images of the single process's step."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*ARGS, "--output", str(one)]) == 0
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
            *ARGS,
            *accumulate,
            "--output",
            str(two),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert summary["iterations"] == 3
    a, b = load_weights(one / "model.safetensors"), load_weights(two / "model.safetensors")
    moved = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved < 1e-5, f"2 processes differ from 1 by {moved}"
    # metrics are reduced as counts over both shards: same losses and test error as one process
    rows = [(one / "metrics.csv").read_text().splitlines(), (two / "metrics.csv").read_text().splitlines()]
    header = rows[0][0].split(",")
    last = [dict(zip(header, r[-1].split(","), strict=True)) for r in rows]
    assert float(last[0]["train_loss"]) == pytest.approx(float(last[1]["train_loss"]), abs=1e-4)
    assert abs(float(last[0]["test_error"]) - float(last[1]["test_error"])) <= 100 / 128 + 1e-9
    assert not any(two.glob("*rank*")), "only rank 0 writes"


def test_without_torchrun_everything_is_a_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info, device = distributed.setup("cpu")
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)
    assert device == torch.device("cpu")
    assert distributed.sum_counts([1.0, 2.0], device) == [1.0, 2.0]
    assert torch.equal(distributed.sum_tensor(torch.tensor([3.0, 4.0])), torch.tensor([3.0, 4.0]))
    assert distributed.gather_objects("x") == ["x"]


def test_bad_torchrun_environment_is_a_clear_error(monkeypatch):
    from resnets.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        distributed.env_info()
