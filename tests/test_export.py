"""BN folding, ONNX (checked in onnxruntime) and torch.export (.pt2) of a trained checkpoint."""

from __future__ import annotations

import onnxruntime
import pytest
import torch
from helpers import randomize_bn
from tiny_run import run_cli, trained_run

import resnets
from resnets.checkpoints import load_model
from resnets.errors import ResnetsError
from resnets.export import conv_bn_pairs, export_pt2, fold_bn


def bn_names(model: torch.nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}


@pytest.mark.parametrize(
    "name,kwargs,side",
    [
        ("resnet_cifar", {"depth": 8}, 32),  # option A shortcuts
        ("resnet18", {}, 64),  # ImageNet stem, projection shortcuts (conv + BN)
        ("resnext50_32x4d", {}, 32),  # grouped convolutions, bottlenecks
        ("resnet_cifar", {"depth": 8, "shortcut": "C"}, 32),  # a projection on every unit
        ("resnet_cifar", {"depth": 8, "shortcut_kind": "exclusive_gating"}, 32),  # a 1x1 gate reads x too
    ],
)
def test_fold_bn_standard_nets_folds_every_bn(name, kwargs, side):
    model = randomize_bn(resnets.create_model(name, num_classes=10, **kwargs))
    x = torch.randn(3, 3, side, side)
    folded = fold_bn(model)
    assert bn_names(folded) == set()  # in an original ResNet every BN follows its conv
    assert bn_names(model)  # the model itself is untouched
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("kwargs", [{"depth": 11, "bottleneck": True}, {"depth": 8, "bottleneck": False}])
def test_fold_bn_preactivation_nets_leaves_the_bns_after_additions(kwargs):
    model = randomize_bn(resnets.create_model("preact_resnet_cifar", num_classes=10, **kwargs))
    x = torch.randn(3, 3, 32, 32)
    folded = fold_bn(model)
    # BN-ReLU that open a unit (all but the first) and the final BN-ReLU read a sum: they stay.
    after_additions = {f"{n}.bn1" for n, unit in model.residual_blocks() if unit.bn1 is not None}
    after_additions.add("final_bn")
    assert bn_names(folded) == after_additions
    assert isinstance(folded.bn1, torch.nn.Identity)  # the stem's BN follows conv1 and folds
    assert len(conv_bn_pairs(model)) == len(bn_names(model)) - len(after_additions)
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max() <= 1e-5


def test_fold_bn_keeps_a_bn_that_follows_an_addition():
    model = randomize_bn(resnets.create_model("resnet_cifar", depth=8, unit="bn_after_add"))
    folded = fold_bn(model)
    # Identity Mappings Fig. 4b: bn2 normalises x + branch, so only bn1 (after conv1) folds.
    assert bn_names(folded) == {n for n in bn_names(model) if n.endswith(".bn2")}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max() <= 1e-5


# -- exports of a trained checkpoint ------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return trained_run(tmp_path_factory) / "last.pt"


@pytest.fixture(scope="module")
def onnx_export(checkpoint, tmp_path_factory):
    """`resnets export --format onnx --fold-bn`, once for the module (the dynamo exporter is slow)."""
    import contextlib
    import io

    from resnets.cli import main

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(
            [
                "export",
                "--checkpoint",
                str(checkpoint),
                "--format",
                "onnx",
                "--fold-bn",
                "--output",
                str(path),
            ]
        )
    return status, path, out.getvalue()


def test_onnx_export_runs_in_onnxruntime_like_eager_pytorch(checkpoint, onnx_export):
    status, path, out = onnx_export
    assert status == 0 and path.is_file()
    assert "onnxruntime vs PyTorch max abs diff" in out and "folded" in out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [1, 28, 28]  # dynamic batch
    model, _ = load_model(checkpoint, "cpu")
    for batch in (1, 5):
        x = torch.randn(batch, 1, 28, 28)
        (logits,) = session.run(None, {inp.name: x.numpy()})
        with torch.no_grad():  # against the unfolded model: checks folding and export together
            assert abs(torch.from_numpy(logits) - model(x)).max() <= 1e-4


def test_pt2_export_reloads_and_matches(checkpoint, tmp_path, capsys):
    path = tmp_path / "model.pt2"
    status, out, err = run_cli(
        ["export", "--checkpoint", str(checkpoint), "--format", "pt2", "--output", str(path)], capsys
    )
    assert status == 0, err
    assert "reloaded program vs PyTorch max abs diff" in out
    program = torch.export.load(str(path))
    model, _ = load_model(checkpoint, "cpu")
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]


def test_export_default_output_and_input_size(checkpoint, tmp_path, capsys):
    copy = tmp_path / "run.pt"
    copy.write_bytes(checkpoint.read_bytes())
    argv = ["export", "--checkpoint", str(copy), "--format", "pt2"]
    status, out, err = run_cli([*argv, "--input-size", "1", "20", "24"], capsys)
    assert status == 0, err
    assert (tmp_path / "run.pt2").is_file() and "N x 1 x 20 x 24" in out
    status, _, err = run_cli([*argv, "--input-size", "3", "28", "28"], capsys)
    assert status == 2 and "1 input channels" in err


def test_a_failed_check_leaves_no_file(tmp_path):
    model = resnets.create_model("resnet_cifar", depth=8).eval()
    path = tmp_path / "model.pt2"
    with pytest.raises(ResnetsError, match="differs from PyTorch"):
        export_pt2(model, path, torch.randn(2, 3, 16, 16), tolerance=-1.0)  # no result can pass
    assert list(tmp_path.iterdir()) == []


def test_export_of_a_foreign_checkpoint_is_an_error(tmp_path, capsys):
    path = tmp_path / "state_dict.pth"
    torch.save(resnets.create_model("resnet_cifar", depth=8).state_dict(), path)
    status, _, err = run_cli(["export", "--checkpoint", str(path), "--format", "onnx"], capsys)
    assert status == 2 and "state_dict.pth" in err and "not a resnets checkpoint" in err


# -- exports that describe themselves (issue 27) ----------------------------------------------------------
@pytest.fixture(scope="module")
def gray_images(tmp_path_factory):
    """Two 28x28 grey PNGs: Fashion-MNIST's size, so no resizing is involved."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("gray")
    rng = np.random.default_rng(1)
    paths = [folder / f"{i}.png" for i in range(2)]
    for path in paths:
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), "L").save(path)
    return paths


def test_onnx_metadata_alone_reproduces_predicts_top1(checkpoint, onnx_export, gray_images, capsys):
    import json

    import numpy as np
    import onnx
    from PIL import Image

    _, path, _ = onnx_export
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}  # plain onnx, no resnets
    assert props["model_name"] == "resnet_cifar" and props["layout"] == "NCHW"
    assert json.loads(props["input_size"]) == [1, 28, 28] and props["input_scale"] == "1/255"
    classes, mean, std = (json.loads(props[k]) for k in ("class_names", "mean", "std"))
    assert len(classes) == 10 and len(mean) == len(std) == 1 and props["normalization"] == "per_channel"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    files = [str(p) for p in gray_images]
    for command in (["--checkpoint", str(checkpoint)], ["--checkpoint", str(path)]):
        status, out, err = run_cli(["predict", *command, *files, "--json"], capsys)
        assert status == 0, err
        result = json.loads(out)  # --json: stdout is the JSON object alone
        for file, prediction in zip(files, result["predictions"], strict=True):
            pixels = np.asarray(Image.open(file), dtype=np.float32)[None, None]
            x = ((pixels / 255 - np.float32(mean[0])) / np.float32(std[0])).astype(np.float32)
            (logits,) = session.run(None, {session.get_inputs()[0].name: x})
            assert prediction["top"][0]["class"] == classes[int(logits.argmax())]
        assert result["model"] == "resnet_cifar"


def test_pt2_extra_files_carry_the_metadata_and_predict_uses_them(checkpoint, tmp_path, gray_images, capsys):
    import json

    from resnets.export import METADATA_KEYS

    path = tmp_path / "model.pt2"
    status, _, err = run_cli(
        ["export", "--checkpoint", str(checkpoint), "--format", "pt2", "--output", str(path)], capsys
    )
    assert status == 0, err
    extra = dict.fromkeys(METADATA_KEYS, "")
    torch.export.load(str(path), extra_files=extra)
    _, ckpt = load_model(checkpoint, "cpu")
    assert extra["model_name"] == "resnet_cifar"
    assert json.loads(extra["class_names"]) == ckpt["data"]["classes"]
    assert json.loads(extra["resnets_data"]) == ckpt["data"]
    files = [str(p) for p in gray_images]
    outputs = []
    for source in (checkpoint, path):
        status, out, err = run_cli(["predict", "--checkpoint", str(source), *files, "--json"], capsys)
        assert status == 0, err
        outputs.append(json.loads(out)["predictions"])
    for ours, reference in zip(*outputs, strict=True):
        assert [e["index"] for e in ours["top"]] == [e["index"] for e in reference["top"]]
        assert [e["probability"] for e in ours["top"]] == pytest.approx(
            [e["probability"] for e in reference["top"]], abs=1e-5
        )
