"""CUDA-only speed options: chosen at run time, off on CPU, and every one reached by CPU-tested code."""

import pytest
import torch

from resnets import create_model
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.runtime import select_device
from resnets.train.build import build_optimizer, configure_determinism, fused_optimizer
from resnets.train.recipes import apply_overrides, get_recipe


def test_device_cuda_without_cuda_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available here; use --device cpu"):
        select_device("cuda")
    assert main(["train", "--device", "cuda", "--iterations", "1", "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "Traceback" not in err


def test_fused_optimiser_steps_on_cuda_only():
    assert fused_optimizer(torch.device("cuda")) and fused_optimizer(torch.device("cuda:1"))
    assert not fused_optimizer(torch.device("cpu"))
    model = create_model("resnet20", num_classes=10, in_chans=1)
    for name in ("fast-cpu", "paper-cifar"):
        optimizer = build_optimizer(model, get_recipe(name), torch.device("cpu"))
        assert all(not group.get("fused") for group in optimizer.param_groups)


def test_compile_mode_needs_compile_and_reaches_torch_compile(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="compile_mode 'reduce-overhead' needs compile=True"):
        apply_overrides(get_recipe("fast-cpu"), {"compile_mode": "reduce-overhead"})
    seen = {}

    def fake_compile(model, mode=None, **kwargs):  # inductor is slow to start; the mode is what matters
        seen["mode"] = mode
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    code = main(
        [
            "train",
            "--model",
            "resnet_cifar",
            "--set",
            'model_kwargs={"depth": 8}',
            "--train-subset",
            "64",
            "--test-subset",
            "32",
            "--batch-size",
            "32",
            "--iterations",
            "1",
            "--progress",
            "none",
            "--compile",
            "--compile-mode",
            "reduce-overhead",
            "--output",
            str(tmp_path / "run"),
        ]
    )
    assert code == 0 and seen["mode"] == "reduce-overhead"


def test_cudnn_benchmark_follows_deterministic(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # restored after the test
    configure_determinism(False, torch.device("cuda"))
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    configure_determinism(True, torch.device("cuda"))
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    configure_determinism(False, torch.device("cpu"))


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    """Apple silicon's MPS is chosen at run time as CUDA is (availability stubbed: no Mac here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device(None) == torch.device("mps") and select_device("auto").type == "mps"
    assert select_device("mps") == torch.device("mps") and select_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device(None).type == "cuda"  # CUDA first where a machine has both
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device(None) == torch.device("cpu")


def test_device_mps_without_mps_is_a_clear_error(capsys):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(ConfigError, match="MPS .* is not available here; use --device cpu"):
        select_device("mps")
    assert main(["train", "--device", "mps", "--iterations", "1", "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "MPS" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_operator_mps_lacks_is_one_line_naming_the_fallback():
    from resnets.errors import ResnetsError
    from resnets.train.loop import explained_failures

    missing = "The operator 'aten::foo' is not currently implemented for the MPS device. If you want ..."
    with pytest.raises(ResnetsError, match="aten::foo.*PYTORCH_ENABLE_MPS_FALLBACK=1.*--device cpu"):
        with explained_failures(torch.device("mps"), 8):
            raise NotImplementedError(missing)
    with pytest.raises(NotImplementedError):  # elsewhere it is a bug, and stays a traceback
        with explained_failures(torch.device("cpu"), 8):
            raise NotImplementedError(missing)
