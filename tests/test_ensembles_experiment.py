"""``resnets reproduce ensembles`` (Veit et al. 2016, Fig. 5): random multi-deletions, random re-orderings
binned by Kendall tau, every image scored; the smoke budget end to end, the plans sharing lesion's runs
exactly, and the verdict on constructed nets (shows, contradicts, cannot be judged)."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest
import torch
from helpers import random_batches, small_net
from PIL import Image

from resnets import create_model
from resnets.analysis.lesion import (
    DeletionCurve,
    blocks_deleted,
    blocks_permuted,
    blocks_swapped,
    deletion_curve,
    image_errors,
    interchangeable_groups,
    kendall_tau,
    orders_by_tau,
    random_order,
    random_subsets,
    reordering_curve,
)
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.experiments import get_experiment
from resnets.experiments.base import recipe_dict
from resnets.experiments.ensembles import Ensembles, curve_shape, deletion_points, fixed_subset
from resnets.experiments.paired import Net, overall
from resnets.experiments.runner import make_context, plan, reproduce

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name: str, **kwargs) -> torch.nn.Module:
    return small_net(name, **kwargs)


def _batches(n: int = 2, size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return random_batches(n, size)


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


def _counting(calls: list[np.ndarray]):
    def score(model, loader):
        assert not model.training
        calls.append(image_errors(model, loader))
        return calls[-1]

    return score


def test_deletion_curve_scores_every_image_of_each_draw_and_leaves_the_model_intact():
    model = _model("resnet_cifar", depth=14).train()  # 6 units; 2 and 4 downsample
    data = _batches()
    units = [u for _, u in model.residual_blocks()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls: list[np.ndarray] = []
    curve = deletion_curve(model, data, [0, 1, 2, 4, 5], draws=3, seed=7, score=_counting(calls))
    assert curve.candidates == [0, 1, 3, 5]  # the shape-keeping units
    assert curve.ks == [0, 1, 2, 4]  # 5 of 4 candidates cannot be drawn
    assert [len(d) for d in curve.deleted] == [1, 3, 3, 1]  # k=4: the one set there is
    assert [w.shape for w in curve.wrong] == [(1, 8), (3, 8), (3, 8), (1, 8)]
    assert len(calls) == 1 + 3 + 3 + 1 and np.array_equal(curve.wrong[0][0], curve.intact)
    assert model.training and all("forward" not in u.__dict__ for u in units)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    for subsets, wrong in zip(curve.deleted[1:], curve.wrong[1:], strict=True):
        for subset, row in zip(subsets, wrong, strict=True):
            with blocks_deleted(units[i] for i in subset):
                assert np.array_equal(row, image_errors(model, data))
    assert curve.errors[1] == [100 * float(row.mean()) for row in curve.wrong[1]]
    assert np.allclose(curve.image_costs(2), curve.wrong[2].mean(axis=0) - curve.intact)
    again = deletion_curve(model, data, [0, 1, 2, 4, 5], draws=3, seed=7, intact=curve.intact)
    assert again.deleted == curve.deleted and again.errors == curve.errors  # seeded
    assert set(curve.to_dict()) >= {"errors", "deleted", "ks", "baseline_error"}


def test_orders_by_tau_are_equal_count_bins_from_the_mildest_to_the_strongest():
    groups = [[0, 1, 2], [4, 5], [7, 8]]
    orders, swaps = orders_by_tau(groups, 9, bins=3, per_bin=4, rng=random.Random(0))
    taus = [kendall_tau(order) for order in orders]
    assert len(orders) == 12 and taus == sorted(taus, reverse=True)
    assert all(sorted(order[i] for i in g) == g for order in orders for g in groups)
    assert sorted(swaps) == sorted([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 1, 2])  # the swap ladder in turn
    assert orders_by_tau(groups, 9, bins=3, per_bin=4, rng=random.Random(0))[0] == orders


def test_reordering_curve_scores_each_order_once_with_its_kendall_tau():
    model = _model("resnet20")
    data = _batches(1)
    units = [u for _, u in model.residual_blocks()]
    calls: list[np.ndarray] = []
    intact = image_errors(model, data)
    result = reordering_curve(model, data, bins=3, per_bin=4, seed=2, intact=intact, score=_counting(calls))
    assert result.bins() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert result.taus == sorted(result.taus, reverse=True) and result.wrong.shape == (12, 4)
    distinct = {tuple(order) for order in result.orders} - {tuple(range(9))}
    assert len(calls) == len(distinct)  # one evaluation per distinct order, none for the intact one
    for order, tau, row in zip(result.orders, result.taus, result.wrong, strict=True):
        assert tau == kendall_tau(order)
        with blocks_permuted(units, order):
            assert np.array_equal(row, image_errors(model, data))
    assert all("forward" not in u.__dict__ for u in units)
    assert result.to_dict()["bins"] == result.bins()


def test_curves_of_a_net_whose_branches_are_zero_stay_at_its_error():
    # zero_init_last: every unit computes only its shortcut, so no deletion or re-ordering changes anything
    model = create_model("resnet_cifar", depth=20, num_classes=4, in_chans=1, zero_init_last=True).eval()
    data = _batches()
    curve = deletion_curve(model, data, [0, 1, 3, 7], draws=2)
    assert all(np.array_equal(row, curve.intact) for wrong in curve.wrong for row in wrong)
    reorder = reordering_curve(model, data, bins=2, per_bin=2, intact=curve.intact)
    assert all(np.array_equal(row, curve.intact) for row in reorder.wrong)


def test_fixed_subset_draws_the_same_images_once():
    data = [(torch.arange(i, i + 4).float().view(4, 1), torch.arange(i, i + 4)) for i in range(0, 12, 4)]
    subset = fixed_subset(data, 5, batch=2)
    labels = torch.cat([y for _, y in subset])
    assert [len(y) for _, y in subset] == [2, 2, 1] and labels.tolist() == sorted(labels.tolist())
    assert torch.equal(torch.cat([x for x, _ in subset]).view(-1), labels.float())  # images keep their labels
    assert torch.equal(torch.cat([y for _, y in fixed_subset(data, 5, batch=2)]), labels)
    assert fixed_subset(data, None) is data and fixed_subset(data, 12) is data


def test_curve_shape_measures_steps_and_order():
    flat = curve_shape([0, 1, 2, 4], [8.0, 8.3, 7.9, 8.2], 90.0)
    assert flat["rise"] == pytest.approx(0.2) and flat["largest_step"] == pytest.approx(0.3)
    cliff = curve_shape([0, 1, 2], [8.0, 9.0, 60.0], 90.0)
    assert cliff["largest_step_between"] == [1, 2] and cliff["largest_step_share_to_chance"] == pytest.approx(
        51 / 82
    )
    assert cliff["rank_correlation"] == pytest.approx(1.0)
    assert curve_shape([0, 1, 2], [8.0, 6.0, 4.0], 90.0)["rank_correlation"] == pytest.approx(-1.0)


# --- the experiment ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("ensembles")
    messages: list[str] = []
    written = reproduce("ensembles", budget="smoke", output=output, device="cpu", log=messages.append)
    return output, written, messages


def test_smoke_writes_every_artefact(smoke):
    output, written, _ = smoke
    results = json.loads(written["results"].read_text())
    report = written["report"].read_text()
    assert results["experiment"] == "ensembles" and results["budget"] == "smoke"
    nets = results["results"]
    assert {"ResNet-14", "plain-14", "VGG-8"} <= set(nets)
    seeds = nets["ResNet-14"]["deletions"]
    assert len(seeds) == 2 and seeds[0]["ks"] == [0, 1, 2, 4] and seeds[0]["candidates"] == [0, 1, 3, 5]
    assert [len(e) for e in seeds[0]["errors"]] == [1, 2, 2, 1]
    assert seeds[0]["deleted"] == seeds[1]["deleted"]  # the same draws for every seed
    assert all(0 <= e <= 100 for row in seeds[0]["errors"] for e in row)
    assert nets["VGG-8"]["deletions"][0]["ks"] == [0, 1, 2] and "reorderings" not in nets["VGG-8"]
    reorder = nets["ResNet-14"]["reorderings"]
    assert len(reorder) == 2 and len(reorder[0]["taus"]) == 4 and reorder[0]["bins"] == [[0, 1], [2, 3]]
    assert all(-1 <= t <= 1 for t in reorder[0]["taus"])
    assert len(nets["reordering_points"]) == 2
    for points in nets["deletion_points"].values():  # error bars: percentiles of the draws, inside 0-100
        assert all(0 <= low <= mean <= high <= 100 for mean, low, high in points.values())
    assert set(nets["comparisons"]) == {"plain-14, k=2 vs ResNet-14, k=2", "VGG-8, k=2 vs ResNet-14, k=2"}
    assert nets["verdict"] in ("shows", "contradicts", "cannot be judged") and nets["test_images"] == 64
    assert nets["chance_error"] == pytest.approx(90.0) and nets["paper"]["network"] == "ResNet-110"
    assert results["finding"]["text"] in report
    for heading in ("units deleted", "tau bin", "ResNet-14 mean Kendall tau", "departures from the paper"):
        assert heading in report
    with Image.open(written["ensembles.png"]) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 600


def test_smoke_trains_lesions_runs(smoke):
    output, _, messages = smoke
    lesion = get_experiment("lesion")
    names = [s.name for s in plan(lesion, make_context(lesion, budget="smoke", output=output))]
    assert len(names) == 6 and all((output / "runs" / name / "summary.json").is_file() for name in names)
    assert sum("training" in m for m in messages) == 6


@pytest.mark.parametrize("budget", ["smoke", "cpu", "paper"])
def test_runs_are_lesions_exactly(tmp_path, budget):
    def specs(name):
        experiment = get_experiment(name)
        return plan(experiment, make_context(experiment, budget=budget, output=tmp_path))

    ours, theirs = specs("ensembles"), specs("lesion")
    assert [s.name for s in ours] == [s.name for s in theirs]
    assert [recipe_dict(s) for s in ours] == [recipe_dict(s) for s in theirs]
    if budget != "smoke":
        assert [s.label for s in ours] == [
            label for label in ("ResNet-56", "plain-56", "VGG-20") for _ in "ab"
        ]
    if budget == "paper":  # CIFAR-10 at the paper's 64k iterations, the full test set
        recipes = [recipe_dict(s) for s in ours]
        assert {r["dataset"] for r in recipes} == {"cifar10"}
        assert {r["iterations"] for r in recipes} == {64_000}
        assert {r["test_subset"] for r in recipes} == {None}
        experiment = get_experiment("ensembles")
        settings = experiment.settings(make_context(experiment, budget="paper", output=tmp_path))
        assert "ResNet-110 (54)" in settings["departures from the paper"]


def test_cpu_settings_state_the_subset_and_the_cost(tmp_path):
    experiment = get_experiment("ensembles")
    settings = experiment.settings(make_context(experiment, budget="cpu", output=tmp_path))
    assert "a fixed random 2,000 of the test images" in settings["test images"]
    assert "+-1.2 points" in settings["test images"] and "minutes" in settings["cost"]
    assert "20 distinct random sets per k" in settings["random deletions"]


def test_cli_plan_prints_the_paper_runs(capsys, tmp_path):
    assert main(["reproduce", "ensembles", "--budget", "paper", "--plan", "--output", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    assert len(lines) == 6 and all("dataset=cifar10" in ln for ln in lines)
    assert not (tmp_path / "runs").exists()  # planned, not trained


# --- the verdict, on constructed nets ----------------------------------------------------------------

IMAGES = 2_000
NETS = {"resnet": Net("r", "ResNet-56", ()), "plain": Net("p", "plain-56", ()), "vgg": Net("v", "VGG-20", ())}


def _curve(intact_pct: float, costs: dict[int, float], seed: int, draws: int = 20) -> DeletionCurve:
    """A net erring on ``intact_pct``% of IMAGES images; with k units deleted each draw errs on ``costs[k]``
    points more, give or take a point between draws."""
    rng = np.random.default_rng(seed)
    intact = (rng.random(IMAGES) < intact_pct / 100).astype(np.uint8)
    wrong = [intact[None]]
    for cost in costs.values():
        rows = []
        for d in range(draws):
            row = intact.copy()
            extra = max(0.0, cost + (d % 3 - 1))
            row[rng.choice(np.flatnonzero(row == 0), round(extra * IMAGES / 100), replace=False)] = 1
            rows.append(row)
        wrong.append(np.stack(rows))
    return DeletionCurve([], [], intact, [0, *costs], [[[]]] * (1 + len(costs)), wrong)


def _verdict(resnet: dict[int, float], plain: dict[int, float], vgg: dict[int, float]) -> tuple[str, str]:
    curves = {
        "resnet": [_curve(8, resnet, s) for s in (0, 1)],
        "plain": [_curve(9, plain, s) for s in (2, 3)],
        "vgg": [_curve(7, vgg, s) for s in (4, 5)],
    }
    deciding = Ensembles._comparisons(NETS, curves, 4)
    verdict = overall([c.verdict for c in deciding])
    points = {NETS[kind].label: deletion_points(c) for kind, c in curves.items()}
    reordered = [
        {
            "tau": 0.98,
            "tau_range": [0.97, 0.99],
            "swaps": [1],
            "orders": 20,
            "error": 8.5,
            "percentiles": [8, 9],
        },
        {
            "tau": 0.8,
            "tau_range": [0.7, 0.85],
            "swaps": [32],
            "orders": 20,
            "error": 12.0,
            "percentiles": [9, 16],
        },
    ]
    shapes = Ensembles._shapes(NETS, points, reordered, 90.0)
    return verdict, Ensembles._finding(NETS, points, reordered, deciding, shapes, verdict, 4, 90.0)


RESNET = {1: 0.6, 2: 1.5, 4: 3.0, 8: 8.0, 16: 30.0}
PLAIN = {1: 76.0, 2: 78.0, 4: 80.0}
VGG = {1: 70.0, 2: 78.0, 4: 81.0}


def test_the_verdict_shows_a_resnet_that_degrades_far_less():
    verdict, text = _verdict(RESNET, PLAIN, VGG)
    assert verdict == "shows" and "The paper's finding shows" in text
    assert (
        "takes the error of ResNet-56 from 7.98% intact to 8.67% at k=1 (7.8-9.8)" in text
        and "at k=16" in text
    )
    assert "; of plain-56 from 9.28% intact to 85.22% at k=1" in text and "plain-56, k=4" in text
    assert "largest step" in text and "12.00% at tau 0.80 (9.0-16.0)" in text


def test_the_verdict_contradicts_or_cannot_be_judged():
    verdict, text = _verdict({1: 76.0, 2: 78.0, 4: 80.0}, {1: 0.6, 2: 1.5, 4: 3.0}, {1: 0.6, 2: 1.5, 4: 3.0})
    assert verdict == "contradicts" and "The opposite of the paper's finding holds" in text
    verdict, text = _verdict(RESNET, PLAIN, {1: 0.6, 2: 1.5, 4: 3.0})  # the VGG-style net degrades as gently
    assert verdict == "cannot be judged" and "smallest effect this budget could detect" in text
