"""Checkpoint files: atomic writes, rotation, safe loading, clear errors, resume fallback."""

import random

import pytest
import torch

from resnets import checkpoints as ck
from resnets import create_model, io, runs
from resnets.errors import CheckpointError
from resnets.models.registry import model_spec
from resnets.train import state


def _ckpt(model, **extra):
    return {
        "format": ck.FORMAT,
        "format_version": ck.FORMAT_VERSION,
        "model": model_spec(model),
        "state_dict": model.state_dict(),
        "epoch": 1,
        "iteration": 10,
        **extra,
    }


@pytest.fixture
def model():
    return create_model("resnet20", num_classes=10, in_chans=1)


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom while writing")


def test_save_atomic_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "c.pt"
    io.save_torch({"a": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="boom"):
        io.save_torch({"a": torch.zeros(3), "b": _Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temp file left behind


def test_write_atomic_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "report.json"
    io.write_atomic(path, lambda tmp: tmp.write_text("old"))

    def failing(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.write_atomic(path, failing)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_rotation_keeps_the_last_k(tmp_path):
    for i in range(4):
        runs.RunFolder(tmp_path).save_checkpoint({"i": i}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-1.pt", "last.pt"]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["i"] == 3
    assert torch.load(tmp_path / "last-1.pt", weights_only=True)["i"] == 2
    runs.RunFolder(tmp_path).save_checkpoint({"i": 4}, keep=1)  # a smaller keep removes the extra files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_best_is_a_link_that_survives_rotation(tmp_path):
    runs.RunFolder(tmp_path).save_checkpoint({"i": 0}, keep=2)
    io.link_atomic(tmp_path / "last.pt", tmp_path / "best.pt")
    runs.RunFolder(tmp_path).save_checkpoint({"i": 1}, keep=2)
    runs.RunFolder(tmp_path).save_checkpoint({"i": 2}, keep=2)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["i"] == 0


def test_clean_state_dict_strips_ddp_and_compile_prefixes():
    sd = {"module._orig_mod.conv1.weight": 1, "_orig_mod.fc.bias": 2, "bn1.weight": 3}
    assert ck.clean_state_dict(sd) == {"conv1.weight": 1, "fc.bias": 2, "bn1.weight": 3}


def test_load_model_rebuilds_the_architecture_and_weights(tmp_path, model):
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    io.save_torch(_ckpt(model, state_dict=prefixed), tmp_path / "c.pt")
    loaded, ckpt = ck.load_model(tmp_path / "c.pt", "cpu")
    assert model_spec(loaded) == model_spec(model) and not loaded.training
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert ckpt["iteration"] == 10


def test_load_model_uses_ema_weights_when_the_run_evaluated_them(tmp_path, model):
    from torch.optim.swa_utils import AveragedModel

    ema = AveragedModel(model, use_buffers=True)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(1.0)
    io.save_torch(_ckpt(model, ema=ema.state_dict(), eval_weights="ema"), tmp_path / "c.pt")
    loaded, _ = ck.load_model(tmp_path / "c.pt")
    torch.testing.assert_close(loaded.fc.weight, model.fc.weight + 1)


def test_truncated_file_is_a_clear_error(tmp_path, model):
    path = tmp_path / "c.pt"
    io.save_torch(_ckpt(model), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        ck.load_checkpoint(path)


def test_foreign_files_are_rejected(tmp_path, model):
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="not a resnets checkpoint.*--init-weights"):
        ck.load_checkpoint(tmp_path / "plain.pth")
    torch.save({"format": "resnets", "x": random.Random(0)}, tmp_path / "unsafe.pt")  # arbitrary object
    with pytest.raises(CheckpointError, match="cannot read"):
        ck.load_checkpoint(tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "missing.pt")


def test_another_models_weights_list_the_mismatch(model):
    other = create_model("resnet32", num_classes=10, in_chans=1)
    with pytest.raises(CheckpointError, match="unexpected.*layer1.3"):
        ck.load_state_into(model, other.state_dict())
    wide = create_model("resnet20", num_classes=100, in_chans=1)
    with pytest.raises(CheckpointError, match=r"mis-shaped: fc.weight: \(100, 64\) vs model \(10, 64\)"):
        ck.load_state_into(model, wide.state_dict())


def test_resume_falls_back_to_the_previous_good_checkpoint(tmp_path, model):
    runs.RunFolder(tmp_path).save_checkpoint(_ckpt(model, iteration=1), keep=2)
    runs.RunFolder(tmp_path).save_checkpoint(_ckpt(model, iteration=2), keep=2)
    (tmp_path / "last.pt").write_bytes(b"\x00" * 100)  # the newest one got damaged
    messages = []
    path, ckpt = runs.load_for_resume(tmp_path, log=messages.append)
    assert path.name == "last-1.pt" and ckpt["iteration"] == 1
    assert len(messages) == 1 and "last.pt" in messages[0] and "falling back" in messages[0]
    (tmp_path / "last-1.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        runs.load_for_resume(tmp_path, log=messages.append)
    with pytest.raises(CheckpointError, match="no such file or folder"):
        runs.load_for_resume(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        runs.load_for_resume(tmp_path / "empty")


def test_all_finite():
    assert ck.all_finite({"a": torch.ones(2), "b": {"c": torch.arange(3)}})
    assert not ck.all_finite({"a": torch.tensor([1.0, float("nan")])})
    assert not ck.all_finite({"ema": {"w": torch.tensor([float("inf")])}})


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    import numpy as np

    io.save_torch(
        {"rng": state.rng_state({"generator": torch.Generator().manual_seed(3).get_state()})},
        tmp_path / "r.pt",
    )
    expected = (torch.rand(3), np.random.rand(3), random.random())
    loader = state.set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    assert isinstance(loader["generator"], torch.Tensor)
