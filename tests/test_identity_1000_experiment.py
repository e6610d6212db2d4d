"""`resnets reproduce identity-1000` (Identity Mappings Fig. 1, Table 3): the smoke budget writes every
artefact and reruns nothing; the cpu pair shares depth's ResNet-110 and differs from it only in the unit,
one recipe and warm-up for both; the paper budget plans Fig. 1's 1001-layer pair with the paper's recipe
and parameter counts; the curve arithmetic and the verdict rules on constructed cases."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.experiments import get_experiment
from resnets.experiments.base import RunRecord, recipe_dict
from resnets.experiments.identity_1000 import (
    CPU_RUN_SECONDS,
    Curve,
    Plan,
    bands,
    first_reaching,
    identity_1000_nets,
    loss_judgement,
    parameters,
    start_sentence,
    training_curve,
    unit_comparison,
)
from resnets.experiments.paired import overall
from resnets.experiments.paper_numbers import IDENTITY_1000_TABLE3
from resnets.experiments.runner import make_context, plan, reproduce
from resnets.experiments.zoo import recipe_summary
from resnets.models import create_model
from resnets.train.build import weighted_depth

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("identity_1000")
    written = reproduce("identity-1000", budget="smoke", output=output, device="cpu", log=lambda _: None)
    return output, written


def test_smoke_writes_its_table_figures_and_results_and_reruns_nothing(smoke):
    output, written = smoke
    document = json.loads(written["results"].read_text())
    results = document["results"]
    orig, pre = results["original"], results["preact"]
    assert (orig["label"], pre["label"]) == ("original ResNet-8", "pre-act ResNet-8")
    for net in (orig, pre):
        assert net["seeds"] == 2 and len(net["test_error"]) == 2 and len(net["reaches_threshold_at"]) == 2
        assert all(0 < loss < 10 for loss in net["final_train_loss"] + net["mean_train_loss"])
        assert net["params"] > 0 and net["paper_test_error"] is None  # no 8-layer net in the paper
    comparison = results["comparison"]
    assert (comparison["a"], comparison["b"], comparison["expected"]) == (
        "original ResNet-8",
        "pre-act ResNet-8",
        "lower",
    )
    loss = results["loss_comparison"]
    assert loss["interval"][0] <= loss["difference"] <= loss["interval"][1] and loss["detectable_effect"] >= 0
    assert results["threshold_error"] == 20.0 and results["verdict"] == document["finding"]["verdict"]
    report = written["report"].read_text()
    assert document["finding"]["text"] in report
    assert "| original ResNet-8 (original, f = ReLU) |" in report and "Training loss (Fig. 1)" in report
    for figure in ("identity_1000.png", "identity_1000_test.png"):
        with Image.open(written[figure]) as image:
            assert image.format == "PNG" and image.size[0] > 800
    messages: list[str] = []
    reproduce("identity-1000", budget="smoke", output=output, device="cpu", log=messages.append)
    assert sum("finished run found" in m for m in messages) == 4
    assert not any("training" in m for m in messages)


def test_the_cpu_pair_is_depths_resnet110_against_pre_act_under_one_recipe(tmp_path):
    experiment = get_experiment("identity-1000")
    ctx = make_context(experiment, budget="cpu", output=tmp_path)
    nets = identity_1000_nets(ctx)
    assert [len(net.specs) for net in nets.values()] == [2, 2]
    # the original nets are depth's runs: shared, not trained again
    depth = get_experiment("depth")
    depth_runs = {s.name for s in plan(depth, make_context(depth, budget="cpu", output=tmp_path))}
    assert {s.name for s in nets["original"].specs} <= depth_runs
    assert [s.model for s in nets["preact"].specs] == ["preact_resnet110"] * 2
    orig, pre = (recipe_dict(net.specs[1]) for net in nets.values())
    differing = {k for k, v in orig.items() if pre[k] != v}
    assert differing == {"model"}  # the same recipe, seed and warm-up: only the unit differs
    assert orig["seed"] == 1 and orig["warmup"] == 1.0 and orig["warmup_until_error"] is None
    (shared,) = recipe_summary(plan(experiment, ctx))
    assert "recipe=reproduce-cpu" in shared and "warmup=1.0" in shared
    comparison = unit_comparison(ctx)
    assert comparison.expected == "lower" and comparison.paper_effect == pytest.approx(6.37 - 6.61)  # Table 2
    time = experiment.settings(ctx)["time"]
    assert (
        2 * CPU_RUN_SECONDS / 60 <= 45 and f"about {2 * CPU_RUN_SECONDS / 60:.0f} minutes after depth" in time
    )
    with torch.device("meta"):
        model = create_model(nets["preact"].specs[0].model)
    assert weighted_depth(model) == 110 and type(model.layer1[1]).__name__ == "PreActBasicBlock"


def test_the_paper_budget_plans_the_1001_layer_pair_with_the_papers_recipe(capsys, tmp_path):
    nets = identity_1000_nets(make_context(get_experiment("identity-1000"), budget="paper", output=tmp_path))
    assert (nets["original"].specs[0].model, nets["preact"].specs[0].model) == (
        "resnet_cifar",
        "preact_resnet1001",
    )
    for net in nets.values():
        recipe = net.specs[0].resolved()
        assert (recipe.dataset, recipe.iterations, recipe.milestones, recipe.batch_size) == (
            "cifar10",
            64_000,
            (32_000, 48_000),
            128,
        )
        assert (recipe.lr, recipe.weight_decay, recipe.momentum) == (0.1, 1e-4, 0.9)
        assert (recipe.warmup, recipe.warmup_shape, recipe.warmup_start_factor) == (400, "constant", 0.1)
    assert main(["reproduce", "identity-1000", "--budget", "paper", "--plan", "--output", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    assert len(lines) == 4 and all("dataset=cifar10" in ln and "preact-cifar" in ln for ln in lines)
    assert not (tmp_path / "runs").exists()  # planned, not trained


@pytest.mark.parametrize("depth", [164, 1001])
def test_parameters_and_depth_match_the_paper(tmp_path, monkeypatch, depth):
    from resnets.experiments import identity_1000

    monkeypatch.setitem(identity_1000.PLANS, "paper", Plan(depth, True, "preact-cifar"))
    nets = identity_1000_nets(make_context(get_experiment("identity-1000"), budget="paper", output=tmp_path))
    paper = IDENTITY_1000_TABLE3[depth]["params_m"]
    for net, spec in ((n, nets[n].specs[0]) for n in nets):
        # Table 3/4: 1.7M and 10.2M (ours: 1.70M and 10.33M; the paper rounds, and its projections lack BN)
        assert parameters(spec) / 1e6 == pytest.approx(paper, rel=0.02)
        with torch.device("meta"):
            model = create_model(spec.model, **spec.overrides.get("model_kwargs", {}))
        assert weighted_depth(model) == depth
        assert type(model.layer1[1]).__name__ == ("Bottleneck" if net == "original" else "PreActBottleneck")


# --- the curves and the verdict, from made-up numbers -------------------------------------------------


def test_curve_arithmetic():
    xs, ys = [50, 100, 150], [60.0, 30.0, 10.0]
    assert first_reaching(20.0, xs, ys) == pytest.approx(125)
    assert first_reaching(70.0, xs, ys) == 50 and first_reaching(5.0, xs, ys) is None
    a = Curve([50, 100, 150], [2.0, 1.0, 0.5], [60.0, 30.0, 10.0])
    b = Curve([50, 100], [2.2, 1.4], [70.0, 40.0])
    assert bands([a, b], "loss") == ([50, 100], [2.1, 1.2], [2.0, 1.0], [2.2, 1.4])  # where both logged


def test_short_runs_fall_back_to_the_epochs_metrics(tmp_path):
    metrics = [
        {"iteration": 2, "train_loss": 2.1, "train_error": 80.0},
        {"iteration": 4, "train_loss": 1.9, "train_error": 70.0},
    ]
    record = RunRecord(None, tmp_path, metrics, [], {})  # type: ignore[arg-type]
    assert training_curve(record) == Curve([2, 4], [2.1, 1.9], [80.0, 70.0])
    steps = [{"iteration": 50, "loss": 1.0, "error": 30.0}, {"iteration": 100, "loss": 0.5, "error": 20.0}]
    assert training_curve(RunRecord(None, tmp_path, metrics, steps, {})).loss == [1.0, 0.5]  # type: ignore


def _curves(*shifts: float) -> list[Curve]:
    """One curve per seed: a loss falling from 2.3, raised by ``shift`` throughout."""
    xs = list(range(50, 900, 50))
    return [
        Curve(xs, [2.3 * 0.8**i + 0.5 + s + 0.01 * (i % 3) for i in range(len(xs))], [0.0] * len(xs))
        for s in shifts
    ]


def test_the_loss_verdict_is_two_sided_over_seeds_and_windows():
    slow, fast = _curves(0.2, 0.22), _curves(0.0, 0.01)
    shows = loss_judgement(slow, fast)  # the pre-activation net's loss lower throughout, both seeds
    assert shows.verdict == "shows" and shows.interval.difference == pytest.approx(-0.205)
    assert loss_judgement(fast, slow).verdict == "contradicts"
    assert loss_judgement(slow, _curves(0.0, 0.4)).verdict == "cannot be judged"  # the seeds disagree
    # both parts of the claim are needed; one part contradicting with the other undecided is not enough
    assert overall(["shows", "shows"]) == "shows"
    assert overall(["shows", "cannot be judged"]) == "cannot be judged"
    assert overall(["contradicts", "contradicts"]) == "contradicts"
    assert overall(["contradicts", "shows"]) == "cannot be judged"


def test_the_start_names_first_passages_and_blow_ups():
    results = {
        "original": {
            "label": "original ResNet-110",
            "reaches_threshold_at": [None, 160.0],
            "peak_loss": [3.1, 2.0],
        },
        "preact": {
            "label": "pre-act ResNet-110",
            "reaches_threshold_at": [95.0, 100.0],
            "peak_loss": [1.9, 1.8],
        },
    }
    text = start_sentence(results, math.log(10))
    assert "original ResNet-110 never, 160; pre-act ResNet-110 95, 100" in text
    assert "original ResNet-110's loss rose to 3.10, above chance (2.30): a blow-up" in text
    assert "pre-act ResNet-110's loss rose" not in text
