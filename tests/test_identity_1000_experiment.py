"""`resnets reproduce identity-1000` (Identity Mappings Fig. 1, Table 3): the smoke budget writes every
artefact and reruns nothing, the cpu and paper budgets plan the pairs they say (the paper's depth, recipe
and parameter counts), the curve arithmetic and the verdict follow the numbers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.experiments import get_experiment
from resnets.experiments.base import RunRecord
from resnets.experiments.identity_1000 import (
    IDENTITY_1000_TABLE3,
    Curve,
    Identity1000,
    cpu_seconds,
    final_loss,
    first_reaching,
    identity_1000_runs,
    interpolate,
    loss_threshold,
    moving_average,
    parameters,
    training_curve,
)
from resnets.experiments.runner import make_context, reproduce
from resnets.models import create_model
from resnets.train.build import weighted_depth

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("identity_1000")
    written = reproduce("identity-1000", budget="smoke", output=output, device="cpu", log=lambda _: None)
    return output, written


def test_smoke_writes_its_table_figure_and_results_and_reruns_nothing(smoke):
    output, written = smoke
    document = json.loads(written["results"].read_text())
    results = document["results"]
    orig, pre = results["original"], results["preact"]
    assert (orig["label"], pre["label"]) == ("original ResNet-11", "pre-act ResNet-11")
    assert orig["params"] > pre["params"] > 0  # the original's BNs after each conv3 vs one final BN
    for net in (orig, pre):
        assert set(net["train_loss"]) == {"25%", "50%", "100%"} == set(net["train_error"])
        assert 0 < net["final_train_loss"] < 10 and net["final_loss_spread"] >= 0
        assert 0 <= net["test_error"] <= 100 and net["test_images"] == 64
        assert net["test_noise"] == pytest.approx(
            100 * math.sqrt(net["test_error"] / 100 * (1 - net["test_error"] / 100) / 64))
    summary = results["summary"]
    worse = max(orig["final_train_loss"], pre["final_train_loss"])
    assert summary["threshold"] == pytest.approx(math.sqrt(math.log(10) * worse))
    assert summary["loss_gap"] == pytest.approx(orig["final_train_loss"] - pre["final_train_loss"])
    assert document["finding"]["shows"] in (True, False, None)
    report = written["report"].read_text()
    assert document["finding"]["text"] in report
    assert "| original ResNet-11 (original, f = ReLU) |" in report and "ResNet-164 (%, CIFAR-10)" in report
    with Image.open(written["identity_1000.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 300
    messages: list[str] = []
    reproduce("identity-1000", budget="smoke", output=output, device="cpu", log=messages.append)
    assert sum("finished run found" in m for m in messages) == 2
    assert not any("training" in m for m in messages)


def test_the_cpu_pair_is_deep_fits_in_30_minutes_and_differs_only_in_the_unit(tmp_path):
    experiment = get_experiment("identity-1000")
    ctx = make_context(experiment, budget="cpu", output=tmp_path)
    specs = identity_1000_runs(ctx)
    orig, pre = (specs[n].resolved() for n in ("original", "preact"))
    assert orig.model_kwargs == {"depth": 326, "bottleneck": True} and pre.model_kwargs == {"depth": 326}
    assert (orig.iterations, orig.milestones) == (350, (175, 262))
    # the same recipe and seed: every field but the model's name and options agree
    differing = {k for k, v in orig.to_dict().items() if pre.to_dict()[k] != v}
    assert differing == {"model", "model_kwargs"}
    assert cpu_seconds(326, 350) == pytest.approx(2 * 350 * 1.50 * 0.76 * 326 / 164 * 1.06)
    assert cpu_seconds(326, 350) <= 30 * 60 < cpu_seconds(407, 350)  # the next 9n+2 depth would not fit
    assert "= 28 minutes" in experiment.settings(ctx)["why this pair"]
    # --iterations still names runs of their own
    assert identity_1000_runs(make_context(experiment, budget="cpu", output=tmp_path, iterations=40))[
        "preact"].name.endswith("-40it")


def test_the_paper_budget_plans_the_1001_layer_pair_with_the_papers_recipe(capsys, tmp_path):
    specs = identity_1000_runs(make_context(get_experiment("identity-1000"), budget="paper", output=tmp_path))
    assert (specs["original"].model, specs["preact"].model) == ("resnet_cifar", "preact_resnet1001")
    for spec in specs.values():
        recipe = spec.resolved()
        assert (recipe.dataset, recipe.iterations, recipe.milestones, recipe.batch_size) == (
            "cifar10", 64_000, (32_000, 48_000), 128)
        assert (recipe.lr, recipe.weight_decay, recipe.momentum) == (0.1, 1e-4, 0.9)
        assert (recipe.warmup, recipe.warmup_shape, recipe.warmup_start_factor) == (400, "constant", 0.1)
    assert main(["reproduce", "identity-1000", "--budget", "paper", "--plan", "--output", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    assert len(lines) == 2 and all("dataset=cifar10" in ln and "preact-cifar" in ln for ln in lines)
    assert not (tmp_path / "runs").exists()  # planned, not trained


@pytest.mark.parametrize("depth", [164, 1001])
def test_parameters_and_depth_match_the_paper(tmp_path, monkeypatch, depth):
    from resnets.experiments import identity_1000

    monkeypatch.setitem(identity_1000.PLANS, "paper", identity_1000.Plan(depth, None, "preact-cifar"))
    specs = identity_1000_runs(make_context(get_experiment("identity-1000"), budget="paper", output=tmp_path))
    paper = IDENTITY_1000_TABLE3[depth]["params_m"]
    for net, spec in specs.items():
        # Table 3/4: 1.7M and 10.2M (ours: 1.70M and 10.33M; the paper rounds, and its projections lack BN)
        assert parameters(spec) / 1e6 == pytest.approx(paper, rel=0.02)
        with torch.device("meta"):
            model = create_model(spec.model, **spec.overrides.get("model_kwargs", {}))
        assert weighted_depth(model) == depth
        unit = type(model.layer1[1]).__name__
        assert unit == ("Bottleneck" if net == "original" else "PreActBottleneck")


# --- the curves and the verdict, from made-up numbers -------------------------------------------------


def test_curve_arithmetic():
    assert moving_average([0, 3, 6, 9, 30], 1) == [0, 3, 6, 15, 30]  # the ends keep a symmetric window
    xs, ys = [50, 100, 150], [2.0, 1.0, 0.5]
    assert interpolate(75, xs, ys) == pytest.approx(1.5)
    assert interpolate(10, xs, ys) == 2.0 and interpolate(200, xs, ys) == 0.5
    assert first_reaching(0.75, xs, ys) == pytest.approx(125)
    assert first_reaching(3.0, xs, ys) == 50 and first_reaching(0.1, xs, ys) is None
    curve = Curve(list(range(10, 110, 10)), [2, 1.5, 1, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25], [0] * 10)
    final, spread = final_loss(curve)  # last 10%: the point at 100; last 25%: 80, 90, 100
    assert final == pytest.approx(0.25)
    assert spread == pytest.approx(0.05)
    assert loss_threshold("fashion-mnist", [0.25, 0.4]) == pytest.approx(math.sqrt(math.log(10) * 0.4))


def test_short_runs_fall_back_to_the_epochs_metrics(tmp_path):
    metrics = [{"iteration": 2, "train_loss": 2.1, "train_error": 80.0, "test_error": 85.0},
               {"iteration": 4, "train_loss": 1.9, "train_error": 70.0, "test_error": 75.0}]
    record = RunRecord(None, tmp_path, metrics, [], {})  # type: ignore[arg-type]
    assert training_curve(record) == Curve([2, 4], [2.1, 1.9], [80.0, 70.0])
    steps = [{"iteration": 50, "loss": 1.0, "error": 30.0}, {"iteration": 100, "loss": 0.5, "error": 20.0}]
    assert training_curve(RunRecord(None, tmp_path, metrics, steps, {})).loss == [1.0, 0.5]  # type: ignore


def _net(final, spread, reached, test_error=8.0):
    return {"final_train_loss": final, "final_loss_spread": spread, "reaches_threshold_at": reached,
            "test_error": test_error, "test_images": 10_000}


@pytest.mark.parametrize("original, preact, shows", [
    (_net(0.30, 0.01, 900), _net(0.20, 0.01, 300), True),    # lower by 7x the noise, and sooner
    (_net(0.30, 0.01, None), _net(0.20, 0.01, 300), True),   # the original never gets there
    (_net(0.20, 0.01, 300), _net(0.30, 0.01, 900), False),   # the opposite
    (_net(0.30, 0.01, 300), _net(0.20, 0.01, 900), None),    # lower, but later
    (_net(0.30, 0.08, 900), _net(0.25, 0.08, 300), None),    # sooner, but lower only within the noise
    (_net(0.25, 0.01, 300), _net(0.25, 0.01, 300), None),    # the same
])
def test_the_verdict_follows_the_numbers(original, preact, shows):
    text, verdict, summary = Identity1000._finding({"original": original, "preact": preact}, threshold=0.9)
    assert verdict is shows
    assert summary["loss_gap"] == pytest.approx(original["final_train_loss"] - preact["final_train_loss"])
    assert summary["loss_noise"] == pytest.approx(math.hypot(original["final_loss_spread"],
                                                             preact["final_loss_spread"]))
    pair = f"{preact['final_train_loss']:.3f} against the original unit's {original['final_train_loss']:.3f}"
    assert pair in text
