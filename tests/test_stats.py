"""The paired statistics of ``resnets.experiments.stats`` against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from resnets.experiments.stats import (
    Interval,
    detectable_effect,
    image_blocks,
    judge,
    mcnemar,
    paired_bootstrap,
    sampling_noise,
    seed_spread,
    seeds_needed,
)

IMAGES = 10_000


def _table(a_only: int, b_only: int, both: int = 20, neither: int = 5) -> tuple[list[bool], list[bool]]:
    """Per-image correctness of A and B with the given discordant and concordant counts."""
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return a, b


def _errors(wrong: int, seeds: int = 2) -> np.ndarray:
    """(seeds x IMAGES) errors: every seed wrong on the first ``wrong`` images."""
    row = np.zeros(IMAGES, dtype=bool)
    row[:wrong] = True
    return np.tile(row, (seeds, 1))


# --- McNemar ------------------------------------------------------------------------------------------


def test_mcnemar_one_sided_table():
    result = mcnemar(*_table(10, 0))
    assert (result.a_only, result.b_only) == (10, 0)
    assert result.p_value == pytest.approx(2 * 0.5**10) == 0.001953125


def test_mcnemar_balanced_table_and_no_discordant_pairs():
    assert mcnemar(*_table(6, 6)).p_value == 1.0
    none = mcnemar(*_table(0, 0))
    assert (none.a_only, none.b_only, none.p_value) == (0, 0, 1.0)


def test_mcnemar_exact_value():
    expected = 2 * sum(math.comb(10, i) for i in range(4)) / 2**10  # 352 / 1024
    assert expected == 0.34375
    assert mcnemar(*_table(3, 7)).p_value == pytest.approx(expected, rel=1e-12)


def test_mcnemar_large_table_stays_exact():
    assert mcnemar(*_table(0, 300)).p_value == pytest.approx(2 * 0.5**300, rel=1e-12)


def test_mcnemar_order_invariant_and_accepts_tensors():
    a, b = _table(3, 7)
    forward, backward = mcnemar(a, b), mcnemar(torch.tensor(b), torch.tensor(a))
    assert (backward.a_only, backward.b_only) == (forward.b_only, forward.a_only) == (7, 3)
    assert backward.p_value == forward.p_value


def test_mcnemar_length_mismatch():
    with pytest.raises(ValueError, match="images"):
        mcnemar([True, False], [True])


# --- paired bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_covers_a_known_difference():
    a, b = _errors(700), _errors(1000)  # B wrong on exactly 300 more of the 10,000 images
    interval = paired_bootstrap(a, b, resamples=2000)
    assert interval.difference == pytest.approx(3.0)
    assert interval.low < 3.0 < interval.high
    assert interval.low > 0
    # Pairing: only the 300 discordant images vary, so SE = 100 sqrt(0.03 * 0.97 / 10,000) = 0.171
    # (unpaired draws would give 0.39).
    assert interval.standard_error == pytest.approx(100 * math.sqrt(0.03 * 0.97 / IMAGES), rel=0.1)


def test_bootstrap_identical_nets():
    rng = np.random.default_rng(3)
    errors = rng.random((2, IMAGES)) < 0.08
    interval = paired_bootstrap(errors, errors.copy(), resamples=1000)
    assert interval.difference == 0.0
    assert interval.low <= 0.0 <= interval.high
    # Seeds are drawn for each net separately, so two different seeds make the interval non-degenerate.
    assert interval.high - interval.low > 0


def test_bootstrap_reproducible_with_seed():
    rng = np.random.default_rng(4)
    a, b = rng.random((2, IMAGES)) < 0.07, rng.random((3, IMAGES)) < 0.09
    first = paired_bootstrap(a, b, resamples=500, seed=7)
    assert paired_bootstrap(torch.tensor(a), torch.tensor(b), resamples=500, seed=7) == first
    assert paired_bootstrap(a, b, resamples=500, seed=8) != first


def test_seed_variance_widens_the_interval():
    a = _errors(700)
    steady = paired_bootstrap(a, _errors(1100), resamples=2000)
    spread_b = np.stack([_errors(1000, 1)[0], _errors(1200, 1)[0]])  # seeds 2 points apart
    varying = paired_bootstrap(a, spread_b, resamples=2000)
    assert steady.difference == pytest.approx(varying.difference) == pytest.approx(4.0)
    assert varying.high - varying.low > 1.5 * (steady.high - steady.low)
    assert varying.standard_error > steady.standard_error
    # Two seeds drawn from {10 %, 12 %}: their mean varies with variance 1 / 2 point^2, added to the images'.
    assert varying.standard_error == pytest.approx(math.sqrt(0.5 + steady.standard_error**2), rel=0.1)


def test_bootstrap_rejects_mismatched_images():
    with pytest.raises(ValueError, match="images"):
        paired_bootstrap(np.zeros((2, 10)), np.zeros((2, 11)), resamples=10)


# --- detectable effect, seeds, verdicts ---------------------------------------------------------------


def test_detectable_effect():
    assert detectable_effect(1.0) == pytest.approx(2.8016, abs=1e-4)
    assert detectable_effect(0.5) == pytest.approx(0.5 * 2.8016, abs=1e-4)
    assert detectable_effect(1.0, power=0.5) == pytest.approx(1.9600, abs=1e-4)


def test_seeds_needed_boundary():
    assert seeds_needed(Interval(1.99, 0.0, 4.0, 1.0)) == 3
    assert seeds_needed(Interval(2.01, 0.1, 4.0, 1.0)) == 2
    assert seeds_needed(Interval(-1.5, -3.5, 0.5, 1.0)) == 3
    assert seeds_needed(Interval(-2.5, -4.5, -0.5, 1.0)) == 2
    assert seeds_needed(Interval(2.5, 0.5, 4.5, 1.0), minimum=1) == 1


ABOVE = Interval(1.23, 0.40, 2.05, 0.4)  # the whole interval above 0
BELOW = Interval(-1.23, -2.05, -0.40, 0.4)
ACROSS = Interval(0.5, -0.3, 1.3, 0.4)


@pytest.mark.parametrize(
    ("interval", "expected", "per_seed", "verdict"),
    [
        (ABOVE, "higher", (), "shows"),
        (ABOVE, "higher", (1.0, 1.5), "shows"),
        (ABOVE, "higher", (1.0, -0.2), "cannot be judged"),  # a seed of the wrong sign
        (BELOW, "higher", (), "contradicts"),
        (BELOW, "higher", (-1.0, 0.3), "cannot be judged"),
        (ACROSS, "higher", (), "cannot be judged"),
        (Interval(1.0, 0.0, 2.0, 0.5), "higher", (), "cannot be judged"),  # touches 0
        (BELOW, "lower", (), "shows"),
        (BELOW, "lower", (-1.0, 0.4), "cannot be judged"),
        (ABOVE, "lower", (), "contradicts"),
        (ABOVE, "lower", (0.8, 1.4), "contradicts"),
        (ABOVE, "lower", (0.8, -0.1), "cannot be judged"),
        (ACROSS, "lower", (), "cannot be judged"),
    ],
)
def test_judge_verdicts(interval, expected, per_seed, verdict):
    judgement = judge(interval, expected, per_seed_differences=per_seed)
    assert judgement.verdict == verdict
    assert judgement.detectable == pytest.approx(2.8016 * interval.standard_error, abs=1e-3)


def test_judge_rejects_unknown_direction():
    with pytest.raises(ValueError, match="lower"):
        judge(ABOVE, "bigger")  # type: ignore[arg-type]


def test_sentences():
    assert judge(ABOVE, "higher").sentence() == (
        "B - A = +1.23 points (95% interval +0.40 to +2.05, paired bootstrap over seeds and images); "
        "shows the paper's direction beyond the noise"
    )
    assert "contradicts the paper's direction" in judge(ABOVE, "lower").sentence()
    unclear = judge(ACROSS, "higher", paper_effect=1.5).sentence()
    assert "cannot be judged" in unclear
    assert "1.12 points" in unclear  # 2.80 x 0.4, the smallest detectable effect
    assert "1.50 points" in unclear  # the paper's effect
    assert "paper's effect" not in judge(ACROSS, "higher").sentence()
    assert "-0.00" not in judge(Interval(-0.001, -0.5, 0.5, 0.25), "higher").sentence()


# --- spread over seeds, and the existing helpers -------------------------------------------------------


def test_seed_spread():
    spread = seed_spread([6.0, 7.0, 8.0])
    assert (spread.mean, spread.min, spread.max, spread.n) == (7.0, 6.0, 8.0, 3)
    assert spread.std == pytest.approx(1.0)
    single = seed_spread([7.5])
    assert (single.mean, single.n, single.std) == (7.5, 1, 0.0)
    with pytest.raises(ValueError):
        seed_spread([])


def test_sampling_noise_unchanged():
    assert sampling_noise(50.0, 10_000) == pytest.approx(0.5)


def test_image_blocks_keep_the_mean_and_fall_back_to_single_images():
    values = np.arange(2 * 10_000, dtype=float).reshape(2, 10_000)
    blocks = image_blocks(values, 100)
    assert blocks.shape == (2, 100)
    assert blocks.mean(axis=1) == pytest.approx(values.mean(axis=1))
    assert blocks[0, 3] == pytest.approx(values[0, 3::100].mean())  # interleaved: i % 100 == 3
    few = np.random.default_rng(0).random((3, 64))
    assert np.array_equal(image_blocks(few, 100), few)  # fewer images than blocks: one image a block
