"""The modern training options end to end (``resnets train`` in-process): gradient accumulation
equals the large batch, TensorBoard holds the run's numbers, stochastic depth reaches the model,
every modern recipe resolves, prints and trains, and bad values are one clear line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnets import checkpoints as ck
from resnets.cli import main
from resnets.train.recipes import RECIPES

pytestmark = pytest.mark.usefixtures("one_thread")

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
MODERN = ("torchvision-v2", "rsb-a1", "rsb-a2", "rsb-a3", "bag-of-tricks", "fashion-long", "fashion-best")


def train(tmp_path, *extra, name="run"):
    out = tmp_path / name
    return main(["train", *TINY, "--output", str(out), *extra]), out


def test_accumulated_micro_batches_give_the_large_batch_update(tmp_path):
    # frozen BN (running statistics) and no random augmentation: the two runs see the same images,
    # so only the grouping of the batch differs; a constant moderate lr, since fast-cpu's peak of
    # 0.2 amplifies float rounding (1 step agrees to 6e-8, 6 steps at 0.05 to 5e-6 here)
    same = [
        "--freeze-bn",
        "--no-amp",
        "--no-channels-last",
        "--no-hflip",
        "--crop-padding",
        "0",
        "--iterations",
        "6",
        "--log-every",
        "1",
        "--schedule",
        "constant",
        "--lr",
        "0.05",
    ]
    assert train(tmp_path, *same, name="large")[0] == 0
    assert train(tmp_path, *same, "--grad-accum-steps", "4", name="micro")[0] == 0
    a, b = (ck.load_checkpoint(tmp_path / name / "last.pt") for name in ("large", "micro"))
    assert a["iteration"] == b["iteration"] == 6
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=2e-5, rtol=1e-4), key
    steps = [
        [json.loads(line) for line in open(tmp_path / name / "steps.jsonl")] for name in ("large", "micro")
    ]
    assert [s["iteration"] for s in steps[1]] == list(range(1, 7))  # iterations count updates
    assert [s["loss"] for s in steps[1]] == pytest.approx([s["loss"] for s in steps[0]], rel=1e-4)
    moved = ck.load_checkpoint(tmp_path / "large" / "last-1.pt")["state_dict"]
    assert any(not torch.equal(moved[k], v) for k, v in a["state_dict"].items())  # the test can fail


def test_tensorboard_holds_the_runs_numbers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, out = train(tmp_path, "--tensorboard", "--iterations", "8", "--log-every", "2")
    assert code == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "train/loss",
        "train/error",
        "test/error",
        "test/loss",
        "lr",
        "train/images_per_s",
        "step/loss",
        "step/lr",
        "step/images_per_s",
    } <= tags
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    test_error = events.Scalars("test/error")
    assert [e.step for e in test_error] == [int(r["iteration"]) for r in rows]
    assert [e.value for e in test_error] == pytest.approx([float(r["test_error"]) for r in rows])
    assert [e.step for e in events.Scalars("step/loss")] == [2, 4, 6, 8]


def test_tensorboard_without_the_package_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    code, out = train(tmp_path, "--tensorboard")
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'resnets[tensorboard]'" in err and len(err.strip().splitlines()) == 1
    assert not (out / "last.pt").exists()


def test_drop_path_reaches_the_model_and_plain_nets_refuse_it(tmp_path, capsys):
    code, out = train(tmp_path, "--drop-path", "0.2", "--iterations", "1")
    assert code == 0
    model, _ = ck.load_model(out / "last.pt", "cpu")
    rates = [block.drop_path.p for _, block in model.residual_blocks()]
    assert rates[-1] == pytest.approx(0.2) and rates == sorted(rates) and rates[0] > 0
    code, _ = train(tmp_path, "--drop-path", "0.2", "--set", "model=plain_cifar", name="plain")
    assert code == 2 and "plain nets have none" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--aa", "rand-m12"], "0-10"),
        (["--bce-target-thresh", "0.2"], "needs bce_loss"),
        (["--grad-accum-steps", "3"], "does not divide"),
        (["--reprob", "1.5"], "probability"),
        (["--mixup", "-1"], "mixup must be >= 0"),
        (["--clip-grad", "0"], "clip_grad must be > 0"),
    ],
)
def test_bad_modern_options_are_one_line(tmp_path, capsys, flags, says):
    code, out = train(tmp_path, *flags)
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("name", MODERN)
def test_every_modern_recipe_resolves_prints_and_trains(name, tmp_path, capsys, image_folder):
    assert main(["train", "--recipe", name, "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)["recipe"]
    recipe = RECIPES[name]
    assert printed["name"] == name and printed["lr"] == recipe.lr and printed["mixup"] == recipe.mixup
    if recipe.dataset == "imagenet":  # the recipe itself, on a tiny image folder at a small size
        small = [
            "--dataset",
            "imagefolder",
            "--data-dir",
            str(image_folder),
            "--image-size",
            "32",
            "--set",
            "eval_resize=36",
            "--workers",
            "0",
            "-b",
            "8",
            "--set",
            "eval_batch_size=8",
        ]
        if recipe.train_crop_size:
            small += ["--set", "train_crop_size=24"]
    else:
        small = [
            "--train-subset",
            "256",
            "--test-subset",
            "64",
            "-b",
            "64",
            "--model",
            "resnet_cifar",
            "--set",
            'model_kwargs={"depth": 8}',
        ]
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--recipe",
                name,
                *small,
                "--iterations",
                "2",
                "--output",
                str(out),
                "--progress",
                "none",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2 and 0 <= summary["final_test_error"] <= 100
    checkpoint = ck.load_checkpoint(out / "last.pt")
    if recipe.dataset == "imagenet":  # the evaluation resize is the run's, recorded for eval and predict
        assert checkpoint["data"]["eval_preprocess"]["resize"] == 36
    saved = checkpoint["config"]["recipe"]
    assert {k: saved[k] for k in ("optimizer", "auto_augment", "bce_loss", "aug_repeats")} == {
        "optimizer": recipe.optimizer,
        "auto_augment": recipe.auto_augment,
        "bce_loss": recipe.bce_loss,
        "aug_repeats": recipe.aug_repeats,
    }
