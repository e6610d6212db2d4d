"""Issue 27: code written for torchvision's and timm's models runs unchanged on ours. torchvision's module
tree (manual forward, avgpool surgery, FX node names, _resnet_fpn_extractor), timm's model API
(create_model keywords, layer-wise lr decay groups, gradient checkpointing, forward_intermediates),
callable norm/act layers and TorchScript."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
import torchvision
from helpers import randomize_bn
from timm.optim import create_optimizer_v2
from torch import nn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.feature_extraction import get_graph_node_names

import resnets
from resnets.errors import CheckpointError, ConfigError
from resnets.models import create_model_from_spec, model_spec

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def torchvision_pair(name: str, **kwargs) -> tuple[nn.Module, nn.Module]:
    """torchvision's model (random BN statistics) and ours with its weights, both in eval mode."""
    theirs = randomize_bn(getattr(torchvision.models, name)(**kwargs)).eval()
    ours = resnets.create_model(name, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


def timm_pair(name: str, **kwargs) -> tuple[nn.Module, nn.Module]:
    theirs = randomize_bn(timm.create_model(name, pretrained=False, **kwargs)).eval()
    ours = resnets.create_model(name, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


# --- torchvision's module tree ------------------------------------------------------------------------


def test_manual_forward_and_avgpool_surgery_as_in_torchvision():
    theirs, ours = torchvision_pair("resnet18")

    def manual(m: nn.Module, x: torch.Tensor) -> torch.Tensor:  # torchvision's _forward_impl, line by line
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return m.fc(torch.flatten(m.avgpool(x), 1))

    with torch.no_grad():
        torch.testing.assert_close(manual(ours, X), manual(theirs, X), rtol=0, atol=0)
        theirs.avgpool = nn.AdaptiveMaxPool2d(1)
        ours.avgpool = nn.AdaptiveMaxPool2d(1)
        replaced, reference = ours(X), theirs(X)
    torch.testing.assert_close(replaced, reference, rtol=0, atol=0)
    theirs.avgpool = nn.AdaptiveAvgPool2d(1)
    with torch.no_grad():
        assert not torch.allclose(replaced, theirs(X))  # the replacement took effect
    assert ours.inplanes == theirs.inplanes == 512
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    block_children = [n for n, _ in ours.layer2[0].named_children()]
    assert set(block_children) == {n for n, _ in theirs.layer2[0].named_children()} | {"drop_path"}


def test_fine_tuning_surgery_is_recorded_in_the_spec():
    model = resnets.create_model("resnet18")
    model.fc = nn.Linear(model.fc.in_features, 10)  # torchvision's fine-tuning recipe
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)  # grey images
    spec = model_spec(model)
    assert (
        (spec["kwargs"]["num_classes"], spec["kwargs"]["in_chans"])
        == (10, 1)
        == (model.num_classes, model.in_chans)
    )
    rebuilt = create_model_from_spec(spec)  # what eval and export do with a checkpoint
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert model(X[:, :1]).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d", "wide_resnet50_2"])
def test_graph_node_names_equal_torchvisions(name):
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)()
        ours = resnets.create_model(name)
    assert get_graph_node_names(ours) == get_graph_node_names(theirs)


def test_assigning_the_other_librarys_name_raises_and_timm_variants_have_timms_names():
    ours = resnets.create_model("resnet18")
    with pytest.raises(AttributeError, match="assign model.avgpool instead of model.global_pool"):
        ours.global_pool = nn.AdaptiveMaxPool2d(1)
    with torch.device("meta"):
        theirs, variant = timm.create_model("resnet50d"), resnets.create_model("resnet50d")
    assert [n for n, _ in variant.named_children()] == [n for n, _ in theirs.named_children()]
    with pytest.raises(AttributeError, match="assign model.global_pool instead of model.avgpool"):
        variant.avgpool = nn.AdaptiveMaxPool2d(1)
    variant.global_pool = nn.AdaptiveMaxPool2d(1)
    assert variant.get_classifier(name_only=True) == theirs.get_classifier(name_only=True) == "fc"


def test_resnet_fpn_extractor_takes_our_resnet():
    torch.manual_seed(0)
    theirs_net, ours_net = torchvision_pair("resnet18")
    theirs = _resnet_fpn_extractor(theirs_net, trainable_layers=3).eval()
    ours = _resnet_fpn_extractor(ours_net, trainable_layers=3).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # the same modules under the same names
    assert [n for n, p in ours.named_parameters() if p.requires_grad] == [
        n for n, p in theirs.named_parameters() if p.requires_grad
    ]
    with torch.no_grad():
        got, expected = ours(X), theirs(X)
    assert list(got) == list(expected) == ["0", "1", "2", "3", "pool"]
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


# --- timm's model API ---------------------------------------------------------------------------------


def test_timm_and_torchvision_create_keywords(tmp_path, monkeypatch):
    model = resnets.create_model(
        "resnet18",
        pretrained=False,
        weights=None,
        progress=False,
        cache_dir=None,
        scriptable=True,
        exportable=True,
        no_jit=False,
        pretrained_cfg_overlay={"mean": (0.5, 0.5, 0.5)},
    )
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and "pretrained" not in model_spec(model)["kwargs"]
    # Weights requests go to the registry (tests/test_pretrained_*.py); offline, with an empty cache, each
    # says in one line which file to put where.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    for request, file in (
        ({"pretrained": True}, "resnet18-f37072fd.pth"),
        ({"pretrained": "a1_in1k"}, "resnet18.a1_in1k.safetensors"),
        ({"weights": "IMAGENET1K_V1"}, "resnet18-f37072fd.pth"),
    ):
        where = tmp_path / "torch/hub/checkpoints" / file
        with pytest.raises(CheckpointError, match=f"put it at {where}") as raised:
            resnets.create_model("resnet18", **request)
        assert "\n" not in str(raised.value)
    reference = randomize_bn(torchvision.models.resnet18()).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    loaded = resnets.create_model("resnet18", checkpoint_path=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), reference(X), rtol=0, atol=0)


def _groups(model: nn.Module) -> list[tuple[float, float, int]]:
    optimizer = create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4, layer_decay=0.75)
    return sorted(
        (round(g["lr_scale"], 6), g["weight_decay"], sum(p.numel() for p in g["params"]))
        for g in optimizer.param_groups
    )


@pytest.mark.parametrize("name", ["resnet50", "resnet50d", "resnetv2_50"])
def test_layer_decay_groups_equal_timms(name):
    with torch.device("meta"):
        ours, theirs = resnets.create_model(name), timm.create_model(name)
    groups = _groups(ours)
    assert groups == _groups(theirs)
    assert len({scale for scale, _, _ in groups}) == 18  # stem, 16 blocks, head
    assert ours.group_matcher() == theirs.group_matcher() or name == "resnetv2_50"


@pytest.mark.parametrize("name", ["vgg11_bn", "densenet121", "inception_v4", "inception_resnet_v2"])
def test_layer_decay_groups_of_the_survey_nets_equal_timms(name):
    with torch.device("meta"):
        ours, theirs = resnets.create_model(name), timm.create_model(name)
    assert _groups(ours) == _groups(theirs)


def test_grad_checkpointing_gives_equal_gradients():
    model = resnets.create_model("resnet18", num_classes=5, drop_path_rate=0.2)

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)  # the same stochastic-depth draws; checkpointing replays them
        model(X).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = gradients()
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    checkpointed = gradients()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet18", "resnetv2_50"])
def test_forward_intermediates_equal_timms(name):
    theirs, ours = timm_pair(name)
    calls = [
        {},
        {"indices": 2},
        {"indices": [0, -1], "norm": True},
        {"indices": [1, 2], "stop_early": True},
        {"indices": 3, "intermediates_only": True},
    ]
    with torch.no_grad():
        for kwargs in calls:
            got, expected = ours.forward_intermediates(X, **kwargs), theirs.forward_intermediates(X, **kwargs)
            if not kwargs.get("intermediates_only"):
                torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
                got, expected = got[1], expected[1]
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# --- norm_layer and act_layer: any callable ------------------------------------------------------------


def test_callable_norm_layer_matches_torchvision():
    norm = functools.partial(nn.GroupNorm, 16)
    theirs, ours = torchvision_pair("resnet18", norm_layer=norm)
    with torch.no_grad():
        torch.testing.assert_close(ours(X), theirs(X), rtol=0, atol=0)
    lam = resnets.create_model("resnet18", norm_layer=lambda c: nn.BatchNorm2d(c, eps=1e-3))
    assert lam.bn1.eps == 1e-3
    with pytest.raises(ConfigError, match="pass norm_layer=<the callable> again"):
        create_model_from_spec(model_spec(lam))


def test_callable_act_layer_matches_timm():
    theirs, ours = timm_pair("resnet18", act_layer=nn.SiLU)
    assert isinstance(ours.layer1[0].relu, nn.SiLU)
    with torch.no_grad():
        torch.testing.assert_close(ours(X), theirs(X), rtol=1e-5, atol=1e-5)
    assert model_spec(ours)["kwargs"]["act_layer"] == "silu"
    assert isinstance(resnets.create_model("resnet50d", act_layer="gelu").conv1[2], nn.GELU)
    with pytest.raises(ConfigError, match="unknown act_layer"):
        resnets.create_model("resnet18", act_layer="rleu")


# --- TorchScript ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated, still used to deploy
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet18", {}),
        ("resnet50d", {"drop_path_rate": 0.1}),
        ("seresnet18", {}),
        ("resnetv2_50", {}),
        ("resnet20", {}),
        ("preact_resnet_cifar", {"depth": 11}),
        ("wrn16_8", {}),
        ("resnet18", {"features_only": True, "out_indices": (1, 3)}),
    ],
)
def test_torchscript_computes_what_eager_does(name, kwargs):
    model = randomize_bn(resnets.create_model(name, **kwargs)).eval()
    x = X[:1, :, :32, :32] if model.default_input_size[1] == 32 else X[:1]
    scripted = torch.jit.script(model)
    with torch.no_grad():
        expected, got = model(x), scripted(x)
    for a, b in zip(
        expected if isinstance(expected, list) else [expected],
        got if isinstance(got, list) else [got],
        strict=True,
    ):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    with pytest.raises(torch.jit.Error, match="expects input of shape"):
        scripted(x[:, :1])


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize(
    "name, side", [("vgg11_bn", 32), ("densenet121", 32), ("inception_v4", 75), ("inception_resnet_v2", 75)]
)
def test_torchscript_of_the_survey_nets_torchvision_and_timm_script(name, side):
    # Their reference's forward under torch.jit.is_scripting(); the other survey families do not script
    # (docs/models.md says why).
    model = randomize_bn(resnets.create_model(name, num_classes=10)).eval()
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)
    classifier = {"vgg11_bn": "classifier.6", "densenet121": "classifier", "inception_v4": "last_linear"}
    assert model.get_classifier(name_only=True) == classifier.get(name, "classif")
