"""ResNets in recurrent form (Liao and Poggio 2016): the CIFAR ResNets' ``share_weights`` option (parameter
counts, what is shared, state dicts, tracing, ONNX, gradients, refusals) and `resnets reproduce recurrent`
(the smoke budget end to end, the cpu and paper plans, the two-sided paired verdict on constructed per-image
errors: shows, contradicts, cannot be judged)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from helpers import image_errors_at, randomize_bn
from PIL import Image
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import resnets
import resnets.experiments as experiments
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.experiments.base import recipe_dict
from resnets.experiments.degradation import degradation_nets
from resnets.experiments.paired import Comparison, Net, compare
from resnets.experiments.plans import cifar_net, params_cifar
from resnets.experiments.recurrent import (
    DEPTH,
    SHALLOW,
    finding_text,
    midpoint,
    recurrent_comparisons,
    recurrent_nets,
    recurrent_verdict,
)
from resnets.experiments.runner import ReproduceOptions, make_context, plan, reproduce
from resnets.export import export_onnx, fold_bn
from resnets.models import create_model_from_spec, model_spec
from resnets.weights import load_weights, save_weights

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTHS = (16, 32, 64)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the model option ------------------------------------------------------------------------------


def test_shared_resnet56_parameter_count_by_hand():
    """Liao and Poggio give no parameter table for these nets, so the counts are tested against a hand
    count: ResNet-56 has Table 6's 0.85M (853,018); sharing removes, in each stage of width w, the two 3x3
    convs (9 w^2 weights each) of the 7 units that reuse unit 2's, and leaves ResNet-14's weights (each
    stage's first two units) plus the 7 reusing units' own BNs (2 per unit, 2 w scales and shifts each)."""
    shared = n_params(resnets.create_model("resnet56", share_weights=True))
    deep = n_params(resnets.create_model("resnet56"))
    assert deep == 853_018 and round(deep / 1e6, 2) == 0.85
    assert shared == deep - sum(7 * 2 * 9 * w * w for w in WIDTHS) == 175_642
    resnet14 = n_params(resnets.create_model("resnet_cifar", depth=14))
    assert shared == resnet14 + sum(7 * 2 * 2 * w for w in WIDTHS)
    assert n_params(resnets.create_model("resnet_cifar", depth=56, share_weights=True)) == shared
    # the shallow net of about the shared net's parameters: the 6n+2 depth whose count is closest
    counts = {d: n_params(resnets.create_model("resnet_cifar", depth=d)) for d in (8, 14, 20, 26)}
    assert min(counts, key=lambda d: abs(counts[d] - shared)) == 14 == SHALLOW["cpu"]
    assert abs(counts[14] - shared) / shared < 0.02  # 172,506 against 175,642
    # pre-activation bottleneck nets share their three convs the same way (9n+2 = 29: n = 3, one reuser)
    pre, pre_shared = (
        resnets.create_model("preact_resnet_cifar", depth=29, share_weights=s) for s in (False, True)
    )
    # a reusing unit's convs: 1x1 in (4w -> w), 3x3 (w -> w), 1x1 out (w -> 4w)
    assert n_params(pre) - n_params(pre_shared) == sum(4 * w * w + 9 * w * w + 4 * w * w for w in WIDTHS)


def test_units_after_the_first_share_convs_and_keep_their_own_bn():
    model = resnets.create_model("resnet56", share_weights=True)
    for stage in (model.layer1, model.layer2, model.layer3):
        assert len(stage) == 9
        assert stage[0].conv1 is not stage[1].conv1 and stage[0].conv2 is not stage[1].conv2
        for unit in stage[2:]:
            assert unit.conv1 is stage[1].conv1 and unit.conv2 is stage[1].conv2
        bns = [bn for unit in stage for bn in (unit.bn1, unit.bn2)]
        assert len({id(bn) for bn in bns}) == 18  # time-specific BN: every unit its own
    assert model.share_weights and not resnets.create_model("resnet56").share_weights
    # a gated shortcut's gate is a weight of the unit too, so it is shared with the convs
    gated = resnets.create_model("resnet20", share_weights=True, shortcut_kind="exclusive_gating")
    assert gated.layer2[2].merge.gate is gated.layer2[1].merge.gate
    assert len(gated.residual_blocks()) == 9


def test_state_dict_holds_each_shared_tensor_once_and_round_trips(tmp_path):
    model = randomize_bn(resnets.create_model("resnet20", share_weights=True, num_classes=7))
    plain_keys = list(resnets.create_model("resnet20", num_classes=7).state_dict())
    state = model.state_dict()
    aliases = {f"layer{s}.2.conv{c}.weight" for s in (1, 2, 3) for c in (1, 2)}
    assert list(state) == [k for k in plain_keys if k not in aliases]  # the unshared nets' names and order
    assert set(model.shared_keys) == aliases
    assert model.shared_keys["layer3.2.conv2.weight"] == "layer3.1.conv2.weight"
    path = save_weights(model, tmp_path / "shared.safetensors")  # safetensors refuses shared memory
    fresh = resnets.create_model("resnet20", share_weights=True, num_classes=7).eval()
    fresh.load_state_dict(load_weights(path))  # strict: the pre-hook fills the reusing units' keys
    assert fresh.layer2[2].conv1 is fresh.layer2[1].conv1
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
    spec = model_spec(model)
    assert spec["kwargs"]["share_weights"] is True
    assert create_model_from_spec(spec).layer1[2].conv1 is not None


def test_a_shared_net_is_an_unshared_one_with_tied_weights_and_its_gradient_sums_the_steps():
    """Backpropagation through time: the shared conv's gradient is the sum of the gradients the tied
    copies of an unshared net get. Every parameter of the shared net gets a gradient."""
    shared = resnets.create_model("resnet20", share_weights=True)
    unshared = resnets.create_model("resnet20")
    state = shared.state_dict()
    unshared.load_state_dict({k: state[shared.shared_keys.get(k, k)] for k in unshared.state_dict()})
    x = torch.randn(4, 3, 16, 16)
    out_shared, out_unshared = shared(x), unshared(x)
    torch.testing.assert_close(out_shared, out_unshared)
    out_shared.square().sum().backward()
    out_unshared.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shared.parameters())
    for stage in ("layer1", "layer2", "layer3"):
        tied = sum(getattr(unshared, stage)[i].conv2.weight.grad for i in (1, 2))
        torch.testing.assert_close(getattr(shared, stage)[1].conv2.weight.grad, tied, rtol=1e-4, atol=1e-6)


def test_traces_extracts_features_and_cuts_like_the_other_cifar_nets():
    model = randomize_bn(resnets.create_model("resnet20", share_weights=True, num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    graph_module = torch.fx.symbolic_trace(model)
    calls = [n.target for n in graph_module.graph.nodes if n.op == "call_module"]
    assert calls.count("layer2.1.conv1") == 2  # the shared conv runs at both of its time steps
    extractor = create_feature_extractor(model, return_nodes=["layer1", "layer2", "fc"])
    features = resnets.create_model("resnet20", share_weights=True, features_only=True, out_indices=(1, 2))
    features.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith(("fc.", "layer3"))}
    )
    features.eval()
    with torch.no_grad():
        logits, stages = model(x), model.forward_stages(x)
        torch.testing.assert_close(graph_module(x), logits)
        extracted = extractor(x)
        maps = features(x)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), logits)
    torch.testing.assert_close(extracted["fc"], logits)
    torch.testing.assert_close(extracted["layer2"], stages[1])
    assert not hasattr(features, "layer3") and features.layer2[2].conv2 is features.layer2[1].conv2
    for got, expected in zip(maps, stages[:2], strict=True):
        torch.testing.assert_close(got, expected)


def test_onnx_export_stores_each_shared_conv_once(tmp_path):
    model = randomize_bn(resnets.create_model("resnet20", share_weights=True))
    path = tmp_path / "shared.onnx"
    assert export_onnx(model, path, torch.randn(2, 3, 32, 32)) < 1e-4  # onnxruntime against eager
    graph = onnx.load(str(path)).graph
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert len(convs) == 19  # 19 conv layers run, as in ResNet-20
    assert len({node.input[1] for node in convs}) == 13  # stem + 2 first units' and 2 shared convs a stage


def test_bn_folding_keeps_the_outputs():
    """``fold_bn`` folds the BN of a shared conv's first time step into a copy of the conv there (its
    graph name is the owner's, called once by that name); the later steps keep the shared, unfolded conv and
    their own BN, so the outputs stay the same."""
    model = randomize_bn(resnets.create_model("resnet20", share_weights=True))
    x = torch.randn(2, 3, 32, 32)
    folded = fold_bn(model)
    assert folded.layer2[1].conv1 is not folded.layer2[2].conv1 and folded.layer2[1].conv1.bias is not None
    assert isinstance(folded.layer2[2].bn1, nn.BatchNorm2d) and isinstance(folded.layer2[1].bn1, nn.Identity)
    assert model.layer2[2].conv1 is model.layer2[1].conv1  # the original keeps its sharing
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("resnet18", {"share_weights": True}, "belongs to the CIFAR models"),
        ("resnext29_8x64d", {"share_weights": True}, "belongs to the CIFAR models"),
        ("resnet_cifar", {"depth": 14, "share_weights": True}, "at least 3 units per stage"),
        ("resnet56", {"share_weights": "yes"}, "share_weights"),
    ],
)
def test_share_weights_is_refused_where_it_makes_no_sense(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resnets.create_model(name, **kwargs)


# --- the experiment --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("recurrent")
    options = ReproduceOptions(budget="smoke", output=output, device="cpu")
    written = reproduce("recurrent", options, log=lambda _: None)
    return output, options, written


def test_smoke_writes_its_table_figures_and_results_and_reruns_nothing(smoke):
    output, options, written = smoke
    results = json.loads(written["results"].read_text())
    nets = {k: v for k, v in results["results"].items() if isinstance(v, dict) and "role" in v}
    assert [v["role"] for v in nets.values()] == ["deep", "shared", "shallow"]
    assert list(nets) == ["ResNet-20", "ResNet-20 shared", "ResNet-14"]
    deep, shared, shallow = nets.values()
    # ResNet-20 shared: one reusing unit a stage, its two convs gone, its two BNs kept
    assert shared["params"] == deep["params"] - sum(2 * 9 * w * w for w in WIDTHS)
    assert shared["params"] == shallow["params"] + sum(2 * 2 * w for w in WIDTHS)
    for net in nets.values():  # the budget's two seeds each, scored on every test image
        assert net["seeds"] == 2 and len(net["test_error"]) == 2 and all(t > 0 for t in net["train_seconds"])
        assert all(
            0 <= e <= 100 and (e * 64 / 100) == pytest.approx(round(e * 64 / 100)) for e in net["test_error"]
        )
    got = results["results"]
    assert set(got["comparisons"]) == {
        "ResNet-20 vs ResNet-14",
        "ResNet-20 shared vs ResNet-14",
        "ResNet-20 shared vs ResNet-20",
    }
    middle = got["midpoint"]
    assert middle["interval"][0] <= middle["difference"] <= middle["interval"][1]
    assert middle["difference"] == pytest.approx(
        np.mean(shared["test_error"]) - (np.mean(deep["test_error"]) + np.mean(shallow["test_error"])) / 2
    )
    assert got["verdict"] in ("shows", "contradicts", "cannot be judged")
    assert results["finding"]["shows"] == {"shows": True, "contradicts": False}.get(got["verdict"])
    assert got["params_shared_over_shallow"] == pytest.approx(shared["params"] / shallow["params"])
    report = written["report"].read_text()
    assert results["finding"]["text"] in report and "| ResNet-20 shared |" in report
    for figure in ("recurrent.png", "recurrent_curves.png"):
        with Image.open(written[figure]) as image:
            assert image.format == "PNG" and image.size[0] > 500
    messages: list[str] = []
    reproduce("recurrent", options, log=messages.append)  # the same folder: every run is found finished
    assert sum("finished run found" in m for m in messages) == 6
    assert not any("training" in m for m in messages)


@pytest.mark.parametrize("budget", ["cpu", "paper"])
def test_the_deep_net_is_degradations_and_the_three_train_alike(tmp_path, budget, capsys):
    experiment = experiments.get_experiment("recurrent")
    ctx = make_context(experiment, ReproduceOptions(budget=budget, output=tmp_path))
    nets = recurrent_nets(ctx)
    specs = [spec for k in ("deep", "shared", "shallow") for spec in nets[k].specs]
    assert [s.name for s in plan(experiment, ctx)] == [s.name for s in specs] and len(specs) == 6
    degradation = experiments.get_experiment("degradation")
    shared_with = degradation_nets(
        make_context(degradation, ReproduceOptions(budget=budget, output=tmp_path))
    )
    assert nets["deep"] == shared_with[("resnet", 56)]  # one run folder per seed for both experiments
    recipes = [recipe_dict(s) for s in specs]
    assert [(r["model"], r["model_kwargs"], r["seed"]) for r in recipes] == [
        ("resnet56", {}, 0),
        ("resnet56", {}, 1),
        ("resnet56", {"share_weights": True}, 0),
        ("resnet56", {"share_weights": True}, 1),
        ("resnet_cifar", {"depth": 14}, 0),
        ("resnet_cifar", {"depth": 14}, 1),
    ]  # the paper's initialisation for all three
    assert nets["shallow"] == cifar_net(ctx, "resnet", SHALLOW[budget])
    if budget == "cpu":  # the converging budget's recipe, for all three alike
        assert all(r["name"] == "reproduce-cpu" and r["dataset"] == "fashion-mnist" for r in recipes)
        assert "about 19 min after degradation" in experiment.settings(ctx)["cost"]
        # --plan shows one recipe for every compared net
        assert main(["reproduce", "recurrent", "--budget", "cpu", "--plan", "--output", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "# every run: recipe=reproduce-cpu" in out and "# differs: init" not in out
        assert [ln for ln in out.splitlines() if ln.startswith("# differs:")] == []
    else:  # the paper's CIFAR-10 schedule, as degradation's ResNet-56
        for r in recipes:
            assert r["dataset"] == "cifar10" and r["iterations"] == 64_000 and r["test_subset"] is None
            assert r["milestones"] == [32_000, 48_000]
    assert DEPTH[budget] == 56
    assert params_cifar(nets["shared"].specs[0]) == 175_642
    # the runner's third seed: the deciding gap gives the deep and the shallow net one alike
    (gap,) = experiment.comparisons(ctx)
    assert (gap.a, gap.b, gap.expected) == (nets["shallow"], nets["deep"], "lower")


# --- the verdict on constructed per-image errors -----------------------------------------------------

IMAGES = 10_000


_errors = image_errors_at


class FakeScores:
    """What the verdict reads: seeds x images errors of each net, by key."""

    def __init__(self, rates: dict[str, list[float]]) -> None:
        base = np.zeros(IMAGES, dtype=np.uint8)
        base[np.random.default_rng(0).choice(IMAGES, 800, replace=False)] = 1
        self.errors = {
            k: np.stack([_errors(r, 7 * i + len(k), base) for i, r in enumerate(v)]) for k, v in rates.items()
        }

    def net_errors(self, net: Net) -> np.ndarray:
        return self.errors[net.key]

    def test_errors(self, net: Net) -> list[float]:
        return [100 * float(row.mean()) for row in self.errors[net.key]]


NETS = {
    k: Net(k, label, (object(), object()))
    for k, label in (("deep", "ResNet-56"), ("shared", "ResNet-56 shared"), ("shallow", "ResNet-14"))
}
PARAMS = {"deep": 853_018, "shared": 175_642, "shallow": 172_506}


def _judged(deep: float, shared: float, shallow: float):
    scores = FakeScores(
        {"deep": [deep, deep + 0.05], "shared": [shared, shared + 0.05], "shallow": [shallow, shallow + 0.05]}
    )
    comparisons = {
        "gap": ("shallow", "deep", "lower"),
        "beats": ("shallow", "shared", "lower"),
        "cost": ("deep", "shared", "higher"),
    }
    measured = {
        k: compare(scores, Comparison(NETS[a], NETS[b], e), resamples=2_000)
        for k, (a, b, e) in comparisons.items()
    }
    middle = midpoint(scores, NETS)
    verdict = recurrent_verdict(measured["gap"].verdict, middle.judgement.verdict)
    return measured, middle, verdict


@pytest.mark.parametrize(
    "errors, gap, keeps, verdict",
    [
        ((7.0, 7.3, 9.0), "shows", "shows", "shows"),  # keeps 85% of a 2-point gap
        ((7.0, 8.8, 9.0), "shows", "contradicts", "contradicts"),  # keeps 10%
        ((7.0, 8.0, 9.0), "shows", "cannot be judged", "cannot be judged"),  # at the midpoint
        ((8.0, 7.0, 8.0), "cannot be judged", "shows", "cannot be judged"),  # no gap: nothing to keep
        ((9.0, 7.0, 7.0), "contradicts", "shows", "cannot be judged"),  # deeper is worse: nothing to keep
    ],
)
def test_the_verdict_follows_the_per_image_errors(errors, gap, keeps, verdict):
    measured, middle, got = _judged(*errors)
    assert (measured["gap"].verdict, middle.judgement.verdict, got) == (gap, keeps, verdict)
    deep, shared, shallow = (e + 0.025 for e in errors)  # the mean of the two seeds
    i = middle.judgement.interval
    assert i.difference == pytest.approx(shared - (deep + shallow) / 2, abs=1e-6) and i.low <= i.high
    assert middle.per_seed == pytest.approx((shared - 0.025 - (deep + shallow - 0.05) / 2,) * 2, abs=1e-6)
    if shallow > deep:
        assert middle.kept == pytest.approx((shallow - shared) / (shallow - deep))
    else:
        assert middle.kept is None
    text = finding_text(measured, middle, PARAMS, got)
    assert "21% of ResNet-56's" in text and "midpoint of ResNet-56's and ResNet-14's" in text
    assert ("no gap for the shared net to keep" in text) == (gap != "shows")
    assert text.count("Reported:") == 1
    if verdict == "contradicts":
        assert "nearer the shallow net" in text
    if keeps == "cannot be judged":
        assert "smallest detectable effect" in text


def test_a_seed_on_the_other_side_keeps_the_midpoint_from_deciding():
    scores = FakeScores({"deep": [7.0, 7.0], "shared": [7.3, 8.9], "shallow": [9.0, 9.0]})
    middle = midpoint(scores, NETS)
    assert middle.per_seed[0] < 0 < middle.per_seed[1]
    assert middle.judgement.verdict == "cannot be judged"
    assert recurrent_verdict("shows", "cannot be judged") == "cannot be judged"
    assert recurrent_verdict("shows", "contradicts") == "contradicts"
    assert recurrent_verdict("cannot be judged", "contradicts") == "cannot be judged"


def test_the_comparisons_name_the_papers_sides(tmp_path):
    ctx = make_context(experiments.get_experiment("recurrent"), budget="cpu", output=tmp_path)
    c = recurrent_comparisons(ctx)
    assert [(k, v.name, v.expected) for k, v in c.items()] == [
        ("gap", "ResNet-56 vs ResNet-14", "lower"),
        ("beats", "ResNet-56 shared vs ResNet-14", "lower"),
        ("cost", "ResNet-56 shared vs ResNet-56", "higher"),
    ]
