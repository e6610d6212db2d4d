"""Learning-rate schedules: iteration- and epoch-based milestones, warm-ups, state in checkpoints."""

import pytest
import torch

from resnets.train.recipes import apply_overrides, get_recipe
from resnets.train.schedule import LRSchedule


def _lrs(recipe, steps_per_epoch, total, depth=20, errors=None):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    sched = LRSchedule(opt, recipe, steps_per_epoch, total, depth=depth)
    lrs = []
    for i in range(total):
        lrs.append(sched.lr)
        e = errors(i) if errors else 0
        opt.step()
        sched.step_iteration(e, 100 if errors else 0)
    return lrs, sched


def test_paper_cifar_divides_by_ten_at_32k_and_48k_iterations_regardless_of_epoch_length():
    recipe = get_recipe("paper-cifar")  # resnet20: below 110 layers, no warm-up
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    sched = LRSchedule(opt, recipe, steps_per_epoch=352, total_steps=64_000, depth=20)
    factor = sched.factor
    assert factor(0) == 1.0
    assert factor(31_999) == 1.0 and factor(32_000) == pytest.approx(0.1)
    assert factor(48_000) == pytest.approx(0.01)


def test_epoch_milestones_are_converted_to_iterations():
    recipe = apply_overrides(get_recipe("wrn"), {"milestones": "2,3", "gamma": 0.2})
    lrs, _ = _lrs(recipe, steps_per_epoch=5, total=20)
    assert lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.02) and lrs[15] == pytest.approx(0.004)


def test_error_based_warmup_for_110_layers_ends_when_training_error_drops_below_80_percent():
    recipe = get_recipe("paper-cifar")
    # training error 90% for 100 iterations, then 50%: warm-up ends once the 20-step window averages < 80%
    lrs, sched = _lrs(recipe, 352, 200, depth=110, errors=lambda i: 90 if i < 100 else 50)
    assert lrs[0] == pytest.approx(0.01) and lrs[100] == pytest.approx(0.01)
    assert lrs[-1] == pytest.approx(0.1)
    assert 100 < sched.factor.error_warmup_ended_at < 120
    shallow, _ = _lrs(recipe, 352, 5, depth=56, errors=lambda i: 90)
    assert shallow[0] == pytest.approx(0.1)  # only 110 layers and deeper warm up


def test_onecycle_rises_linearly_then_falls_to_zero():
    recipe = apply_overrides(get_recipe("fast-cpu"), {"lr": 0.2, "warmup": 1.0, "warmup_start_factor": 0.1})
    lrs, _ = _lrs(recipe, steps_per_epoch=10, total=50)
    assert lrs[0] == pytest.approx(0.02) and lrs[10] == pytest.approx(0.2)
    assert lrs[5] == pytest.approx(0.02 + 0.18 * 0.5)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.2 / 40, rel=1e-6)


def test_poly_follows_torchvisions_segmentation_reference_after_the_warmup():
    # references/segmentation/train.py: lr * (1 - i / (iterations after the warm-up)) ** 0.9
    recipe = apply_overrides(get_recipe("fast-cpu"), {"schedule": "poly", "lr": 0.02, "warmup": 1.0})
    lrs, _ = _lrs(recipe, steps_per_epoch=10, total=50)
    assert lrs[10] == pytest.approx(0.02)
    assert lrs[30] == pytest.approx(0.02 * 0.5**0.9) and lrs[49] == pytest.approx(0.02 * (1 / 40) ** 0.9)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_constant_warmup_of_preact_cifar():
    lrs, _ = _lrs(get_recipe("preact-cifar"), 391, 402)
    assert lrs[399] == pytest.approx(0.01) and lrs[400] == pytest.approx(0.1)


def test_schedule_state_round_trips_and_keeps_new_static_settings():
    recipe = get_recipe("paper-cifar")
    _, sched = _lrs(recipe, 352, 150, depth=110, errors=lambda i: 90 if i < 100 else 50)
    state = sched.state_dict()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    longer = apply_overrides(recipe, {"milestones": "500,600"})
    fresh = LRSchedule(opt, longer, 352, 64_000, depth=110)
    fresh.load_state_dict(state)
    assert fresh.scheduler.last_epoch == 150 and not fresh.factor.error_warmup_active
    assert fresh.lr == pytest.approx(0.1) and fresh.factor.milestones == [500, 600]


def test_plateau_divides_by_ten_after_patience_epochs():
    recipe = apply_overrides(get_recipe("paper-imagenet"), {"plateau_patience": 1})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    sched = LRSchedule(opt, recipe, 10, 100)
    for error in (50.0, 40.0, 40.0, 40.0):
        opt.step()
        sched.step_iteration()
        sched.step_epoch(error)
    assert sched.lr == pytest.approx(0.01)
