"""Run-folder integrity (docs/reliability.md): one writer per run folder, ``--resume`` only into the run
it resumes, checkpoints written new-first, damaged checkpoints set aside, no command writing over a file
it reads, file modes from the umask, and output problems as one line before any data is loaded.

The runs are tiny (a depth-8 net on 64 synthetic 28x28 images, a few epochs); the helpers here are
shared by test_reliability_inputs.py and test_reliability_faults.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
import torch

from benchmarks.fault_injection import tiny_data as tiny_mnist  # one tiny MNIST-format set for both
from resnets import checkpoints, io, runs
from resnets.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def train_argv(data: Path, output: Path, *extra: str, epochs: int = 1) -> list[str]:
    return [
        "train",
        "--model",
        "resnet_cifar",
        "--set",
        'model_kwargs={"depth": 8}',
        "--dataset",
        "mnist",
        "--data-dir",
        str(data),
        "--no-verify-checksums",
        "--batch-size",
        "16",
        "--epochs",
        str(epochs),
        "--deterministic",
        "--no-amp",
        "--no-channels-last",
        "--progress",
        "none",
        "--set",
        "plot=False",
        "--output",
        str(output),
        *extra,
    ]


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``resnets ARGV`` in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "Traceback" not in err, err
    assert lines[-1].startswith("resnets ") and ": error: " in lines[-1], err
    return lines[-1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_mnist(tmp_path_factory.mktemp("tiny_mnist"))


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """A finished two-epoch run: last.pt (epoch 2), last-1.pt (epoch 1), best.pt a link to one of them."""
    out = tmp_path_factory.mktemp("runs") / "finished"
    assert main(train_argv(data, out, epochs=2)) == 0
    return out


@pytest.fixture(scope="module")
def weights20(tmp_path_factory) -> Path:
    """A resnet20 weights file (1 input channel, 10 classes) for import-weights."""
    from resnets import create_model
    from resnets.weights import save_weights

    return save_weights(
        create_model("resnet20", num_classes=10, in_chans=1),
        tmp_path_factory.mktemp("weights") / "resnet20.safetensors",
    )


# --- one writer, and --resume only into its own run ---------------------------------------------


def test_resume_writes_only_into_the_run_it_resumes(data, tmp_path, capsys):
    a, b, fresh = tmp_path / "a", tmp_path / "b", tmp_path / "fresh"
    assert main(train_argv(data, a)) == 0
    assert main(train_argv(data, b, "--seed", "1")) == 0
    before_a, before_b = snapshot(a), snapshot(b)
    status, _, err = cli(["train", "--resume", str(a), "--output", str(b), "--epochs", "3"], capsys)
    assert status == 2 and "holds another run" in one_line_error(err) and str(b) in err
    assert snapshot(a) == before_a and snapshot(b) == before_b  # neither run touched
    # an empty folder is no other run: the resumed run continues there, and only there
    assert main(["train", "--resume", str(a), "--output", str(fresh), "--epochs", "2"]) == 0
    assert checkpoints.load_checkpoint(fresh / "last.pt")["epoch"] == 2 and snapshot(a) == before_a


def test_a_second_writer_is_refused_naming_the_holder(data, tmp_path, capsys):
    out = tmp_path / "held"
    with runs.RunFolder(out).lock():
        holder = (out / runs.LOCK).read_text()
        status, _, err = cli(train_argv(data, out), capsys)
        assert not (out / runs.LAST).exists()
    assert holder.startswith(f"{os.getpid()} {socket.gethostname()} ")
    line = one_line_error(err)
    assert status == 2 and f"process {os.getpid()} on {socket.gethostname()}" in line and str(out) in line
    assert not out.exists()  # the lock's folder, empty, went with the lock
    assert main(train_argv(data, out)) == 0 and not (out / runs.LOCK).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(data, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "stale"
    out.mkdir()
    (out / runs.LOCK).write_text(f"{dead.pid} {socket.gethostname()} 2026-01-01T00:00:00 resnets train")
    (out / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # left by the killed writer
    assert main(train_argv(data, out)) == 0
    assert checkpoints.load_checkpoint(out / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


# --- checkpoints new first; a damaged one never rotated over a good one -------------------------


def test_a_full_disk_at_any_byte_of_a_save_leaves_every_checkpoint(tmp_path, monkeypatch):
    folder = runs.RunFolder(tmp_path)
    for i in range(2):
        folder.save_checkpoint({"i": i, "w": torch.randn(2000)}, keep=2)
    before = snapshot(tmp_path)
    size = len(before["last.pt"])
    for byte in (0, 1, 700, size // 2, size - 1):
        monkeypatch.setenv(io.FAULT_ENV, f"last.pt:write:1:enospc@{byte}")
        with pytest.raises(OSError, match="No space left on device"):
            folder.save_checkpoint({"i": 9, "w": torch.randn(2000)}, keep=2)
        assert snapshot(tmp_path) == before, byte  # nothing moved, no temporary file left
    monkeypatch.delenv(io.FAULT_ENV)
    folder.save_checkpoint({"i": 2, "w": torch.randn(2000)}, keep=2)
    assert [torch.load(tmp_path / n, weights_only=True)["i"] for n in ("last.pt", "last-1.pt")] == [2, 1]


def test_a_truncated_checkpoint_is_dropped_not_rotated(tmp_path):
    folder = runs.RunFolder(tmp_path)
    for i in range(2):
        folder.save_checkpoint({"i": i}, keep=3)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])  # last.pt cut; last-1.pt good
    folder.save_checkpoint({"i": 2}, keep=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last-1.pt", "last.pt"]  # the cut one is gone, not kept as last-1
    assert [torch.load(tmp_path / n, weights_only=True)["i"] for n in ("last.pt", "last-1.pt")] == [2, 0]


def test_resuming_past_a_damaged_checkpoint_sets_it_aside(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run, copy_function=shutil.copy)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 3])  # as a full disk would have left it
    status, _, err = cli(["train", "--resume", str(run), "--progress", "line"], capsys)
    assert status == 0 and "falling back" in err and "last.pt.damaged" in err
    assert checkpoints.load_checkpoint(run / "last.pt")["epoch"] == 2  # epoch 2 again, from last-1's epoch 1
    assert checkpoints.load_checkpoint(run / "last-1.pt")["epoch"] == 1  # the good fallback, kept
    assert (run / "last.pt.damaged").read_bytes() == data[: len(data) // 3]


# --- no command writes over what it reads -------------------------------------------------------


def test_no_command_writes_over_a_file_it_reads(finished, tmp_path, capsys):
    best = finished / "best.pt"
    same = next(p for p in (finished / "last.pt", finished / "last-1.pt") if os.path.samefile(p, best))
    before = snapshot(finished)
    cases = [
        ["export", "--checkpoint", str(best), "--format", "pt2", "--output", str(same)],
        ["eval", "--checkpoint", str(best), "--confusion-matrix", str(best)],
        ["eval", "--checkpoint", str(same), "--confusion-matrix", f"{finished}/../{finished.name}/best.pt"],
        [
            "import-weights",
            str(finished / "model.safetensors"),
            "--model",
            "resnet_cifar",
            "--output",
            str(finished / "model.safetensors"),
        ],
    ]
    for argv in cases:
        status, _, err = cli(argv, capsys)
        assert status == 2 and "which this command reads" in one_line_error(err), argv
    assert snapshot(finished) == before
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(finished / "model.safetensors", fresh / "model.safetensors")
    argv = train_argv(tmp_path, fresh, "--init-weights", str(fresh / "model.safetensors"))
    status, _, err = cli(argv, capsys)
    assert status == 2 and "would write over" in one_line_error(err)


# --- file modes, permissions --------------------------------------------------------------------


def test_run_files_honour_the_umask(data, tmp_path):
    previous = os.umask(0o002)
    try:
        assert main(train_argv(data, tmp_path / "run", "--set", "plot=True")) == 0
        io.save_torch({"a": 1}, tmp_path / "loose.pt")
    finally:
        os.umask(previous)
    files = [*(tmp_path / "run").iterdir(), tmp_path / "loose.pt"]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert {"last.pt", "best.pt", "model.safetensors", "curves.png", "summary.json"} <= set(modes)
    assert set(modes.values()) == {0o664}, modes


def _as_nobody(calls: list[list[str]], cwd: Path) -> tuple[list[int], str]:
    """Run ``resnets ARGV`` for each of ``calls`` as user nobody (a forked child that drops root; the
    modules are imported already, the interpreter under /root need not be readable):
    (exit statuses, stderr)."""
    log = cwd / "nobody.log"
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.fchown(fd, 65534, 65534)
            sys.stdout = sys.stderr = open(fd, "w", buffering=1)  # noqa: SIM115 (pytest captures sys.stdout)
            os.chdir(cwd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            codes = [main(argv) for argv in calls]
            print("codes " + json.dumps(codes))
            status = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    for _ in range(1200):  # at most 2 minutes
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the process of the other user did not finish")
    text = log.read_text()
    codes = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("codes ")]
    assert codes, text
    return codes[0], text


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a process as another user (needs root)")
def test_another_user_reads_the_run_and_gets_clear_permission_errors(tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="resnets-shared-"))
    try:
        shared.chmod(0o755)
        tiny_mnist(shared / "data")
        assert main(train_argv(shared / "data", shared / "run")) == 0  # umask 022: readable by all
        shutil.copy(shared / "run" / "last.pt", shared / "private.pt")
        (shared / "private.pt").chmod(0o600)
        (shared / "closed").mkdir(mode=0o755)  # root's: not writable by the other user
        codes, err = _as_nobody(
            [
                ["eval", "--checkpoint", "run/last.pt", "--json"],
                ["eval", "--checkpoint", "private.pt"],
                train_argv(Path("nowhere"), Path("closed/run")),
            ],
            shared,
        )
        assert codes == [0, 2, 2] and "Traceback" not in err, err
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert "private.pt" in errors[0] and "not readable by this user" in errors[0]
        assert "truncated" not in errors[0]
        # the output is checked before the data: the data folder does not exist, yet the error is the output's
        assert "closed/run" in errors[1] and "Permission denied" in errors[1] and "nowhere" not in errors[1]
    finally:
        shutil.rmtree(shared)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the permissions")
def test_permission_errors_are_clear_for_this_user(finished, data, tmp_path, capsys):
    private = tmp_path / "private.pt"
    shutil.copy(finished / "last.pt", private)
    private.chmod(0)
    status, _, err = cli(["eval", "--checkpoint", str(private)], capsys)
    assert status == 2 and "not readable by this user" in one_line_error(err)
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o555)
    status, _, err = cli(train_argv(tmp_path / "nowhere", closed / "run"), capsys)
    assert status == 2 and "closed" in one_line_error(err) and "nowhere" not in err


# --- output paths: one line, before any data ----------------------------------------------------


def test_output_paths_that_cannot_be_written_are_one_line_errors(finished, tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    ckpt = str(finished / "last.pt")
    cases = {
        "train into a file": train_argv(tmp_path / "no-data", file),
        "train under a file": train_argv(tmp_path / "no-data", file / "run"),
        "export under a file": [
            "export",
            "--checkpoint",
            ckpt,
            "--format",
            "pt2",
            "--output",
            str(file / "m.pt2"),
        ],
        "import-weights under a file": [
            "import-weights",
            str(finished / "model.safetensors"),
            "--model",
            "resnet_cifar",
            "--output",
            str(file / "w.safetensors"),
        ],
        "eval --confusion-matrix under a file": [
            "eval",
            "--checkpoint",
            ckpt,
            "--confusion-matrix",
            str(file / "cm.png"),
        ],
        "reproduce into a file": ["reproduce", "identity-toy", "--budget", "smoke", "--output", str(file)],
    }
    for what, argv in cases.items():
        status, _, err = cli(argv, capsys)
        line = one_line_error(err)
        assert status == 2 and "a-file" in line and "is a file" in line, what
        assert "no-data" not in line, what  # the output is checked before the data is looked for
    assert file.read_text() == "not a folder"


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(
    finished, weights20, tmp_path, capsys, monkeypatch
):
    ckpt = str(finished / "last.pt")
    cases = {
        "import-weights": [
            "import-weights",
            str(weights20),
            "--model",
            "resnet20",
            "--output",
            str(tmp_path / "w.safetensors"),
        ],
        "eval --confusion-matrix": [
            "eval",
            "--checkpoint",
            ckpt,
            "--confusion-matrix",
            str(tmp_path / "cm.png"),
        ],
        "export": ["export", "--checkpoint", ckpt, "--format", "pt2", "--output", str(tmp_path / "m.pt2")],
        "reproduce": ["reproduce", "identity-toy", "--budget", "smoke", "--output", str(tmp_path / "repro")],
    }
    for i, (what, argv) in enumerate(cases.items()):
        monkeypatch.setenv(io.FAULT_ENV, f"*:write:1:enospc@{i + 1}")  # the first file written fills the disk
        status, _, err = cli(argv, capsys)
        line = one_line_error(err)
        assert status == 2 and "No space left on device" in line and "free some space" in line, what
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers
    assert all(zipfile.is_zipfile(p) for p in finished.glob("*.pt"))
