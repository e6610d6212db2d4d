"""The audit of issue 28 (docs/reliability.md, "The audit's 30 cases"): each case that lost data, took
gigabytes, hung, printed a traceback or an unclear message, reproduced on tiny inputs. Each is now refused
with one line (exit status 2, nothing written) or handled correctly. Memory cases run in a child process
and measure its peak RSS; none allocates more than a few MB of real data (sparse files, crafted headers)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_reliability_runs import REPO, cli, one_line_error, snapshot, tiny_mnist, train_argv

from resnets import io, runs

pytestmark = pytest.mark.usefixtures("one_thread")
GB = 1 << 30


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def images(root: Path, classes=("cat", "dog"), n=4, size=32) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def folder_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "imagefolder", "--data-dir", str(data), "--image-size", "16", "--workers",
            "0", "--model", "resnet_cifar", "--set", 'model_kwargs={"depth": 8}', "--epochs", "1", "-b", "2",
            "--set", "eval_batch_size=4", "--progress", "none", "--set", "plot=False", "--no-channels-last",
            "--output", str(out), *extra]


def child(code: str, *args: str, timeout: float = 120) -> tuple[int, str, int]:
    """``python -c CODE ARGS`` in a child process: (exit status, stderr, its peak RSS in bytes)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    wrapper = ("import resource, subprocess, sys\n"
               "p = subprocess.run([sys.executable, '-c', sys.argv[1], *sys.argv[2:]], capture_output=True, "
               "text=True)\n"
               "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))\n"
               "sys.stderr.write(p.stderr)\nsys.exit(p.returncode)\n")
    done = subprocess.run([sys.executable, "-c", wrapper, code, *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)
    return done.returncode, done.stderr, int(done.stdout or 0)


CLI = "import sys; from resnets.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_mnist(tmp_path_factory.mktemp("tiny_mnist"))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """A finished one-epoch run (last.pt, best.pt, model.safetensors, metrics, summary)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    from resnets.cli import main
    assert main(train_argv(data, out)) == 0
    return out


@pytest.fixture(scope="module")
def imgs(tmp_path_factory) -> Path:
    return images(tmp_path_factory.mktemp("imgs") / "IMGS")


@pytest.fixture(scope="module")
def folder_run(imgs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "folder_run"
    from resnets.cli import main
    assert main(folder_argv(imgs, out)) == 0
    return out


# --- 1-4: data loss ------------------------------------------------------------------------------

def test_01_a_run_folder_without_last_pt_still_belongs_to_its_run(run, data, tmp_path, capsys):
    copy = tmp_path / "R"
    copy.mkdir()
    for name, content in snapshot(run).items():
        if not name.startswith("last"):
            (copy / name).write_bytes(content)
    before = tree(copy)
    status, _, err = cli(train_argv(data, copy, "--lr", "0.05"), capsys)
    line = one_line_error(err)
    assert status == 2 and "already holds a run" in line and "best.pt" in line, line
    assert tree(copy) == before


def test_02_make_data_refuses_a_coco_folder_the_user_filled(tmp_path, capsys):
    root = tmp_path / "C"
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}.json").write_text('{"images": [], "annotations": []}')
    images(root / "train", classes=("",), n=2)
    before = tree(root)
    argv = ["detect", "make-data", str(root), "--train-images", "4", "--val-images", "2"]
    status, _, err = cli(argv, capsys)
    line = one_line_error(err)
    assert status == 2 and "not empty" in line and "nothing was written" in line, line
    assert tree(root) == before


def test_03_eval_never_writes_into_its_data(folder_run, imgs, capsys):
    before = tree(imgs)
    target = imgs / "cat" / "0.png"
    for extra in (["--data-dir", str(imgs)], []):  # given, or the run's own data folder
        status, _, err = cli(["eval", "--checkpoint", str(folder_run / "best.pt"), *extra,
                              "--confusion-matrix", str(target)], capsys)
        line = one_line_error(err)
        assert status == 2 and "inside" in line and str(imgs) in line, line
    assert tree(imgs) == before


@pytest.fixture()
def live(tmp_path) -> Path:
    """A run folder that another writer holds: its .lock flocked through a descriptor of its own."""
    folder = tmp_path / "LIVE"
    folder.mkdir()
    (folder / "config.json").write_text("{}\n")
    (folder / "last.pt").write_bytes(b"the live run's checkpoint")
    fd = os.open(folder / runs.LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242 otherhost 2026-12-06T10:00:00 resnets train")
    yield folder
    os.close(fd)


def test_04_no_writer_enters_a_run_folder_another_process_holds(run, live, capsys):
    before = tree(live)
    for output in ("last.pt", "model.pt2"):
        status, _, err = cli(["export", "--checkpoint", str(run / "best.pt"), "--format", "pt2",
                              "--output", str(live / output)], capsys)
        line = one_line_error(err)
        assert status == 2 and "process 4242 on otherhost" in line, line
    with pytest.raises(OSError, match="being written by process 4242"):  # every io writer asks too
        io.write_text(live / "notes.txt", "x")
    assert tree(live) == before
