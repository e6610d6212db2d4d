"""`resnets reproduce width` (Wide ResNets, Table 4): the smoke budget writes every artefact and reruns
nothing; the cpu plan is one recipe for every net, the deciding nets with two seeds, within 45 minutes;
the paper plan holds Table 4's nets, recipe and parameter counts; the verdict rule on constructed cases."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.experiments import EXPERIMENTS
from resnets.experiments.base import RunRecord, RunSpec, recipe_dict
from resnets.experiments.paper_numbers import WRN_TABLE4
from resnets.experiments.plans import params_cifar
from resnets.experiments.runner import ReproduceOptions, make_context, plan, reproduce
from resnets.experiments.width import (
    PARAMS_TOLERANCE,
    Width,
    cpu_minutes,
    seconds_per_epoch,
    width_comparisons,
    width_nets,
    width_verdict,
)
from resnets.experiments.zoo import recipe_summary

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: the function-scoped one_thread fixture is not active yet
    try:
        output = tmp_path_factory.mktemp("width")
        options = ReproduceOptions(budget="smoke", output=output, device="cpu")
        written = reproduce("width", options, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return output, options, written


def test_smoke_writes_its_tables_figure_and_results_and_reruns_nothing(smoke):
    _, options, written = smoke
    document = json.loads(written["results"].read_text())
    results = document["results"]
    nets = {k: v for k, v in results.items() if isinstance(v, dict) and "test_error" in v}
    assert list(nets) == ["WRN-10-1", "WRN-10-2", "WRN-22-1"]
    for net in nets.values():
        assert net["seeds"] == 2 and len(net["test_error"]) == 2  # every smoke net decides
        assert all(0 <= e <= 100 for e in net["test_error"])
        assert all(s > 0 for s in net["seconds_per_epoch"])
        assert net["paper_error"] is None  # no smoke net is a row of Table 4
    # the CIFAR-10 nets' parameters, whatever the dataset (Fashion-MNIST has 1 channel)
    assert nets["WRN-10-2"]["params"] == 303_706 and nets["WRN-22-1"]["params"] == 272_282
    assert nets["WRN-10-1"]["mult_adds"] < nets["WRN-10-2"]["mult_adds"]
    assert set(results["comparisons"]) == {"WRN-10-2 vs WRN-10-1", "WRN-10-2 vs WRN-22-1"}
    for comparison in results["comparisons"].values():
        low, high = comparison["interval"]
        assert low <= comparison["difference"] <= high and comparison["expected"] == "lower"
    (pair,) = results["pairs"]
    assert (pair["deep"], pair["wide"]) == ("WRN-22-1", "WRN-10-2")
    assert pair["params_ratio"] == pytest.approx(303_706 / 272_282) and pair["seconds_per_epoch_ratio"] > 0
    assert results["verdict"] == document["finding"]["verdict"]
    assert results["verdict"] in ("shows", "contradicts", "cannot be judged")
    report = written["report"].read_text()
    assert document["finding"]["text"] in report and "not part of the verdict" in report
    for text in ("| WRN-22-1 | 0.27M |", "| WRN-28-10 | 36.50 | 4.17 |"):
        assert text in report
    with Image.open(written["width.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 800
    messages: list[str] = []
    reproduce("width", options, log=messages.append)  # the same folder: every run is found finished
    assert sum("finished run found" in m for m in messages) == 6
    assert not any("training" in m for m in messages)


def _ctx(budget: str):
    return make_context(Width(), ReproduceOptions(budget=budget, output="unused"))


def _params(spec: RunSpec) -> int:
    with torch.device("meta"):  # counting only: no memory, no initialisation of the 52M-parameter nets
        return params_cifar(spec)


def test_cpu_plan_is_one_recipe_two_seeds_for_the_deciding_nets_within_45_minutes():
    ctx = _ctx("cpu")
    nets = width_nets(ctx)
    assert {net.label: len(net.specs) for net in nets.values()} == {
        "WRN-16-1": 2,
        "WRN-16-2": 2,
        "WRN-16-4": 1,
        "WRN-40-1": 2,
    }
    specs = plan(EXPERIMENTS["width"], ctx)
    for spec in specs:
        recipe = recipe_dict(spec)
        assert (
            recipe["model"] == "wrn"
            and recipe["dataset"] == "fashion-mnist"
            and spec.recipe == "reproduce-cpu"
        )
    assert [s.name for s in specs if "widen_factor=2" in s.name] == [
        "wrn-depth=16-widen_factor=2-fashion-mnist-cpu",
        "wrn-depth=16-widen_factor=2-fashion-mnist-cpu-seed1",
    ]
    (shared,) = recipe_summary(specs)  # one recipe for every net: no field differs
    assert "recipe=reproduce-cpu" in shared and "epochs=4" in shared
    series, (pair,) = width_comparisons(ctx)
    assert (series.a.label, series.b.label, series.expected) == ("WRN-16-1", "WRN-16-2", "lower")
    assert series.paper_effect == pytest.approx(5.33 - 6.85)  # Table 4's WRN-40-1 -> WRN-40-2
    assert (pair.a.label, pair.b.label) == ("WRN-40-1", "WRN-16-2")
    assert pair.paper_effect == pytest.approx(4.81 - 4.97)  # WRN-40-4 -> WRN-16-8: 40 -> 16 layers, 2x wide
    small, large = sorted((_params(pair.a.specs[0]), _params(pair.b.specs[0])))
    assert large / small <= 1 + PARAMS_TOLERANCE and _params(pair.a.specs[0]) == 563_930  # Table 4's 0.6M
    assert cpu_minutes(nets) <= 45
    assert f"about {cpu_minutes(nets):.0f} minutes from scratch" in Width().settings(ctx)["time"]


def test_paper_plan_trains_table_4_with_the_wrn_recipe_and_its_parameter_counts():
    nets = width_nets(_ctx("paper"))
    assert set(nets) == set(WRN_TABLE4)
    assert {shape for shape, net in nets.items() if len(net.specs) == 1} == {(40, 2), (28, 12), (22, 10)}
    for shape, net in nets.items():
        recipe = recipe_dict(net.specs[0])
        assert net.specs[0].recipe == "wrn" and recipe["dataset"] == "cifar10"
        assert (recipe["epochs"], recipe["iterations"], recipe["batch_size"]) == (200, None, 128)
        optimizer = (recipe["lr"], recipe["momentum"], recipe["nesterov"], recipe["weight_decay"])
        assert optimizer == (0.1, 0.9, True, 5e-4)
        assert recipe["milestones"] == [60, 120, 160] and recipe["gamma"] == 0.2 and recipe["warmup"] == 0
        assert recipe["model_kwargs"].get("drop_rate", 0.0) == 0.0  # the table's rows are without dropout
        assert round(_params(net.specs[0]) / 1e6, 1) == WRN_TABLE4[shape]["params_m"], shape
    assert recipe_dict(nets[(28, 10)].specs[0])["model"] == "wrn28_10"  # the zoo's name where it has one
    _, pairs = width_comparisons(_ctx("paper"))
    for pair in pairs:
        small, large = sorted((_params(pair.a.specs[0]), _params(pair.b.specs[0])))
        assert large / small <= 1 + PARAMS_TOLERANCE


def test_cli_plan_lists_the_table_nets_with_their_seeds(capsys, tmp_path):
    assert main(["reproduce", "width", "--budget", "paper", "--plan", "--output", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    assert len(lines) == 7 * 2 + 3 and all("--recipe wrn" in ln for ln in lines)
    assert any("model=wrn28_10" in ln for ln in lines)


# --- the verdict ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "series, pairs, verdict",
    [
        ("shows", ["shows"], "shows"),
        ("shows", ["cannot be judged"], "shows"),  # "at least as accurate": not worse beyond the noise
        ("shows", ["shows", "contradicts"], "contradicts"),  # a wide net worse beyond the noise
        ("contradicts", ["shows"], "contradicts"),  # widening hurts
        ("cannot be judged", ["shows"], "cannot be judged"),
        ("cannot be judged", ["cannot be judged"], "cannot be judged"),
    ],
)
def test_the_verdict_rule(series, pairs, verdict):
    assert width_verdict(series, pairs) == verdict


def test_seconds_per_epoch_comes_from_the_runs_summary():
    record = RunRecord(None, None, [], [], {"elapsed_s": 440.0, "epochs_done": 4})  # type: ignore[arg-type]
    assert seconds_per_epoch(record) == 110.0
    assert seconds_per_epoch(RunRecord(None, None, [], [], {})) == 0.0  # type: ignore[arg-type]
