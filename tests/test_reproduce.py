"""``resnets reproduce``: every experiment at the smoke budget end to end, resumption, the paper budget's
configuration (resolved, not trained) and the verdict logic of the analyses."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.errors import ConfigError
from resnets.experiments import EXPERIMENTS, get_experiment
from resnets.experiments.base import RunRecord, RunSpec, recipe_dict
from resnets.experiments.runner import make_context, plan, reproduce
from resnets.experiments.zoo import recipe_summary
from resnets.train.recipes import get_recipe

ORDER = ["degradation", "depth", "shortcuts", "identity-mappings", "responses", "lesion", "identity-toy"]


def test_every_experiment_is_registered():
    # the experiments after the first seven: their own test files
    later = [
        "survey",
        "cardinality",
        "detection",
        "segmentation",
        "width",
        "ensembles",
        "recurrent",
        "refinement",
        "identity-1000",
    ]
    assert sorted(EXPERIMENTS) == sorted(ORDER + later)
    with pytest.raises(ConfigError, match="Did you mean: degradation"):
        get_experiment("degradaton")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict[str, dict[str, Path]], list[str]]:
    """Every experiment at the smoke budget, in one output folder (so they share runs, as users would)."""
    import torch

    output = tmp_path_factory.mktemp("reproduce")
    messages: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread is as fast, and unaffected by a busy machine
    try:
        written = {
            name: reproduce(name, budget="smoke", output=output, device="cpu", log=messages.append)
            for name in ORDER
        }
    finally:
        torch.set_num_threads(threads)
    return output, written, messages


def _is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


@pytest.mark.parametrize("name", ORDER)
def test_smoke_writes_every_artefact(smoke, name):
    output, written, _ = smoke
    folder = output / name
    results = json.loads((folder / "results.json").read_text())
    report = (folder / "report.md").read_text()
    assert results["experiment"] == name and results["budget"] == "smoke"
    assert results["finding"]["shows"] in (True, False, None)
    assert len(results["finding"]["text"]) > 80
    assert results["finding"]["text"] in report
    figures = [p for key, p in written[name].items() if key.endswith(".png")]
    assert figures
    for figure in figures:
        assert figure.parent == folder and _is_png(figure)
        assert f"]({figure.name})" in report
    for heading in ("## Finding", "## Budget", "## Commands", "|---|"):
        assert heading in report
    assert f"resnets reproduce {name} --budget smoke" in report
    for run_name, run in results["runs"].items():
        # each run is an ordinary, finished run folder, and the report says how to train it alone
        run_folder = output / "runs" / run_name
        assert Path(run["folder"]) == run_folder
        for artefact in ("summary.json", "metrics.csv", "last.pt", "config.json"):
            assert (run_folder / artefact).is_file()
        assert f"--output {run_folder}" in report
        assert run["final"]["test_error"] is not None
    assert not list(folder.glob(".*.tmp"))  # no half-written files left behind


def test_smoke_results_hold_the_analysis(smoke):
    output, _, _ = smoke
    load = lambda name: json.loads((output / name / "results.json").read_text())  # noqa: E731
    degradation = load("degradation")["results"]
    assert {"plain-8", "plain-14", "ResNet-8", "ResNet-14"} <= set(degradation)
    assert degradation["ResNet-8"]["params"] == degradation["plain-8"]["params"]  # option A: no parameters
    assert degradation["ResNet-14"]["seeds"] == 2 and len(degradation["ResNet-14"]["test_error"]) == 2
    assert degradation["verdict"] in ("shows", "contradicts", "cannot be judged")
    for name, run in load("degradation")["runs"].items():  # each image scored: the logged test error again
        scored = torch.load(output / "predictions" / f"{name}.pt", weights_only=True)["errors"]
        assert scored.numel() == 64 and 100 * scored.float().mean().item() == pytest.approx(
            run["final"]["test_error"]
        )
    for comparison in degradation["comparisons"].values():  # the paired interval holds the difference
        low, high = comparison["interval"]
        assert low <= comparison["difference"] <= high and comparison["detectable_effect"] > 0
    responses = load("responses")["results"]
    assert [len(s) for s in responses["ResNet-14"]["stds"]] == [2 * 6] * 2  # 6 units, 2 3x3 convs; 2 seeds
    assert responses["verdict"] in ("shows", "contradicts", "cannot be judged")
    lesion = load("lesion")["results"]
    assert [len(seed["deleted_errors"]) for seed in lesion["ResNet-14"]["seeds"]] == [6, 6]
    assert lesion["paths"]["num_blocks"] == 6 and len(lesion["paths"]["mean_norm"]) == 7
    identity = load("identity-mappings")["results"]
    assert identity["dropout"]["paper_fails"] and identity["original"]["paper_test_error"] == 6.61
    depth = load("depth")["results"]
    assert depth["ResNet-14"]["depth"] == 14


def test_experiments_share_runs_and_finished_runs_are_not_redone(smoke, monkeypatch):
    output, _, messages = smoke
    # degradation trained plain/ResNet-8/14 with 2 seeds each; responses and lesion reused them
    assert sum("training" in m and "ResNet-14:" in m for m in messages) == 2
    assert any(m.startswith("[lesion] ResNet-14: finished run found") for m in messages)

    def no_training(config):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("resnets.train.engine.train", no_training)
    before = json.loads((output / "degradation" / "results.json").read_text())
    reproduce("degradation", budget="smoke", output=output, device="cpu", log=lambda m: None)
    after = json.loads((output / "degradation" / "results.json").read_text())
    assert after["results"] == before["results"]


def test_an_unfinished_run_is_resumed_and_a_foreign_one_refused(smoke, monkeypatch):
    output, _, _ = smoke
    experiment = get_experiment("degradation")  # its analysis is quick
    spec = plan(experiment, make_context(experiment, budget="smoke", output=output))[0]
    folder = output / "runs" / spec.name
    summary = (folder / "summary.json").read_text()
    (folder / "summary.json").unlink()  # as if killed after its last checkpoint
    seen = []

    def fake_train(config):
        seen.append(config)
        (folder / "summary.json").write_text(summary)
        return json.loads(summary)

    monkeypatch.setattr("resnets.train.engine.train", fake_train)
    reproduce("degradation", budget="smoke", output=output, device="cpu", log=lambda m: None)
    assert len(seen) == 1 and seen[0].run.resume == str(folder) and seen[0].run.output == str(folder)

    config = json.loads((folder / "config.json").read_text())
    config["recipe"]["lr"] = 0.5
    (folder / "config.json").write_text(json.dumps(config))
    seen.clear()
    with pytest.raises(ConfigError, match=r"other settings \(lr: 0.5 -> 0.1\)"):
        reproduce("responses", budget="smoke", output=output, device="cpu", log=lambda m: None)  # same run
    assert not seen  # refused before any training
    config["recipe"]["lr"] = 0.1
    (folder / "config.json").write_text(json.dumps(config))


# --- the paper budget, resolved but not trained ------------------------------------------------


def _paper_plan(name: str, **kwargs) -> list[tuple[RunSpec, dict]]:
    experiment = get_experiment(name)
    specs = plan(experiment, make_context(experiment, budget="paper", output="unused", **kwargs))
    return [(spec, recipe_dict(spec)) for spec in specs]


def test_paper_budget_is_the_papers_cifar_schedule():
    for name in ORDER[:-1]:
        for spec, recipe in _paper_plan(name):
            assert recipe["dataset"] == "cifar10"
            assert recipe["iterations"] == 64_000 and recipe["schedule_unit"] == "iteration"
            assert recipe["milestones"] == [32_000, 48_000] and recipe["batch_size"] == 128
            assert recipe["lr"] == 0.1 and recipe["momentum"] == 0.9 and recipe["weight_decay"] == 1e-4
            assert recipe["crop_padding"] is None and recipe["hflip"] is None  # CIFAR: 4-pixel pad + flip
            assert recipe["train_subset"] is None and recipe["test_subset"] is None
            expected = "preact-cifar" if name == "identity-mappings" else "paper-cifar"
            assert spec.recipe == expected
            if expected == "paper-cifar":
                assert recipe["normalization"] == "per_pixel"  # Sec. 4.2: per-pixel mean subtracted
    models = {name: [(r["model"], r["model_kwargs"]) for _, r in _paper_plan(name)] for name in ORDER[:-1]}
    # two seeds of the nets whose comparison decides the verdict, one of those between
    assert [m for m, _ in models["degradation"]] == [
        "plain20",
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        "plain56",
        "resnet20",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet56",
    ]
    assert [m for m, _ in models["depth"]] == [
        "resnet20",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet110",
        "resnet1202",
    ]
    seeds = [r["seed"] for _, r in _paper_plan("depth")]
    assert seeds == [0, 1, 0, 0, 0, 0, 1, 0]
    assert ("resnet110", {}) in models["responses"]
    assert models["lesion"] == [(m, {}) for m in ("resnet56", "plain56", "vgg20_cifar") for _ in "ab"]
    assert models["shortcuts"] == [
        ("plain56", {}),
        ("plain56", {}),
        ("resnet56", {}),
        ("resnet56", {}),
        ("resnet56", {"shortcut": "B"}),
        ("resnet56", {"shortcut": "B"}),
        ("resnet56", {"shortcut": "C"}),
        ("resnet56", {"shortcut": "C"}),
    ]
    assert len(models["identity-mappings"]) == 20
    assert {m for m, _ in models["identity-mappings"]} == {"resnet110"}
    assert ("resnet110", {"shortcut_kind": "dropout"}) in models["identity-mappings"]
    assert ("resnet110", {"unit": "full_preact"}) in models["identity-mappings"]
    # the paper's 45k/5k split and, for 110 layers, the 0.01 warm-up until training error < 80%
    degradation = dict((r["model"], r) for _, r in _paper_plan("degradation"))
    assert degradation["resnet56"]["val_split"] == 5000
    assert degradation["resnet56"]["warmup_until_error"] == 0.8


def test_paper_shortcuts_on_imagenet_use_resnet34_and_the_imagenet_recipe():
    runs = _paper_plan("shortcuts", dataset="imagenet")
    assert [(r["model"], r["model_kwargs"], r["seed"]) for _, r in runs] == [
        ("plain34", {}, 0),
        ("plain34", {}, 1),
        ("resnet34", {"shortcut": "A"}, 0),
        ("resnet34", {"shortcut": "A"}, 1),
        ("resnet34", {"shortcut": "B"}, 0),
        ("resnet34", {"shortcut": "B"}, 1),
        ("resnet34", {"shortcut": "C"}, 0),
        ("resnet34", {"shortcut": "C"}, 1),
    ]
    assert {spec.recipe for spec, _ in runs} == {"paper-imagenet"}


def test_cpu_budget_plans():
    experiment = get_experiment("degradation")
    specs = plan(experiment, make_context(experiment, budget="cpu", output="unused"))
    recipes = [recipe_dict(s) for s in specs]
    assert {r["model"] for r in recipes} == {f"{k}{d}" for k in ("plain", "resnet") for d in (20, 32, 44, 56)}
    # one recipe for every net compared: same length, lr, warm-up and initialisation (the paper's), no
    # error-triggered warm-up, the whole training set less a fixed validation split, the whole test set
    # read once at the end
    shared = {k: {json.dumps(r[k]) for r in recipes} for k in recipes[0] if k not in ("model", "seed")}
    assert {k: v for k, v in shared.items() if len(v) > 1} == {}
    first = recipes[0]
    assert first["dataset"] == "fashion-mnist" and first["iterations"] is None and first["epochs"] >= 3
    assert first["schedule"] == "onecycle" and first["warmup"] == 1.0 and first["warmup_until_error"] is None
    assert first["model_kwargs"] == {} and first["val_split"] == 5000 and first["split_seed"] == 0
    assert first["train_subset"] is None and first["test_subset"] is None and first["final_test_only"]
    assert first["amp"] == "auto" and first["channels_last"] and first["label_smoothing"] == 0.1
    assert sorted(r["seed"] for r in recipes if r["model"] == "resnet56") == [0, 1]
    # --plan says so before any training: one line of shared values, nothing that differs
    (summary,) = recipe_summary(specs)
    for shown in (
        "recipe=reproduce-cpu",
        f"epochs={first['epochs']}",
        "lr=0.2",
        "test_subset=None",
        "init=the model's (the paper's)",
    ):
        assert shown in summary
    other = RunSpec("x", "x", "reproduce-cpu", {"model": "resnet20", "lr": 0.1})
    differing = recipe_summary(specs[:1] + [other])
    assert differing[1] == "differs: lr in ['0.1', '0.2']"
    assert [r["seed"] for r in recipes if r["model"] == "resnet32"] == [0]
    # --iterations replaces the budget's length; the warm-up keeps its share (the recipe's one epoch of four)
    shorter = plan(experiment, make_context(experiment, budget="cpu", output="unused", iterations=300))
    assert all("-300it" in s.name and recipe_dict(s)["iterations"] == 300 for s in shorter)
    assert all(recipe_dict(s)["warmup"] == 75 for s in shorter)
    with pytest.raises(ConfigError, match="trains no networks"):
        make_context(get_experiment("identity-toy"), iterations=300)
    with pytest.raises(ConfigError, match="positive integer"):
        make_context(experiment, iterations=0)
    with pytest.raises(ConfigError, match="seeds must be an integer from 1 to 20"):
        make_context(experiment, seeds=0)
    assert len(plan(experiment, make_context(experiment, budget="cpu", output="unused", seeds=3))) == 16
    # experiments that need the same networks name the same runs: after degradation, the others train
    # only their own nets
    trained = {s.name for s in specs}
    new_models = {}
    for name in ("responses", "depth", "lesion", "shortcuts", "identity-mappings"):
        other = get_experiment(name)
        other_specs = plan(other, make_context(other, budget="cpu", output="unused"))
        new_models[name] = sorted(recipe_dict(s)["model"] for s in other_specs if s.name not in trained)
        trained |= {s.name for s in other_specs}
    assert new_models["responses"] == [] and new_models["lesion"] == ["vgg20_cifar"] * 2
    assert new_models["depth"] == ["resnet110", "resnet110"]
    # plain-32 and ResNet-32 A's second seeds, options B and C with two seeds each
    assert new_models["shortcuts"] == ["plain32"] + ["resnet32"] * 5
    assert len(new_models["identity-mappings"]) == 18  # every variant but the original unit, two seeds


def test_all_plans_every_experiment_once_with_an_estimate(capsys):
    from resnets.experiments.zoo import ALL_ORDER, plan_all, plan_lines

    assert sorted(ALL_ORDER) == sorted(EXPERIMENTS)
    planned = plan_all(budget="smoke", output="unused")
    names = [spec.name for _, _, specs in planned for spec in specs]
    assert len(names) == len(set(names))  # a shared run is planned once, by the first experiment
    assert [e.name for e, _, _ in planned] == list(ALL_ORDER)
    lines = plan_lines(planned)
    assert lines[0].startswith("degradation") and "8 new run(s)" in lines[0]  # 2 kinds x 2 depths x 2 seeds
    assert lines[-1].startswith("total: ~")
    assert main(["reproduce", "--all", "--budget", "smoke", "--plan", "--output", "out"]) == 0
    out = capsys.readouterr().out
    assert out.count("resnets train") == len(names) and "# total: ~" in out
    assert main(["reproduce", "depth", "--all"]) == 2


def test_time_estimate_follows_depth_and_length():
    from resnets.experiments.zoo import estimate_seconds

    ctx = make_context(get_experiment("depth"), budget="cpu", output="unused")
    macs: dict[str, float] = {}
    r20 = estimate_seconds(ctx.run("resnet20", "ResNet-20", iterations=None), macs)
    r56 = estimate_seconds(ctx.run("resnet56", "ResNet-56", iterations=None), macs)
    short = estimate_seconds(ctx.run("resnet20", "ResNet-20", iterations=100), macs)
    assert 1.5 < r56 / r20 < 3.5  # measured 2.6x (docs/reproduce.md)
    epochs = get_recipe("reproduce-cpu").epochs  # of 215 steps: 55,000 images at batch 256
    assert short == pytest.approx(r20 * 100 / (epochs * 215), rel=0.01)
    # DenseNet-BC-52 took 1,349-1,626 s a run (the survey, 2026-12-07), far beyond its multiply-adds
    survey = make_context(get_experiment("survey"), budget="cpu", output="unused")
    densenet = survey.run(
        "densenet_cifar", "DenseNet", model_kwargs={"depth": 52, "growth_rate": 12}, iterations=None
    )
    assert 1200 < estimate_seconds(densenet, macs) < 1700


# --- the command ---------------------------------------------------------------------------------


def test_cli_list_and_errors(capsys):
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ORDER)
    assert main(["reproduce", "lesoin"]) == 2
    assert "Did you mean: lesion" in capsys.readouterr().err
    assert main(["reproduce"]) == 2
    assert main(["reproduce", "depth", "--budget", "paper", "--dataset", "cifar11", "--plan"]) == 2
    assert "unknown dataset 'cifar11'" in capsys.readouterr().err


def test_cli_plan_prints_train_commands_that_resolve_to_the_same_runs(capsys):
    from resnets.commands.train import COMMAND

    assert main(["reproduce", "identity-mappings", "--budget", "paper", "--plan", "--output", "out"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    specs = [s for s, _ in _paper_plan("identity-mappings")]
    assert len(lines) == len(specs) == 20  # 10 variants, 2 seeds
    import argparse

    for line, spec in zip(lines, specs, strict=True):
        parser = argparse.ArgumentParser()
        COMMAND.configure(parser)
        config, _ = COMMAND.resolve(parser.parse_args(shlex.split(line)[2:]))
        assert config.recipe.to_dict() == recipe_dict(spec)
        assert config.run.output == str(Path("out") / "runs" / spec.name)


# --- verdicts computed from the numbers ---------------------------------------------------------


def _record(label: str, rows: list[dict], model: str = "resnet20") -> RunRecord:
    spec = RunSpec(label, label, "paper-cifar", {"model": model, "test_subset": 2000, "batch_size": 128})
    return RunRecord(spec, Path(label), rows, [], {})


def _rows(train_error: float, test_error: float) -> list[dict]:
    return [
        {"epoch": 1, "iteration": 100, "train_error": 50.0, "test_error": 50.0},
        {"epoch": 2, "iteration": 200, "train_error": train_error, "test_error": test_error},
    ]


def test_rank_correlation():
    from resnets.experiments.stats import rank_correlation

    assert rank_correlation([20, 32, 44, 56], [9.0, 8.0, 7.5, 7.0]) == pytest.approx(-1.0)
    assert rank_correlation([20, 32, 44], [7.0, 8.0, 9.0]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [1.0, 1.0, 2.0, 2.0]) == pytest.approx(0.894, abs=1e-3)


def test_identity_toy_residual_layer_learns_zero_faster_with_adam():
    from resnets.experiments.identity_toy import steps_to_reach, train_identity_layer

    plain = train_identity_layer(False, "adam", steps=200, seed=0)
    residual = train_identity_layer(True, "adam", steps=200, seed=0)
    assert residual[0] < plain[0]  # same weights: the residual layer starts nearer its target (zero)
    assert 2 * steps_to_reach(residual, 1e-2) < steps_to_reach(plain, 1e-2)
    assert steps_to_reach([3.0, 0.5, 0.05], 0.1) == 3 and steps_to_reach([3.0], 0.1) is None
