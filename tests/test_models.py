"""The model zoo: every registered model trains, parameter counts match the papers, options and errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import resnets
from resnets.errors import ConfigError
from resnets.models import create_model_from_spec, model_spec
from resnets.models.blocks import PreActBlock
from resnets.models.layers import SHORTCUT_KINDS, ShortcutA

ALL_MODELS = resnets.list_models()
# The survey families (issue 16) that this file's forward/backward test cannot take as it is: the 299x299
# nets need 75x75 inputs (this test gives the ImageNet family 32x32), the nets without BN fail its
# "each BN ran once" check by having none, and VGG-13/16/19 cost 2 s a model (130-144M parameters) for
# the code path that vgg11_bn already runs here. tests/test_survey_models.py runs the 75x75 nets and
# highway19 forward and backward (every parameter gets a gradient), vgg16 against torchvision, and the
# keys and parameter counts of every VGG.
SURVEY_FORWARD_SKIPS = {
    **dict.fromkeys(
        ["inception_v4", "inception_resnet_v1", "inception_resnet_v2", "polynet"],
        "needs 75x75 inputs; test_survey_models runs it at 75x75",
    ),
    **dict.fromkeys(
        ["highway19", "highway_cifar", "vgg11", "vgg16"],
        "has no BN layer; test_survey_models runs it (vgg16: against torchvision)",
    ),
    **dict.fromkeys(
        ["vgg13", "vgg13_bn", "vgg16_bn", "vgg19", "vgg19_bn"],
        "130-144M parameters, the code path of vgg11_bn; test_survey_models checks its keys",
    ),
}
UNITS = ["original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact"]


pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small_input(model: nn.Module, cifar_side: int = 32, imagenet_side: int = 64) -> torch.Tensor:
    """A batch of 2 small images: ``cifar_side`` for CIFAR nets, ``imagenet_side`` for the ImageNet family."""
    c, h, _ = model.default_input_size
    side = cifar_side if h == 32 else imagenet_side
    return torch.randn(2, c, side, side)


# --- every registered name ---------------------------------------------------------------------------


@pytest.mark.parametrize("index_name", list(enumerate(ALL_MODELS)), ids=lambda p: p[1])
def test_every_model_forward_backward(index_name):
    index, name = index_name
    if name in SURVEY_FORWARD_SKIPS:
        pytest.skip(SURVEY_FORWARD_SKIPS[name])
    in_chans, num_classes = (1, 7) if index % 2 else (3, 5)  # vary both across the zoo
    model = resnets.create_model(name, num_classes=num_classes, in_chans=in_chans)
    x = small_input(model, cifar_side=16, imagenet_side=32)  # last stages on 4x4 / 1x1 maps: fast
    assert x.shape[1] == in_chans
    out = model(x)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    # each BN ran exactly once (a unit must not recompute its pre-activation for the shortcut)
    bn_runs = {int(m.num_batches_tracked) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert bn_runs == (set() if name.endswith("_gn") else {1})
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: parameters without a gradient: {missing[:5]}"
    if name == "plain1202":
        # Gradients of deep plain nets with BN grow exponentially with depth (Yang et al. 2019, "A Mean
        # Field Theory of Batch Normalization"): plain1202's overflow float32. That is the degradation the
        # paper's plain baselines exist to show, not a bug; the fc's gradient is still finite.
        assert torch.isfinite(model.fc.weight.grad).all()
        return
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))  # conv1, or conv1.0 (deep stem)
    assert model.fc.weight.grad.abs().sum() > 0 and first_conv.weight.grad.abs().sum() > 0


def test_registry_lists_the_issue_names():
    expected = {
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet200",
        "plain18",
        "plain34",
        "plain50",
        "plain101",
        "plain152",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "wide_resnet50_2",
        "wide_resnet101_2",
        "preact_resnet18",
        "preact_resnet34",
        "preact_resnet50",
        "preact_resnet101",
        "preact_resnet152",
        "preact_resnet200",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet1202",
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        "plain110",
        "plain1202",
        "preact_resnet110",
        "preact_resnet164",
        "preact_resnet1001",
        "wrn16_8",
        "wrn22_8",
        "wrn28_10",
        "wrn40_4",
    }
    assert expected <= set(ALL_MODELS)
    assert resnets.list_models("wrn*") == ["wrn", "wrn16_8", "wrn22_8", "wrn28_10", "wrn40_4"]
    natural_order = ["resnet18", "resnet18d", "resnet101", "resnet101c"]
    assert resnets.list_models("resnet1*")[:4] == natural_order


# --- parameter counts (papers) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, millions",
    [
        # "Deep Residual Learning" Table 6 (CIFAR-10)
        ("resnet20", "0.27"),
        ("resnet32", "0.46"),
        ("resnet44", "0.66"),
        ("resnet56", "0.85"),
        ("resnet110", "1.7"),
        ("resnet1202", "19.4"),
        # Identity Mappings (CIFAR-10), WRN paper Table 2 / 4
        ("preact_resnet164", "1.7"),
        ("wrn40_4", "8.9"),
        ("wrn16_8", "11.0"),
        ("wrn22_8", "17.2"),
        ("wrn28_10", "36.5"),
    ],
)
def test_parameter_counts_match_papers(name, millions):
    decimals = len(millions.split(".")[1])
    assert round(n_params(resnets.create_model(name)) / 1e6, decimals) == float(millions)


def test_resnet1001_parameter_count():
    model = resnets.create_model("preact_resnet1001")
    # The paper's 10.2M counts the conv and fc weights; the BN scales and shifts add 0.15M more. The
    # structure is the authors' (KaimingHe/resnet-1k-layers): only the counting convention differs.
    weights = sum(
        p.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear) for p in m.parameters()
    )
    assert round(weights / 1e6, 1) == 10.2
    assert len(model.residual_blocks()) == 333  # 9n+2 = 1001 -> n = 111 per stage


def test_resnet50_has_torchvision_parameter_count():
    assert n_params(resnets.create_model("resnet50")) == 25_557_032


def test_shortcut_options_parameters():
    for depth, plain in (("resnet34", "plain34"), ("resnet20", "plain20"), ("resnet110", "plain110")):
        a, b, c = (resnets.create_model(depth, shortcut=s) for s in "ABC")
        assert not any("downsample" in name for name, _ in a.named_parameters())  # option A: no params
        assert n_params(a) == n_params(resnets.create_model(plain))
        assert n_params(a) < n_params(b) < n_params(c)
    assert resnets.create_model("resnet20").residual_blocks()[3][1].downsample.__class__ is ShortcutA


def test_kaiming_init_fan_out():
    model = resnets.create_model("resnet50")
    w = model.layer3[1].conv2.weight  # 3x3, 256 -> 256
    expected_std = (2.0 / (256 * 9)) ** 0.5
    assert abs(w.std().item() / expected_std - 1) < 0.05
    assert all(torch.all(m.weight == 1) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


# --- interface: stages, features, head, blocks -----------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet50", "preact_resnet18", "resnext50_32x4d"])
def test_imagenet_forward_stages_strides(name):
    model = resnets.create_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stages = model.forward_stages(x)
        features = model.forward_features(x)
    # timm's numbering: feature map 0 is the stem (stride 2), then the stages
    assert [info["reduction"] for info in model.feature_info] == [2, 4, 8, 16, 32]
    for out, info in zip(stages, model.feature_info[1:], strict=True):
        assert out.shape == (1, info["num_chs"], 64 // info["reduction"], 64 // info["reduction"])
    assert torch.equal(stages[-1], features)
    assert features.shape[1] == model.num_features == model.fc.in_features


def test_cifar_forward_stages_strides():
    model = resnets.create_model("resnet20")
    shapes = [tuple(t.shape) for t in model.forward_stages(torch.randn(2, 3, 32, 32))]
    assert shapes == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    assert [i["reduction"] for i in model.feature_info] == [1, 1, 2, 4]  # the stem, then the stages


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet18", {}),
        ("preact_resnet18", {}),
        ("resnet20", {}),
        ("preact_resnet_cifar", {"depth": 11}),
        ("wrn16_8", {}),
    ],
)
def test_features_then_head_equals_forward(name, kwargs):
    model = resnets.create_model(name, num_classes=3, **kwargs).eval()
    x = small_input(model)
    with torch.no_grad():
        full = model(x)
        split = model.forward_head(model.forward_features(x))
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(split, full)
    assert pooled.shape == (2, model.num_features)


@pytest.mark.parametrize(
    "name, kwargs, n_units, norms_per_unit",
    [
        ("resnet20", {}, 9, 2),
        ("plain20", {}, 9, 2),
        ("resnet50", {}, 16, 1),
        ("preact_resnet_cifar", {"depth": 29}, 9, 0),
        ("preact_resnet18", {}, 8, 0),
        ("resnet20", {"shortcut": "C"}, 9, 2),
        ("wrn16_8", {}, 6, 0),
        ("resnet20", {"unit": "bn_after_add"}, 9, 1),
    ],
)
def test_units_and_their_shortcuts(name, kwargs, n_units, norms_per_unit):
    # zero_init_last zeroes each branch, so (eval mode) every residual unit must compute its shortcut,
    # post-activation units through their final ReLU.
    residual = not name.startswith("plain")
    if residual:
        kwargs = {**kwargs, "zero_init_last": True}
    model = resnets.create_model(name, **kwargs).eval()
    blocks = model.residual_blocks()
    assert len(blocks) == n_units and blocks[0][0] == "layer1.0"
    x = model.forward_stem(small_input(model))
    with torch.no_grad():
        for qual_name, unit in blocks:
            assert unit.residual == residual
            assert len(unit.response_norms()) == norms_per_unit
            assert all(isinstance(bn, nn.BatchNorm2d) for bn in unit.response_norms())
            y, s = unit(x), unit.forward_shortcut(x)
            assert s.shape == y.shape, qual_name
            if residual:
                expected = s if isinstance(unit, PreActBlock) else unit.relu(s)
                if kwargs.get("unit") == "bn_after_add":
                    expected = unit.relu(unit.bn2(s))
                torch.testing.assert_close(y, expected, msg=qual_name)
            x = y


def test_plain_units_shortcut_is_parameter_free():
    model = resnets.create_model("plain34")
    for _, unit in model.residual_blocks():
        assert unit.downsample is None or n_params(unit.downsample) == 0
    with pytest.raises(ConfigError, match="fixed"):
        resnets.create_model("plain34", shortcut="B")


def test_stride_in_1x1_moves_the_stride():
    v15 = resnets.create_model("resnet50")
    paper = resnets.create_model("resnet50", stride_in_1x1=True)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)
    assert n_params(v15) == n_params(paper)


def test_preact_nets_end_with_bn_relu():
    model = resnets.create_model("preact_resnet18").eval()
    assert isinstance(model.final_bn, nn.BatchNorm2d) and model.final_bn.num_features == 512
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 64, 64)).min() >= 0  # after the final ReLU
    first, later = model.residual_blocks()[0][1], model.residual_blocks()[1][1]
    assert first.bn1 is None and isinstance(later.bn1, nn.BatchNorm2d)  # conv1-BN-ReLU feeds unit 1


# --- the Identity Mappings ablations and WRN dropout --------------------------------------------------


def train_one_step(model: nn.Module) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("kind", SHORTCUT_KINDS)
def test_shortcut_kinds_train(kind):
    model = resnets.create_model("resnet20", shortcut_kind=kind)
    train_one_step(model)
    base = n_params(resnets.create_model("resnet20"))
    if kind in ("identity", "constant_scaling", "dropout"):
        assert n_params(model) == base
    elif kind == "conv1x1":
        assert n_params(model) == n_params(resnets.create_model("resnet20", shortcut="C"))
    else:  # a 1x1 conv gate (with bias) per unit, bias initialised to -6 (Identity Mappings Table 1)
        gates = [unit.merge.gate for _, unit in model.residual_blocks()]
        assert len(gates) == 9 and n_params(model) > base


def test_gate_bias_starts_at_minus_six():
    model = resnets.create_model("resnet20", shortcut_kind="exclusive_gating")
    for _, unit in model.residual_blocks():
        assert torch.all(unit.merge.gate.bias == -6.0)
    model = resnets.create_model("resnet20", shortcut_kind="shortcut_only_gating", gate_bias=0)
    assert all(torch.all(unit.merge.gate.bias == 0) for _, unit in model.residual_blocks())
    with pytest.raises(ConfigError, match="gated shortcut"):
        resnets.create_model("resnet20", gate_bias=-3)  # would be silently unused


def test_constant_scaling_and_dropout_shortcut_values():
    x = torch.randn(2, 16, 8, 8)
    for kind, expected_scale in (("constant_scaling", 0.5), ("dropout", 0.5)):
        unit = resnets.create_model("resnet20", shortcut_kind=kind, zero_init_last=True).layer1[0].eval()
        # branch is zeroed: the unit returns relu(scale * x) (dropout: its test-time expectation)
        torch.testing.assert_close(unit(x), torch.relu(expected_scale * x))
    unit = resnets.create_model("resnet20", shortcut_kind="dropout", zero_init_last=True).layer1[0].train()
    out = unit(torch.ones(1, 16, 32, 32))
    assert set(out.unique().tolist()) <= {0.0, 1.0} and 0.3 < out.mean() < 0.7  # mask, no rescaling


@pytest.mark.parametrize("unit", UNITS)
def test_unit_placements_train(unit):
    model = resnets.create_model("resnet20", unit=unit)
    train_one_step(model)
    assert type(model.layer2[0]).__name__ in {
        "BasicBlock",
        "BNAfterAddBlock",
        "ReLUBeforeAddBlock",
        "ReLUOnlyPreActBlock",
        "PreActBasicBlock",
    }
    assert (model.final_bn is not None) == unit.endswith("preact")


def test_full_preact_resnet110_matches_preact_resnet110():
    a = resnets.create_model("resnet110", unit="full_preact")
    b = resnets.create_model("preact_resnet110")
    assert a.state_dict().keys() == b.state_dict().keys() and n_params(a) == n_params(b)


def test_wrn_dropout():
    model = resnets.create_model("wrn16_8", drop_rate=0.3)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 6 and all(d.p == 0.3 for d in drops)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    assert not torch.equal(model.forward_features(x), model.forward_features(x))
    model.eval()
    assert torch.equal(model(x), model(x))


# --- specs -------------------------------------------------------------------------------------------


def test_model_spec_round_trip():
    model = resnets.create_model("resnet20", num_classes=5, in_chans=1, shortcut="B")
    spec = json.loads(json.dumps(model_spec(model)))
    assert spec == {"name": "resnet20", "kwargs": {"num_classes": 5, "in_chans": 1, "shortcut": "B"}}
    rebuilt = create_model_from_spec(spec)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 32, 32)
    model.eval()
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model_spec(model)["kwargs"]["num_classes"] == 3
    assert model_spec(torch.compile(model)) == model_spec(model)  # wrappers are looked through


def test_depth_option_and_its_spec():
    model = resnets.create_model("resnet_cifar", depth=38)
    assert len(model.residual_blocks()) == 18
    assert create_model_from_spec(model_spec(model)).state_dict().keys() == model.state_dict().keys()
    wide = resnets.create_model("wrn", depth=10, widen_factor=2)
    assert wide.feature_info.channels() == [16, 32, 64, 128]


# --- errors ------------------------------------------------------------------------------------------


def test_unknown_model_lists_closest_names():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet5'.*Did you mean: .*resnet50"):
        resnets.create_model("resnet5")


def test_misspelled_option_is_named_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown option 'stride_in1x1'.*stride_in_1x1") as err:
        resnets.create_model("resnet50", stride_in1x1=True)
    assert "zero_init_last" in str(err.value) and "resnet50" in str(err.value)
    with pytest.raises(ConfigError, match="drop_rate"):
        resnets.create_model("resnet20", drop_rate=0.3)  # WRN option, not silently ignored
    with pytest.raises(ConfigError, match="fixed"):
        resnets.create_model("resnet50", layers=[1, 1, 1, 1])


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("resnet50", {"shortcut": "D"}, "invalid shortcut='D'"),
        ("resnet20", {"unit": "post_act"}, "invalid unit"),
        ("resnet20", {"shortcut_kind": "gate"}, "invalid shortcut_kind"),
        ("resnet_cifar", {"depth": 21}, "6n\\+2"),
        ("preact_resnet_cifar", {"depth": 111}, "9n\\+2"),
        ("plain_cifar", {"depth": 2}, "6n\\+2"),
        ("wrn", {"depth": 27}, "6n\\+4"),
        ("wrn", {"widen_factor": 0}, "widen_factor"),
        ("resnet18", {"num_classes": -1}, "num_classes"),
        ("resnet18", {"in_chans": 2.5}, "in_chans"),
        ("wrn16_8", {"drop_rate": 1.5}, "drop_rate"),
        ("resnet20", {"shortcut": ("A",)}, "invalid shortcut"),
    ],
)
def test_invalid_values(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resnets.create_model(name, **kwargs)


def test_wrong_channel_count():
    model = resnets.create_model("resnet20", in_chans=1)
    with pytest.raises(ConfigError, match=r"expects input of shape \(batch, 1, height, width\).*in_chans=3"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ConfigError, match="expects input"):
        resnets.create_model("resnet18").forward_stages(torch.randn(3, 64, 64))


def test_bad_spec():
    with pytest.raises(ConfigError, match="spec"):
        create_model_from_spec({"kwargs": {}})
    with pytest.raises(ConfigError, match="no spec"):
        model_spec(nn.Linear(2, 2))
