"""Fault injection (docs/reliability.md): kill -9 at 30 seeded points of a tiny training, each resumed,
ending bit for bit where a straight run ends; a full disk at random bytes of a checkpoint save and two
Ctrl-C during one, after which the previous checkpoint loads and ``eval`` works on it; two writers on one
run folder. The failures come from ``RESNETS_FAULT`` (resnets/io.py) or real signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability_runs import cli, one_line_error, snapshot, tiny_mnist, train_argv

from resnets import checkpoints, io, runs
from resnets.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_mnist(tmp_path_factory.mktemp("tiny_mnist"))


@pytest.fixture(scope="module")
def one_epoch(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "one_epoch"
    assert main(train_argv(data, out)) == 0
    return out


def test_kill_9_at_30_random_points_resumes_bit_exactly(tmp_path):
    """benchmarks/fault_injection.py: 30 seeded points over steps, evaluations and every phase of a
    checkpoint save, each a SIGKILL, each followed by a resume; then compared with a straight run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(io.FAULT_ENV, None)
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "fault_injection.py"),
            "--points",
            "30",
            "--seed",
            "0",
            "--workdir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kills"] == 30 and result["findings"] == [] and result["tracebacks"] == 0
    assert result["bit_exact"] is True
    assert all(count >= 4 for count in result["per_phase"].values()), result["per_phase"]
    assert all(r["checkpoints_after"] >= r["checkpoints_before"] for r in result["results"])
    assert sum(r["resumed"] for r in result["results"]) >= 29  # every kill after the first save resumed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0, 1, exclude_max=True), keep=st.integers(1, 3))
def test_enospc_at_any_byte_keeps_the_previous_checkpoints(one_epoch, tmp_path_factory, fraction, keep):
    folder = runs.RunFolder(tmp_path_factory.mktemp("enospc"))
    ckpt = checkpoints.load_checkpoint(one_epoch / "last.pt")
    for i in range(keep):
        folder.save_checkpoint({**ckpt, "iteration": i}, keep=keep)
    before = snapshot(folder.path)
    byte = int(fraction * 0.9 * (one_epoch / "last.pt").stat().st_size)  # the new one may be a bit shorter
    os.environ[io.FAULT_ENV] = f"last.pt:write:1:enospc@{byte}"
    try:
        with pytest.raises(OSError, match="No space left on device"):
            folder.save_checkpoint({**ckpt, "iteration": 99}, keep=keep)
    finally:
        del os.environ[io.FAULT_ENV]
    assert snapshot(folder.path) == before  # every checkpoint as it was, no temporary file
    iterations = [checkpoints.load_checkpoint(p)["iteration"] for p in folder.checkpoints()]
    assert iterations == list(range(keep))[::-1]


def test_a_full_disk_during_training_loses_nothing_and_eval_works(one_epoch, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--resume", str(one_epoch), "--output", str(run), "--epochs", "2"]) == 0
    before = snapshot(run)
    size = len(before["last.pt"])
    for byte in (0, 1, size // 3, size - 1):
        monkeypatch.setenv(io.FAULT_ENV, f"last.pt:write:1:enospc@{byte}")
        status, _, err = cli(["train", "--resume", str(run), "--epochs", "3"], capsys)
        line = one_line_error(err)
        assert status == 2 and "No space left on device" in line and f"--resume {run}" in line, byte
        assert {k: v for k, v in snapshot(run).items() if k.endswith(".pt")} == {
            k: v for k, v in before.items() if k.endswith(".pt")
        }
        assert not [p for p in run.iterdir() if p.name.startswith(".")]
    monkeypatch.delenv(io.FAULT_ENV)
    status, out, _ = cli(["eval", "--checkpoint", str(run / "last.pt"), "--json"], capsys)
    assert status == 0 and json.loads(out.splitlines()[-1])["images"] == 32
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0  # and the run goes on
    assert checkpoints.load_checkpoint(run / "last.pt")["epoch"] == 3


@pytest.mark.parametrize("phase", ["write@2000", "fsync", "rotate", "replace"])
def test_two_ctrl_c_during_a_save_keep_the_previous_checkpoint(
    one_epoch, tmp_path, capsys, monkeypatch, phase
):
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run, copy_function=shutil.copy)
    before = snapshot(run)["last.pt"]
    name, _, byte = phase.partition("@")
    monkeypatch.setenv(io.FAULT_ENV, f"last.pt:{name}:1:sigint2{'@' + byte if byte else ''}")
    status, _, err = cli(["train", "--resume", str(run), "--epochs", "2"], capsys)
    assert status == 130 and "interrupted" in err and "Traceback" not in err
    monkeypatch.delenv(io.FAULT_ENV)
    assert (run / "last.pt").read_bytes() == before  # the name holds the previous checkpoint, complete
    assert all(zipfile.is_zipfile(p) for p in runs.RunFolder(run).checkpoints())
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
    status, out, _ = cli(["eval", "--checkpoint", str(run / "last.pt"), "--json"], capsys)
    assert status == 0 and json.loads(out.splitlines()[-1])["images"] == 32


def test_two_writers_on_one_folder(data, tmp_path, capsys):
    """Two ``resnets train`` into one --output at once: the second is refused, the first's run stays whole."""
    out = tmp_path / "shared"
    first = subprocess.Popen(
        [sys.executable, "-m", "resnets", *train_argv(data, out, epochs=200)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / runs.LOCK).exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first writer did not start"
            time.sleep(0.02)
        status, _, err = cli(train_argv(data, out, "--set", 'model_kwargs={"depth": 14}'), capsys)
        line = one_line_error(err)
        assert status == 2 and f"process {first.pid} on " in line and "being written" in line
        while not (out / "last.pt").exists():  # let it save, then stop it as a user would
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 128 + signal.SIGTERM, first.stderr.read()
    finally:
        first.kill()
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["model_kwargs"] == {"depth": 8}
    for path in runs.RunFolder(out).checkpoints():
        assert checkpoints.load_checkpoint(path)["model"]["kwargs"]["depth"] == 8
    epochs = [row["epoch"] for row in runs.read_metrics(out / "metrics.csv")]
    assert epochs == list(range(1, len(epochs) + 1))
    assert not (out / runs.LOCK).exists()
