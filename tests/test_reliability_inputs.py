"""Hostile inputs (docs/reliability.md): image folders with loops, escaping links, bombs, 16-bit and float
images, damaged files, odd modes and names, classes too small to split; dataset folders with a file
missing; crafted checkpoints and weights files, by hand and by a property-based fuzzer; non-finite
hyper-parameters. Each input either works correctly or is refused with a ``ResnetsError`` (exit status 2
and one line naming the file at the command line); never another exception."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_reliability_runs import REPO, cli, one_line_error, tiny_mnist, train_argv

from resnets import checkpoints, runs
from resnets.cli import main
from resnets.data import DataWarning
from resnets.data.folders import scan_layout
from resnets.data.images import decode_image_file, load_image, preprocess_image
from resnets.errors import ResnetsError
from resnets.train.recipes import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")


# --- image files ---------------------------------------------------------------------------------


def save(path: Path, mode: str = "RGB", size=(20, 16), seed=0, fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    return path


def png(path: Path, width: int, height: int, depth: int, color: int, rows=None) -> Path:
    """A PNG written by hand (PIL writes neither 48-bit RGB nor a bomb without decoding it): ``rows``
    yields the raw scanlines (zeros when None), compressed as a stream."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    channels = {0: 1, 2: 3}[color]
    line = 1 + width * channels * depth // 8
    compressor, parts = zlib.compressobj(9), []
    for row in rows if rows is not None else (bytes(line) for _ in range(height)):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    path.parent.mkdir(parents=True, exist_ok=True)
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def rgb48(path: Path) -> Path:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 65536, (16, 20, 3), dtype=np.uint16).astype(">u2")
    return png(path, 20, 16, 16, 2, rows=(b"\0" + pixels[y].tobytes() for y in range(16)))


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A JPEG whose frame header claims width x height (the rest is garbage)."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    path.parent.mkdir(parents=True, exist_ok=True)
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    path.write_bytes(b"\xff\xd8" + app0 + sof + bytes(500))
    return path


def base(root: Path, classes=("a", "b"), n=5) -> Path:
    for c, name in enumerate(classes):
        for i in range(n):
            save(root / name / f"{i}.jpg", seed=10 * c + i)
    return root


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """9500 x 9500 = 90,250,000 pixels (above PIL's 89,478,485) in a PNG of a few hundred KB."""
    return png(tmp_path_factory.mktemp("bomb") / "bomb.png", 9500, 9500, 8, 0)


def train_folder(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(root),
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


def run_folder(root: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str, list[str]]:
    """``resnets train`` on an image folder: (status, error line or "", warning messages)."""
    out = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, _, err = cli(train_folder(root, out, *extra), capsys)
    assert "Traceback" not in err
    line = one_line_error(err) if status else ""
    return status, line, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def total_images(root: Path, **kwargs) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = scan_layout(root, "imagefolder", 0.2, 0, strict=False, **kwargs)
    return len(splits.train) + len(splits.test) + len(splits.val or [])


# --- image folders: each case works correctly or is refused naming the file ----------------------


def test_a_symlink_loop_counts_every_real_image_once(tmp_path, capsys):
    root = base(tmp_path / "loop")
    os.symlink(".", root / "a" / "again")  # a/again/again/... : 40 copies of everything on today's main
    os.symlink("..", root / "b" / "up")  # back to the root, and into class a from class b
    assert total_images(root) == 10
    status, _, caught = run_folder(root, tmp_path, capsys)
    assert status == 0 and any("leading back into a folder already scanned" in w for w in caught), caught


def test_links_out_of_the_data_folder_are_skipped_and_counted_unless_allowed(tmp_path, capsys):
    outside = base(tmp_path / "elsewhere", classes=("x",), n=3)
    root = base(tmp_path / "data")
    os.symlink(outside / "x" / "0.jpg", root / "a" / "outside.jpg")
    os.symlink(outside / "x", root / "b" / "outside_dir")
    os.symlink(outside / "x", root / "c")  # a whole class folder outside
    os.symlink(root / "a" / "0.jpg", root / "b" / "dup.jpg")  # into another class: skipped too
    os.symlink(root / "a" / "nothing.jpg", root / "a" / "gone.jpg")
    assert total_images(root) == 10
    status, _, caught = run_folder(root, tmp_path, capsys)
    report = next(w for w in caught if "skipped symbolic links" in w)
    assert status == 0 and "3 pointing outside" in report and "--follow-links" in report
    assert "1 into another class's" in report and "1 leading nowhere" in report
    assert any("without images" in w and "/c" in w for w in caught)  # the class kept, empty
    assert total_images(root, follow_links=True) == 10 + 3  # the three links lead to the same 3 files
    status, _, caught = run_folder(root, tmp_path, capsys, "--follow-links")
    assert status == 0 and not any("without images" in w for w in caught)


def test_a_link_from_train_into_the_test_folder_is_not_followed(tmp_path):
    root = tmp_path / "split"
    base(root / "train")
    base(root / "val", n=2)
    os.symlink(root / "val" / "a" / "0.jpg", root / "train" / "a" / "leak.jpg")
    with pytest.warns(DataWarning, match="another class's or split's folder"):
        splits = scan_layout(root, "imagefolder", 0.2, 0, strict=False)
    assert not {os.path.realpath(p) for p, _ in splits.train} & {os.path.realpath(p) for p, _ in splits.test}


def test_a_decompression_bomb_is_refused_from_its_header_on_every_path(bomb, tmp_path, capsys):
    root = base(tmp_path / "data")
    shutil.copy(bomb, root / "a" / "bomb.png")
    status, _, caught = run_folder(root, tmp_path, capsys)
    assert status == 0 and any("skipped" in w and "bomb.png" in w for w in caught), caught
    status, line, _ = run_folder(root, tmp_path, capsys, "--strict-data")
    assert status == 2 and "bomb.png: 9500 x 9500 = 90,250,000 pixels" in line
    assert "--max-image-pixels" in line
    for decode in (decode_image_file, load_image):
        with pytest.raises(ResnetsError, match=r"bomb\.png: 9500 x 9500 = 90,250,000 pixels is above"):
            decode(root / "a" / "bomb.png")
    small = save(tmp_path / "small.png", size=(40, 30))
    status, _, caught = run_folder(root, tmp_path, capsys, "--max-image-pixels", "100")  # every image refused
    assert status == 2
    status, _, err = cli(
        [
            "predict",
            "--checkpoint",
            str(tmp_path / "run0" / "last.pt"),
            str(small),
            "--max-image-pixels",
            "1000",
        ],
        capsys,
    )
    assert status == 2
    assert "small.png: 40 x 30 = 1,200 pixels is above the limit of 1,000" in one_line_error(err)


def test_16_bit_and_float_images_are_converted(tmp_path, capsys):
    root = base(tmp_path / "data")
    gray16 = Image.fromarray(np.full((16, 20), 40000, dtype=np.uint16))
    gray16.save(root / "a" / "gray16.png")
    rgb48(root / "b" / "rgb48.png")
    Image.fromarray(np.full((16, 20), 0.5, dtype=np.float32), "F").save(root / "a" / "float.tif")
    for name, value in (("a/gray16.png", round(40000 * 255 / 65535)), ("a/float.tif", 128)):
        image = decode_image_file(root / name)
        assert image.dtype == torch.uint8 and image.shape == (3, 16, 20), name
        assert int(image[0, 0, 0]) == value, name
    assert decode_image_file(root / "b" / "rgb48.png").dtype == torch.uint8
    status, _, caught = run_folder(root, tmp_path, capsys)
    assert status == 0 and not any("unreadable" in w for w in caught), caught  # trained on, not skipped


DAMAGED = {  # file -> bytes: each is skipped in training with a warning naming it
    "truncated.jpg": lambda p: p.write_bytes(save(p, seed=5).read_bytes()[:300]),
    "empty.jpg": lambda p: p.write_bytes(b""),
    "empty.png": lambda p: p.write_bytes(b""),
    "text.jpg": lambda p: p.write_text("not an image"),
    "bad_crc.png": lambda p: p.write_bytes(save(p, fmt="PNG").read_bytes()[:40] + b"\0" * 40),
    "huge_header.jpg": lambda p: jpeg_claiming(p, 60000, 60000),
    "line\nbreak.jpg": lambda p: p.write_bytes(b"\xff\xd8 garbage"),
}


def test_damaged_files_are_skipped_naming_each_and_strict_data_stops(tmp_path, capsys):
    root = base(tmp_path / "data")
    for name, make in DAMAGED.items():
        make(root / "a" / name)
    status, _, caught = run_folder(root, tmp_path, capsys)
    skipped = [w for w in caught if "unreadable image(s) skipped in epoch 1" in w]
    assert status == 0 and sum(int(w.split()[0]) for w in skipped) == len(DAMAGED)  # training and test split
    assert sum(name in " ".join(skipped) for name in DAMAGED) >= 5  # a warning names up to 5 of them
    splits = scan_layout(root, "imagefolder", 0.2, 0, strict=False)
    for name in DAMAGED:
        assert any(p.endswith(name) for p, _ in splits.train + splits.test), name
        with pytest.raises(ResnetsError, match=name.replace("\n", "\\n") if "\n" not in name else "break"):
            decode_image_file(root / "a" / name)
    status, line, _ = run_folder(root, tmp_path, capsys, "--strict-data")
    assert status == 2 and any(name.replace("\n", "\\n") in line for name in DAMAGED), line
    assert "\n" not in line


GOOD = {  # file -> writer: each decodes and trains
    "cmyk.jpg": lambda p: save(p, "CMYK"),
    "rgba.png": lambda p: save(p, "RGBA"),
    "palette.png": lambda p: save(p, "P"),
    "la.png": lambda p: save(p, "LA"),
    "bits.png": lambda p: save(p, "1"),
    "gray.jpg": lambda p: save(p, "L"),
    "anim.gif": lambda p: save(p, "P", fmt="GIF"),
    "photo.webp": lambda p: save(p, fmt="WEBP"),
    "one_pixel.png": lambda p: save(p, size=(1, 1)),
    "thin.png": lambda p: save(p, size=(1, 400)),
    "bmp_named.png": lambda p: save(p, fmt="BMP"),
    "big.jpg": lambda p: save(p, size=(300, 200)),
    "猫 café.jpg": lambda p: save(p),
    "x.tiff": lambda p: save(p, fmt="TIFF"),
    "p.ppm": lambda p: save(p, fmt="PPM"),
}


def test_odd_modes_formats_and_names_decode_and_train(tmp_path, capsys):
    root = base(tmp_path / "data", classes=("a", "ünïcödé ☕"))
    for name, make in GOOD.items():
        make(root / "a" / name)
    (root / "a" / "folder.jpg").mkdir()  # a folder with an image's name
    save(root / "a" / ".hidden.jpg")
    save(root / "a" / ".cache" / "x.jpg")
    (root / "a" / "notes.txt").write_text("x")
    for name in GOOD:
        image = decode_image_file(root / "a" / name)
        assert image.dtype == torch.uint8 and image.shape[0] == 3, name
    assert total_images(root) == 10 + len(GOOD)
    status, _, caught = run_folder(root, tmp_path, capsys)
    assert status == 0 and not any("unreadable" in w for w in caught), caught


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"only": 6}, r"images of one class only \('only'\)"),
        ({"a": 5, "b": 1, "c": 1}, r"2 class folder\(s\) of .* hold a single image \(b, c\)"),
        ({f"c{i}": 1 for i in range(10)}, r"10 class folder\(s\) .* hold a single image"),
        ({"a": 4, "empty": 0}, "images of one class only"),
    ],
)
def test_folders_that_cannot_train_a_classifier_are_refused(tmp_path, capsys, layout, message):
    root = tmp_path / "data"
    for name, n in layout.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            save(root / name / f"{i}.png", seed=i)
    status, line, _ = run_folder(root, tmp_path, capsys)
    assert status == 2 and str(root) in line
    assert re.search(message, line), line


def test_the_automatic_split_keeps_every_class_in_training(tmp_path):
    root = tmp_path / "data"
    for c in range(30):  # 30 classes of 2 images, test_fraction 0.75: each class keeps one
        for i in range(2):
            save(root / f"c{c:02d}" / f"{i}.png", seed=100 * c + i)
    splits = scan_layout(root, "imagefolder", 0.75, 0, strict=False)  # today's main: 15 classes all in test
    assert sorted({label for _, label in splits.train}) == list(range(30)) and len(splits.test) == 30


def test_plain_one_line_warnings_and_errors_from_the_command_line(tmp_path):
    """Warnings as `resnets train: warning: ...`, one line each, whatever the file names hold."""
    root = base(tmp_path / "data")
    os.symlink(".", root / "a" / "loop")
    DAMAGED["line\nbreak.jpg"](root / "b" / "line\nbreak.jpg")
    argv = train_folder(root, tmp_path / "out", "--epochs", "2")
    done = subprocess.run(
        [sys.executable, "-m", "resnets", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "warning:" in line.lower()]
    assert warned and all(line.startswith("resnets train: warning: ") for line in warned), done.stderr
    assert "DataWarning" not in done.stderr and ".py:" not in done.stderr
    assert any("line\\nbreak.jpg" in line for line in warned) or "break.jpg" not in done.stderr


# --- datasets in memory --------------------------------------------------------------------------


def test_data_dir_is_used_alone_and_a_missing_file_is_named(tmp_path, capsys):
    data = tiny_mnist(tmp_path / "mnist")
    (data / "train-labels-idx1-ubyte").unlink()  # the system's copy must not stand in for it
    status, _, err = cli(train_argv(data, tmp_path / "out"), capsys)
    line = one_line_error(err)
    assert status == 2 and str(data / "train-labels-idx1-ubyte") in line and "used alone" in line
    assert not (tmp_path / "out").exists()


def test_the_flags_that_messages_suggest_exist_and_work(tmp_path, capsys):
    data = tiny_mnist(tmp_path / "mnist")
    argv = [a for a in train_argv(data, tmp_path / "out") if a != "--no-verify-checksums"]
    status, _, err = cli(argv, capsys)  # synthetic files: not the official MNIST
    line = one_line_error(err)
    assert status == 2 and "checksum mismatch" in line and "--no-verify-checksums" in line
    status, _, _ = cli([*argv, "--no-verify-checksums"], capsys)
    assert status == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["run"]["verify_checksums"] is False
    argv = ["eval", "--checkpoint", str(tmp_path / "out" / "last.pt"), "--json", "--strict-data"]
    status, out, _ = cli(argv, capsys)
    assert status == 0 and json.loads(out.splitlines()[-1])["images"] == 32  # the run's own --no-verify


def test_eval_of_a_runs_checkpoint_reproduces_the_runs_number(tmp_path, capsys):
    data = tiny_mnist(tmp_path / "mnist")
    assert main(train_argv(data, tmp_path / "run", epochs=2)) == 0  # fast-cpu: flip test-time augmentation
    row = runs.read_metrics(tmp_path / "run" / "metrics.csv")[-1]
    status, out, _ = cli(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--json"], capsys)
    result = json.loads(out.splitlines()[-1])
    assert status == 0 and result["tta"] == "flip"
    assert result["loss"] == pytest.approx(row["test_loss"], rel=1e-4)
    assert result["top1_error"] == pytest.approx(row["test_error"], abs=1e-3)


# --- non-finite or non-float numbers -------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("lr", "inf"),
        ("momentum", "nan"),
        ("weight_decay", "nan"),
        ("label_smoothing", "nan"),
        ("ema_decay", "nan"),
        ("gamma", "inf"),
        ("warmup", "inf"),
    ],
)
def test_non_finite_hyper_parameters_are_refused(tmp_path, capsys, field, value):
    status, _, err = cli(["train", "--set", f"{field}={value}", "--output", str(tmp_path / "x")], capsys)
    assert status == 2 and f"{field} must be a finite number" in one_line_error(err)
    with pytest.raises(ResnetsError, match="finite"):
        Recipe(**{field: float(value)})


@pytest.mark.parametrize("kind", ["nan", "inf", "int32", "bool"])
def test_weights_that_are_not_finite_floats_are_refused(tmp_path, capsys, kind):
    from safetensors.torch import save_file

    from resnets import create_model

    model = create_model("resnet20", num_classes=10, in_chans=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if kind in ("nan", "inf"):
        state["layer1.0.conv1.weight"][0, 0, 0, 0] = float(kind)
    else:
        state["conv1.weight"] = state["conv1.weight"].to(getattr(torch, kind))
    path = tmp_path / f"{kind}.safetensors"
    save_file(state, str(path))
    status, _, err = cli(
        ["import-weights", str(path), "--model", "resnet20", "--output", str(tmp_path / "out.safetensors")],
        capsys,
    )
    line = one_line_error(err)
    assert status == 2 and path.name in line and not (tmp_path / "out.safetensors").exists()
    assert ("NaN or infinite" if kind in ("nan", "inf") else "non-floating-point") in line
    status, _, err = cli(
        train_argv(tiny_mnist(tmp_path / "mnist"), tmp_path / "run", "--init-weights", str(path)), capsys
    )
    assert status == 2 and path.name in one_line_error(err) and "lower --lr" not in err


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> tuple[Path, dict]:
    """A real run's checkpoint (trained by the command line) and its contents."""
    root = tmp_path_factory.mktemp("real")
    assert main(train_argv(tiny_mnist(root / "mnist"), root / "run")) == 0
    return root / "run" / "last.pt", torch.load(root / "run" / "last.pt", weights_only=True)


class Evil:
    def __reduce__(self):
        return os.system, ("echo owned",)


def _set(ckpt: dict, path: str, value) -> dict:
    """A copy of ``ckpt`` with the entry at ``a.b.c`` replaced (``state_dict.KEY``: one weight)."""
    out = dict(ckpt)
    node, keys = out, path.split(".", 1) if path.startswith("state_dict.") else path.split(".")
    for key in keys[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    node[keys[-1]] = value
    return out


CRAFTED = {
    "format_version": "x",
    "state_dict": [1, 2, 3],
    "model": "resnet",
    "model.name": 42,
    "model.kwargs": ["depth"],
    "eval_weights": "ema",
    "epoch": -1,
    "iteration": "3",
    "data.eval_preprocess": {"resize": 1_000_000, "crop": 1_000_000},
    "data.in_chans": 7,
    "data.normalization": {"mode": "per_channel", "mean": [1, 2], "std": [0]},
    "data.classes": "abc",
    "data.image_size": 10**9,
    "config.recipe.tta": "everything",
    "config.recipe.amp_dtype": "int8",
    "config.run.data_dir": 5,
    "config": [1],
    "metrics": "best",
}
RESUME_CRAFTED = {
    "rng.torch": torch.zeros(10, dtype=torch.uint8),
    "rng.numpy": ["MT19937", torch.zeros(5), 0, 0, 0.0],
    "rng.python": (3, (1, 2), None),
    "optimizer": [0.1],
    "scheduler": "step",
    "optimizer.param_groups": [{"params": [0, 1]}],
    "train_state.partial": "half",
}


def test_crafted_checkpoints_are_refused_naming_the_file(real, tmp_path, capsys):
    source, ckpt = real
    image = save(tmp_path / "cat.png", size=(40, 30))
    files = {}
    for key, value in {**CRAFTED, **RESUME_CRAFTED}.items():
        files[key] = tmp_path / f"{key}.pt"
        torch.save(_set(ckpt, key, value), files[key])
    torch.save({**ckpt, "x": Evil()}, tmp_path / "unsafe.pt")
    (tmp_path / "half.pt").write_bytes(source.read_bytes()[: len(source.read_bytes()) // 2])
    (tmp_path / "zero.pt").write_bytes(b"")
    shutil.copy(image, tmp_path / "image.pt")
    (tmp_path / "folder.pt").mkdir()
    for name in ("unsafe", "half", "zero", "image", "folder"):
        files[name] = tmp_path / f"{name}.pt"
    for key, path in files.items():
        if key in RESUME_CRAFTED:
            calls = [
                [
                    "train",
                    "--resume",
                    str(path),
                    "--output",
                    str(tmp_path / f"resumed-{key}"),
                    "--epochs",
                    "3",
                ]
            ]
        else:
            calls = [
                ["eval", "--checkpoint", str(path)],
                ["predict", "--checkpoint", str(path), str(image)],
                ["export", "--checkpoint", str(path), "--format", "pt2", "--output", str(tmp_path / "m.pt2")],
                ["train", "--resume", str(path), "--epochs", "3", "--output", str(tmp_path / f"r-{key}")],
            ]
        for argv in calls:
            status, _, err = cli(argv, capsys)
            line = one_line_error(err)
            assert status == 2 and path.name in line, (key, argv[0], line)
    status, _, err = cli(["eval", "--checkpoint", str(files["unsafe"])], capsys)
    assert "not a safe PyTorch checkpoint" in err and "GLOBAL posix.system" in err
    status, _, err = cli(["predict", "--checkpoint", str(files["data.eval_preprocess"]), str(image)], capsys)
    assert "a resize to 1000000" in err


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 300), max_size=6),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.builds(
        lambda shape, dtype: torch.zeros(shape, dtype=dtype),
        st.lists(st.integers(0, 4), max_size=3).map(tuple),
        st.sampled_from([torch.float32, torch.int64, torch.uint8, torch.bool, torch.float16]),
    ),
)
FIELDS = [
    "format",
    "format_version",
    "model",
    "model.name",
    "model.kwargs",
    "model.kwargs.depth",
    "model.kwargs.num_classes",
    "state_dict",
    "state_dict.conv1.weight",
    "state_dict.fc.bias",
    "optimizer",
    "optimizer.state",
    "optimizer.param_groups",
    "scheduler",
    "scaler",
    "ema",
    "eval_weights",
    "epoch",
    "iteration",
    "batch_in_epoch",
    "train_state",
    "train_state.partial",
    "train_state.best",
    "rng",
    "rng.torch",
    "rng.numpy",
    "rng.python",
    "epoch_rng",
    "config",
    "config.recipe",
    "config.recipe.seed",
    "config.recipe.val_split",
    "config.run",
    "config.run.data_dir",
    "data",
    "data.classes",
    "data.in_chans",
    "data.image_size",
    "data.normalization",
    "data.normalization.mean",
    "data.eval_preprocess",
    "data.eval_preprocess.crop",
    "metrics",
    "versions",
]


def _readers(path: Path, tmp: Path) -> None:
    """What eval, predict, export and resume do with a checkpoint, short of training: each must work or
    raise a ResnetsError."""
    try:
        model, ckpt = checkpoints.load_model(path)
        preprocess_image(Image.new("RGB", (30, 20), (90, 30, 200)), ckpt.get("data") or {})
    except ResnetsError:
        pass
    try:
        found, ckpt = runs.load_for_resume(path, log=lambda m: None)
        from resnets.train import state as train_state

        train_state.check_resume_entries(ckpt, found)
    except ResnetsError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_fuzzed_checkpoint_fields_work_or_raise_a_resnets_error(real, tmp_path_factory, field, value):
    _, ckpt = real
    tmp = tmp_path_factory.mktemp("fuzz")
    try:
        crafted = _set(ckpt, field, value)
    except (KeyError, TypeError):  # the path crosses a value that is no dict: set the top instead
        crafted = dict(ckpt, **{field.split(".")[0]: value})
    torch.save(crafted, tmp / "c.pt")
    _readers(tmp / "c.pt", tmp)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_fuzzed_checkpoint_bytes_work_or_raise_a_resnets_error(real, tmp_path_factory, flips, cut):
    source, _ = real
    data = bytearray(source.read_bytes())
    for where, byte in flips:
        data[int(where * len(data))] = byte
    if cut is not None:
        data = data[: int(cut * len(data))]
    tmp = tmp_path_factory.mktemp("bytes")
    (tmp / "c.pt").write_bytes(bytes(data))
    _readers(tmp / "c.pt", tmp)


def test_fuzzed_checkpoints_at_the_command_line(real, tmp_path, capsys):
    """A seeded sample of the fuzzer's mutations through the real commands: exit 0 or 2, never a traceback."""
    source, ckpt = real
    rng = np.random.default_rng(13)
    values = [None, True, -1, 2**40, float("nan"), "x", [1, 2], {"a": 1}, torch.zeros(3), torch.zeros(2, 2)]
    image = save(tmp_path / "cat.png")
    for i in range(12):
        field, value = FIELDS[rng.integers(len(FIELDS))], values[rng.integers(len(values))]
        try:
            crafted = _set(ckpt, field, value)
        except (KeyError, TypeError):
            crafted = dict(ckpt, **{field.split(".")[0]: value})
        path = tmp_path / f"c{i}.pt"
        torch.save(crafted, path)
        for argv in (
            ["eval", "--checkpoint", str(path)],
            ["predict", "--checkpoint", str(path), str(image)],
            ["train", "--resume", str(path), "--output", str(tmp_path / f"r{i}")],
        ):
            status, _, err = cli(argv, capsys)
            assert status in (0, 2) and "Traceback" not in err, (field, value, argv[0], err)
            if status == 2:
                one_line_error(err)
