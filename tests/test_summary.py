"""resnets.summary and the `summary` / `models` commands: Table 1 multiply-adds, per-stage rows."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import resnets
from resnets.cli import main
from resnets.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "name, kwargs, paper_gmacs",
    [
        # "Deep Residual Learning" Table 1 (the paper strides on the first 1x1 of a bottleneck)
        ("resnet18", {}, 1.8),
        ("resnet34", {}, 3.6),
        ("resnet50", {"stride_in_1x1": True}, 3.8),
        ("resnet101", {"stride_in_1x1": True}, 7.6),
        ("resnet152", {"stride_in_1x1": True}, 11.3),
    ],
)
def test_table1_multiply_adds(name, kwargs, paper_gmacs):
    result = resnets.summary(name, **kwargs)
    assert result.input_size == (3, 224, 224)
    assert abs(result.total_mult_adds / 1e9 / paper_gmacs - 1) < 0.03


def conv_linear_macs(model: nn.Module, x: torch.Tensor) -> int:
    """An independent count from layer shapes, to check FlopCounterMode's per-stage attribution."""
    total = 0

    def hook(m, _inputs, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += out.numel() * k
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize(
    "name, kwargs", [("resnet20", {}), ("preact_resnet_cifar", {"depth": 29}), ("resnext50_32x4d", {})]
)
def test_rows_add_up(name, kwargs):
    model = resnets.create_model(name, **kwargs)
    result = resnets.summary(model)
    assert [s.name for s in result.stages] == ["stem", *model.stage_names, "head"]
    assert (
        result.total_params
        == sum(p.numel() for p in model.parameters())
        == sum(s.params for s in result.stages)
    )
    x = torch.zeros(1, *model.default_input_size)
    assert result.total_mult_adds == conv_linear_macs(model, x)
    for row, stage_name in zip(result.stages[1:-1], model.stage_names, strict=True):
        assert row.blocks == len(getattr(model, stage_name))
    assert result.stages[-1].output_size == (model.num_classes,)


def test_resnet50_stage_sizes_and_v15_cost():
    paper = resnets.summary("resnet50", stride_in_1x1=True)
    v15 = resnets.summary("resnet50")
    sizes = [s.output_size for s in v15.stages[:-1]]
    assert sizes == [(64, 56, 56), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    assert [s.blocks for s in v15.stages[1:-1]] == [3, 4, 6, 3]
    assert v15.total_params == paper.total_params == 25_557_032
    assert v15.total_mult_adds > paper.total_mult_adds  # stride on the 3x3 costs more (v1.5)


def test_cifar_default_input_and_options():
    result = resnets.summary("resnet20", in_chans=1, num_classes=4)
    assert result.input_size == (1, 32, 32)
    assert result.stages[-1].output_size == (4,)
    custom = resnets.summary("resnet20", input_size=(3, 64, 64))
    assert custom.stages[1].output_size == (16, 64, 64)
    assert custom.total_mult_adds > 3.9 * resnets.summary("resnet20").total_mult_adds  # 4x the pixels


def test_table_text_and_dict():
    result = resnets.summary("resnet18")
    text = str(result)
    assert "layer4" in text and "512x7x7" in text and "11,689,512" in text and "1.81G" in text
    assert json.loads(json.dumps(result.to_dict()))["total_params"] == 11_689_512


def test_summary_errors():
    with pytest.raises(ConfigError, match="unknown option"):
        resnets.summary("resnet18", widht=2)
    with pytest.raises(ConfigError, match="input_size"):
        resnets.summary("resnet18", input_size=(3, 224))
    with pytest.raises(ConfigError, match="expects input"):
        resnets.summary("resnet18", input_size=(1, 64, 64))
    with pytest.raises(ConfigError, match="only when"):
        resnets.summary(resnets.create_model("resnet20"), num_classes=3)


def test_summary_command(capsys):
    assert main(["summary", "resnet50", "--set", "stride_in_1x1=true", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "3.86G" in out and "2048x7x7" in out
    assert main(["summary", "resnet20", "--input-size", "1", "28", "28", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_size"] == [1, 28, 28] and data["stages"][1]["output_size"] == [16, 28, 28]
    assert main(["summary", "resnet20", "--set", "shortcutt=B"]) == 2
    assert "unknown option 'shortcutt'" in capsys.readouterr().err


def test_models_command(capsys):
    assert main(["models", "wrn*"]) == 0
    assert capsys.readouterr().out.split() == ["wrn", "wrn16_8", "wrn22_8", "wrn28_10", "wrn40_4"]
    assert main(["models", "preact"]) == 0
    assert "preact_resnet1001" in capsys.readouterr().out.split()
    assert main(["models", "resnt"]) == 2
    assert "Did you mean" in capsys.readouterr().err
