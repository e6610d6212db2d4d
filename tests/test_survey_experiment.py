"""``resnets reproduce survey``: the smoke budget end to end, the cpu and paper budgets' plans (resolved, not
trained) and the verdict computed from the numbers (the lesion study's VGG contrast is tested in
test_lesion_experiment)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from resnets.cli import main
from resnets.experiments import get_experiment
from resnets.experiments.base import recipe_dict
from resnets.experiments.runner import make_context, plan, reproduce
from resnets.experiments.survey import Comparison, comparisons, verdict


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict[str, Path], list[str]]:
    import torch

    output = tmp_path_factory.mktemp("survey")
    messages: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread is as fast, and unaffected by a busy machine
    try:
        written = reproduce("survey", budget="smoke", output=output, device="cpu", log=messages.append)
    finally:
        torch.set_num_threads(threads)
    return output, written, messages


def test_smoke_survey_writes_its_table_and_figure(smoke):
    output, written, _ = smoke
    results = json.loads(written["results"].read_text())
    report = written["report"].read_text()
    assert results["experiment"] == "survey" and results["budget"] == "smoke"
    nets = {k: v for k, v in results["results"].items() if isinstance(v, dict) and "test_error" in v}
    assert set(nets) == {"Highway-19", "ResNet-8", "pre-act ResNet-11", "DenseNet-BC-16 (k=12)",
                         "FractalNet (C=2, w=8)", "RoR-3-8", "Multi-ResNet-8 (k=2)", "WRN-10-2"}
    for net in nets.values():
        assert net["params"] > 0 and net["mult_adds"] > 0 and net["train_seconds"] > 0
        assert 0 <= net["test_error"] <= 100 and net["noise"] > 0
    assert 0 <= nets["FractalNet (C=2, w=8)"]["deepest_column_error"] <= 100
    assert nets["Highway-19"]["params"] == 2_256_838  # the CIFAR-10 net, whatever the dataset
    assert results["finding"]["text"] in report and results["finding"]["shows"] is None  # no published row
    for heading in ("Our nets, trained alike", "The published CIFAR-10 numbers",
                    "| DenseNet-BC-100 (k=12) |"):
        assert heading in report
    with Image.open(written["survey.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 400
    for run in results["runs"].values():  # ordinary, finished run folders
        assert (Path(run["folder"]) / "summary.json").is_file()


def test_smoke_survey_shares_the_cifar_resnet_run(smoke):
    output, _, messages = smoke
    experiment = get_experiment("degradation")
    degradation = {s.name for s in plan(experiment, make_context(experiment, budget="smoke", output=output))}
    survey_experiment = get_experiment("survey")
    survey = {s.name for s in plan(survey_experiment,
                                   make_context(survey_experiment, budget="smoke", output=output))}
    assert len(degradation & survey) == 1  # ResNet-8


def _plan(name: str, budget: str) -> list[tuple[str, str, dict]]:
    experiment = get_experiment(name)
    specs = plan(experiment, make_context(experiment, budget=budget, output="unused"))
    return [(spec.name, spec.label, recipe_dict(spec)) for spec in specs]


def test_cpu_and_paper_budgets_plan_the_paper_sized_nets():
    expected = [("highway19", {}), ("resnet110", {}), ("preact_resnet164", {}), ("densenet_bc100_k12", {}),
                ("fractalnet20", {"local_drop_rate": 0.15, "global_drop_rate": 0.5}), ("ror3_resnet110", {}),
                ("multiresnet20_k4", {}), ("wrn", {"depth": 16, "widen_factor": 4})]
    for budget, dataset, iterations in (("cpu", "fashion-mnist", 400), ("paper", "cifar10", 64_000)):
        runs = _plan("survey", budget)
        assert [(r["model"], r["model_kwargs"]) for _, _, r in runs] == expected
        for _, _, recipe in runs:  # trained alike: one recipe, one length (Highway: its authors' lr)
            assert recipe["dataset"] == dataset and recipe["iterations"] == iterations
            budget_lr, batch = (0.1, 128) if budget == "paper" else (0.2, 256)  # paper-cifar / reproduce-cpu
            assert recipe["lr"] == {"highway19": 0.025, "fractalnet20": 0.02}.get(recipe["model"], budget_lr)
            assert recipe["batch_size"] == batch and recipe["momentum"] == 0.9
            # on CPU only DenseNet trains in NCHW, the layout it is faster in
            if budget == "cpu":
                assert recipe["channels_last"] == (recipe["model"] != "densenet_bc100_k12")
        # ResNet-110 is depth's run where the survey trains as long (the cpu budget trains shorter)
        depth = {name for name, _, _ in _plan("depth", budget)}
        shared = [name for name, _, _ in runs if name in depth]
        resnet110 = [name for name, label, _ in runs if label == "ResNet-110"]
        assert shared == (resnet110 if budget == "paper" else [])
    paper = {label: r for _, label, r in _plan("survey", "paper")}
    assert paper["ResNet-110"]["milestones"] == [32_000, 48_000] and paper["ResNet-110"]["val_split"] == 5000


def test_cli_plan_lists_the_survey_runs(capsys):
    assert main(["reproduce", "survey", "--budget", "paper", "--plan", "--output", "out"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    assert len(lines) == 8 and any("model=densenet_bc100_k12" in ln for ln in lines)


def test_verdict_follows_the_numbers():
    published = {"Highway-19": 7.72, "ResNet-110": 6.61, "DenseNet-BC-100 (k=12)": 4.51}
    ordered = {"Highway-19": (20.0, 2000), "ResNet-110": (15.0, 2000), "DenseNet-BC-100 (k=12)": (10.0, 2000)}
    found = comparisons(ordered, published)
    assert len(found) == 3 and all(c.outcome == "agrees" for c in found) and verdict(found) is True
    assert found[0] == Comparison("ResNet-110", "Highway-19", pytest.approx(1.11), 5.0,
                                  pytest.approx(1.19, abs=0.01))
    reversed_ = {"Highway-19": (10.0, 2000), "ResNet-110": (15.0, 2000),
                 "DenseNet-BC-100 (k=12)": (20.0, 2000)}
    assert verdict(comparisons(reversed_, published)) is False
    close = {"Highway-19": (15.2, 2000), "ResNet-110": (15.1, 2000), "DenseNet-BC-100 (k=12)": (15.0, 2000)}
    assert verdict(comparisons(close, published)) is None  # all within the noise
    assert verdict([]) is None


def test_survey_finding_text_counts_the_pairs():
    from resnets.experiments.survey import Survey

    results = {
        "A": {"test_error": 10.0, "params": 1e6, "noise": 0.7},
        "B": {"test_error": 14.0, "params": 2e6, "noise": 0.8},
    }
    found = [Comparison("A", "B", 1.0, 4.0, 1.0)]

    class Ctx:
        dataset, budget = "fashion-mnist", type("B", (), {"name": "cpu"})

    text = Survey._finding(results, found, None, True, Ctx)
    assert "A tests best (10.00%" in text and "1 come out in the same order" in text
    assert text.endswith("The papers' ordering shows at this budget.")
