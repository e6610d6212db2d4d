"""timm's ResNet variants: ResNet-C/D ("Bag of Tricks"), SE-ResNet(X)t, GroupNorm, ResNet v2. timm's
state dicts load with strict=True and give the same outputs, parameter counts equal timm's, and
``import-weights`` / ``--init-weights`` (``load_weights_into``) take timm's files. timm is a test
dependency: its models are built with random weights, nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import resnets
from resnets.errors import CheckpointError
from resnets.weights import load_weights, load_weights_into

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.usefixtures("one_thread")

# Every variant registered under timm's name (timm's ResNet/ResNeXt/wide names are torchvision's, checked in
# test_model_parity.py).
VARIANTS = [
    "resnet18d",
    "resnet34d",
    "resnet26",
    "resnet26d",
    "resnet50c",
    "resnet50d",
    "resnet50s",
    "resnet50t",
    "resnet101c",
    "resnet101d",
    "resnet152c",
    "resnet152d",
    "resnet200d",
    "resnet50_gn",
    "seresnet18",
    "seresnet34",
    "seresnet50",
    "seresnet101",
    "seresnet152",
    "seresnet152d",
    "seresnext26d_32x4d",
    "seresnext50_32x4d",
    "seresnext101_32x4d",
    "resnetv2_50",
    "resnetv2_50d",
    "resnetv2_101",
    "resnetv2_101d",
]
# Outputs compared with real weights: every stem, shortcut, attention and norm kind, and the list.
COMPARED = [
    "resnet18d",
    "resnet26d",
    "resnet50c",
    "resnet50d",
    "resnet50t",
    "resnet101d",
    "resnet152d",
    "resnet50_gn",
    "seresnet18",
    "seresnet50",
    "seresnext50_32x4d",
    "resnetv2_50",
    "resnetv2_50d",
    "resnetv2_101",
]


def gentle_random_bn(model: nn.Module) -> nn.Module:
    """BN statistics and affine parameters away from their defaults, with scales below 1 so that random
    100-layer nets keep outputs of order 1; eval mode."""
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            m.weight.data.copy_(
                torch.rand(m.num_channels if isinstance(m, nn.GroupNorm) else m.num_features, generator=g)
                * 0.4
                + 0.3
            )
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_same_outputs(got: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    scale = expected.abs().max().item()
    assert expected.std() > 1e-3  # not two constants
    assert (got - expected).abs().max().item() <= tolerance * max(1.0, scale)


def test_every_variant_is_registered():
    assert set(VARIANTS) <= set(resnets.list_models())
    assert set(COMPARED) <= set(VARIANTS)


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_counts_and_keys_equal_timms(name):
    with torch.device("meta"):
        theirs = timm.create_model(name, pretrained=False)
        ours = resnets.create_model(name)
    assert n_params(ours) == n_params(theirs)
    their_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    if name.startswith("resnetv2"):  # timm's ResNet v2 names (stages.0.blocks.0.norm1 ...) load renamed
        assert len(ours.state_dict()) == len(their_shapes)
    else:
        assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == their_shapes
        assert list(ours.state_dict()) == list(their_shapes)  # and in timm's order


@pytest.mark.parametrize("name", COMPARED)
def test_timm_state_dict_loads_strictly_and_outputs_agree(name):
    torch.manual_seed(0)
    reference = gentle_random_bn(timm.create_model(name, pretrained=False))
    with torch.device("meta"):  # no weights of its own to initialise: it takes timm's tensors
        ours = resnets.create_model(name)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    assert not any(t.is_meta for t in ours.state_dict().values())
    ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_same_outputs(ours(x), reference(x))
        if name in ("resnet50d", "resnetv2_50"):  # and the pre-logit features timm users take
            assert_same_outputs(
                ours.forward_head(ours.forward_features(x), pre_logits=True),
                reference.forward_head(reference.forward_features(x), pre_logits=True),
            )


def test_resnet_v2_layout_is_an_option_of_the_preact_nets():
    ours = resnets.create_model("preact_resnet50", stem_norm=False)
    assert ours.bn1 is None and ours.layer1[0].bn1 is not None  # every block pre-activates itself
    reference = gentle_random_bn(timm.create_model("resnetv2_50", pretrained=False))
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_same_outputs(ours.eval()(x), reference(x))
    # The Identity Mappings layout (BN-ReLU in the stem, a bare first block) is another network: refused.
    refused = r"(?s)Missing key\(s\).*bn1\.weight.*Unexpected key\(s\).*layer1\.0\.bn1"
    with pytest.raises(RuntimeError, match=refused):
        resnets.create_model("preact_resnet50").load_state_dict(reference.state_dict(), strict=True)


@pytest.mark.parametrize(
    "name, suffix", [("resnet26d", ".pth"), ("resnetv2_50", ".safetensors"), ("seresnet18", ".pth")]
)
def test_import_weights_takes_timm_files(tmp_path, capsys, name, suffix):
    from resnets.cli import main

    reference = gentle_random_bn(timm.create_model(name, pretrained=False, num_classes=10))
    source = tmp_path / f"{name}{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(source)) if suffix == ".safetensors" else torch.save(state, source)
    output = tmp_path / "ours.safetensors"
    capsys.readouterr()
    assert main(["import-weights", str(source), "--model", name, "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "10 classes" in printed
    if name.startswith("resnetv2"):
        assert "renamed" in printed  # timm's v2 names
    model = resnets.create_model(name, num_classes=10)
    load_weights_into(model, output, replace_head=False)  # what `resnets train --init-weights` loads
    assert set(load_weights(output)) == set(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_same_outputs(model.eval()(x), reference(x))


def test_init_weights_from_timm_with_another_head(tmp_path):
    reference = gentle_random_bn(timm.create_model("resnetv2_50", pretrained=False))
    path = tmp_path / "resnetv2_50.pth"
    torch.save(reference.state_dict(), path)
    model = resnets.create_model("resnetv2_50", num_classes=5)
    report = load_weights_into(model, path)
    assert report.head_replaced and report.renamed == len(reference.state_dict())  # every v2 name
    torch.testing.assert_close(model.layer4[2].conv3.weight, reference.stages[3].blocks[2].conv3.weight)
    headless = resnets.create_model("resnet26d", num_classes=0)
    torch.save(timm.create_model("resnet26d", pretrained=False).state_dict(), tmp_path / "r26d.pth")
    report = load_weights_into(headless, tmp_path / "r26d.pth")
    assert any("no classifier" in note for note in report.notes)
    assert report.loaded == len(headless.state_dict())
    with pytest.raises(CheckpointError, match="resnet50d.*missing"):
        with torch.device("meta"):
            v1 = resnets.create_model("resnet50d")
        load_weights_into(v1, path)  # v2 weights, v1 net
