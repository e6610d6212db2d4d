"""``resnets reproduce lesion`` (Veit et al. 2016, Fig. 3): every image scored with each unit deleted, the
paired comparison of deletion costs (also ``ensembles``'), the verdict and the statement of where the
cost sits on constructed nets (shows, contradicts, cannot be judged), the plans, the smoke budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_batches, small_net
from PIL import Image

from resnets import create_model
from resnets.analysis.lesion import UnitLesions, blocks_deleted, image_errors, unit_lesions
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.experiments import get_experiment
from resnets.experiments.base import RunRecord, RunSpec, recipe_dict
from resnets.experiments.lesion import Lesion, check_same_images, compare_costs, run_score
from resnets.experiments.paired import Net, overall
from resnets.experiments.runner import make_context, plan, reproduce
from resnets.experiments.zoo import recipe_summary

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGES = 2_000


def _model(name: str, **kwargs) -> torch.nn.Module:
    return small_net(name, **kwargs)


def _batches(n: int = 2, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return random_batches(n, size)


# --- every image, each unit deleted ------------------------------------------------------------------


def test_image_errors_are_each_images_mistake_in_the_loaders_order():
    model, data = _model("resnet_cifar", depth=8), _batches()
    with torch.no_grad():
        expected = torch.cat([model(x).argmax(1) != y for x, y in data]).numpy()
    wrong = image_errors(model.train(), data)
    assert wrong.dtype == np.uint8 and wrong.shape == (16,) and np.array_equal(wrong, expected)
    assert model.training  # the caller's mode is restored
    assert image_errors(model, data, dtype=torch.bfloat16).shape == (16,)  # autocast runs


def test_unit_lesions_score_every_image_with_each_unit_deleted_and_restore_the_model():
    model, data = _model("resnet_cifar", depth=14), _batches()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    lesions = unit_lesions(model, data)
    units = [u for _, u in model.residual_blocks()]
    assert lesions.block_names[:3] == ["layer1.0", "layer1.1", "layer2.0"]
    assert lesions.downsampling == [False, False, True, False, True, False]
    assert lesions.deleted.shape == (6, 16) and np.array_equal(lesions.intact, image_errors(model, data))
    for i, unit in enumerate(units):
        with blocks_deleted([unit]):
            assert np.array_equal(lesions.deleted[i], image_errors(model, data))
    assert all("forward" not in u.__dict__ for u in units)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    costs = lesions.image_costs()
    assert costs.shape == (16,) and 100 * costs.mean() == pytest.approx(
        np.mean(lesions.deleted_errors) - lesions.intact_error
    )
    assert np.array_equal(lesions.image_costs([2]), lesions.deleted[2].astype(float) - lesions.intact)
    zero = create_model("resnet_cifar", depth=14, num_classes=4, in_chans=1, zero_init_last=True).eval()
    assert not unit_lesions(zero, data).image_costs().any()  # every branch is zero: nothing to lose


def test_run_score_scores_in_the_runs_own_precision():
    def record(precision: str) -> RunRecord:
        return RunRecord(RunSpec("x", "x", "reproduce-cpu", {}), Path("x"), [], [], {"precision": precision})

    assert run_score(record("bfloat16 autocast")).keywords["dtype"] is torch.bfloat16
    assert run_score(record("float32")).keywords["dtype"] is None


# --- the paired comparison of costs ------------------------------------------------------------------


def _lesion(intact_pct: float, costs: list[float], seed: int, down: tuple[int, ...] = ()) -> UnitLesions:
    """A net on IMAGES images erring on ``intact_pct``% of them, whose unit i, deleted, errs on ``costs[i]``
    points more (new mistakes on images it had right)."""
    rng = np.random.default_rng(seed)
    intact = (rng.random(IMAGES) < intact_pct / 100).astype(np.uint8)
    deleted = []
    for cost in costs:
        row = intact.copy()
        right = np.flatnonzero(row == 0)
        row[rng.choice(right, round(cost * IMAGES / 100), replace=False)] = 1
        deleted.append(row)
    names = [f"layer{1 + i // 3}.{i % 3}" for i in range(len(costs))]
    flags = [i in down for i in range(len(costs))]
    return UnitLesions(names, flags, intact, np.stack(deleted))


def _costs(lesions: list[UnitLesions]) -> np.ndarray:
    return np.stack([lesion.image_costs() for lesion in lesions])


def test_compare_costs_shows_contradicts_or_cannot_judge():
    cheap = _costs([_lesion(8, [1.0, 1.5, 0.5], seed) for seed in (0, 1)])
    costly = _costs([_lesion(9, [80.0, 75.0, 85.0], seed) for seed in (2, 3)])
    shown = compare_costs("ResNet", cheap, "plain", costly, paper_effect=80.0)
    assert shown.verdict == "shows" and shown.interval.difference == pytest.approx(79.0, abs=0.5)
    assert shown.interval.low > 70 and all(d > 70 for d in np.subtract(shown.seeds_b, shown.seeds_a))
    assert shown.name == "plain vs ResNet" and "shows the paper's direction" in shown.sentence()
    reversed_ = compare_costs("ResNet", costly, "plain", cheap)
    assert reversed_.verdict == "contradicts"
    alike = compare_costs("ResNet", cheap, "plain", _costs([_lesion(8, [1.0, 1.5, 0.5], s) for s in (4, 5)]))
    assert alike.verdict == "cannot be judged" and 0 < alike.judgement.detectable < 2
    assert "cannot be judged" in alike.sentence()
    # the seeds disagree: one contrast seed costs less than the ResNet, one far more
    split = _costs([_lesion(9, [0.2, 0.2, 0.2], 6), _lesion(9, [30.0, 30.0, 30.0], 7)])
    assert compare_costs("ResNet", cheap, "plain", split).verdict == "cannot be judged"
    with pytest.raises(ConfigError, match="images"):
        compare_costs("ResNet", cheap, "plain", costly[:, :100])
    check_same_images({"a": np.arange(5), "b": np.arange(5)})
    with pytest.raises(ConfigError, match="same test images"):
        check_same_images({"a": np.arange(5), "b": np.arange(5)[::-1]})


# --- the verdict and where the cost sits -------------------------------------------------------------

NETS = {"resnet": Net("r", "ResNet-56", ()), "plain": Net("p", "plain-56", ()), "vgg": Net("v", "VGG-20", ())}
PATHS = {"central_90": [2, 9], "num_blocks": 6, "share_below_half": 0.8, "paths_below_half": 0.34}


def _judged(resnet: list[float], plain: list[float], vgg: list[float], down=(3,)) -> tuple[str, str]:
    lesions = {
        "resnet": [_lesion(8, resnet, seed, down) for seed in (0, 1)],
        "plain": [_lesion(9, plain, seed, (3,)) for seed in (2, 3)],
        "vgg": [_lesion(7, vgg, seed, (3,)) for seed in (4, 5)],
    }
    deciding, where = Lesion._comparisons(NETS, lesions)
    verdict = overall([c.verdict for c in deciding])
    return verdict, Lesion._finding(NETS, lesions, deciding, where, verdict, PATHS)


def test_the_verdict_shows_when_both_contrasts_cost_far_more():
    verdict, text = _judged([6.0, 1.0, 0.5, 3.0, 0.5, 0.3], [80.0] * 6, [75.0] * 6)
    assert verdict == "shows" and "The paper's finding shows" in text
    assert "Deleting one unit costs on average ResNet-56 +1.88 points" in text
    # the first unit costs most, more than the downsampling unit beyond the noise
    assert "costliest units are layer1.0 +6.00" in text and "layer2.0 (downsampling) +3.00" in text
    assert "rather than in the downsampling units" in text


def test_the_cost_sits_in_the_downsampling_units_where_they_cost_most():
    _, text = _judged([0.5, 0.3, 0.2, 6.0, 0.5, 0.3], [80.0] * 6, [75.0] * 6)
    assert "costliest units are layer2.0 (downsampling) +6.00" in text and "as Veit et al. report" in text
    _, text = _judged([1.0, 0.3, 0.2, 1.0, 0.5, 0.3], [80.0] * 6, [75.0] * 6)
    assert "neither is costlier beyond the noise" in text


def test_the_verdict_contradicts_or_cannot_be_judged():
    verdict, text = _judged([80.0] * 6, [1.0] * 6, [0.5] * 6)
    assert verdict == "contradicts" and "The opposite of the paper's finding holds" in text
    verdict, text = _judged([1.0] * 6, [80.0] * 6, [1.0] * 6)  # the VGG-style net shrugs a deletion off
    assert verdict == "cannot be judged" and "smallest effect this budget could detect" in text


# --- plans -------------------------------------------------------------------------------------------


def _plan(budget: str) -> list:
    experiment = get_experiment("lesion")
    return plan(experiment, make_context(experiment, budget=budget, output="unused"))


def test_cpu_plan_trains_every_net_with_two_seeds_under_one_recipe():
    specs = _plan("cpu")
    recipes = [recipe_dict(s) for s in specs]
    assert [(r["model"], r["seed"]) for r in recipes] == [
        (m, s) for m in ("resnet56", "plain56", "vgg20_cifar") for s in (0, 1)
    ]
    assert [s.label for s in specs][4:] == ["VGG-20", "VGG-20"] and recipes[4]["iterations"] is None
    assert len(recipe_summary(specs)) == 1  # one recipe for every compared net: nothing "differs"
    degradation = get_experiment("degradation")
    shared = {s.name for s in plan(degradation, make_context(degradation, budget="cpu", output="unused"))}
    assert [recipe_dict(s)["model"] for s in specs if s.name not in shared] == ["vgg20_cifar"] * 2
    ensembles = get_experiment("ensembles")
    same = plan(ensembles, make_context(ensembles, budget="cpu", output="unused"))
    assert [s.name for s in same] == [s.name for s in specs]
    smoke = [(recipe_dict(s)["model"], recipe_dict(s)["model_kwargs"]) for s in _plan("smoke")]
    assert smoke[4] == ("vgg_cifar", {"depth": 8})


def test_cli_plan_prints_one_recipe(capsys, tmp_path):
    assert main(["reproduce", "lesion", "--budget", "cpu", "--plan", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "# every run: recipe=reproduce-cpu" in out and "# differs" not in out
    assert sum(line.startswith("resnets train") for line in out.splitlines()) == 6
    assert not (tmp_path / "runs").exists()


# --- the smoke budget end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("lesion")
    written = reproduce("lesion", budget="smoke", output=output, device="cpu", log=lambda m: None)
    return output, written


def test_smoke_writes_every_artefact(smoke):
    _, written = smoke
    results = json.loads(written["results"].read_text())
    report = written["report"].read_text()
    nets = results["results"]
    assert [len(nets[label]["seeds"]) for label in ("ResNet-14", "plain-14", "VGG-8")] == [2, 2, 2]
    first = nets["ResNet-14"]["seeds"][0]
    assert len(first["deleted_errors"]) == 6 and first["downsampling"][2] and first["downsampling"][4]
    assert set(nets["comparisons"]) == {"plain-14 vs ResNet-14", "VGG-8 vs ResNet-14"}
    assert nets["verdict"] in ("shows", "contradicts", "cannot be judged")
    assert len(nets["where_the_cost_sits"]["costliest_units"]) == 3
    assert nets["paths"]["num_blocks"] == 6 and len(nets["paths"]["mean_norm"]) == 7
    for heading in ("Where the cost sits", "mean cost (points)", "ResNet-14: the cost of deleting each unit"):
        assert heading in report
    for name in ("lesion.png", "paths.png"):
        with Image.open(written[name]) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 600
