"""The survey families (issue 16): VGG, DenseNet, Highway, RoR, Multi-ResNet, FractalNet, Inception-v4,
Inception-ResNet-v1/v2 and PolyNet. Parameter counts (and the ImageNet nets' multiply-adds) against the
papers or, where a paper prints none, the reference the test names; torchvision / timm parity; the model
interface (FX, features, head, summary, ONNX) on one configuration per family at a small input."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torchvision
from helpers import randomize_bn
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import resnets
from resnets.errors import ConfigError
from resnets.models import model_spec
from resnets.summary import summary

pytestmark = pytest.mark.usefixtures("one_thread")

SURVEY_PREFIXES = ("vgg", "densenet", "highway", "ror3", "multiresnet", "fractalnet", "inception", "polynet")
SURVEY_MODELS = [n for n in resnets.list_models() if n.startswith(SURVEY_PREFIXES)]
# The 299x299 (and 331x331) nets run at the smallest input their valid convs and pools take.
INCEPTION_SIDE = 75


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.cache
def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return resnets.create_model(name, **kwargs)


def meta_params(name: str, **kwargs) -> int:
    return n_params(meta_model(name, **kwargs))


def small_side(model: nn.Module) -> int:
    side = model.default_input_size[1]
    return 16 if side == 32 else INCEPTION_SIDE if side > 224 else 32


def conv_bn(i: int, o: int, kh: int, kw: int | None = None) -> int:
    """Parameters of a bias-free conv and its BN (scale and shift)."""
    return i * o * kh * (kw or kh) + 2 * o


def test_every_survey_family_is_registered():
    expected = {
        "vgg11",
        "vgg11_bn",
        "vgg13",
        "vgg13_bn",
        "vgg16",
        "vgg16_bn",
        "vgg19",
        "vgg19_bn",
        "vgg_cifar",
        "densenet121",
        "densenet169",
        "densenet201",
        "densenet161",
        "densenet40_k12",
        "densenet_bc100_k12",
        "densenet_bc250_k24",
        "densenet_bc190_k40",
        "highway19",
        "ror3_resnet110",
        "ror3_wrn58_4",
        "multiresnet_cifar",
        "fractalnet20",
        "inception_v4",
        "inception_resnet_v1",
        "inception_resnet_v2",
        "polynet",
    }
    assert expected <= set(SURVEY_MODELS)


# --- VGG: torchvision's keys and outputs, the ResNet paper's multiply-adds ---------------------------------


@pytest.mark.parametrize(
    "name", ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]
)
def test_vgg_keys_and_parameters_are_torchvisions(name):
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)()
    ours = meta_model(name)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    assert n_params(ours) == n_params(theirs)


@pytest.mark.parametrize("name", ["vgg16", "vgg11_bn"])
def test_vgg_loads_torchvision_strictly_and_computes_the_same(name):
    theirs = randomize_bn(getattr(torchvision.models, name)())
    with torch.device("meta"):
        ours = resnets.create_model(name)
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs(x))
        assert ours.forward_head(ours.forward_features(x), pre_logits=True).shape == (2, 4096)


@pytest.mark.parametrize("name, giga", [("vgg16", 15.3), ("vgg19", 19.6)])
def test_vgg_multiply_adds_are_the_resnet_papers(name, giga):
    # He et al. 2015, Sec. 3.3 / Table 3 ("VGG-19 (19.6 billion FLOPs)", VGG-16 15.3 billion).
    assert summary(name).total_mult_adds / 1e9 == pytest.approx(giga, rel=0.03)


# --- DenseNet: Table 2 (CIFAR), torchvision (ImageNet) -----------------------------------------------------


@pytest.mark.parametrize(
    "name, millions",
    [
        ("densenet40_k12", "1.0"),
        ("densenet100_k12", "7.0"),
        ("densenet100_k24", "27.2"),
        ("densenet_bc100_k12", "0.8"),
        ("densenet_bc250_k24", "15.3"),
        ("densenet_bc190_k40", "25.6"),
    ],
)
def test_densenet_cifar_parameters_are_table_2s(name, millions):
    assert round(meta_params(name) / 1e6, 1) == float(millions)


@pytest.mark.parametrize("name", ["densenet121", "densenet169", "densenet201", "densenet161"])
def test_densenet_keys_parameters_and_mult_adds_are_torchvisions(name):
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)()
    ours = meta_model(name)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    assert n_params(ours) == n_params(theirs)
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1  # metadata only, nothing downloaded
    assert n_params(ours) == weights.meta["num_params"]
    assert summary(name).total_mult_adds / 1e9 == pytest.approx(weights.meta["_ops"], abs=0.01)
    if name == "densenet121":
        assert n_params(ours) == 7_978_856


def test_densenet121_loads_torchvision_strictly_and_computes_the_same():
    theirs = randomize_bn(torchvision.models.densenet121())
    ours = resnets.create_model("densenet121").eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
    assert ours.feature_info.reduction() == [2, 4, 8, 16, 32]


# --- Highway: their Table 1 / the ResNet paper's Table 6 ----------------------------------------------------


def test_highway19_parameters_and_gates():
    # Table 1 ("Highway Network", 19 layers, ~2.3M); He et al. Table 6 lists it with 2.3M.
    assert round(meta_params("highway19") / 1e6, 1) == 2.3
    model = resnets.create_model("highway19")
    layers = model.highway_layers()
    assert len(layers) == 14 and all(torch.all(layer.gate.bias == -2.0) for layer in layers)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) - len(layers) + 1 == 19  # each highway layer is one layer (its gate is not)
    # A strongly negative gate bias carries the input through unchanged (their Sec. 2.2).
    closed = resnets.create_model("highway19", gate_bias=-30.0).eval().highway_layers()[0]
    x = torch.rand(1, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(closed(x), x)


def test_highway_cifar_has_the_cifar_resnets_shape():
    # depth 3n + 5: three plain 3x3 convs opening the stages, 3n highway layers, the 1x1 conv, the classifier
    model = resnets.create_model("highway_cifar", depth=14, width=16)
    layers = model.highway_layers()
    assert len(layers) == 9 and [layer.gate.in_channels for layer in layers] == [16] * 3 + [32] * 3 + [64] * 3
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) - len(layers) + 1 == 14
    # each highway layer: H and T, 3x3 convs with biases; the head: 1x1 conv to 4 x width maps
    w = 16
    highway = sum(2 * (c * c * 9 + c) for c in (w, 2 * w, 4 * w)) * 3
    plain = (3 * w * 9 + w) + (w * 2 * w * 9 + 2 * w) + (2 * w * 4 * w * 9 + 4 * w) + (4 * w * 4 * w + 4 * w)
    assert n_params(model) == highway + plain + 4 * w * 10 + 10
    with pytest.raises(ConfigError, match="3n \\+ 5"):
        resnets.create_model("highway_cifar", depth=15)


# --- RoR: RoR-3 adds level-1 and level-2 shortcuts to its base net ---------------------------------------


@pytest.mark.parametrize(
    "ror, base, extra",
    [
        # post-activation: conv + BN projections 16->32, 32->64 (level 2) and 16->64 (level 1)
        ("ror3_resnet110", "resnet110", (16 * 32 + 64) + (32 * 64 + 128) + (16 * 64 + 128)),
        # pre-activation bottlenecks (64, 128, 256 outputs): bare 1x1 projections at every level
        ("ror3_preact_resnet164", "preact_resnet164", 16 * 64 + 64 * 128 + 128 * 256 + 16 * 256),
        ("ror3_wrn40_4", "wrn40_4", 16 * 64 + 64 * 128 + 128 * 256 + 16 * 256),
    ],
)
def test_ror_parameters_are_the_base_nets_plus_the_outer_shortcuts(ror, base, extra):
    # The base nets' counts are tested against their papers in test_models.py; RoR-3 adds the outer
    # shortcuts' projections counted here (the RoR paper's own tables were not available to check).
    assert meta_params(ror) == meta_params(base) + extra


def test_ror_last_block_of_each_stage_adds_the_outer_shortcuts():
    model = randomize_bn(resnets.create_model("ror3_resnet_cifar", depth=8))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        stem = model.forward_stem(x)
        a = model.layer1[0](stem, outer=model.stage_shortcuts[0](stem))  # identity at level 2, stage 1
        b = model.layer2[0](a, outer=model.stage_shortcuts[1](a))
        c = model.layer3[0](b, outer=model.stage_shortcuts[2](b) + model.root_shortcut(stem))
        torch.testing.assert_close(model.forward_features(x), c)
        torch.testing.assert_close(model.feature_maps(x)[1:], [a, b, c])
    with pytest.raises(TypeError):  # a lesion patch cannot silently drop the outer shortcuts
        model.layer1[0].forward_shortcut(stem, outer=stem)


# --- Multi-ResNet: k residual functions per block ------------------------------------------------------


def test_multiresnet_block_sums_k_functions():
    one = meta_params("multiresnet_cifar", depth=20, k=1)
    assert one == meta_params("preact_resnet_cifar", depth=20, bottleneck=False, shortcut="B")
    branches = sum(
        p.numel()
        for name, p in meta_model("multiresnet_cifar", depth=20, k=1).named_parameters()
        if ".branches." in name
    )
    assert meta_params("multiresnet_cifar", depth=20, k=4) == one + 3 * branches
    block = randomize_bn(resnets.create_model("multiresnet_cifar", depth=8, k=2)).layer2[0]
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        pre = block.preact(x)
        expected = block.branches[0](pre) + block.branches[1](pre) + block.forward_shortcut(x, pre)
        torch.testing.assert_close(block(x), expected)


# --- FractalNet: columns, joins, drop-path, the deepest column ---------------------------------------------


def fractal_params(columns: int, widths: tuple[int, ...], in_chans: int = 3, classes: int = 10) -> int:
    """The authors' generator (gustavla/fractalnet, generation/fractalnet.py): per block, the C columns'
    first units read the block's input, the other 2^C - 1 - C units their own width."""
    total, chans = 0, in_chans
    for w in widths:
        total += columns * conv_bn(chans, w, 3) + (2**columns - 1 - columns) * conv_bn(w, w, 3)
        chans = w
    return total + chans * classes + classes


def test_fractalnet_parameters_are_the_authors_generators():
    # The paper's Table 1 and DenseNet's Table 2 print 38.6M for this 20-layer net; the authors' released
    # definition (C = 3, B = 5, 64-128-256-512-512, 3x3 convs) gives 33.7M, which is what is built.
    assert meta_params("fractalnet20") == fractal_params(3, (64, 128, 256, 512, 512))
    assert round(meta_params("fractalnet20") / 1e6, 1) == 33.7
    assert meta_params("fractalnet40") == fractal_params(4, (64, 128, 256, 512, 512))
    model = meta_model("fractalnet20")
    assert [len(model.block1.column(c)) for c in range(3)] == [1, 2, 4]  # 2^c units, 4 on the deepest path


def test_fractalnet_deepest_column_and_joins():
    model = randomize_bn(resnets.create_model("fractalnet_cifar", columns=3, blocks=2, width=4))
    deepest = resnets.create_model("fractalnet_cifar", columns=3, blocks=2, width=4, eval_column="deepest")
    deepest.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        y = x
        for b in (model.block1, model.block2):
            for unit in b.column(2):
                y = unit(y)
            y = nn.functional.max_pool2d(y, 2, ceil_mode=True)
        torch.testing.assert_close(deepest.eval().forward_features(x), y)
        # the full fractal: the first join of block 1 averages columns 1 and 2 at depth 2
        block = model.block1
        a = block.column(2)[1](block.column(2)[0](x))
        b = block.column(1)[0](x)
        j = (a + b) / 2
        deep = block.column(2)[3](block.column(2)[2](j))
        expected = (deep + block.column(1)[1](j) + block.column(0)[0](x)) / 3
        torch.testing.assert_close(block(x), expected)


def test_fractalnet_drop_path_trains_columns_apart():
    model = resnets.create_model("fractalnet_cifar", columns=3, blocks=2, width=4, global_drop_rate=0.999)
    model.train()
    model(torch.randn(4, 3, 16, 16)).sum().backward()  # one column for the whole net
    columns_with_grads = {
        c
        for c in range(3)
        if model.block1.column(c)[0][0].weight.grad is not None
        and model.block1.column(c)[0][0].weight.grad.abs().sum() > 0
    }
    assert len(columns_with_grads) == 1
    local = resnets.create_model("fractalnet_cifar", columns=3, blocks=2, width=4, local_drop_rate=0.999)
    out = local.train()(torch.randn(4, 3, 16, 16))  # every join keeps one input at least
    assert torch.isfinite(out).all()
    traced = torch.fx.symbolic_trace(local)  # drop-path samples inside wrapped calls: same graph each mode
    assert torch.isfinite(traced(torch.randn(2, 3, 16, 16))).all()


# --- Inception-v4, Inception-ResNet-v1/v2: timm parity, the paper's figures ---------------------------------


@pytest.mark.parametrize("name, params", [("inception_v4", 42_679_816), ("inception_resnet_v2", 55_843_464)])
def test_inception_keys_parameters_and_mult_adds_are_timms(name, params):
    timm = pytest.importorskip("timm")
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        theirs = timm.create_model(name, pretrained=False).eval()
        with FlopCounterMode(display=False) as counter:
            theirs(torch.zeros(1, 3, 299, 299))
    ours = meta_model(name)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    assert n_params(ours) == n_params(theirs) == params  # 55.8M for Inception-ResNet-v2, as the issue says
    assert summary(name).total_mult_adds == counter.get_total_flops() // 2
    assert [dict(d) for d in ours.feature_info] == [
        {k: d[k] for k in ("module", "num_chs", "reduction")} for d in theirs.feature_info
    ]
    from timm.data import resolve_data_config

    assert resolve_data_config({}, model=ours) == resolve_data_config({}, model=theirs)


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_inception_loads_timm_strictly_and_computes_the_same(name):
    timm = pytest.importorskip("timm")
    theirs = randomize_bn(timm.create_model(name, pretrained=False))
    with torch.device("meta"):
        ours = resnets.create_model(name)
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    x = torch.randn(1, 3, INCEPTION_SIDE, INCEPTION_SIDE)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            ours.forward_head(ours.forward_features(x), pre_logits=True),
            theirs.forward_head(theirs.forward_features(x), pre_logits=True),
        )


def test_inception_resnet_v1_is_the_papers_figures():
    # The paper prints no parameter count and its authors released no v1: the count of Figs. 14, 10, 7
    # (k, l, m, n = 192, 192, 256, 384), 11, 12, 13 and 15, conv by conv (1x1 up-projections with bias).
    def up(i: int, o: int) -> int:
        return i * o + o

    stem = (
        conv_bn(3, 32, 3)
        + conv_bn(32, 32, 3)
        + conv_bn(32, 64, 3)
        + conv_bn(64, 80, 1)
        + conv_bn(80, 192, 3)
        + conv_bn(192, 256, 3)
    )
    block_a = (
        conv_bn(256, 32, 1)
        + conv_bn(256, 32, 1)
        + conv_bn(32, 32, 3)
        + conv_bn(256, 32, 1)
        + 2 * conv_bn(32, 32, 3)
        + up(96, 256)
    )
    reduction_a = conv_bn(256, 384, 3) + conv_bn(256, 192, 1) + conv_bn(192, 192, 3) + conv_bn(192, 256, 3)
    block_b = (
        conv_bn(896, 128, 1)
        + conv_bn(896, 128, 1)
        + conv_bn(128, 128, 1, 7)
        + conv_bn(128, 128, 7, 1)
        + up(256, 896)
    )
    reduction_b = (
        3 * conv_bn(896, 256, 1) + conv_bn(256, 384, 3) + conv_bn(256, 256, 3) + 2 * conv_bn(256, 256, 3)
    )
    block_c = (
        conv_bn(1792, 192, 1)
        + conv_bn(1792, 192, 1)
        + conv_bn(192, 192, 1, 3)
        + conv_bn(192, 192, 3, 1)
        + up(384, 1792)
    )
    total = stem + 5 * block_a + reduction_a + 10 * block_b + reduction_b + 5 * block_c + up(1792, 1000)
    assert meta_params("inception_resnet_v1") == total
    model = meta_model("inception_resnet_v1")
    assert [m.scale for _, m in model.residual_blocks()] == [0.17] * 5 + [0.10] * 10 + [0.20] * 5


# --- PolyNet ------------------------------------------------------------------------------------------------


def test_polynet_parameters_are_the_released_models():
    # The paper prints no parameter count: the released model's modules (Cadene's port, polynet.py), conv
    # by conv. poly-3 shares its Inception convs between the orders, not the BNs nor the projections.
    stem = (
        conv_bn(3, 32, 3)
        + conv_bn(32, 32, 3)
        + conv_bn(32, 64, 3)
        + conv_bn(64, 96, 3)
        + conv_bn(160, 64, 1)
        + conv_bn(64, 96, 3)
        + conv_bn(160, 64, 1)
        + conv_bn(64, 64, 7, 1)
        + conv_bn(64, 64, 1, 7)
        + conv_bn(64, 96, 3)
        + conv_bn(192, 192, 3)
    )
    block_a = (
        conv_bn(384, 32, 1)
        + conv_bn(32, 48, 3)
        + conv_bn(48, 64, 3)
        + conv_bn(384, 32, 1)
        + conv_bn(32, 32, 3)
        + conv_bn(384, 32, 1)
        + conv_bn(128, 384, 1)
    )
    block_b = (
        conv_bn(1152, 128, 1)
        + conv_bn(128, 160, 1, 7)
        + conv_bn(160, 192, 7, 1)
        + conv_bn(1152, 192, 1)
        + conv_bn(384, 1152, 1)
    )
    block_c = (
        conv_bn(2048, 192, 1)
        + conv_bn(192, 224, 1, 3)
        + conv_bn(224, 256, 3, 1)
        + conv_bn(2048, 192, 1)
        + conv_bn(448, 2048, 1)
    )
    poly3_b = (
        1152 * 128
        + 128 * 160 * 7
        + 160 * 192 * 7
        + 1152 * 192
        + 3 * 2 * (128 + 160 + 192 + 192)
        + 3 * conv_bn(384, 1152, 1)
    )
    poly3_c = (
        2048 * 192
        + 192 * 224 * 3
        + 224 * 256 * 3
        + 2048 * 192
        + 3 * 2 * (192 + 224 + 256 + 192)
        + 3 * conv_bn(448, 2048, 1)
    )
    reduction_a = conv_bn(384, 256, 1) + conv_bn(256, 256, 3) + conv_bn(256, 384, 3) + conv_bn(384, 384, 3)
    reduction_b = (
        conv_bn(1152, 256, 1)
        + 2 * conv_bn(256, 256, 3)
        + conv_bn(1152, 256, 1)
        + conv_bn(256, 256, 3)
        + conv_bn(1152, 256, 1)
        + conv_bn(256, 384, 3)
    )
    total = (
        stem
        + 10 * 2 * block_a
        + reduction_a
        + 10 * (poly3_b + 2 * block_b)
        + reduction_b
        + 5 * (poly3_c + 2 * block_c)
        + 2048 * 1000
        + 1000
    )
    assert meta_params("polynet") == total
    assert round(total / 1e6, 1) == 95.4
    model = meta_model("polynet")
    scales = [m.scale for _, m in model.residual_blocks()]
    assert len(scales) == 40 and scales[0] == 1 and scales[1] == pytest.approx(0.992308) and scales[-1] == 0.7


def test_polyinception_modules_compute_their_polynomials():
    from resnets.models.polynet import MultiPoly, MultiWay, Poly

    def block() -> nn.Module:
        return nn.Conv2d(4, 4, 1)

    x = torch.randn(2, 4, 3, 3)
    way, mpoly = MultiWay(block, 2, 0.5), MultiPoly(block, 2, 0.5)
    with torch.no_grad():
        f, g = way.blocks
        torch.testing.assert_close(way(x), torch.relu(x + 0.5 * f(x) + 0.5 * g(x)))  # I + F + G
        f, g = mpoly.blocks
        torch.testing.assert_close(mpoly(x), torch.relu(x + 0.5 * f(x) + 0.5 * g(torch.relu(f(x)))))  # I+F+GF
    poly = Poly("B", 2, 1.0)
    assert poly.path1.conv.weight.shape[0] == 192 and len(poly.path1.bn_blocks) == 2  # one conv, two BNs


def test_polynet_stochastic_paths():
    with torch.device("meta"):
        model = resnets.create_model("polynet", drop_path_rate=0.25)
    probs = [m.drop_path.p for _, m in model.residual_blocks()]
    assert probs == pytest.approx([0.25 * (i + 1) / 40 for i in range(40)])
    with pytest.raises(ConfigError, match="drop_path_rate"):
        resnets.create_model("polynet", drop_path_rate=1.5)


# --- the model interface, every survey model ------------------------------------------------------------


@pytest.mark.parametrize("name", SURVEY_MODELS)
def test_every_survey_model_traces_and_summarises(name):
    model = meta_model(name)
    graph = torch.fx.symbolic_trace(model).graph
    called = {node.target for node in graph.nodes if node.op == "call_module"}
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs <= called  # every conv is in the graph
    assert model.pretrained_cfg["first_conv"].removesuffix(".weight") in {n for n, _ in model.named_modules()}
    table = summary(name)
    assert [row.name for row in table.stages] == ["stem", *model.stage_names, "head"]
    assert table.total_params == n_params(model) and table.total_mult_adds > 0
    out = table.stages[-2].output_size
    assert out[0] == model.num_features and str(table)


# One configuration per family, small: forward, backward, features, head, traced = eager.
FAMILIES = {
    "vgg11_bn": {},
    "vgg_cifar": {"depth": 8},
    "densenet_cifar": {"depth": 16, "growth_rate": 4},
    "densenet121": {},
    "highway19": {},
    "ror3_resnet_cifar": {"depth": 8},
    "ror3_wrn": {"depth": 10},
    "multiresnet_cifar": {"depth": 8, "k": 3},
    "fractalnet_cifar": {"columns": 3, "blocks": 3, "width": 8},
    "inception_resnet_v1": {},
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_interface(name):
    kwargs = FAMILIES[name]
    model = randomize_bn(resnets.create_model(name, num_classes=7, **kwargs))
    side = small_side(model)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        maps = model.feature_maps(x)
        traced = torch.fx.symbolic_trace(model)(x)
    torch.testing.assert_close(model.forward_head(features), logits)
    torch.testing.assert_close(traced, logits)
    torch.testing.assert_close(maps[-1], features)
    info = model.feature_info
    assert [m.shape[1] for m in maps] == info.channels()
    if side == 32 or side == 16:  # the 299x299 nets' valid convs make their reductions nominal at 75x75
        assert [-(-side // m.shape[-1]) for m in maps] == info.reduction()
    extractor = create_feature_extractor(model, return_nodes=info.module_name())
    with torch.no_grad():
        extracted = list(extractor(x).values())
        extracted[-1] = model.final_act(extracted[-1])  # the last map includes a final BN-ReLU or ReLU
    for got, want in zip(extracted, maps, strict=True):
        torch.testing.assert_close(got, want)
    # features_only, out_indices
    with torch.device("meta"):
        only = resnets.create_model(name, features_only=True, out_indices=(1, -1), **kwargs)
    missing, unexpected = only.load_state_dict(model.state_dict(), strict=False, assign=True)
    assert not missing and unexpected and only.get_classifier() is None
    with torch.no_grad():
        selected = only.eval()(x)
    torch.testing.assert_close(selected, [maps[1], maps[-1]])
    # the head: pre-logits, reset to none and back
    with torch.no_grad():
        pooled = model.forward_head(features, pre_logits=True)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)
    assert model_spec(model)["kwargs"]["num_classes"] == 0
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    with pytest.raises(ConfigError, match=r"expects input of shape \(batch, 3"):
        torch.fx.symbolic_trace(model)(torch.randn(2, 1, side, side))


# The nets test_models.py skips (no BN, or 75x75 inputs): forward and backward here (the VGGs without BN
# run forward in the torchvision parity test: vgg16).
FORWARD_BACKWARD = [
    "highway19",
    "highway_cifar",
    "inception_v4",
    "inception_resnet_v1",
    "inception_resnet_v2",
    "polynet",
]


@pytest.mark.parametrize("name", FORWARD_BACKWARD)
def test_forward_backward_reaches_every_parameter(name):
    model = resnets.create_model(name, num_classes=5, in_chans=1)
    side = small_side(model)
    # 4 images: the 75x75 nets' last BNs normalise 1x1 maps, over the batch alone
    out = model(torch.randn(4, 1, side, side))
    assert out.shape == (4, 5) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# The Inception-ResNet and PolyNet modules at one of each kind (their full nets take 15 s and more to
# export); the CIFAR-sized families whose graphs differ from the ResNets' (test_export.py has those).
def _onnx_model(name: str) -> nn.Module:
    from resnets.models.inception_resnet import InceptionResNetV1
    from resnets.models.polynet import PolyNet

    builders = {
        "densenet_cifar": lambda: resnets.create_model("densenet_cifar", depth=7, growth_rate=4, bc=False),
        "highway19": lambda: resnets.create_model("highway19"),
        "ror3_resnet_cifar": lambda: resnets.create_model("ror3_resnet_cifar", depth=8),
        "fractalnet_cifar": lambda: resnets.create_model("fractalnet_cifar", columns=2, blocks=2, width=8),
        "inception_resnet_v1": lambda: InceptionResNetV1((1, 1, 1)),
        "polynet": lambda: PolyNet((("2-way",), ("poly-2",), ("mpoly-2",))),
    }
    return builders[name]()


@pytest.mark.parametrize(
    "name",
    [
        "densenet_cifar",
        "highway19",
        "ror3_resnet_cifar",
        "fractalnet_cifar",
        "inception_resnet_v1",
        "polynet",
    ],
)
def test_onnx_export(name, tmp_path):
    pytest.importorskip("onnxruntime")
    from resnets.export import export_onnx

    model = randomize_bn(_onnx_model(name))
    side = small_side(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diff = export_onnx(model, tmp_path / "model.onnx", torch.randn(1, 3, side, side))
    assert diff <= 1e-4


def test_lesion_units_of_the_residual_families():
    from resnets.analysis.lesion import blocks_deleted

    for name, kwargs in [("inception_resnet_v1", {}), ("vgg_cifar", {"depth": 8})]:
        model = randomize_bn(resnets.create_model(name, **kwargs))
        units = [unit for _, unit in model.residual_blocks()]
        assert units and all(hasattr(u, "forward_shortcut") for u in units)
        x = torch.randn(1, 3, small_side(model), small_side(model))
        with torch.no_grad(), blocks_deleted(units[1:2]):
            assert torch.isfinite(model(x)).all()


def test_options_are_checked_and_other_families_named():
    with pytest.raises(ConfigError, match="Did you mean: growth_rate"):
        resnets.create_model("densenet_cifar", growth_rat=12)
    with pytest.raises(ConfigError, match="fixed"):
        resnets.create_model("densenet121", growth_rate=12)
    with pytest.raises(ConfigError, match="belongs to the FractalNet models"):
        resnets.create_model("resnet20", eval_column="deepest")
    with pytest.raises(ConfigError, match="3n\\+2"):
        resnets.create_model("vgg_cifar", depth=10)
    with pytest.raises(ConfigError, match="6n\\+4"):
        resnets.create_model("densenet_cifar", depth=101)
    with pytest.raises(ConfigError, match="no classifier"):
        resnets.create_model("vgg11", features_only=True, num_classes=10)
