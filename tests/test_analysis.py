"""Layer responses (Fig. 7), the lesion study and path analysis (Veit et al.) on small zoo models."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import random_batches, small_net

from resnets import create_model
from resnets.analysis.lesion import blocks_deleted, blocks_swapped, lesion_study, swappable_pairs
from resnets.analysis.paths import (
    _gated_blocks,
    gradient_by_path_length,
    path_length_counts,
    path_length_fractions,
)
from resnets.analysis.responses import layer_responses
from resnets.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name: str, **kwargs) -> torch.nn.Module:
    return small_net(name, **kwargs)


def _batches(n: int = 2, size: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return random_batches(n, size)


# --- lesion ------------------------------------------------------------------------------------


def test_deleted_unit_computes_its_shortcut_and_is_restored():
    model = _model("resnet_cifar", depth=14)
    x = torch.randn(2, 1, 12, 12)
    before = model(x)
    name, unit = model.residual_blocks()[2]  # first unit of stage 2: option-A shortcut (stride 2, pad)
    seen = {}
    unit.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    with blocks_deleted([unit]):
        model(x)
        assert torch.equal(seen["y"], unit.forward_shortcut(seen["x"]))
        assert seen["y"].shape[1] == 2 * seen["x"].shape[1]
    assert "forward" not in unit.__dict__
    assert torch.equal(model(x), before)


def test_swapped_units_run_in_the_other_order():
    model = _model("resnet_cifar", depth=14)
    units = [u for _, u in model.residual_blocks()]
    x = torch.randn(2, 1, 12, 12)
    stem = model.forward_stem(x)
    expected = units[1](units[0](stem))
    swapped = units[0](units[1](stem))
    assert not torch.allclose(expected, swapped)
    with blocks_swapped(units[0], units[1]):
        got = model.layer1[1](model.layer1[0](stem))
    assert torch.allclose(got, swapped)
    assert torch.allclose(model.layer1[1](model.layer1[0](stem)), expected)


def test_swappable_pairs_skip_units_that_change_shape():
    model = _model("resnet20")
    # 9 units; units 3 and 6 open stages 2 and 3 (stride 2, more channels)
    assert swappable_pairs(model, torch.randn(1, 1, 16, 16)) == [0, 1, 4, 7]


def test_lesion_of_zero_branches_changes_nothing():
    # zero_init_last zeroes each branch's last BN, so every unit already computes only its shortcut:
    # deleting or swapping units must leave every prediction, hence the error, exactly as it was.
    model = create_model("resnet_cifar", depth=14, num_classes=4, in_chans=1, zero_init_last=True).eval()
    data = _batches()
    result = lesion_study(model, data)
    assert len(result.deleted_errors) == len(model.residual_blocks()) == 6
    assert result.deleted_errors == [result.baseline_error] * 6
    assert result.swapped_pairs == ["layer1.0<->layer1.1"]  # the only adjacent pair that keeps its shape
    assert result.swapped_errors == [result.baseline_error] * len(result.swapped_pairs)
    assert result.deletion_increase == [0.0] * 6
    assert result.downsampling == [False, False, True, False, True, False]
    assert result.mean_increase(downsampling=True) == 0.0


def test_lesion_study_measures_each_deletion_and_leaves_the_model_intact():
    model = _model("plain_cifar", depth=14).train()
    data = _batches()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def error_fn(m, loader):  # records the logits each lesion produces
        assert not m.training
        with torch.no_grad():
            logits = torch.cat([m(x) for x, _ in loader])
        calls.append(logits)
        return float(logits.sum())

    result = lesion_study(model, data, error_fn=error_fn)
    units = [u for _, u in model.residual_blocks()]
    assert len(calls) == 1 + len(units) + len(result.swapped_errors)
    increases = result.deletion_increase
    assert result.mean_increase() == pytest.approx(sum(increases) / 6)
    assert result.mean_increase(downsampling=True) == pytest.approx((increases[2] + increases[4]) / 2)
    assert model.training
    # each deletion really removed that unit's branch
    model.eval()
    for i, unit in enumerate(units):
        with blocks_deleted([unit]), torch.no_grad():
            assert torch.equal(calls[1 + i], torch.cat([model(x) for x, _ in data]))
        assert not torch.equal(calls[1 + i], calls[0])
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all("forward" not in u.__dict__ for u in units)


def test_lesion_restores_the_model_after_an_error():
    model = _model("resnet_cifar", depth=8)

    def failing(m, loader):
        if any("forward" in u.__dict__ for _, u in m.residual_blocks()):
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError, match="boom"):
        lesion_study(model, _batches(1), error_fn=failing)
    assert all("forward" not in u.__dict__ for _, u in model.residual_blocks())


# --- responses ---------------------------------------------------------------------------------


def test_layer_responses_are_the_std_of_each_bn_output_over_the_loader():
    model = _model("resnet_cifar", depth=8)
    data = _batches(3)
    captured: dict[str, list[torch.Tensor]] = {}
    names = {id(m): n for n, m in model.named_modules()}
    for _, unit in model.residual_blocks():
        for bn in unit.response_norms():
            bn.register_forward_hook(lambda m, i, o: captured.setdefault(names[id(m)], []).append(o.detach()))
    model.train()  # layer_responses must measure in eval mode and restore train mode
    result = layer_responses(model, data)
    assert model.training
    assert result.names == [
        "layer1.0.bn1",
        "layer1.0.bn2",
        "layer2.0.bn1",
        "layer2.0.bn2",
        "layer3.0.bn1",
        "layer3.0.bn2",
    ]
    model.eval()
    captured.clear()
    for x, _ in data:
        model(x)
    expected = [
        torch.cat([t.flatten() for t in captured[n]]).double().std(unbiased=False).item()
        for n in result.names
    ]
    assert result.stds == pytest.approx(expected, rel=1e-6)
    assert result.sorted_descending() == pytest.approx(sorted(expected, reverse=True), rel=1e-6)
    assert result.to_dict()["mean"] == pytest.approx(sum(expected) / len(expected))


def test_layer_responses_follow_bn_scale():
    model = _model("resnet_cifar", depth=8)
    data = _batches(2)
    base = layer_responses(model, data)
    with torch.no_grad():
        bn = model.layer3[0].bn2  # the last layer: nothing downstream is measured
        bn.weight.mul_(3.0)
        bn.bias.mul_(3.0)
    scaled = layer_responses(model, data)
    assert scaled.stds[-1] == pytest.approx(3 * base.stds[-1], rel=1e-5)
    assert scaled.stds[:-1] == pytest.approx(base.stds[:-1])


def test_layer_responses_errors():
    with pytest.raises(ConfigError, match="pre-activation"):
        layer_responses(_model("preact_resnet_cifar", depth=8, bottleneck=False), _batches(1))
    with pytest.raises(ConfigError, match="empty loader"):
        layer_responses(_model("resnet_cifar", depth=8), [])


# --- paths -------------------------------------------------------------------------------------


def test_path_length_distribution_is_binomial():
    assert path_length_counts(3) == [1, 3, 3, 1]
    counts = path_length_counts(54)  # ResNet-110
    assert sum(counts) == 2**54
    fractions = path_length_fractions(54)
    assert sum(fractions) == pytest.approx(1.0)
    assert sum(k * f for k, f in enumerate(fractions)) == pytest.approx(27.0)
    # Veit et al. Sec. 5: at least 95% of ResNet-110's paths go through 19 to 35 units
    assert 0.95 <= sum(fractions[19:36]) < 0.99
    with pytest.raises(ConfigError):
        path_length_counts(-1)


def _input_grad(model, x, y, configuration=None):
    first = model.residual_blocks()[0][1]
    got = {}

    def keep(_module, inputs):
        inputs[0].retain_grad()
        got["x"] = inputs[0]

    hook = first.register_forward_pre_hook(keep)
    try:
        if configuration is None:
            loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
            loss.backward()
            return got["x"].grad
        with _gated_blocks([u for _, u in model.residual_blocks()]) as gates:
            loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
            for (skip, branch), through in zip(gates, configuration, strict=True):
                branch.value, skip.value = float(through), float(not through)
            loss.backward()
            return got["x"].grad
    finally:
        hook.remove()


@pytest.mark.parametrize(
    "name,kwargs",
    [("resnet_cifar", {"depth": 8}), ("preact_resnet_cifar", {"depth": 8, "bottleneck": False})],
)
def test_path_gradients_sum_to_the_full_gradient(name, kwargs):
    # Unravelled, the network is the sum of its 2^n paths: the gradients of all paths add up to the
    # full gradient, and the gated forward pass computes the same outputs.
    model = _model(name, **kwargs).double()
    x, y = torch.randn(3, 1, 10, 10, dtype=torch.float64), torch.randint(0, 4, (3,))
    full = _input_grad(model, x, y)
    n = len(model.residual_blocks())
    total = sum(_input_grad(model, x, y, c) for c in itertools.product([False, True], repeat=n))
    assert torch.allclose(total, full, atol=1e-10)
    with _gated_blocks([u for _, u in model.residual_blocks()]):
        assert torch.allclose(model(x), model.forward_head(model.forward_features(x)))


def test_shortcut_only_path_is_the_chain_of_masked_shortcuts():
    # The path that skips every branch: the gradient flows through each shortcut and each unit's final
    # ReLU (whose mask comes from the real forward pass), nothing else.
    model = _model("resnet_cifar", depth=8).double()
    units = [u for _, u in model.residual_blocks()]
    inputs, outputs = [], []

    def record(_module, args, output):
        inputs.append(args[0])
        outputs.append(output)

    hooks = [u.register_forward_hook(record) for u in units]
    x, y = torch.randn(3, 1, 10, 10, dtype=torch.float64, requires_grad=True), torch.randint(0, 4, (3,))
    loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
    for hook in hooks:
        hook.remove()
    grad_out = torch.autograd.grad(loss, outputs[-1])[0]
    z0 = inputs[0].detach().requires_grad_(True)
    z = z0
    for unit, out in zip(units, outputs, strict=True):
        z = unit.forward_shortcut(z) * (out > 0)
    expected = torch.autograd.grad(z, z0, grad_out)[0]
    got = _input_grad(model, x.detach(), y, [False] * len(units))
    assert torch.allclose(got, expected, atol=1e-12)


def test_gradient_by_path_length_shapes_and_errors():
    model = _model("resnet_cifar", depth=14)
    x, y = torch.randn(4, 1, 10, 10), torch.randint(0, 4, (4,))
    requires = [p.requires_grad for p in model.parameters()]
    result = gradient_by_path_length(model, x, y, samples=2)
    n = len(model.residual_blocks())
    assert result.lengths == list(range(n + 1))
    assert all(v > 0 and math.isfinite(v) for v in result.mean_norm)
    counts = path_length_counts(n)
    assert result.total_norm == pytest.approx([m * c for m, c in zip(result.mean_norm, counts, strict=True)])
    low, high = result.central_range(0.9)
    assert 0 <= low <= high <= n
    assert 0 <= result.share_below(n // 2) <= 1
    assert [p.requires_grad for p in model.parameters()] == requires
    assert all("forward" not in u.__dict__ for _, u in model.residual_blocks())
    with pytest.raises(ConfigError, match="plain"):
        gradient_by_path_length(_model("plain_cifar", depth=8), x, y)
    with pytest.raises(ConfigError, match="lengths"):
        gradient_by_path_length(model, x, y, lengths=[n + 1])
    with pytest.raises(ConfigError, match="neither"):
        gradient_by_path_length(_model("resnet_cifar", depth=8, shortcut_kind="exclusive_gating"), x, y)
