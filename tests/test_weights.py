"""Weight import (torchvision/timm state dicts, resnets checkpoints) and our safetensors files."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torchvision
from helpers import randomize_bn
from safetensors.torch import save_file

import resnets
from resnets.errors import CheckpointError
from resnets.models.registry import model_spec
from resnets.weights import (
    load_weights,
    load_weights_into,
    load_weights_metadata,
    read_state_dict,
    save_weights,
)


@pytest.fixture(scope="module")
def tv_resnet18():
    return randomize_bn(torchvision.models.resnet18(num_classes=10))


@pytest.fixture
def tv_file(tmp_path, tv_resnet18):
    path = tmp_path / "resnet18_tv.pth"
    torch.save(tv_resnet18.state_dict(), path)
    return path


def test_torchvision_weights_load_and_give_the_same_outputs(tv_file, tv_resnet18):
    model = resnets.create_model("resnet18", num_classes=10)
    report = load_weights_into(model, tv_file)
    assert not report.head_replaced and not report.missing and not report.mismatched
    assert report.loaded == len(tv_resnet18.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), tv_resnet18(x))


@pytest.mark.parametrize("wrap", ["ddp_prefix", "timm_train_checkpoint", "safetensors", "resnets_checkpoint"])
def test_wrapped_and_prefixed_state_dicts(tmp_path, tv_resnet18, wrap):
    state = tv_resnet18.state_dict()
    if wrap == "ddp_prefix":  # DDP + torch.compile wrappers
        path = tmp_path / "w.pth"
        torch.save({f"module._orig_mod.{k}": v for k, v in state.items()}, path)
    elif wrap == "timm_train_checkpoint":  # timm's train.py: {"epoch", "arch", "state_dict", ...}
        path = tmp_path / "w.pth.tar"
        torch.save({"epoch": 3, "arch": "resnet18", "state_dict": state, "version": 2}, path)
    elif wrap == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "w.pt"
        torch.save(
            {
                "format": "resnets",
                "format_version": 1,
                "model": {"name": "resnet18", "kwargs": {}},
                "state_dict": state,
                "epoch": 1,
            },
            path,
        )
    model = resnets.create_model("resnet18", num_classes=10)
    load_weights_into(model, path)
    for key, value in state.items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)


def test_resnets_checkpoint_with_ema_gives_the_ema_weights(tmp_path):
    model = resnets.create_model("resnet20", num_classes=4)
    ema = randomize_bn(resnets.create_model("resnet20", num_classes=4))
    ema_state = {f"module.{k}": v for k, v in ema.state_dict().items()} | {"n_averaged": torch.tensor(7)}
    path = tmp_path / "run.pt"
    torch.save(
        {
            "format": "resnets",
            "format_version": 1,
            "model": model_spec(model),
            "state_dict": model.state_dict(),
            "ema": ema_state,
            "eval_weights": "ema",
        },
        path,
    )
    fresh = resnets.create_model("resnet20", num_classes=4)
    load_weights_into(fresh, path)
    for key, value in ema.state_dict().items():  # what the run evaluated, not the raw weights
        assert torch.equal(fresh.state_dict()[key], value), key


def test_other_class_count_keeps_fresh_head_and_says_so(tv_file, tv_resnet18):
    model = resnets.create_model("resnet18", num_classes=5)
    fresh_fc = model.fc.weight.detach().clone()
    report = load_weights_into(model, tv_file)
    assert report.head_replaced
    assert any("10 classes" in n and "5" in n for n in report.notes)
    torch.testing.assert_close(model.fc.weight, fresh_fc)  # head untouched
    torch.testing.assert_close(model.layer4[1].conv2.weight, tv_resnet18.layer4[1].conv2.weight)


def test_other_class_count_without_replace_head_is_an_error(tv_file):
    model = resnets.create_model("resnet18", num_classes=5)
    with pytest.raises(CheckpointError, match=r"resnet18_tv\.pth.*fc\.weight.*\[10, 512\].*\[5, 512\]"):
        load_weights_into(model, tv_file, replace_head=False)


def test_headless_file_keeps_the_model_head(tmp_path, tv_resnet18):
    path = tmp_path / "features.pth"
    torch.save({k: v for k, v in tv_resnet18.state_dict().items() if not k.startswith("fc.")}, path)
    report = load_weights_into(resnets.create_model("resnet18", num_classes=7), path)
    assert report.head_replaced and any("no classifier" in n for n in report.notes)


def test_grayscale_model_sums_rgb_stem_filters(tv_file, tv_resnet18):
    model = resnets.create_model("resnet18", num_classes=10, in_chans=1)
    report = load_weights_into(model, tv_file)
    assert any("conv1.weight" in n and "3 to 1" in n for n in report.notes)
    gray = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # a grey image repeated as RGB gives the same logits as the summed filters
        expected = tv_resnet18(gray.repeat(1, 3, 1, 1))
        torch.testing.assert_close(model.eval()(gray), expected, rtol=1e-4, atol=1e-4)


def test_another_architecture_is_named_in_the_error(tv_file):
    with pytest.raises(CheckpointError) as info:
        load_weights_into(resnets.create_model("resnet34", num_classes=10), tv_file)
    message = str(info.value)
    assert "resnet18_tv.pth" in message and "resnet34" in message and "missing" in message
    assert "layer1.2.conv1.weight" in message  # resnet34 has 3 units in layer1, resnet18 two

    with pytest.raises(CheckpointError, match=r"mis-shaped.*layer1\.0\.conv1\.weight.*\[64, 64, 3, 3\]"):
        load_weights_into(resnets.create_model("resnet50", num_classes=10), tv_file)


def test_wrong_shapes_are_listed(tmp_path, tv_resnet18):
    state = dict(tv_resnet18.state_dict())
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    path = tmp_path / "bad_shapes.pth"
    torch.save(state, path)
    model = resnets.create_model("resnet18", num_classes=10)
    before = model.layer1[0].conv1.weight.detach().clone()
    expected = r"bad_shapes\.pth.*layer2\.0\.conv1\.weight: file \[128, 64, 5, 5\] vs model \[128, 64, 3, 3\]"
    with pytest.raises(CheckpointError, match=expected):
        load_weights_into(model, path)
    torch.testing.assert_close(model.layer1[0].conv1.weight, before)  # nothing half-loaded


def test_unexpected_keys_are_listed(tmp_path, tv_resnet18):
    state = dict(tv_resnet18.state_dict(), **{"extra.proj.weight": torch.zeros(3)})
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"extra\.pth.*unexpected.*extra\.proj\.weight"):
        load_weights_into(resnets.create_model("resnet18", num_classes=10), path)


def test_timm_conv_classifier_head_is_renamed(tmp_path):
    source = resnets.create_model("resnet20", num_classes=10)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    state["head.fc.weight"] = source.fc.weight.detach()[:, :, None, None]  # 1x1-conv classifier
    state["head.fc.bias"] = source.fc.bias.detach()
    path = tmp_path / "timm_head.pth"
    torch.save(state, path)
    model = resnets.create_model("resnet20", num_classes=10)
    report = load_weights_into(model, path)
    assert report.renamed == 2 and not report.head_replaced
    torch.testing.assert_close(model.fc.weight, source.fc.weight)


@pytest.mark.parametrize(
    "kind", ["truncated_pth", "truncated_safetensors", "text", "unsafe_pickle", "tensor"]
)
def test_unreadable_files_raise_checkpoint_error_naming_the_file(tmp_path, tv_resnet18, kind):
    if kind == "truncated_pth":
        path = tmp_path / "cut.pth"
        torch.save(tv_resnet18.state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "truncated_safetensors":
        path = tmp_path / "cut.safetensors"
        save_file({k: v.contiguous() for k, v in tv_resnet18.state_dict().items()}, str(path))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "text":
        path = tmp_path / "notes.pth"
        path.write_text("these are not weights\n")
    elif kind == "unsafe_pickle":  # arbitrary objects are refused by weights_only=True
        path = tmp_path / "pickle.pth"
        torch.save(argparse.Namespace(weights=1), path)
    else:
        path = tmp_path / "tensor.pth"
        torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match=path.name):
        read_state_dict(path)


def test_missing_file():
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict("/nonexistent/weights.pth")


def test_save_and_load_weights_round_trip(tmp_path):
    model = randomize_bn(resnets.create_model("resnet20", num_classes=4, in_chans=1))
    path = save_weights(model, tmp_path / "w.safetensors", metadata={"source": "test"})
    state = load_weights(path)
    assert set(state) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key
    meta = load_weights_metadata(path)
    assert meta["format"] == "resnets-weights" and meta["source"] == "test"
    assert json.loads(meta["model"]) == model_spec(model)
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left
    # and the file loads back into a fresh model
    fresh = resnets.create_model("resnet20", num_classes=4, in_chans=1)
    load_weights_into(fresh, path)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), model(x))


def test_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    model = resnets.create_model("resnet20", num_classes=4)
    path = save_weights(model, tmp_path / "w.safetensors")
    before = path.read_bytes()

    monkeypatch.setenv("RESNETS_FAULT", "w.safetensors:write:1:enospc@5000")  # the disk fills at byte 5000
    with pytest.raises(OSError, match="No space left"):
        save_weights(resnets.create_model("resnet20", num_classes=4), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


# -- resnets import-weights ---------------------------------------------------------------------
def import_cli(argv, capsys):
    from resnets.cli import main

    capsys.readouterr()
    status = main(["import-weights", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_import_weights_writes_a_checked_weights_file(tv_file, tv_resnet18, tmp_path, capsys):
    out_path = tmp_path / "resnet18.safetensors"
    status, out, err = import_cli([str(tv_file), "--model", "resnet18", "--output", str(out_path)], capsys)
    assert status == 0, err
    assert "10 classes" in out and str(out_path) in out
    meta = load_weights_metadata(out_path)
    assert json.loads(meta["model"]) == {"name": "resnet18", "kwargs": {"in_chans": 3, "num_classes": 10}}
    assert meta["source"] == str(tv_file)
    model = resnets.create_model("resnet18", num_classes=10)
    load_weights_into(model, out_path, replace_head=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), tv_resnet18(x))


def test_import_weights_with_another_class_count_replaces_the_head(tv_file, tmp_path, capsys):
    out_path = tmp_path / "five.safetensors"
    argv = [
        str(tv_file),
        "--model",
        "resnet18",
        "--output",
        str(out_path),
        "--num-classes",
        "5",
        "--in-chans",
        "1",
    ]
    status, out, err = import_cli(argv, capsys)
    assert status == 0, err
    assert "replaced the head" in out and "adapted conv1.weight from 3 to 1" in out
    state = load_weights(out_path)
    assert state["fc.weight"].shape == (5, 512) and state["conv1.weight"].shape == (64, 1, 7, 7)


def test_import_weights_for_another_architecture_lists_the_keys_and_writes_nothing(tv_file, tmp_path, capsys):
    out_path = tmp_path / "resnet50.safetensors"
    status, _, err = import_cli([str(tv_file), "--model", "resnet50", "--output", str(out_path)], capsys)
    assert status == 2
    assert "resnet18_tv.pth" in err and "resnet50" in err and "mis-shaped" in err and "missing" in err
    assert not out_path.exists()
    status, _, err = import_cli([str(tv_file), "--model", "resnet51", "--output", str(out_path)], capsys)
    assert status == 2 and "unknown model 'resnet51'" in err
