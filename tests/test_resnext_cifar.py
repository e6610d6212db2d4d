"""CIFAR ResNeXt-29 (Xie et al. 2017, Sec. 5.3, Table 7): parameter counts, the grouped 3x3 convs, where
the stride sits, the projections, and the any-depth builder's options."""

import pytest
import torch
from torch import nn

import resnets
from resnets.cli import main
from resnets.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, millions", [("resnext29_8x64d", 34.4), ("resnext29_16x64d", 68.1)])
def test_parameter_counts_are_table_7s(name, millions):
    with torch.device("meta"):
        model = resnets.create_model(name)
    assert abs(n_params(model) / 1e6 - millions) / millions < 0.001


def test_blocks_group_their_3x3_conv_and_stride_on_it():
    model = resnets.create_model("resnext_cifar", depth=11, cardinality=4, base_width=8)
    widths = []
    for stage in (model.layer1, model.layer2, model.layer3):
        block = stage[0]
        # C groups of d channels, d doubling per stage (8, 16, 32 here); the 1x1s do not stride
        assert block.conv2.groups == 4 and block.conv1.stride == (1, 1)
        assert block.conv2.weight.shape[1] == block.conv2.in_channels // 4
        widths.append(block.conv2.in_channels)
        assert isinstance(block.downsample[0], nn.Conv2d)  # option B: a projection where the shape changes
    assert widths == [32, 64, 128]
    assert [model.layer2[0].conv2.stride, model.layer3[0].conv2.stride] == [(2, 2), (2, 2)]
    assert model.conv1.out_channels == 64 and model.fc.in_features == 1024
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_named_configurations_fix_their_cardinality_and_bad_options_are_refused(capsys):
    with pytest.raises(ConfigError, match="cardinality"):
        resnets.create_model("resnext29_8x64d", cardinality=4)
    with pytest.raises(ConfigError, match="depth"):
        resnets.create_model("resnext_cifar", depth=21)  # not 9n+2
    with pytest.raises(ConfigError, match="base_width"):
        resnets.create_model("resnext_cifar", base_width=0)
    assert main(["summary", "resnext_cifar", "--set", "depth=11", "--set", "base_width=8"]) == 0
    assert "layer3" in capsys.readouterr().out
