"""``resnets reproduce survey``: the smoke budget writes every artefact and shares the ResNet and its
pre-activation unit with degradation and identity-mappings; the cpu plan is one recipe, two seeds and
members of about ResNet-20's size; the paper plan holds the published members with their own lr; each
family is compared with the ResNet in its paper's direction; the verdict rule on constructed cases."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import resnets
from resnets.cli import main
from resnets.experiments import get_experiment
from resnets.experiments.base import recipe_dict
from resnets.experiments.paired import overall
from resnets.experiments.plans import params_cifar
from resnets.experiments.runner import ReproduceOptions, make_context, plan, reproduce
from resnets.experiments.survey import SHOWS_NEEDED, survey_comparisons, survey_members
from resnets.experiments.zoo import recipe_summary

pytestmark = pytest.mark.usefixtures("one_thread")
FAMILIES = ["highway", "resnet", "preact", "densenet", "fractalnet", "ror", "multiresnet", "wrn"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: the function-scoped one_thread fixture is not active yet
    try:
        output = tmp_path_factory.mktemp("survey")
        written = reproduce(
            "survey", ReproduceOptions(budget="smoke", output=output, device="cpu"), log=lambda _: None
        )
    finally:
        torch.set_num_threads(threads)
    return output, written


def _ctx(budget: str, output="unused", experiment: str = "survey"):
    return make_context(get_experiment(experiment), ReproduceOptions(budget=budget, output=output))


def test_smoke_survey_writes_its_tables_figure_and_paired_comparisons(smoke):
    _, written = smoke
    document = json.loads(written["results"].read_text())
    results = document["results"]
    nets = {k: v for k, v in results.items() if isinstance(v, dict) and "test_error" in v}
    assert list(nets) == FAMILIES
    for net in nets.values():
        assert net["params"] > 0 and net["mult_adds"] > 0 and net["train_seconds"] > 0
        assert len(net["test_error"]) == 2 and all(0 <= e <= 100 for e in net["test_error"])  # 2 seeds
    assert all(0 <= e <= 100 for e in nets["fractalnet"]["deepest_column_error"])
    # the CIFAR-10 net's parameters, whatever the dataset: the smoke Highway-8 has widths 8, 16, 32
    highway8 = resnets.create_model("highway_cifar", depth=8, width=8)
    assert nets["highway"]["params"] == sum(p.numel() for p in highway8.parameters())
    comparisons = results["comparisons"]
    assert len(comparisons) == 7 and all(c["a"] == "ResNet-8" for c in comparisons.values())
    assert {c["b"]: c["expected"] for c in comparisons.values()}["Highway-8"] == "higher"
    assert sum(c["expected"] == "lower" for c in comparisons.values()) == 6
    for c in comparisons.values():
        low, high = c["interval"]
        assert low <= c["difference"] <= high
        # the paired difference is the mean of the seed pairs' (every seed scores all test images)
        assert c["difference"] == pytest.approx(sum(c["per_seed_differences"]) / 2, abs=1e-6)
    assert results["verdict"] == document["finding"]["verdict"]
    report = written["report"].read_text()
    assert document["finding"]["text"] in report
    for text in ("Our nets, trained alike", "The published CIFAR-10 numbers", "| DenseNet-BC-100 (k=12) |"):
        assert text in report
    with Image.open(written["survey.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 800


def test_smoke_survey_shares_the_resnet_and_its_preact_unit(smoke):
    output, _ = smoke
    survey = {s.name for s in plan(get_experiment("survey"), _ctx("smoke", output))}
    shared_runs = (("degradation", "resnet_cifar-depth=8-"), ("identity-mappings", "unit=full_preact"))
    for other, shared in shared_runs:
        names = {s.name for s in plan(get_experiment(other), _ctx("smoke", output, other))}
        assert any(shared in name for name in survey & names), other


def _params(spec) -> int:
    with torch.device("meta"):  # counting only
        return params_cifar(spec)


def test_cpu_plan_is_one_recipe_two_seeds_and_members_of_resnet20s_size():
    ctx = _ctx("cpu")
    members = survey_members(ctx)
    assert list(members) == FAMILIES
    assert all(len(net.specs) == 2 for _, net in members.values())
    specs = plan(get_experiment("survey"), ctx)
    assert len(specs) == 16
    # one recipe for every net: only the model and DenseNet's layout (speed, not learning) differ
    for spec in specs:
        recipe = recipe_dict(spec)
        assert spec.recipe == "reproduce-cpu" and recipe["test_subset"] is None
        assert (recipe["lr"], recipe["epochs"], recipe["val_split"]) == (0.2, 4, 5000)
        assert "drop_rate" not in recipe["model_kwargs"] and "local_drop_rate" not in recipe["model_kwargs"]
    (shared,) = recipe_summary([s for s in specs if "densenet" not in s.name])
    assert "recipe=reproduce-cpu" in shared and "lr=0.2" in shared
    resnet = _params(members["resnet"][1].specs[0])
    for key, (_, net) in members.items():
        ratio = _params(net.specs[0]) / resnet
        assert 0.8 <= ratio <= 1.2, (key, ratio)  # "about equal parameters"
    # ResNet-20 and its full pre-activation unit are degradation's and identity-mappings' runs
    names = {s.name for s in specs}
    assert {"resnet20-fashion-mnist-cpu", "resnet20-unit=full_preact-fashion-mnist-cpu-seed1"} <= names
    for other in ("degradation", "identity-mappings"):
        assert names & {s.name for s in plan(get_experiment(other), _ctx("cpu", experiment=other))}


def test_each_family_is_compared_with_the_resnet_in_its_papers_direction():
    found = {c.b.label: c for c in survey_comparisons(_ctx("cpu"))}
    assert len(found) == 7 and {c.a.label for c in found.values()} == {"ResNet-20"}
    assert found["Highway-14"].expected == "higher"
    assert found["Highway-14"].paper_effect == pytest.approx(7.72 - 6.61)
    assert found["pre-act ResNet-20"].paper_effect == pytest.approx(6.37 - 6.61)
    assert found["DenseNet-BC-52 (k=12)"].paper_effect == pytest.approx(4.51 - 6.61)
    assert found["FractalNet (C=3, B=3)"].paper_effect == pytest.approx(5.22 - 6.61)
    for label in ("RoR-3-20", "Multi-ResNet-8 (k=4)", "WRN-10-2"):
        assert found[label].paper_effect is None
    assert all(c.expected == "lower" for label, c in found.items() if label != "Highway-14")


def test_paper_plan_trains_the_published_members_with_their_own_lr():
    runs = {spec.label: recipe_dict(spec) for spec in plan(get_experiment("survey"), _ctx("paper"))}
    assert runs["Highway-19"]["lr"] == 0.025 and runs["FractalNet-20"]["lr"] == 0.02
    assert runs["FractalNet-20"]["model_kwargs"] == {"local_drop_rate": 0.15, "global_drop_rate": 0.5}
    assert runs["ResNet-110"]["model"] == "resnet110" and runs["ResNet-110"]["lr"] == 0.1
    assert {r["model"] for r in runs.values()} >= {"preact_resnet164", "densenet_bc100_k12", "ror3_resnet110"}
    depth = {s.name for s in plan(get_experiment("depth"), _ctx("paper", experiment="depth"))}
    resnet110 = {s.name for s in plan(get_experiment("survey"), _ctx("paper")) if s.label == "ResNet-110"}
    assert resnet110 and resnet110 <= depth  # the paper budget's ResNet-110 is depth's run


def test_cli_plan_lists_the_survey_runs(capsys):
    assert main(["reproduce", "survey", "--budget", "cpu", "--plan", "--output", "out"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    assert len(lines) == 16 and sum("model=densenet_cifar" in ln for ln in lines) == 2


@pytest.mark.parametrize(
    "verdicts, expected",
    [
        (["shows"] * 4 + ["cannot be judged"] * 3, "shows"),
        (["shows"] * 7, "shows"),
        (["shows"] * 3 + ["cannot be judged"] * 4, "cannot be judged"),
        (["shows"] * 5 + ["contradicts"] + ["cannot be judged"], "cannot be judged"),  # one reversed
        (["contradicts"] * 4 + ["shows"] * 3, "contradicts"),
    ],
)
def test_the_verdict_rule(verdicts, expected):
    assert overall(verdicts, required=SHOWS_NEEDED) == expected


def test_one_diverged_net_is_drawn_off_scale_and_the_others_gaps_stay_visible(tmp_path):
    from matplotlib.figure import Figure

    from resnets.experiments.plots import off_scale, plot_differences

    # Highway's diverged seed (+42 points) against gaps of about a point: only it leaves the scale
    assert off_scale({"highway": 72.9, "multi": 1.41, "wrn": 1.18, "fractal": 0.87}) == {"highway"}
    assert off_scale({"a": 1.4, "b": 1.2, "c": 0.9}) == set()  # no outlier: every gap on one scale
    assert off_scale({"a": 100.0, "b": 0.1}) == set()  # two comparisons stay on the scale together
    ax = Figure().subplots()
    plot_differences(
        ax, {"highway": (42.4, 12.0, 72.9), "multi": (1.03, 0.65, 1.41), "wrn": (0.66, 0.16, 1.18)}
    )
    low, high = ax.get_xlim()
    assert low <= 0 and 1.41 < high < 12.0  # the 1-point gaps fill the axis; the outlier is annotated
    assert "+42.4 [+12.0, +72.9]" in ax.texts[0].get_text()
