"""``resnets predict`` on a checkpoint of a real (tiny) training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import run_cli, trained_run

from resnets.checkpoints import load_model
from resnets.data import preprocess_image


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = {
        "gray.png": Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), "L"),
        "colour.jpg": Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), "RGB"),
        "alpha.png": Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), "RGBA"),
    }
    for name, image in paths.items():
        image.save(folder / name)
    return {name: folder / name for name in paths}


def test_top5_names_and_probabilities_match_a_direct_computation(run_dir, images, capsys):
    ckpt = run_dir / "last.pt"
    files = [str(images[n]) for n in ("gray.png", "colour.jpg", "alpha.png")]
    status, out, err = run_cli(["predict", "--checkpoint", str(ckpt), *files, "--json"], capsys)
    assert status == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert [p["image"] for p in result["predictions"]] == files

    model, meta = load_model(ckpt, "cpu")
    meta = meta["data"]
    # The grey 28x28 PNG needs no resizing: its input is (pixels / 255 - mean) / std, computed here by hand.
    pixels = torch.from_numpy(np.asarray(Image.open(images["gray.png"]), dtype=np.float32))
    mean, std = meta["normalization"]["mean"][0][0][0], meta["normalization"]["std"][0][0][0]
    gray = ((pixels / 255 - mean) / std)[None, None]
    inputs = torch.cat([gray] + [preprocess_image(f, meta)[None] for f in files[1:]])
    with torch.no_grad():
        probs = model(inputs).softmax(1)
    for prediction, p in zip(result["predictions"], probs, strict=True):
        top = prediction["top"]
        assert len(top) == 5
        expected = p.topk(5)
        assert [e["index"] for e in top] == expected.indices.tolist()
        assert [e["class"] for e in top] == [meta["classes"][i] for i in expected.indices.tolist()]
        assert [e["probability"] for e in top] == pytest.approx(expected.values.tolist(), abs=1e-5)
    assert meta["classes"][result["predictions"][0]["top"][0]["index"]] in out  # the text listing


def test_topk_beyond_the_classes_is_clamped_and_said(run_dir, images, capsys):
    argv = [
        "predict",
        "--checkpoint",
        str(run_dir / "last.pt"),
        str(images["gray.png"]),
        "--topk",
        "20",
        "--json",
    ]
    status, out, err = run_cli(argv, capsys)
    assert status == 0 and "only 10 classes" in err  # --json: notes on stderr, stdout is the JSON alone
    top = json.loads(out)["predictions"][0]["top"]
    assert len(top) == 10 and sum(e["probability"] for e in top) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["text", "missing", "folder", "truncated"])
def test_unreadable_images_are_named(run_dir, images, tmp_path, capsys, kind):
    if kind == "text":
        bad = tmp_path / "notes.png"
        bad.write_text("not an image")
    elif kind == "missing":
        bad = tmp_path / "nowhere.jpg"
    elif kind == "folder":
        bad = tmp_path / "a_folder.png"
        bad.mkdir()
    else:
        bad = tmp_path / "cut.jpg"
        data = images["colour.jpg"].read_bytes()
        bad.write_bytes(data[: len(data) // 3])
    argv = ["predict", "--checkpoint", str(run_dir / "last.pt"), str(images["gray.png"]), str(bad)]
    status, out, err = run_cli(argv, capsys)
    assert status == 2 and bad.name in err
    assert out == ""  # all images are read before any prediction is printed


def test_checkpoint_that_is_not_ours(tmp_path, images, capsys):
    path = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    status, _, err = run_cli(["predict", "--checkpoint", str(path), str(images["gray.png"])], capsys)
    assert status == 2 and "weights.pth" in err and "not a resnets checkpoint" in err
