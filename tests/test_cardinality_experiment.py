"""`resnets reproduce cardinality` (ResNeXt Table 3, Fig. 5): the smoke budget writes every artefact and
reruns nothing; the cpu and paper series hold their multiply-adds within 5%, the cpu plan is one recipe
with two seeds for the series' ends within 45 minutes; the verdict rules on constructed cases."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from resnets.experiments import get_experiment
from resnets.experiments.base import RunRecord
from resnets.experiments.cardinality import (
    CPU_RUN_SECONDS,
    Cardinality,
    cardinality_comparison,
    cardinality_nets,
    cardinality_verdict,
    complexity,
    complexity_spread,
    last_epoch_errors,
    training_judgement,
)
from resnets.experiments.runner import ReproduceOptions, make_context, plan, reproduce
from resnets.experiments.zoo import recipe_summary

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("cardinality")
    options = ReproduceOptions(budget="smoke", output=output, device="cpu")
    written = reproduce("cardinality", options, log=lambda _: None)
    return output, options, written


def test_smoke_writes_its_table_figure_and_results_and_reruns_nothing(smoke):
    output, options, written = smoke
    document = json.loads(written["results"].read_text())
    results = document["results"]
    nets = {k: v for k, v in results.items() if isinstance(v, dict) and "test_error" in v}
    assert [(v["cardinality"], v["width"], v["seeds"]) for v in nets.values()] == [
        (1, 64, 2),
        (2, 40, 1),
        (4, 24, 2),
    ]
    for net in nets.values():
        assert all(0 <= e <= 100 for e in net["test_error"]) and all(t > 0 for t in net["train_seconds"])
        assert len(net["final_train_error"]) == net["seeds"] and abs(net["complexity_ratio"] - 1) <= 0.05
    assert [v["paper_top1_error"] for v in nets.values()] == [23.9, 23.0, 22.6]
    comparison = results["comparison"]
    assert (comparison["a"], comparison["b"], comparison["expected"]) == (
        "ResNeXt-11 1x64d",
        "ResNeXt-11 4x24d",
        "lower",
    )
    assert comparison["paper_effect"] == pytest.approx(22.6 - 23.9)
    train = results["training_error_comparison"]
    assert train["interval"][0] <= train["difference"] <= train["interval"][1]
    assert train["verdict"] in ("shows", "contradicts", "cannot be judged")
    assert results["verdict"] == document["finding"]["verdict"]
    report = written["report"].read_text()
    assert document["finding"]["text"] in report and "| ResNeXt-11 2x40d |" in report
    assert "Final training error (Fig. 5's, reported, not deciding)" in report
    with Image.open(written["cardinality.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 800
    messages: list[str] = []
    reproduce("cardinality", options, log=messages.append)  # the same folder: every run is found finished
    assert sum("finished run found" in m for m in messages) == 5
    assert not any("training" in m for m in messages)


@pytest.mark.parametrize(
    "budget, series",
    [
        ("cpu", [(1, 64), (4, 24), (32, 4)]),
        ("paper", [(1, 64), (2, 40), (4, 24), (8, 14), (32, 4)]),
    ],
)
def test_the_series_keeps_its_complexity_and_seeds_its_ends(tmp_path, budget, series):
    ctx = make_context(get_experiment("cardinality"), ReproduceOptions(budget=budget, output=tmp_path))
    nets = cardinality_nets(ctx)
    assert list(nets) == series
    assert [len(net.specs) for net in nets.values()] == [2] + [1] * (len(series) - 2) + [2]
    macs = [complexity(net.specs[0], budget == "paper")[0] for net in nets.values()]
    assert complexity_spread(macs) <= 0.05
    comparison = cardinality_comparison(ctx)
    assert comparison.a == nets[series[0]] and comparison.b == nets[series[-1]]
    assert comparison.paper_effect == pytest.approx(22.2 - 23.9)
    if budget == "paper":  # Table 3's template: ResNet-50 at about 4.1 GFLOPs, ImageNet's recipe
        assert 4.0e9 < macs[0] < 4.2e9
        assert {net.specs[0].recipe for net in nets.values()} == {"paper-imagenet"}
        assert nets[(32, 4)].specs[0].overrides["model_kwargs"] == {"groups": 32, "width_per_group": 4}


def test_cpu_plan_is_one_recipe_within_45_minutes(tmp_path):
    experiment = get_experiment("cardinality")
    ctx = make_context(experiment, ReproduceOptions(budget="cpu", output=tmp_path))
    specs = plan(experiment, ctx)
    assert len(specs) == 5 and {s.recipe for s in specs} == {"reproduce-cpu"}
    assert {s.overrides["model_kwargs"]["depth"] for s in specs} == {20}
    (shared,) = recipe_summary(specs)  # nothing differs between the nets but the model
    assert "recipe=reproduce-cpu" in shared
    minutes = sum(CPU_RUN_SECONDS[key] * len(net.specs) for key, net in cardinality_nets(ctx).items()) / 60
    assert (
        minutes <= 45 and f"about {minutes:.0f} minutes from scratch" in Cardinality().settings(ctx)["time"]
    )


# --- the verdict rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "test, spread, verdict",
    [
        ("shows", 0.02, "shows"),
        ("contradicts", 0.02, "contradicts"),
        ("cannot be judged", 0.02, "cannot be judged"),
        ("shows", 0.2, "cannot be judged"),  # complexity not held: the series tests nothing
        ("contradicts", 0.2, "cannot be judged"),
    ],
)
def test_the_verdict_is_the_test_error_comparison_where_the_complexity_holds(test, spread, verdict):
    assert cardinality_verdict(test, spread) == verdict


def _record(windows: list[float], final: float = 10.0) -> RunRecord:
    metrics = [{"iteration": 200, "train_error": 20.0}, {"iteration": 400, "train_error": final}]
    steps = [{"iteration": 150, "error": 30.0}] + [
        {"iteration": 250 + 50 * i, "error": e} for i, e in enumerate(windows)
    ]
    return RunRecord(None, None, metrics, steps, {})  # type: ignore[arg-type]


def test_the_training_error_is_judged_on_the_last_epochs_windows():
    assert last_epoch_errors(_record([9.0, 8.0, 7.0, 6.0])) == [9.0, 8.0, 7.0, 6.0]  # not the 30% of epoch 1
    assert last_epoch_errors(RunRecord(None, None, [{"iteration": 4, "train_error": 55.0}], [], {})) == [55.0]  # type: ignore[arg-type]
    low = [_record([6.0, 5.5, 5.2, 5.0]), _record([6.1, 5.6, 5.1, 4.9])]
    high = [_record([8.0, 7.6, 7.2, 7.0]), _record([8.2, 7.5, 7.3, 7.1])]
    shows = training_judgement(high, low)  # B (higher cardinality) about 2 points lower in every window
    assert shows.verdict == "shows" and shows.interval.difference == pytest.approx(-2.0625)
    assert training_judgement(low, high).verdict == "contradicts"
    mixed = training_judgement(high, [_record([6.0, 5.5, 5.2, 5.0]), _record([8.3, 7.8, 7.4, 7.2])])
    assert mixed.verdict == "cannot be judged"  # the seed pairs disagree
