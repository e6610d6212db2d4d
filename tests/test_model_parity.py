"""torchvision parity: its state_dicts load into our models (strict) and give the same outputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import resnets

TORCHVISION_NAMES = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def give_bn_real_statistics(model: nn.Module) -> None:
    """Non-trivial BN: random affine parameters, running statistics from one train-mode forward."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.momentum = 1.0  # running stats := this batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64))
    model.eval()


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_torchvision_state_dict_loads_and_outputs_agree(name):
    reference = getattr(torchvision.models, name)(weights=None)
    give_bn_real_statistics(reference)
    ours = resnets.create_model(name)
    assert list(ours.state_dict()) == list(reference.state_dict())  # same names, same order
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert expected.std() > 1e-3  # the comparison is not between two constants
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_stage_features_match_torchvision_layers():
    reference = torchvision.models.resnet50(weights=None).eval()
    ours = resnets.create_model("resnet50").eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        for i, stage in enumerate(ours.forward_stages(x)):
            y = getattr(reference, f"layer{i + 1}")(y)
            torch.testing.assert_close(stage, y)
