"""Resuming: bit-identical continuation, fallback past a damaged checkpoint, a checkpoint of
another model, and SIGTERM in mid-epoch (a subprocess) followed by an exact resume."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from resnets import checkpoints as ck
from resnets.cli import main

# An 8-layer 6n+2 net: every code path of resnet20 at a third of the cost.
TINY = [
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
    "--progress",
    "none",
]
# lr /10 after epoch 1 (so the schedule state matters) and EMA (so its state matters)
EXACT = ["--deterministic", "--schedule", "step", "--set", "milestones=1", "--ema", "--ema-decay", "0.9"]


def assert_same_weights(a, b):
    for part in ("state_dict", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two epochs straight, and one epoch + resume + one epoch, on CPU with --deterministic."""
    root = tmp_path_factory.mktemp("resume")
    straight, split = root / "straight", root / "split"
    assert main(["train", *TINY, *EXACT, "--epochs", "2", "--output", str(straight)]) == 0
    assert main(["train", *TINY, *EXACT, "--epochs", "1", "--output", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "2", "--progress", "none"]) == 0
    return straight, split


def test_resume_continues_bit_identically(runs):
    straight, split = runs
    a, b = ck.load_checkpoint(straight / "last.pt"), ck.load_checkpoint(split / "last.pt")
    assert (b["epoch"], b["iteration"]) == (2, 8)
    assert_same_weights(a, b)
    lrs = [ckpt["optimizer"]["param_groups"][0]["lr"] for ckpt in (a, b)]
    assert lrs == [pytest.approx(0.02)] * 2
    lines = (split / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]  # the resumed run appends to the log


def test_resume_on_the_compiled_path_continues_bit_identically(tmp_path):
    """The AVX2 CPUs' path (torch.compile): an epoch, a resume and an epoch equal two epochs straight."""
    compiled = [*TINY, *EXACT, "--compile", "--train-subset", "128"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", *compiled, "--epochs", "2", "--output", str(straight)]) == 0
    assert main(["train", *compiled, "--epochs", "1", "--output", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "2", "--progress", "none"]) == 0
    a, b = ck.load_checkpoint(straight / "last.pt"), ck.load_checkpoint(split / "last.pt")
    assert (b["epoch"], b["iteration"]) == (2, 4) and b["config"]["recipe"]["compile"] is True
    assert_same_weights(a, b)


def test_resume_falls_back_past_a_damaged_checkpoint(runs, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(runs[1], run)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 3])  # truncated, as by a full disk
    assert main(["train", "--resume", str(run), "--epochs", "2", "--progress", "none"]) == 0
    err = capsys.readouterr().err
    assert "falling back" in err and "last-1.pt" in err and "at epoch 1" in err
    assert_same_weights(ck.load_checkpoint(run / "last.pt"), ck.load_checkpoint(runs[0] / "last.pt"))


def test_resume_with_another_model_fails_before_any_work(runs, capsys):
    deeper = ["--set", 'model_kwargs={"depth": 14}']
    before = (runs[1] / "last.pt").stat().st_mtime_ns
    assert main(["train", "--resume", str(runs[1]), *deeper, "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint of" in err and "'depth': 8" in err and "'depth': 14" in err
    assert (runs[1] / "last.pt").stat().st_mtime_ns == before


def test_resume_reads_the_checkpoint_once(runs, tmp_path, monkeypatch):
    """The command reads it (for the run's config) and hands it to the loop, which does not read it again."""
    from resnets import runs as run_folders

    run = tmp_path / "copy"
    shutil.copytree(runs[1], run)
    reads, chosen = [], []
    load, choose = ck.load_checkpoint, run_folders.load_for_resume
    monkeypatch.setattr(ck, "load_checkpoint", lambda p, *a, **k: reads.append(p) or load(p, *a, **k))
    monkeypatch.setattr(run_folders, "load_for_resume", lambda *a, **k: chosen.append(a) or choose(*a, **k))
    assert main(["train", "--resume", str(run), "--epochs", "3", "--progress", "none"]) == 0
    assert len(chosen) == 1 and reads == [run / "last.pt"]
    assert ck.load_checkpoint(run / "last.pt")["epoch"] == 3


def test_sigterm_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    """With every seeded per-sample and per-batch augmentation on, so that the resumed epoch must
    replay RandAugment, random erasing, repeated augmentation, mixup and CutMix as they were."""
    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    common = [
        *TINY,
        "--deterministic",
        "--schedule",
        "constant",
        "--lr",
        "0.05",
        "--log-every",
        "1",
        "--aa",
        "rand-m9-mstd0.5",
        "--reprob",
        "0.5",
        "--aug-repeats",
        "2",
        "--mixup",
        "0.2",
        "--cutmix",
        "1.0",
        "--crop-padding",
        "2",
    ]
    # All three trainings run as subprocesses with one pinned thread count: bf16 sums depend on how
    # many threads split them, and an in-process run would inherit whatever the suite left set.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    train = [sys.executable, "-m", "resnets", "train"]
    proc = subprocess.Popen(
        [*train, *common, "--epochs", "100", "--output", str(interrupted)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 240
        steps = interrupted / "steps.jsonl"
        while not (steps.exists() and len(steps.read_text().splitlines()) >= 6):  # inside epoch 2
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert code == 128 + signal.SIGTERM, err
    assert "SIGTERM: saved a resumable checkpoint" in err and "Traceback" not in err
    saved = ck.load_checkpoint(interrupted / "last.pt")
    stop = saved["iteration"]
    assert stop >= 6 and saved["epoch"] == stop // 4 and saved["batch_in_epoch"] == stop % 4

    # resume to stop + 5 iterations (crossing an epoch boundary); a straight run must match exactly
    total = str(stop + 5)
    for args in (
        ["--resume", str(interrupted), "--iterations", total, "--progress", "none"],
        [*common, "--iterations", total, "--output", str(straight)],
    ):
        done = subprocess.run([*train, *args], stderr=subprocess.PIPE, text=True, env=env)
        assert done.returncode == 0, done.stderr
    a, b = ck.load_checkpoint(straight / "last.pt"), ck.load_checkpoint(interrupted / "last.pt")
    assert b["iteration"] == a["iteration"] == stop + 5
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    # the interrupted epoch's metrics cover the whole epoch, before and after the interrupt
    rows = [list(csv.DictReader(open(run / "metrics.csv"))) for run in (straight, interrupted)]
    columns = ("epoch", "iteration", "train_loss", "train_error", "test_error")
    assert [[r[c] for c in columns] for r in rows[0]] == [[r[c] for c in columns] for r in rows[1]]


def test_a_resumed_detector_or_segmenter_must_have_the_checkpoints_options(tmp_path):
    from resnets.errors import CheckpointError
    from resnets.train.state import check_same_options

    saved = {"backbone": "resnet20", "num_classes": 10, "min_size": 64}
    check_same_options(saved, {"backbone": "resnet20", "anchor_sizes": [16]}, tmp_path, "detector")
    with pytest.raises(CheckpointError, match=r"holds another detector \(num_classes: 10 -> 5\); resume"):
        check_same_options(saved, {"num_classes": 5, "backbone": "resnet20"}, tmp_path, "detector")
