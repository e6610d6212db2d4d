"""The verdict rules of the He et al. experiments on constructed per-image errors: paired comparisons, the
composition of several into one verdict, the third seed, the responses' and the toy's rules."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import image_errors_at

from resnets.experiments.base import BUDGETS, Context
from resnets.experiments.paired import Comparison, Net, compare, more_seeds, overall, spread_cell
from resnets.experiments.responses import Responses
from resnets.experiments.stats import sign_test, sign_verdict

IMAGES = 10_000


_errors = image_errors_at


class FakeScores:
    """What ``compare`` reads: seeds x images errors of each net."""

    def __init__(self, errors: dict[str, list[np.ndarray]]) -> None:
        self.errors = errors

    def net_errors(self, net: Net) -> np.ndarray:
        return np.stack(self.errors[net.key])

    def test_errors(self, net: Net) -> list[float]:
        return [100 * float(e.mean()) for e in self.errors[net.key]]


def _net(key: str, seeds: int = 2) -> Net:
    return Net(key, key, tuple(object() for _ in range(seeds)))  # specs are not read here


def _compared(rates_a: list[float], rates_b: list[float], expected: str = "lower"):
    base = _errors(8.0, 0)
    scores = FakeScores(
        {
            "a": [_errors(r, 10 + i, base) for i, r in enumerate(rates_a)],
            "b": [_errors(r, 20 + i, base) for i, r in enumerate(rates_b)],
        }
    )
    return compare(
        scores, Comparison(_net("a", len(rates_a)), _net("b", len(rates_b)), expected, -1.78), resamples=2_000
    )


def test_a_clear_gap_in_the_papers_direction_shows():
    measured = _compared([8.0, 8.2], [6.0, 6.1])  # B lower by ~2 points, both seeds
    assert measured.verdict == "shows"
    assert measured.interval.high < 0 and measured.interval.difference == pytest.approx(-2.05, abs=0.01)
    assert all(d < 0 for d in measured.per_seed_differences)
    assert all(m.p_value < 1e-6 for m in measured.mcnemar)  # ~200 discordant images, all one way
    assert measured.spread_b.mean == pytest.approx(6.05) and "6.05% against" in measured.sentence()


def test_the_opposite_beyond_the_noise_contradicts():
    assert _compared([8.0, 8.1], [10.0, 10.2]).verdict == "contradicts"
    assert _compared([10.0, 10.1], [8.0, 8.2], expected="higher").verdict == "contradicts"


def test_a_gap_within_the_noise_or_split_seeds_cannot_be_judged():
    tiny = _compared([8.0, 8.0], [7.95, 8.05])
    assert tiny.verdict == "cannot be judged"
    assert "smallest effect this budget could detect" in tiny.sentence() and "1.78" in tiny.sentence()
    split = _compared([8.0, 8.0], [6.0, 8.6])  # the seeds disagree
    assert split.verdict == "cannot be judged"


def test_a_third_seed_where_the_gap_is_within_twice_its_standard_error():
    ctx = Context("x", BUDGETS["cpu"], "fashion-mnist", None, None, "cpu", "", seeds=2)
    close = _compared([8.0, 8.0], [7.9, 8.0])
    assert abs(close.interval.difference) < 2 * close.interval.standard_error
    assert more_seeds(ctx, [close]) == {"a": 3, "b": 3}
    clear = _compared([8.0, 8.2], [6.0, 6.1])
    assert more_seeds(ctx, [clear]) == {}
    smoke = Context("x", BUDGETS["smoke"], "fashion-mnist", None, None, "cpu", "", seeds=2)
    assert more_seeds(smoke, [close]) == {}  # the smoke budget never adds seeds
    ctx.extra_seeds.update(more_seeds(ctx, [close]))
    assert ctx.seeds_for("a") == 3 and ctx.seeds_for("c") == 2


def test_overall_verdict_of_several_parts():
    assert overall(["shows", "shows"]) == "shows"
    assert overall(["shows", "cannot be judged"]) == "cannot be judged"
    assert overall(["shows", "contradicts"]) == "cannot be judged"
    assert overall(["contradicts", "contradicts"]) == "contradicts"
    five = ["shows", "shows", "shows", "cannot be judged", "cannot be judged"]
    assert overall(five, required=3) == "shows"
    assert overall(five[:2] + ["contradicts"] + five[3:], required=3) == "cannot be judged"
    assert overall(["contradicts"] * 3 + ["shows"] * 2, required=3) == "contradicts"


def test_responses_rules_paired_by_layer_and_across_depths():
    rng = np.random.default_rng(0)

    def stds(mean: float, layers: int) -> list[list[float]]:
        return [list(mean + 0.02 * rng.standard_normal(layers)) for _ in range(2)]

    measured = {
        ("plain", 20): stds(1.0, 18),
        ("resnet", 20): stds(0.8, 18),
        ("plain", 56): stds(1.0, 54),
        ("resnet", 56): stds(0.6, 54),
    }
    judged = Responses._judgements(measured)
    assert set(judged) == {"ResNet-20 vs plain-20", "ResNet-56 vs plain-56", "ResNet-56 vs ResNet-20"}
    assert all(j.verdict == "shows" for j in judged.values())
    assert judged["ResNet-56 vs ResNet-20"].interval.difference == pytest.approx(-0.2, abs=0.01)
    measured[("resnet", 56)] = stds(0.9, 54)  # deeper responds more strongly: the opposite of Fig. 7
    assert Responses._judgements(measured)["ResNet-56 vs ResNet-20"].verdict == "contradicts"
    measured[("resnet", 56)] = stds(0.8, 54)
    assert Responses._judgements(measured)["ResNet-56 vs ResNet-20"].verdict == "cannot be judged"


def test_sign_test_and_its_verdict():
    assert sign_test(20, 0) == pytest.approx(2 * 0.5**20)
    assert sign_test(15, 5) == pytest.approx(0.04139, abs=1e-5)  # 2 P[X <= 5], X ~ B(20, 1/2)
    assert sign_test(0, 0) == 1.0
    assert sign_verdict([-3.0] * 20, "lower") == "shows"
    assert sign_verdict([-3.0] * 20, "higher") == "contradicts"
    assert sign_verdict([-3.0] * 12 + [2.0] * 8, "lower") == "cannot be judged"
    assert sign_verdict([0.0] * 20, "lower") == "cannot be judged"  # ties say nothing


def test_spread_cells():
    assert spread_cell([7.0]) == "7.00"
    assert spread_cell([7.0, 8.0]) == "7.50 (7.00-8.00)"
