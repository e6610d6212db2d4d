"""Drop-in for torchvision's and timm's users: torch.fx tracing and feature extraction, timm's model
interface (features_only, reset_classifier(0), pretrained_cfg), torchvision's builder options
(dilation, norm_layer, groups), stochastic depth and torch.hub."""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import randomize_bn
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from torchvision.ops import FrozenBatchNorm2d, StochasticDepth

import resnets
from resnets.errors import CheckpointError, ConfigError
from resnets.models import model_spec
from resnets.models.blocks import ResidualBlock
from resnets.models.cifar import CifarResNet
from resnets.models.imagenet import ResNet
from resnets.models.resnext_cifar import CifarResNeXt

ALL_MODELS = resnets.list_models()
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")

# One model per family and per kind of stem, block and shortcut.
FAMILIES = [
    "resnet18",
    "resnet26",
    "plain18",
    "resnext50_32x4d",
    "preact_resnet18",
    "resnet26d",
    "seresnet18",
    "resnetv2_50",
    "resnet20",
    "plain20",
    "preact_resnet164",
    "wrn16_8",
]
RESIDUAL_FAMILIES = [n for n in FAMILIES if not n.startswith("plain")]


@functools.cache
def meta_model(name: str) -> nn.Module:
    """Each registered model built once, without memory (tracing needs no values)."""
    with torch.device("meta"):
        return resnets.create_model(name)


def small_input(model: nn.Module, batch: int = 2, imagenet_side: int = 32) -> torch.Tensor:
    c, h, _ = model.default_input_size
    return torch.randn(batch, c, 32 if h == 32 else imagenet_side, 32 if h == 32 else imagenet_side)


def expected_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    info = model.feature_info
    return [
        (x.shape[0], c, -(-x.shape[2] // r), -(-x.shape[3] // r))
        for c, r in zip(info.channels(), info.reduction(), strict=True)
    ]


# --- torch.fx -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_traces_and_extracts_features(name):
    model = meta_model(name)
    if not isinstance(model, ResNet | CifarResNet | CifarResNeXt):
        # Its checks (one addition per residual block, nothing else; stages of ResidualBlocks ending in
        # "layerN.k") are the ResNets' block contract. The survey families (issue 16) add elsewhere
        # (RoR's outer shortcuts, Multi-ResNet's k branches, highway gates) or have no such stages:
        # tests/test_survey_models.py traces every one of them and extracts its feature maps.
        pytest.skip(f"{type(model).__name__} is not a plain ResNet: traced in test_survey_models")
    graph = torch.fx.symbolic_trace(model).graph
    modules = [node.target for node in graph.nodes if node.op == "call_module"]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    conv_set = set(convs)
    assert [m for m in modules if m in conv_set] == convs  # every conv, once, in forward order
    adds = [node for node in graph.nodes if node.op == "call_function" and node.target.__name__ == "add"]
    residual = [b for _, b in model.residual_blocks() if b.residual and b.merge is None]
    assert len(adds) == len(residual)  # each residual block's addition, and nothing else
    # torchvision names each node by a scan over all earlier ones (quadratic: 30 s for resnet1202's 4,800
    # nodes), so here the blocks are leaves; test_feature_extractor_takes_any_node_name takes every node.
    stage_ends = [f"{stage}.{len(getattr(model, stage)) - 1}" for stage in model.stage_names]
    extractor = create_feature_extractor(
        model, return_nodes=[*stage_ends, "fc"], tracer_kwargs={"leaf_modules": [ResidualBlock]}
    )
    (output,) = [node for node in extractor.graph.nodes if node.op == "output"]
    assert [node.target for node in output.args[0].values()] == [*stage_ends, "fc"]


@pytest.mark.parametrize("name", FAMILIES)
def test_traced_models_compute_what_eager_ones_do(name):
    model = randomize_bn(resnets.create_model(name, num_classes=7))
    x = small_input(model)
    nodes = {f"{stage}.{len(getattr(model, stage)) - 1}": stage for stage in model.stage_names[:-1]}
    extractor = create_feature_extractor(
        model, return_nodes=[*nodes, "fc"], tracer_kwargs={"leaf_modules": [ResidualBlock]}
    )
    with torch.no_grad():
        traced = torch.fx.symbolic_trace(model)(x)
        extracted = extractor(x)
        logits, stages = model(x), model.forward_stages(x)
    assert logits.std() > 1e-3
    torch.testing.assert_close(traced, logits)
    torch.testing.assert_close(extracted["fc"], logits)
    for node, stage in zip(nodes, stages, strict=False):
        torch.testing.assert_close(extracted[node], stage)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet18", {}),
        ("resnet20", {}),
        ("preact_resnet18", {}),
        ("resnet50d", {}),
        ("seresnet18", {}),
        ("wrn16_8", {}),
        ("resnet20", {"shortcut_kind": "exclusive_gating"}),
        ("resnet20", {"unit": "bn_after_add", "drop_path_rate": 0.2}),
        ("resnet18", {"norm_layer": "frozen_batchnorm"}),
    ],
)
def test_feature_extractor_takes_any_node_name(name, kwargs):
    model = randomize_bn(resnets.create_model(name, num_classes=7, **kwargs))
    x = small_input(model)
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert train_nodes == eval_nodes  # no branch on self.training outside wrapped functions
    extractor = create_feature_extractor(model, return_nodes=eval_nodes)
    with torch.no_grad():
        every = extractor(x)
        stages = model.forward_stages(x)
        logits = model(x)
        traced = torch.fx.symbolic_trace(model)(x)
    assert set(every) == set(eval_nodes)
    torch.testing.assert_close(every["fc"], logits)
    torch.testing.assert_close(traced, logits)
    for stage, expected in zip(model.stage_names[:-1], stages[:-1], strict=True):
        last_node = [n for n in eval_nodes if n.startswith(f"{stage}.")][-1]
        torch.testing.assert_close(every[last_node], expected)


def test_traced_model_still_checks_the_channel_count():
    model = resnets.create_model("resnet20", in_chans=1)
    traced = torch.fx.symbolic_trace(model)
    with pytest.raises(ConfigError, match=r"expects input of shape \(batch, 1, height, width\)"):
        traced(torch.randn(2, 3, 32, 32))
    with pytest.raises(ConfigError, match="in_chans=3"):
        model(torch.randn(2, 3, 32, 32))


def test_fx_mode_quantization():
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model = resnets.create_model("resnet20").eval()
    x = torch.randn(8, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (x,))
        with torch.no_grad():
            prepared(x)  # calibration
            quantized = convert_fx(prepared)
            expected, got = model(x), quantized(x)
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in quantized.modules())
    correlation = torch.corrcoef(torch.stack([expected.flatten(), got.flatten()]))[0, 1]
    assert correlation > 0.99


# --- timm's interface ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_features_only_maps_and_reductions(name):
    full = randomize_bn(resnets.create_model(name))
    with torch.device("meta"):  # its tensors come from the full model
        features = resnets.create_model(name, features_only=True).eval()
    missing, unexpected = features.load_state_dict(full.state_dict(), strict=False, assign=True)
    assert not missing and {k.split(".")[0] for k in unexpected} == {"fc"}
    n_maps = len(full.stage_names) + 1
    assert features.feature_info.reduction() == ([2, 4, 8, 16, 32] if n_maps == 5 else [1, 1, 2, 4])
    x = small_input(full)
    with torch.no_grad():
        maps = features(x)
        expected = full.feature_maps(x)
    assert [tuple(m.shape) for m in maps] == expected_shapes(features, x)
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert not hasattr(features, "fc") or features.fc is None


def test_out_indices_select_maps_and_cut_the_net():
    model = resnets.create_model("resnet50", features_only=True, out_indices=(1, 2))
    assert model.feature_info.channels() == [256, 512] and model.feature_info.reduction() == [4, 8]
    assert model.feature_info.module_name() == ["layer1", "layer2"]
    assert not any(k.startswith(("layer3", "layer4", "fc")) for k in model.state_dict())  # not built
    maps = model(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(1, 256, 16, 16), (1, 512, 8, 8)]
    last = resnets.create_model("preact_resnet18", features_only=True, out_indices=[-1])
    assert last.feature_info.channels() == [512] and last.final_bn is not None
    assert model_spec(last)["kwargs"]["out_indices"] == [-1]
    with pytest.raises(ConfigError, match="features_only"):
        resnets.create_model("resnet18", out_indices=(1,))
    with pytest.raises(ConfigError, match="twice"):
        resnets.create_model("resnet18", features_only=True, out_indices=(4, -1))
    with pytest.raises(ConfigError, match="no classifier"):  # never silently dropped
        resnets.create_model("resnet18", features_only=True, num_classes=10)


def test_feature_info_matches_timm():
    timm = pytest.importorskip("timm")
    for name in ("resnet50", "resnet50d", "resnet18", "seresnext50_32x4d", "resnetv2_50"):
        with torch.device("meta"):
            theirs = timm.create_model(name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
            ours = resnets.create_model(name, features_only=True, out_indices=(1, 2, 3, 4))
        assert ours.feature_info.channels() == theirs.feature_info.channels(), name
        assert ours.feature_info.reduction() == theirs.feature_info.reduction(), name
    with torch.device("meta"):
        theirs, ours = timm.create_model("resnet50", pretrained=False), resnets.create_model("resnet50")
    assert [dict(d) for d in ours.feature_info] == [
        {**d, "module": "relu" if d["module"] == "act1" else d["module"]} for d in theirs.feature_info
    ]  # timm's stem ReLU is called act1


@pytest.mark.parametrize("name", RESIDUAL_FAMILIES)
def test_reset_classifier_zero_gives_pooled_features(name):
    model = randomize_bn(resnets.create_model(name))
    x = small_input(model)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        features = model(x)
    assert features.shape == (2, model.num_features) and isinstance(model.fc, nn.Identity)
    torch.testing.assert_close(features, pooled)
    assert model_spec(model)["kwargs"]["num_classes"] == 0 and model.pretrained_cfg["num_classes"] == 0
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5


def test_num_classes_zero_and_no_pooling():
    model = resnets.create_model("resnet18", num_classes=0, global_pool="").eval()
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 512, 2, 2) and not any(k.startswith("fc") for k in model.state_dict())
    rebuilt = resnets.models.create_model_from_spec(model_spec(model))
    assert rebuilt(x).shape == (2, 512, 2, 2)
    model.reset_classifier(0, global_pool="avg")
    assert model(x).shape == (2, 512)
    with pytest.raises(ConfigError, match="num_classes=0"):
        model.reset_classifier(10, global_pool="")
    with pytest.raises(ConfigError, match="num_classes"):
        model.reset_classifier(-1)


def test_pretrained_cfg_resolves_like_timms():
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    with torch.device("meta"):
        tv_weights = timm.create_model("resnet50.tv_in1k", pretrained=False)  # torchvision's eval transform
        deep_stem = timm.create_model("resnet50d", pretrained=False)
    ours = resnets.create_model("resnet50")
    assert resolve_data_config({}, model=ours) == resolve_data_config({}, model=tv_weights)
    assert ours.default_cfg["classifier"] == "fc" and ours.pretrained_cfg["architecture"] == "resnet50"
    assert meta_model("resnet50d").pretrained_cfg["first_conv"] == deep_stem.pretrained_cfg["first_conv"]
    cifar = resolve_data_config({}, model=resnets.create_model("resnet20"))
    assert cifar["input_size"] == (3, 32, 32) and cifar["crop_pct"] == 1.0
    grey = resolve_data_config({}, model=resnets.create_model("resnet20", in_chans=1))
    assert grey["input_size"] == (1, 32, 32) and len(grey["mean"]) == len(grey["std"]) == 1
    from PIL import Image

    transform = create_transform(**resolve_data_config({}, model=ours))
    assert transform(Image.new("RGB", (320, 300))).shape == (3, 224, 224)


# --- torchvision's builder options ------------------------------------------------------------------


@pytest.mark.parametrize("dilate, stride", [((False, False, True), 16), ((False, True, True), 8)])
def test_dilation_matches_torchvision(dilate, stride):
    reference = randomize_bn(torchvision.models.resnet50(replace_stride_with_dilation=list(dilate)))
    ours = resnets.create_model("resnet50", replace_stride_with_dilation=list(dilate)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)
        assert ours.forward_features(x).shape[-1] == 64 // stride
    assert ours.feature_info.reduction()[-1] == stride
    timm_style = resnets.create_model("resnet50", output_stride=stride)
    assert timm_style.feature_info.reduction() == ours.feature_info.reduction()


def test_dilated_basic_blocks_match_timm():
    timm = pytest.importorskip("timm")  # torchvision refuses dilation in basic blocks, timm has it
    reference = randomize_bn(timm.create_model("resnet18", pretrained=False, output_stride=8))
    ours = resnets.create_model("resnet18", output_stride=8).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
        assert ours.forward_features(x).shape == (1, 512, 8, 8)


@pytest.mark.parametrize("norm_layer", ["groupnorm", FrozenBatchNorm2d])
def test_norm_layers_match_torchvision_and_train(norm_layer):
    tv_norm = (lambda c: nn.GroupNorm(32, c)) if norm_layer == "groupnorm" else FrozenBatchNorm2d
    reference = torchvision.models.resnet50(norm_layer=tv_norm).eval()
    ours = resnets.create_model("resnet50", num_classes=1000, norm_layer=norm_layer)
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference(x), rtol=1e-4, atol=1e-4)
    norm_type = nn.GroupNorm if norm_layer == "groupnorm" else FrozenBatchNorm2d
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())
    assert sum(isinstance(m, norm_type) for m in ours.modules()) == 53  # 1 stem + 3 x 16 blocks + 4 shortcuts
    # one training step moves every parameter; frozen statistics stay where they are
    ours.train()
    frozen = {k: v.clone() for k, v in ours.state_dict().items() if "running" in k}
    before = [p.detach().clone() for p in ours.parameters()]
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(ours(x), torch.tensor([1, 2]))
    loss.backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, ours.parameters(), strict=True))
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in frozen.items())
    assert model_spec(ours)["kwargs"]["norm_layer"] == (
        "groupnorm" if norm_layer == "groupnorm" else "frozen_batchnorm"
    )


def test_groups_and_width_per_group_match_torchvision():
    reference = randomize_bn(torchvision.models.resnet50(groups=32, width_per_group=4))
    ours = resnets.create_model("resnet50", groups=32, width_per_group=4).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)
    assert ours.layer1[0].conv2.groups == 32
    with pytest.raises(ConfigError, match="fixed"):
        resnets.create_model("resnext50_32x4d", groups=64)
    with pytest.raises(ConfigError, match="basic blocks"):
        resnets.create_model("resnet18", width_per_group=128)


# --- stochastic depth (Huang et al. 2016) ----------------------------------------------------------------


@pytest.mark.parametrize("name", RESIDUAL_FAMILIES)
def test_drop_path_decays_linearly_and_is_identity_in_eval(name):
    rate = 0.3
    model = resnets.create_model(name, drop_path_rate=rate)
    blocks = [b for _, b in model.residual_blocks()]
    probs = [b.drop_path.p for b in blocks]
    assert all(isinstance(b.drop_path, StochasticDepth) for b in blocks)
    assert probs == pytest.approx([rate * (i + 1) / len(blocks) for i in range(len(blocks))])
    with torch.device("meta"):
        plain = resnets.create_model(name)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    x = small_input(model)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), plain.eval()(x))


def test_drop_path_drops_the_expected_fraction_of_branches():
    # Pre-activation units compute y = F(x) + s(x): a dropped branch leaves exactly the shortcut.
    model = resnets.create_model("preact_resnet_cifar", depth=8, bottleneck=False, drop_path_rate=0.6).train()
    x = model.forward_stem(torch.randn(4000, 3, 8, 8))
    with torch.no_grad():
        for index, (name, unit) in enumerate(model.residual_blocks()):
            y = unit(x)
            shortcut = unit.forward_shortcut(x)
            dropped = ((y - shortcut).abs().amax(dim=(1, 2, 3)) == 0).float().mean().item()
            assert dropped == pytest.approx(0.2 * (index + 1), abs=0.03), name  # 0.2, 0.4, 0.6
            x = y


def test_drop_path_gradients_flow():
    model = resnets.create_model("resnet20", drop_path_rate=0.5).train()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["conv1.weight"].abs().sum() > 0 and grads["fc.weight"].abs().sum() > 0
    # each unit's branch got a gradient from the samples that kept it
    assert all(grads[f"{n}.conv1.weight"].abs().sum() > 0 for n, _ in model.residual_blocks())


@pytest.mark.parametrize("name", ["plain20", "plain34", "plain_cifar"])
def test_plain_nets_refuse_drop_path(name):
    with pytest.raises(ConfigError, match="plain nets have no"):
        resnets.create_model(name, drop_path_rate=0.1)


# --- options a family cannot take ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("resnet20", {"replace_stride_with_dilation": [False, True]}, "belongs to the ImageNet-family"),
        ("wrn16_8", {"stem_type": "deep"}, "belongs to the ImageNet-family models"),
        ("resnet50", {"drop_path": 0.1}, "unknown option 'drop_path'.*drop_path_rate"),
        ("resnet50", {"stem_typ": "deep"}, "Did you mean: stem_type"),
        ("resnet50", {"replace_stride_with_dilation": [True, True]}, "3 booleans"),
        ("resnet50", {"output_stride": 4}, "output_stride"),
        ("resnet50", {"norm_layer": "layernorm"}, "invalid norm_layer"),
        ("resnet50", {"stem_norm": False}, "pre-activation blocks"),
        ("preact_resnet50", {"attn_layer": "se"}, "post-activation"),
        ("resnet50d", {"avg_down": False}, "fixed"),
        ("plain50", {"avg_down": True}, "does not apply"),
        ("resnet50", {"stem_width": 32}, "deep stem"),
        ("resnet50", {"drop_path_rate": 1.0}, r"\[0, 1\)"),
    ],
)
def test_options_a_family_cannot_take(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resnets.create_model(name, **kwargs)


# --- torch.hub --------------------------------------------------------------------------------------------


def test_torch_hub_local(tmp_path, monkeypatch):
    reference = randomize_bn(torchvision.models.resnet18(num_classes=10))
    weights = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), weights)
    model = torch.hub.load(str(REPO), "resnet18", source="local", num_classes=10, weights=str(weights))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference(x))
    assert model_spec(model) == {"name": "resnet18", "kwargs": {"num_classes": 10, "in_chans": 3}}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache, no downloads: the one line
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="resnet50-11ad3fa6.pth and put it at"):
        torch.hub.load(str(REPO), "resnet50", source="local", pretrained=True)
    spec = importlib.util.spec_from_file_location("resnets_hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entrypoints = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert sorted(entrypoints) == sorted(ALL_MODELS)  # what torch.hub.list shows
