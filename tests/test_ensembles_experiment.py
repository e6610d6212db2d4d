"""``resnets reproduce ensembles`` (Veit et al. 2016, Fig. 5): random multi-deletions, random re-orderings and
their Kendall tau; the smoke budget end to end, the cpu and paper plans sharing lesion's runs exactly, and the
verdict computed from made-up numbers."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
import torch
from PIL import Image

from resnets import create_model
from resnets.analysis.lesion import (
    DeletionCurve,
    ReorderingResult,
    blocks_deleted,
    blocks_permuted,
    blocks_swapped,
    deletion_curve,
    interchangeable_groups,
    kendall_tau,
    random_order,
    random_subsets,
    reordering_curve,
)
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.experiments import get_experiment
from resnets.experiments.base import recipe_dict
from resnets.experiments.ensembles import Ensembles, smoothness
from resnets.experiments.runner import make_context, plan, reproduce

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name: str, **kwargs) -> torch.nn.Module:
    model = create_model(name, num_classes=4, in_chans=1, **kwargs)
    with torch.no_grad():  # non-trivial BN statistics, so that eval-mode BN is not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _batches(n: int = 2, size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(size, 1, 12, 12), torch.randint(0, 4, (size,))) for _ in range(n)]


def _logits(model, data) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x) for x, _ in data])


# --- Kendall tau, random draws, permutations -----------------------------------------------------------


def test_kendall_tau_against_hand_computed_values():
    assert kendall_tau([0, 1, 2, 3]) == 1.0 and kendall_tau([3, 2, 1, 0]) == -1.0
    # [1, 0, 2]: pair (0, 1) discordant, (0, 2) and (1, 2) concordant: (2 - 1) / 3
    assert kendall_tau([1, 0, 2]) == pytest.approx(1 / 3)
    # one discordant pair (2 <-> 3) of 6: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # tau-a: the tied pair counts as neither: (2 - 0) / 3
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 3)
    # a brute-force check on every permutation of 5: (concordant - discordant) / 10
    for order in itertools.permutations(range(5)):
        inversions = sum(order[i] > order[j] for i, j in itertools.combinations(range(5), 2))
        assert kendall_tau(list(order)) == pytest.approx((10 - 2 * inversions) / 10)
    with pytest.raises(ConfigError):
        kendall_tau([0, 1], [0])


def test_random_subsets_are_distinct_seeded_and_drawn_from_the_candidates():
    candidates = [0, 1, 3, 4, 6, 7]
    subsets = random_subsets(candidates, 2, 5, random.Random(0))
    assert len(subsets) == 5 and len({tuple(s) for s in subsets}) == 5
    assert all(len(s) == 2 and s == sorted(s) and set(s) <= set(candidates) for s in subsets)
    assert subsets == random_subsets(candidates, 2, 5, random.Random(0))
    assert len(random_subsets(candidates, 5, 10, random.Random(1))) == math.comb(6, 5)  # all there are
    assert random_subsets(candidates, 6, 3, random.Random(1)) == [candidates]
    with pytest.raises(ConfigError):
        random_subsets(candidates, 7, 1, random.Random(0))


def test_random_orders_move_units_only_within_their_group():
    groups = [[0, 1, 2], [4, 5], [7, 8]]
    assert random_order(groups, 9, 0, random.Random(0)) == list(range(9))
    rng = random.Random(3)
    for swaps in (1, 2, 5, 20):
        order = random_order(groups, 9, swaps, rng)
        assert sorted(order) == list(range(9))
        assert order[3] == 3 and order[6] == 6  # the downsampling units stay
        assert all(sorted(order[i] for i in g) == g for g in groups)
    assert random_order(groups, 9, 7, random.Random(5)) == random_order(groups, 9, 7, random.Random(5))
    with pytest.raises(ConfigError, match="trade places"):
        random_order([], 3, 1, random.Random(0))


def test_interchangeable_groups_are_the_shape_keeping_units_of_each_stage():
    # resnet20: 3 stages of 3 units, units 3 and 6 downsample
    groups = interchangeable_groups(_model("resnet20"), torch.randn(1, 1, 16, 16))
    assert groups == [[0, 1, 2], [4, 5], [7, 8]]
    # VGG-style net of depth 14: 4 layers a stage, the first of stages 2 and 3 widen (after a max pool)
    groups = interchangeable_groups(_model("vgg_cifar", depth=14), torch.randn(1, 1, 16, 16))
    assert groups == [[0, 1, 2, 3], [5, 6, 7], [9, 10, 11]]


def test_a_permutation_runs_the_units_in_the_new_order_and_is_undone():
    model = _model("resnet20")
    units = [u for _, u in model.residual_blocks()]
    x = torch.randn(2, 1, 12, 12)
    before = _logits(model, [(x, None)])
    stem = model.forward_stem(x)
    rest = list(range(3, 9))
    with torch.no_grad():
        expected = units[0](units[2](units[1](stem)))  # positions 0, 1, 2 run units 1, 2, 0
        with blocks_permuted(units, [1, 2, 0, *rest]):
            got = model.layer1(stem)
            permuted = model(x)
        with blocks_permuted(units, [1, 0, 2, *rest]):  # a transposition is blocks_swapped's swap
            transposed = model(x)
        with blocks_swapped(units[0], units[1]):
            assert torch.equal(model(x), transposed)
    assert torch.allclose(got, expected)
    assert not torch.allclose(permuted, before)
    assert all("forward" not in u.__dict__ for u in units)
    assert torch.equal(_logits(model, [(x, None)]), before)
    with pytest.raises(ConfigError, match="not a permutation"), blocks_permuted(units, [0, 0, 1, *rest]):
        pass


# --- the two curves ----------------------------------------------------------------------------------


def test_deletion_curve_measures_each_draw_and_leaves_the_model_intact():
    model = _model("resnet_cifar", depth=14).train()  # 6 units; 2 and 4 downsample
    data = _batches()
    units = [u for _, u in model.residual_blocks()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls: list[torch.Tensor] = []

    def error_fn(m, loader):
        assert not m.training
        calls.append(_logits(m, loader))
        return float(calls[-1].abs().sum())

    curve = deletion_curve(model, data, [0, 1, 2, 4, 5], draws=3, seed=7, error_fn=error_fn)
    assert curve.candidates == [0, 1, 3, 5]  # the shape-keeping units
    assert curve.ks == [0, 1, 2, 4]  # 5 of 4 candidates cannot be drawn
    assert [len(d) for d in curve.deleted] == [1, 3, 3, 1]  # k=4: the one set there is
    assert curve.deleted[0] == [[]] and curve.errors[0] == [curve.baseline_error]
    assert len(calls) == 1 + 3 + 3 + 1
    assert model.training and all("forward" not in u.__dict__ for u in units)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.eval()
    flat = [(s, e) for subsets, errors in zip(curve.deleted[1:], curve.errors[1:], strict=True)
            for s, e in zip(subsets, errors, strict=True)]
    for (subset, error), logits in zip(flat, calls[1:], strict=True):
        with blocks_deleted(units[i] for i in subset):
            assert torch.equal(_logits(model, data), logits)
        assert error == float(logits.abs().sum())
    assert curve.mean_errors[1] == pytest.approx(sum(curve.errors[1]) / 3)
    assert curve.std_errors[0] == 0.0 and curve.std_errors[1] > 0
    assert curve.mean_at(2) == curve.mean_errors[2] and curve.mean_at(3) is None
    again = deletion_curve(model, data, [0, 1, 2, 4, 5], draws=3, seed=7, error_fn=error_fn)
    assert again.deleted == curve.deleted and again.errors == curve.errors  # seeded
    assert set(curve.to_dict()) >= {"mean_errors", "std_errors", "deleted", "ks"}


def test_curves_of_a_net_whose_branches_are_zero_stay_at_its_error():
    # zero_init_last: every unit computes only its shortcut, so no deletion or re-ordering changes anything
    model = create_model("resnet_cifar", depth=20, num_classes=4, in_chans=1, zero_init_last=True).eval()
    data = _batches()
    curve = deletion_curve(model, data, [0, 1, 3, 7], draws=2)
    assert all(e == curve.baseline_error for row in curve.errors for e in row)
    reorder = reordering_curve(model, data, [1, 3], draws=2, baseline_error=curve.baseline_error)
    assert reorder.errors == [curve.baseline_error] * 4


def test_reordering_curve_evaluates_each_order_once_with_its_kendall_tau():
    model = _model("resnet20")
    data = _batches(1)
    units = [u for _, u in model.residual_blocks()]
    seen: dict[tuple[int, ...], float] = {}
    calls = []

    def error_fn(m, loader):
        calls.append(_logits(m, loader))
        return float(calls[-1].sum())

    result = reordering_curve(model, data, [1, 2, 8], draws=3, seed=2, baseline_error=5.0, error_fn=error_fn)
    assert result.swaps == [1, 1, 1, 2, 2, 2, 8, 8, 8] and result.baseline_error == 5.0
    for order, tau, error in zip(result.orders, result.taus, result.errors, strict=True):
        assert tau == kendall_tau(order)
        key = tuple(order)
        if key == tuple(range(9)):
            assert error == 5.0  # the intact order: the baseline, not evaluated again
            continue
        with blocks_permuted(units, order):
            assert error == pytest.approx(float(_logits(model, data).sum()))
        seen[key] = error
    assert len(calls) == len(seen)  # one evaluation per distinct order
    assert all(t < 1 for t, s in zip(result.taus, result.swaps, strict=True) if s == 1)  # a swap moves
    rows = result.by_swaps()
    assert [r[0] for r in rows] == [1, 2, 8]
    assert rows[0][1] == pytest.approx(sum(result.taus[:3]) / 3)
    assert all("forward" not in u.__dict__ for u in units)


# --- the experiment ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("ensembles")
    messages: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        written = reproduce("ensembles", budget="smoke", output=output, device="cpu", log=messages.append)
    finally:
        torch.set_num_threads(threads)
    return output, written, messages


def test_smoke_writes_every_artefact(smoke):
    output, written, _ = smoke
    results = json.loads(written["results"].read_text())
    report = written["report"].read_text()
    assert results["experiment"] == "ensembles" and results["budget"] == "smoke"
    nets = results["results"]
    assert {"ResNet-14", "plain-14", "VGG-8"} <= set(nets)
    res = nets["ResNet-14"]["deletions"]
    assert res["ks"] == [0, 1, 2, 4] and res["candidates"] == [0, 1, 3, 5]
    assert [len(e) for e in res["errors"]] == [1, 2, 2, 1]
    assert all(0 <= e <= 100 for row in res["errors"] for e in row)
    assert nets["VGG-8"]["deletions"]["ks"] == [0, 1, 2] and "reorderings" not in nets["VGG-8"]
    reorder = nets["ResNet-14"]["reorderings"]
    assert reorder["swaps"] == [1, 1, 2, 2] and len(reorder["taus"]) == 4
    assert all(-1 <= t <= 1 for t in reorder["taus"])
    assert nets["plain-14"]["reorderings"]["swaps"] == [1]
    assert results["results"]["chance_error"] == pytest.approx(90.0)
    assert results["results"]["paper"]["network"] == "ResNet-110"
    assert results["finding"]["shows"] == results["results"]["summary"]["shows"]
    assert results["finding"]["text"] in report
    for heading in ("units deleted", "random swaps", "ResNet-14 mean Kendall tau",
                    "departures from the paper"):
        assert heading in report
    with Image.open(written["ensembles.png"]) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 600


def test_smoke_trains_lesions_runs(smoke):
    output, _, messages = smoke
    lesion = get_experiment("lesion")
    names = [s.name for s in plan(lesion, make_context(lesion, budget="smoke", output=output))]
    assert len(names) == 3 and all((output / "runs" / name / "summary.json").is_file() for name in names)
    assert sum("training" in m for m in messages) == 3


@pytest.mark.parametrize("budget", ["smoke", "cpu", "paper"])
def test_runs_are_lesions_exactly(tmp_path, budget):
    def specs(name):
        experiment = get_experiment(name)
        return plan(experiment, make_context(experiment, budget=budget, output=tmp_path))

    ours, theirs = specs("ensembles"), specs("lesion")
    assert [s.name for s in ours] == [s.name for s in theirs]
    assert [recipe_dict(s) for s in ours] == [recipe_dict(s) for s in theirs]
    if budget != "smoke":
        assert [s.label for s in ours] == ["ResNet-56", "plain-56", "VGG-20"]
    if budget == "paper":  # CIFAR-10 at the paper's 64k iterations, the full test set
        recipes = [recipe_dict(s) for s in ours]
        assert {r["dataset"] for r in recipes} == {"cifar10"}
        assert {r["iterations"] for r in recipes} == {64_000}
        assert {r["test_subset"] for r in recipes} == {None}
        experiment = get_experiment("ensembles")
        settings = experiment.settings(make_context(experiment, budget="paper", output=tmp_path))
        assert "ResNet-110 (54)" in settings["departures from the paper"]


def test_cli_plan_prints_the_paper_runs(capsys, tmp_path):
    assert main(["reproduce", "ensembles", "--budget", "paper", "--plan", "--output", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    assert len(lines) == 3 and all("dataset=cifar10" in ln for ln in lines)
    assert not (tmp_path / "runs").exists()  # planned, not trained


# --- the verdict, from made-up numbers -----------------------------------------------------------------


def _curve(baseline: float, means: dict[int, float], spread: float = 0.5) -> DeletionCurve:
    ks = sorted(means)
    errors = [[baseline] if k == 0 else [means[k] - spread, means[k] + spread] for k in ks]
    return DeletionCurve(baseline, [], [], ks, errors, [[[]]] * len(ks))


def _reorder(baseline: float, by_swaps: dict[int, float]) -> ReorderingResult:
    swaps = [s for s in by_swaps for _ in range(2)]
    taus = [1 - 0.02 * s for s in swaps]
    return ReorderingResult(baseline, swaps, [[]] * len(swaps), taus, [by_swaps[s] for s in swaps])


RESNET = {0: 8.0, 1: 8.6, 2: 9.5, 4: 11.0, 8: 16.0, 14: 28.0, 18: 40.0}
PLAIN = {0: 12.0, 1: 88.0, 2: 89.0, 4: 90.0, 8: 90.0}
VGG = {0: 9.0, 1: 80.0, 2: 86.0, 4: 89.0, 8: 90.0}
REORDER = {1: 8.5, 2: 9.0, 4: 10.5, 8: 13.0, 16: 18.0}


def _verdict(resnet=RESNET, plain=PLAIN, vgg=VGG, reorder=REORDER):
    deletions = {"resnet": ("ResNet-56", _curve(resnet[0], resnet)),
                 "plain": ("plain-56", _curve(plain[0], plain)), "vgg": ("VGG-20", _curve(vgg[0], vgg))}
    reorderings = {"resnet": ("ResNet-56", _reorder(resnet[0], reorder)),
                   "plain": ("plain-56", _reorder(plain[0], {1: 85.0}))}
    return Ensembles._finding(deletions, reorderings, 90.0, 2000)


def test_the_verdict_shows_a_smooth_resnet_against_collapsing_contrasts():
    text, shows, summary = _verdict()
    assert shows is True and summary["shows"] is True
    assert "from 8.00% intact to 8.60% at k=1, 9.50% at k=2" in text and "40.00% at k=18" in text
    assert "plain-56 goes from 12.00% to 88.00% with one unit deleted (a collapse towards chance)" in text
    assert "VGG-20 goes from 9.00% to 80.00%" in text and "The paper's finding shows" in text
    assert summary["plain"]["one_deletion_cost"] == pytest.approx(76.0)
    assert summary["resnet_deletions"]["largest_step"] == pytest.approx(12.0)  # 14 -> 18 and 8 -> 14
    assert "13.00% at Kendall tau 0.84 (8 swaps)" in text


@pytest.mark.parametrize("change, unmet", [
    ({"vgg": {0: 9.0, 1: 20.0, 2: 25.0, 4: 30.0, 8: 40.0}}, "the contrast nets collapse"),  # VGG does not
    ({"resnet": {**RESNET, 1: 60.0}}, "the ResNet stays far below them"),  # one deletion costs half
    ({"resnet": {**RESNET, 14: 20.0, 18: 85.0}}, "the ResNet's deletion curve is smooth"),  # a cliff at 18
    # rises by 4 points overall, but zig-zags (rank correlation with k 0.5)
    ({"resnet": {0: 8.0, 1: 30.0, 2: 9.0, 4: 35.0, 8: 10.0, 14: 38.0, 18: 12.0}}, "deletion curve is smooth"),
    ({"reorder": {1: 8.5, 2: 9.0, 4: 75.0, 8: 80.0, 16: 85.0}}, "its re-ordering curve is smooth"),
])
def test_the_verdict_says_what_is_not_met(change, unmet):
    text, shows, _ = _verdict(**change)
    assert shows is False and "does not show at this budget" in text and unmet in text


def test_an_untrained_net_leaves_the_verdict_undecided():
    text, shows, _ = _verdict(plain={0: 89.5, 1: 90.0, 2: 90.0, 4: 90.0, 8: 90.0})
    assert shows is None and "plain-56 did not learn" in text


def test_smoothness_tolerates_a_flat_curve_within_the_noise():
    flat = smoothness([0, 1, 2, 4], [8.0, 8.3, 7.9, 8.2], 8.0, 90.0, 0.6)
    assert flat["smooth"] and flat["rise"] == pytest.approx(0.2)
    falling = smoothness([0, 1, 2, 4], [8.0, 6.0, 4.0, 2.0], 8.0, 90.0, 0.6)
    assert falling["monotone"] and falling["rank_correlation"] == pytest.approx(-1.0)  # no rise: no cliff
    wobbly = smoothness([0, 1, 2, 4, 8], [8.0, 20.0, 10.0, 30.0, 12.0], 8.0, 90.0, 0.6)
    assert not wobbly["monotone"] and wobbly["no_jump"]
    cliff = smoothness([0, 1, 2], [8.0, 9.0, 60.0], 8.0, 90.0, 0.6)
    assert cliff["monotone"] and not cliff["no_jump"] and cliff["largest_step_between"] == [1, 2]
