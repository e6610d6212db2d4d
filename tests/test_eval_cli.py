"""``resnets eval`` on a checkpoint of a real (tiny) training run, and its bad inputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import run_cli, trained_run

from resnets.data import DataWarning


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def run_metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        row = list(csv.DictReader(f))[-1]
    recipe = json.loads((run_dir / "config.json").read_text())["recipe"]
    return row, recipe


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_eval_reproduces_the_training_runs_val_and_test_metrics(run_dir, run_metrics, capsys):
    row, recipe = run_metrics
    ckpt = str(run_dir / "last.pt")
    argv = ["eval", "--checkpoint", ckpt, "--split", "val", "--tta", recipe["tta"], "--json"]
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    val = last_json(out)
    assert val["images"] == recipe["val_split"]
    assert val["top1_error"] == pytest.approx(float(row["val_error"]), abs=1e-3)
    assert val["loss"] == pytest.approx(float(row["val_loss"]), rel=1e-4)
    assert {"top1_error", "top5_error", "loss", "images", "model", "dataset", "split", "tta"} <= set(val)
    assert (val["model"], val["dataset"], val["split"]) == ("resnet_cifar", "fashion-mnist", "val")
    assert json.loads(out) == val  # --json: stdout is the JSON object alone

    status, out, _ = run_cli(
        [
            "eval",
            "--checkpoint",
            ckpt,
            "--test-subset",
            str(recipe["test_subset"]),
            "--tta",
            recipe["tta"],
            "--json",
        ],
        capsys,
    )
    test = last_json(out)
    assert status == 0 and test["images"] == recipe["test_subset"]
    assert test["top1_error"] == pytest.approx(float(row["test_error"]), abs=1e-3)
    assert test["loss"] == pytest.approx(float(row["test_loss"]), rel=1e-4)

    # train's flag name, and the old spelling still works (with a note); without --json, the table
    status, out, err = run_cli(
        [
            "eval",
            "--checkpoint",
            ckpt,
            "--subset",
            str(recipe["test_subset"]),
            "--tta",
            recipe["tta"],
            "-b",
            "16",
        ],
        capsys,
    )
    assert status == 0 and "--subset is deprecated" in err and "--test-subset" in err
    assert "top-1 error" in out and "top-5 error" in out and f"{test['top1_error']:6.2f} %" in out


@pytest.mark.parametrize(
    "tta,extra,sizes",
    [
        ("10crop", [], {"ten_crop": {"resize": 32, "crop": 28}}),  # 256 and 224 scaled by 28/224
        ("multiscale", [], {"scales": [28, 32, 48, 60, 80]}),
        ("multiscale", ["--scales", "24", "36"], {"scales": [24, 36]}),
    ],
)
def test_eval_10crop_and_multiscale_scale_the_paper_sizes(run_dir, capsys, tta, extra, sizes):
    argv = [
        "eval",
        "--checkpoint",
        str(run_dir / "last.pt"),
        "--test-subset",
        "32",
        "--tta",
        tta,
        *extra,
        "--json",
    ]
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    result = last_json(out)
    assert result["tta"] == tta and result["images"] == 32
    assert {k: result[k] for k in sizes} == sizes
    assert 0 <= result["top1_error"] <= 100 and result["loss"] > 0


def test_per_class_accuracy_and_confusion_matrix(run_dir, tmp_path, capsys):
    png = tmp_path / "cm.png"
    argv = [
        "eval",
        "--checkpoint",
        str(run_dir / "last.pt"),
        "--test-subset",
        "40",
        "--per-class",
        "--confusion-matrix",
        str(png),
        "--json",
    ]
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    result = last_json(out)
    classes = torch.load(run_dir / "last.pt", weights_only=True)["data"]["classes"]
    assert [row["class"] for row in result["per_class"]] == classes
    assert [row["images"] for row in result["per_class"]] == [4] * 10  # a stratified subset of 40
    assert all(row["accuracy"] in (0.0, 25.0, 50.0, 75.0, 100.0) for row in result["per_class"])
    mean_acc = sum(row["accuracy"] for row in result["per_class"]) / len(classes)
    assert 100 - mean_acc == pytest.approx(result["top1_error"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(out) == result and f"wrote {png}" in err  # stdout: the JSON alone; notes: stderr


def test_options_that_do_not_apply_are_errors(run_dir, capsys):
    ckpt = str(run_dir / "last.pt")
    status, _, err = run_cli(["eval", "--checkpoint", ckpt, "--scales", "32"], capsys)
    assert status == 2 and "--scales applies to --tta multiscale" in err
    status, _, err = run_cli(["eval", "--checkpoint", ckpt, "--split", "val", "--test-subset", "10"], capsys)
    assert status == 2 and "--test-subset" in err


def write_image_folder(root, classes: int, per_class: int = 4, size: int = 28):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size), dtype=np.uint8)
            Image.fromarray(pixels, "L").save(root / f"class{c}/{i}.png")


def test_dataset_with_another_class_count_is_an_error(run_dir, tmp_path, capsys):
    write_image_folder(tmp_path / "three", classes=3)
    ckpt = str(run_dir / "last.pt")
    status, _, err = run_cli(
        [
            "eval",
            "--checkpoint",
            ckpt,
            "--dataset",
            "imagefolder",
            "--data-dir",
            str(tmp_path / "three"),
            "--workers",
            "0",
        ],
        capsys,
    )
    assert status == 2
    assert "imagefolder has 3 classes" in err and ckpt in err and "has 10" in err


def test_dataset_with_other_class_names_warns_and_evaluates(run_dir, tmp_path, capsys):
    good = torch.load(run_dir / "last.pt", weights_only=True)
    renamed = dict(good, data={**good["data"], "classes": [f"class{i}" for i in range(10)]})
    torch.save(renamed, tmp_path / "renamed.pt")
    argv = ["eval", "--checkpoint", str(tmp_path / "renamed.pt"), "--test-subset", "20", "--json"]
    with pytest.warns(DataWarning, match="class names of fashion-mnist differ from the checkpoint's"):
        status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    assert json.loads(out)["images"] == 20  # stdout: the JSON alone, the warning is not in it


def test_checkpoints_that_are_not_usable(run_dir, tmp_path, capsys):
    good = torch.load(run_dir / "last.pt", weights_only=True)
    cases = {}
    torch.save({"conv1.weight": torch.zeros(16, 1, 3, 3)}, tmp_path / "foreign.pth")  # a plain state dict
    cases["foreign.pth"] = "not a resnets checkpoint"
    (tmp_path / "cut.pt").write_bytes((run_dir / "last.pt").read_bytes()[:5000])
    cases["cut.pt"] = "truncated"
    other = dict(good, model={"name": "resnet_cifar", "kwargs": {**good["model"]["kwargs"], "depth": 14}})
    torch.save(other, tmp_path / "other_arch.pt")  # the spec says 14 layers, the weights are of 8
    cases["other_arch.pt"] = "missing"
    no_val = dict(good, config={**good["config"], "recipe": {**good["config"]["recipe"], "val_split": 0}})
    torch.save(no_val, tmp_path / "no_val.pt")
    for name, expected in cases.items():
        status, _, err = run_cli(["eval", "--checkpoint", str(tmp_path / name)], capsys)
        assert status == 2 and name in err and expected in err, err
    status, _, err = run_cli(["eval", "--checkpoint", str(tmp_path / "no_val.pt"), "--split", "val"], capsys)
    assert status == 2 and "no validation split" in err and "no_val.pt" in err


def test_image_folder_checkpoint_with_every_tta(tmp_path, capsys):
    """The ImageNet-layout branch: images of several sizes and aspect ratios, decoded by workers' code."""
    rng = np.random.default_rng(1)
    for split, count in (("train", 6), ("val", 2)):
        for c in range(3):
            (tmp_path / "data" / split / f"c{c}").mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(36, 60, 2)
                pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / f"c{c}" / f"{i}.jpg")
    run = tmp_path / "run"
    # fast-cpu's crop_padding=0 is for in-memory data; image folders need it unset
    train = [
        "train",
        "--model",
        "resnet_cifar",
        "--set",
        'model_kwargs={"depth": 8}',
        "--set",
        "crop_padding=none",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "data"),
        "--image-size",
        "32",
        "--workers",
        "0",
        "--iterations",
        "1",
        "-b",
        "6",
        "--progress",
        "none",
        "--output",
        str(run),
    ]
    status, _, err = run_cli(train, capsys)
    assert status == 0, err
    with open(run / "metrics.csv") as f:
        row = list(csv.DictReader(f))[-1]
    tta = json.loads((run / "config.json").read_text())["recipe"]["tta"]
    results = {}
    for name in dict.fromkeys([tta, "10crop", "multiscale"]):
        argv = ["eval", "--checkpoint", str(run / "last.pt"), "--tta", name, "--workers", "0", "--json"]
        status, out, err = run_cli(argv, capsys)  # --data-dir defaults to the run's
        assert status == 0, err
        results[name] = last_json(out)
        assert results[name]["images"] == 6 and results[name]["top5_k"] == 3
    assert results[tta]["loss"] == pytest.approx(float(row["test_loss"]), rel=1e-4)
    assert results["10crop"]["ten_crop"] == {"resize": 37, "crop": 32}
    assert results["multiscale"]["scales"] == [32, 37, 55, 69, 91]


def test_eval_uses_the_runs_autocast_so_its_numbers_match_the_log(tmp_path, capsys):
    from tiny_run import TRAIN_ARGS

    out_dir = tmp_path / "bf16"
    status, _, err = run_cli(
        ["train", *TRAIN_ARGS, "--amp", "--amp-dtype", "bfloat16", "--output", str(out_dir)], capsys
    )
    assert status == 0, err
    with open(out_dir / "metrics.csv") as f:
        row = list(csv.DictReader(f))[-1]
    recipe = json.loads((out_dir / "config.json").read_text())["recipe"]
    base = [
        "eval",
        "--checkpoint",
        str(out_dir / "last.pt"),
        "--test-subset",
        str(recipe["test_subset"]),
        "--tta",
        recipe["tta"],
        "--json",
    ]
    status, out, err = run_cli(base, capsys)
    as_run = last_json(out)
    assert status == 0, err
    assert as_run["precision"] == "bfloat16 autocast"
    assert as_run["loss"] == pytest.approx(float(row["test_loss"]), rel=1e-4)
    status, out, err = run_cli([*base, "--precision", "float32"], capsys)
    full = last_json(out)
    assert status == 0 and full["precision"] == "float32"
    assert full["loss"] != as_run["loss"]  # really computed in another precision
    assert full["loss"] == pytest.approx(as_run["loss"], rel=0.05)


def test_one_flag_vocabulary_across_the_commands():
    from resnets.cli import build_parser
    from resnets.commands._common import resolve_checkpoint

    parser = build_parser()
    ev = parser.parse_args(["eval", "--checkpoint", "r.pt", "--test-subset", "8", "-b", "4"])
    tr = parser.parse_args(["train", "--model", "resnet20", "--test-subset", "8", "-b", "4", "-o", "out"])
    assert (ev.test_subset, ev.batch_size) == (tr.test_subset, tr.batch_size) == (8, 4)
    ex = parser.parse_args(["export", "--checkpoint", "r.pt", "--format", "onnx", "-o", "m.onnx"])
    assert ex.output == "m.onnx" and tr.output == "out"
    pr = parser.parse_args(["predict", "--checkpoint", "m.onnx", "a.png"])
    assert pr.checkpoint == "m.onnx" and pr.images == ["a.png"]
    for argv, images in (
        (["detect", "predict", "--checkpoint", "run", "a.png", "b.png"], ["a.png", "b.png"]),
        (["detect", "predict", "run", "a.png"], ["a.png"]),
    ):
        args = parser.parse_args(argv)
        resolve_checkpoint(args, "the detector")
        assert (args.checkpoint, args.images) == ("run", images)
    args = parser.parse_args(["detect", "eval", "--checkpoint", "run", "--eval-subset", "3", "-b", "2"])
    resolve_checkpoint(args, "the detector")
    assert (args.checkpoint, args.subset, args.batch_size) == ("run", 3, 2)
    args = parser.parse_args(["detect", "export", "--checkpoint", "run", "-o", "d.onnx"])
    resolve_checkpoint(args, "the detector")
    assert (args.checkpoint, args.output) == ("run", "d.onnx")
