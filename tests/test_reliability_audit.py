"""The audit of issue 28 (docs/reliability.md, "The audit's 30 cases"): each case that lost data, took
gigabytes, hung, printed a traceback or an unclear message, reproduced on tiny inputs. Each is now refused
with one line (exit status 2, nothing written) or handled correctly. Memory cases run in a child process
and measure its peak RSS; none allocates more than a few MB of real data (sparse files, crafted headers)."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import re
import struct
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
    return [
        "train",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(data),
        "--image-size",
        "16",
        "--workers",
        "0",
        "--model",
        "resnet_cifar",
        "--set",
        'model_kwargs={"depth": 8}',
        "--epochs",
        "1",
        "-b",
        "2",
        "--set",
        "eval_batch_size=4",
        "--progress",
        "none",
        "--set",
        "plot=False",
        "--no-channels-last",
        "--output",
        str(out),
        *extra,
    ]


def child(code: str, *args: str, limit_as: int | None = None, timeout: float = 120) -> dict:
    """``python -c CODE ARGS`` in a child process (address space capped at ``limit_as`` bytes, so that
    a regression fails instead of taking the machine's memory): its exit status ``rc``, ``stdout``,
    ``stderr`` and ``peak`` RSS in bytes, measured by a small parent without torch."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "limit, timeout = int(sys.argv[1]), float(sys.argv[2])\n"
        "def cap():\n"
        "    if limit:\n"
        "        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
        "try:\n"
        "    p = subprocess.run([sys.executable, '-c', *sys.argv[3:]], capture_output=True, "
        "text=True, preexec_fn=cap, timeout=timeout)\n"
        "    rc, out, err = p.returncode, p.stdout, p.stderr\n"
        "except subprocess.TimeoutExpired as exc:\n"
        "    out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ''\n"
        "    rc, err = 'timeout', 'killed after the timeout (a hang)'\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps({'rc': rc, 'stdout': out, 'stderr': err, 'peak': peak}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, str(limit_as or 0), str(timeout), code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout + 30,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


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
        status, _, err = cli(
            ["eval", "--checkpoint", str(folder_run / "best.pt"), *extra, "--confusion-matrix", str(target)],
            capsys,
        )
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
        status, _, err = cli(
            [
                "export",
                "--checkpoint",
                str(run / "best.pt"),
                "--format",
                "pt2",
                "--output",
                str(live / output),
            ],
            capsys,
        )
        line = one_line_error(err)
        assert status == 2 and "process 4242 on otherhost" in line, line
    with pytest.raises(OSError, match="being written by process 4242"):  # every io writer asks too
        io.write_text(live / "notes.txt", "x")
    assert tree(live) == before


# --- 5-11: small inputs that took gigabytes or hung: refused from their headers, in one child ----


def gif_bomb(path: Path, side: int = 2000, frames: int = 300) -> Path:
    """A GIF of a few KB: a side x side canvas and ``frames`` frames of one pixel each. A decoder that
    composes every frame (torchvision's) holds frames x side x side x 3 bytes: 3.6 GB here."""
    lsd = struct.pack("<HHBBB", side, side, 0xF0, 0, 0) + bytes(6)  # 2-colour global table
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"  # one pixel, colour 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GIF89a" + lsd + frame * frames + b"\x3b")
    return path


def gz_bomb(path: Path) -> Path:
    """A train-images-idx3-ubyte.gz of about 1.4 MB that unpacks to 1.3 GB of 28x28 images, its header
    consistent with its length (gzip members concatenated: one compressed block repeated)."""
    block = 784 * 65536  # 51 MB of zeros per member
    members = 26
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, members * 65536, 28, 28)
    zeros = gzip.compress(bytes(block), compresslevel=9, mtime=0)
    with open(path, "wb") as f:
        f.write(gzip.compress(header, mtime=0))
        for _ in range(members):
            f.write(zeros)
    return path


CHILD = r"""
import contextlib, io, json, signal, sys
from resnets.cli import main
from resnets.data.images import decode_image_file, load_image
from resnets.errors import ResnetsError
cases, out = json.loads(sys.argv[1]), {}
def hang(signum, frame):
    raise TimeoutError("still reading after 60 s: it hangs")
signal.signal(signal.SIGALRM, hang)
for name, kind, args in cases:
    err = io.StringIO()
    signal.alarm(60 if name.startswith("fifo") else 0)  # a pipe is refused at once, or it hangs
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            if kind == "cli":
                out[name] = [main(args), err.getvalue()]
            else:
                image = (decode_image_file if kind == "decode" else load_image)(args)
                out[name] = [0, str(tuple(image.shape) if hasattr(image, "shape") else image.size)]
    except ResnetsError as exc:
        out[name] = [2, str(exc)]
    except BaseException as exc:  # today's main: record what went wrong, go on with the next case
        out[name] = [-1, f"{type(exc).__name__}: {exc}"[:300]]
    signal.alarm(0)
    print(json.dumps({name: out[name]}), flush=True)  # case by case: a hang leaves the others' results
"""


@pytest.fixture(scope="module")
def refused(run, data, folder_run, tmp_path_factory) -> tuple[dict, int, dict]:
    """Every memory and hang case run by one child process (one interpreter start): (results by case,
    the child's peak RSS in bytes, the paths)."""
    tmp = tmp_path_factory.mktemp("refused")
    bomb_dir = tmp / "bomb_data"
    bomb_dir.mkdir()
    for f in data.iterdir():
        if not f.name.startswith("train-images"):
            (bomb_dir / f.name).write_bytes(f.read_bytes())
    gz_bomb(bomb_dir / "train-images-idx3-ubyte.gz")
    import torch

    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["model"]["kwargs"]["num_classes"] = 20_000_000
    torch.save(ckpt, tmp / "huge_head.pt")
    sparse = tmp / "big.png"
    with open(sparse, "wb") as f:
        f.truncate(3 * GB)  # 3 GB of zeros, none of them on disk
    padded = tmp / "padded.png"
    Image.new("RGB", (32, 32)).save(padded)
    os.truncate(padded, 3 * GB)  # a valid 32 x 32 header, then 3 GB
    fifo = tmp / "f.jpg"
    os.mkfifo(fifo)
    gif = gif_bomb(tmp / "bomb.gif")
    best = str(folder_run / "best.pt")
    paths = {"bomb_out": tmp / "bomb_run", "tmp": tmp}
    cases = [
        ("gif_decode", "decode", str(gif)),
        ("gif_load", "load", str(gif)),
        ("gz_unverified", "cli", train_argv(bomb_dir, paths["bomb_out"])),
        (
            "gz_verified",
            "cli",
            [a for a in train_argv(bomb_dir, paths["bomb_out"]) if a != "--no-verify-checksums"],
        ),
        ("huge_head", "cli", ["eval", "--checkpoint", str(tmp / "huge_head.pt")]),
        ("sparse_predict", "cli", ["predict", "--checkpoint", best, str(sparse)]),
        ("sparse_decode", "decode", str(sparse)),
        ("padded_decode", "decode", str(padded)),
        ("padded_load", "load", str(padded)),
        ("scales", "cli", ["eval", "--checkpoint", best, "--tta", "multiscale", "--scales", "20000"]),
        ("fifo_predict", "cli", ["predict", "--checkpoint", best, str(fifo)]),
        ("fifo_decode", "decode", str(fifo)),
    ]
    done = child(CHILD, json.dumps(cases), limit_as=6 * GB, timeout=900)  # a few seconds on an idle machine
    results = {name: [None, f"not reached: {done['stderr'][-300:]}"] for name, _, _ in cases}
    for line in done["stdout"].splitlines():
        if line.startswith("{"):
            results |= json.loads(line)
    return results, done["peak"], paths


def test_05_an_animated_gif_decodes_its_first_frame_only(refused):
    results, peak, _ = refused
    assert results["gif_decode"] == [0, "(3, 2000, 2000)"], results["gif_decode"]
    assert results["gif_load"] == [0, "(2000, 2000)"], results["gif_load"]
    print(f"peak RSS of the child running cases 5-11: {peak / 2**20:.0f} MiB")  # shown with pytest -s
    assert peak < GB, f"peak RSS {peak / GB:.2f} GB"


def test_06_a_gzip_bomb_is_refused_from_its_header(refused):
    results, peak, paths = refused
    for case in ("gz_verified", "gz_unverified"):
        status, err = results[case]
        assert status == 2 and "train-images-idx3-ubyte.gz: its header declares" in err, (case, err)
    assert "--no-verify-checksums" in results["gz_verified"][1]
    assert not paths["bomb_out"].exists()  # nothing written
    assert peak < GB, f"peak RSS {peak / GB:.2f} GB"


def test_07_a_checkpoint_asking_for_a_huge_head_is_refused_before_allocation(refused):
    results, peak, _ = refused
    status, err = results["huge_head"]
    assert status == 2 and "does not fit the model" in err and "fc.weight" in err, err
    assert peak < GB, f"peak RSS {peak / GB:.2f} GB"


def test_08_a_3_gb_file_named_png_is_refused_without_reading_it(refused):
    results, peak, _ = refused
    status, err = results["sparse_predict"]
    assert status == 2 and "big.png is not a readable image" in err and "\n" not in err.strip(), err
    assert results["sparse_decode"][0] == 2 and "big.png" in results["sparse_decode"][1]
    for case in ("padded_decode", "padded_load"):
        status, err = results[case]
        assert status == 2 and "is far more than a 32 x 32 image takes" in err, (case, err)
    assert peak < GB, f"peak RSS {peak / GB:.2f} GB"


def test_09_multiscale_sizes_are_bounded(refused):
    results, peak, _ = refused
    status, err = results["scales"]
    assert status == 2 and "--scales takes shorter sides of 1 to 2048 pixels" in err and "20000" in err, err
    assert peak < GB, f"peak RSS {peak / GB:.2f} GB"


def test_10_workers_are_bounded_by_the_machine(imgs, tmp_path, capsys):
    from resnets.data import DataConfig
    from resnets.errors import ConfigError

    with pytest.raises(ConfigError, match="workers=10000 is more DataLoader processes"):
        DataConfig(dataset="imagefolder", data_dir=str(imgs), workers=10000)
    status, _, err = cli(folder_argv(imgs, tmp_path / "out", "--workers", "10000"), capsys)
    line = one_line_error(err)
    assert status == 2 and "CPU cores; use at most" in line and "--workers" in line, line
    assert not (tmp_path / "out").exists()


def test_11_a_pipe_named_jpg_is_refused_not_read(refused):
    results, _, paths = refused
    for case in ("fifo_predict", "fifo_decode"):
        status, err = results[case]
        assert status == 2 and "f.jpg is not a regular file" in err, (case, err)


# --- 12-20: tracebacks, now one line that says what to do (or correct behaviour) ------------------


def idx(path: Path, dims: tuple[int, ...], payload: bytes = b"", code: int = 8) -> Path:
    path.write_bytes(struct.pack(f">BBBB{len(dims)}I", 0, 0, code, len(dims), *dims) + payload)
    return path


def test_12_an_animated_gif_in_an_image_folder_trains_and_evaluates(tmp_path, capsys):
    root = images(tmp_path / "IMGS")
    frames = [Image.new("RGB", (20, 20), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(root / "cat" / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    status, _, err = cli(folder_argv(root, tmp_path / "run", "--strict-data"), capsys)
    assert status == 0 and "Traceback" not in err, err
    argv = ["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--strict-data"]
    status, out, err = cli(argv, capsys)
    assert status == 0 and "top-1 error" in out, err


def float8_file(path: Path, name: str, **options) -> Path:
    import torch
    from safetensors.torch import save_file

    from resnets import create_model

    state = create_model(name, num_classes=10, in_chans=1, **options).state_dict()
    save_file(
        {k: (v.to(torch.float8_e4m3fn) if v.is_floating_point() else v) for k, v in state.items()}, str(path)
    )
    return path


def test_13_float8_weights_import_and_initialise(data, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    weights = float8_file(tmp_path / "r20.safetensors", "resnet20")
    status, _, err = cli(
        ["import-weights", str(weights), "--model", "resnet20", "--output", str(out)], capsys
    )
    assert status == 0 and out.is_file(), err
    depth8 = float8_file(tmp_path / "d8.safetensors", "resnet_cifar", depth=8)
    status, _, err = cli(train_argv(data, tmp_path / "run", "--init-weights", str(depth8)), capsys)
    assert status == 0, err


def test_13_nan_in_float8_weights_is_refused(tmp_path, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(float8_file(tmp_path / "r20.safetensors", "resnet20")))
    state["conv1.weight"] = state["conv1.weight"].float().fill_(float("nan")).to(torch.float8_e4m3fn)
    bad = tmp_path / "nan8.safetensors"
    save_file(state, str(bad))
    status, _, err = cli(
        ["import-weights", str(bad), "--model", "resnet20", "--output", str(tmp_path / "out.safetensors")],
        capsys,
    )
    line = one_line_error(err)
    assert status == 2 and "NaN or infinite" in line and "conv1.weight" in line, line
    assert not (tmp_path / "out.safetensors").exists()


def copy_data(data: Path, folder: Path) -> Path:
    folder.mkdir()
    for f in data.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def test_14_an_idx_header_whose_size_wraps_in_int64_is_refused(data, tmp_path, capsys):
    bad = copy_data(data, tmp_path / "wrap")
    idx(bad / "train-images-idx3-ubyte", (1 << 22, 1 << 21, 1 << 21))  # 2^64 bytes: 0 in int64
    status, _, err = cli(train_argv(bad, tmp_path / "run"), capsys)
    line = one_line_error(err)
    assert status == 2 and "idx3-ubyte: its header declares 18,446,744,073,709,551,632" in line, line
    assert not (tmp_path / "run").exists()


def test_15_idx_images_of_0_x_0_pixels_are_refused_naming_the_file(data, tmp_path, capsys):
    bad = copy_data(data, tmp_path / "empty_images")
    idx(bad / "train-images-idx3-ubyte", (64, 0, 0))
    idx(bad / "t10k-images-idx3-ubyte", (32, 0, 0))
    status, _, err = cli(train_argv(bad, tmp_path / "run"), capsys)
    line = one_line_error(err)
    assert status == 2 and "train-images-idx3-ubyte holds 64 images of 0 x 0 pixels" in line, line
    assert "per_pixel" not in line


def test_16_model_kwargs_may_repeat_the_datas_channels_and_classes(data, tmp_path, capsys):
    same = '--set=model_kwargs={"depth": 8, "in_chans": 1, "num_classes": 10}'
    status, _, err = cli(train_argv(data, tmp_path / "same", same), capsys)
    assert status == 0, err
    other = '--set=model_kwargs={"depth": 8, "in_chans": 3}'
    status, _, err = cli(train_argv(data, tmp_path / "other", other), capsys)
    line = one_line_error(err)
    assert status == 2 and "in_chans=3 but the data has 1 channels; drop in_chans" in line, line


def test_17_garbage_metrics_stop_a_resume_before_anything_is_written(run, tmp_path, capsys):
    copy = tmp_path / "R"
    copy.mkdir()
    for name, content in snapshot(run).items():
        (copy / name).write_bytes(content)
    (copy / "metrics.csv").write_bytes(bytes(range(256)) * 4)
    before = tree(copy)
    status, _, err = cli(["train", "--resume", str(copy), "--epochs", "2", "--progress", "none"], capsys)
    line = one_line_error(err)
    assert status == 2 and "metrics.csv is not a run's metrics table" in line, line
    assert tree(copy) == before  # config.json not rewritten
    (copy / "metrics.csv").write_text("epoch,iteration\nx,y,z\n")
    from resnets.errors import DataError

    with pytest.raises(DataError, match="metrics.csv is not a run's metrics table"):  # what reproduce reads
        runs.RunFolder(copy).metrics()


def test_18_a_truncated_summary_is_named(run, tmp_path):
    from resnets.errors import DataError

    folder = tmp_path / "R"
    folder.mkdir()
    (folder / "summary.json").write_text((run / "summary.json").read_text()[:20])
    with pytest.raises(DataError, match="summary.json is not a readable run summary"):
        runs.RunFolder(folder).summary()
    (folder / "config.json").write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match="config.json is not a readable run configuration"):
        runs.RunFolder(folder).config()


def test_19_a_coco_file_with_a_bad_channel_count_is_named(tmp_path):
    from resnets.detection.data import open_detection_data
    from resnets.errors import DataError

    root = tmp_path / "C"
    images(root / "train", classes=("",), n=1)
    (root / "annotations").mkdir()
    document = {
        "info": {"channels": "gray"},
        "categories": [{"id": 1, "name": "thing"}],
        "images": [{"id": 1, "file_name": "0.png", "width": 32, "height": 32}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8], "area": 64, "iscrowd": 0}
        ],
    }
    (root / "annotations" / "instances_train.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match=r'instances_train.json: "info": \{"channels": \'gray\'\} must be 1'):
        open_detection_data(root, "train")


def test_20_sizes_from_flags_are_bounded_before_allocation(run, tmp_path, capsys):
    # 1 x 50000 x 1: the bound of the audit's 50000 x 50000, which today's main would try to allocate
    status, _, err = cli(
        [
            "export",
            "--checkpoint",
            str(run / "best.pt"),
            "--format",
            "pt2",
            "--input-size",
            "1",
            "50000",
            "1",
            "--output",
            str(tmp_path / "m.pt2"),
        ],
        capsys,
    )
    line = one_line_error(err)
    assert status == 2 and "sizes of 1 to 4096 pixels" in line, line
    status, _, err = cli(
        [
            "import-weights",
            str(run / "model.safetensors"),
            "--model",
            "resnet_cifar",
            "--num-classes",
            "100000000000",
            "--output",
            str(tmp_path / "w.safetensors"),
        ],
        capsys,
    )
    line = one_line_error(err)
    assert status == 2 and "--num-classes must be from 1 to 100,000" in line, line
    assert not list(tmp_path.iterdir())


# --- 21-30: wrong or unclear messages, silent behaviour ------------------------------------------


def test_21_onnx_export_compares_logits_relative_to_their_scale(run, tmp_path, capsys):
    import torch

    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt["state_dict"]["fc.weight"] *= 3e4  # logits of ~26,000: float32 rounding differs by ~0.004
    ckpt["state_dict"]["fc.bias"] += 2.6e4
    ckpt["ema"], ckpt["eval_weights"] = None, "model"
    torch.save(ckpt, tmp_path / "big.pt")
    out = tmp_path / "big.onnx"
    status, _, err = cli(
        ["export", "--checkpoint", str(tmp_path / "big.pt"), "--format", "onnx", "--output", str(out)], capsys
    )
    assert status == 0 and out.is_file(), err


def test_22_a_full_disk_at_the_first_checkpoint_says_to_run_again(data, tmp_path, capsys, monkeypatch):
    argv = train_argv(data, tmp_path / "run")
    monkeypatch.setenv(io.FAULT_ENV, "last.pt:write:1:enospc@0")
    status, _, err = cli(argv, capsys)
    line = one_line_error(err)
    assert status == 2 and "no checkpoint was saved yet" in line and "--resume" not in line, line
    monkeypatch.delenv(io.FAULT_ENV)
    status, _, err = cli(argv, capsys)  # what the message says: the same command again
    assert status == 0, err


def test_23_an_idx_file_of_0_images_is_named(data, tmp_path, capsys):
    bad = copy_data(data, tmp_path / "none")
    idx(bad / "train-images-idx3-ubyte", (0, 28, 28))
    idx(bad / "train-labels-idx1-ubyte", (0,))
    status, _, err = cli(train_argv(bad, tmp_path / "run"), capsys)
    line = one_line_error(err)
    assert status == 2 and "train-images-idx3-ubyte holds 0 images" in line, line


def test_24_a_detectors_checkpoint_is_sent_to_resnets_detect(run, tmp_path, capsys):
    import torch

    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt["model"] = {"name": "faster_rcnn", "kwargs": {"backbone": "resnet50", "num_classes": 3}}
    ckpt["config"]["task"] = "detection"
    torch.save(ckpt, tmp_path / "det.pt")
    image = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(image)
    for argv in (["eval"], ["predict", str(image)], ["export", "--format", "pt2"]):
        status, _, err = cli([*argv, "--checkpoint", str(tmp_path / "det.pt")], capsys)
        line = one_line_error(err)
        assert status == 2 and "use `resnets detect" in line and "Known" not in line, line


def test_25_training_images_that_are_all_unreadable_are_named(tmp_path, capsys):
    root = tmp_path / "IMGS"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            (root / c / f"{i}.png").write_bytes(b"")
    status, _, err = cli(folder_argv(root, tmp_path / "run"), capsys)
    line = one_line_error(err)
    assert status == 2 and ".png is not a readable image" in line and "training images sampled" in line, line


def test_26_sigterm_during_import_or_export_says_so_and_leaves_no_temporary_file(
    run, tmp_path, capsys, monkeypatch
):
    from resnets import create_model
    from resnets.weights import save_weights

    weights = save_weights(create_model("resnet20", num_classes=10, in_chans=1), tmp_path / "r20.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    for name, argv in (
        ("w.safetensors", ["import-weights", str(weights), "--model", "resnet20"]),
        ("m.pt2", ["export", "--checkpoint", str(run / "best.pt"), "--format", "pt2"]),
    ):
        monkeypatch.setenv(io.FAULT_ENV, f"{name}:write:1:sigterm@0")  # at the first byte of the output
        status, _, err = cli([*argv, "--output", str(out / name)], capsys)
        assert status == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err, err
        assert not list(out.iterdir())  # neither the output nor a temporary file


def test_27_sigterm_during_the_last_save_still_stops_the_caller(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(io.FAULT_ENV, "last.pt:replace:1:sigterm")  # as `resnets reproduce` runs it
    status, _, err = cli(train_argv(data, tmp_path / "run"), capsys)
    assert status == 143 and "terminated (SIGTERM)" in err, err
    assert runs.RunFolder(tmp_path / "run").finished  # the run itself completed


def test_28_idx_labels_stored_as_floats_are_refused(data, tmp_path, capsys):
    bad = copy_data(data, tmp_path / "float_labels")
    labels = (np.arange(64) % 10 + 0.7).astype(">f8")
    idx(bad / "train-labels-idx1-ubyte", (64,), labels.tobytes(), code=0x0E)
    status, _, err = cli(train_argv(bad, tmp_path / "run"), capsys)
    line = one_line_error(err)
    assert status == 2 and "train-labels-idx1-ubyte stores its labels as >f8" in line, line


def test_29_class_names_with_a_newline_cannot_fake_result_lines(tmp_path, capsys):
    root = images(tmp_path / "IMGS", classes=("cat\n  fake  99.99 %", "dog"))
    assert cli(folder_argv(root, tmp_path / "run"), capsys)[0] == 0
    best = str(tmp_path / "run" / "best.pt")
    status, out, err = cli(["eval", "--checkpoint", best, "--per-class"], capsys)
    assert status == 0 and "cat\\n  fake" in out, err
    assert not any(line.startswith("  fake") for line in out.splitlines())
    status, out, err = cli(["predict", "--checkpoint", best, str(root / "dog" / "0.png")], capsys)
    assert status == 0 and "cat\\n  fake" in out, err
    assert not any(line.startswith("  fake") for line in out.splitlines())


def test_30_a_folder_of_mostly_empty_images_stops_at_once_saying_why(tmp_path, capsys):
    root = images(tmp_path / "IMGS", n=2)
    for c in ("cat", "dog"):
        for i in range(30):
            (root / c / f"empty{i}.png").write_bytes(b"")
    status, _, err = cli(folder_argv(root, tmp_path / "run"), capsys)
    line = one_line_error(err)
    assert status == 2 and re.search(r"\d+ of \d+ training images sampled are unreadable", line), line
    assert not (tmp_path / "run").exists()
