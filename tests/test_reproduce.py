"""``resnets reproduce``: every experiment at the smoke budget end to end, resumption, the paper budget's
configuration (resolved, not trained) and the verdict logic of the analyses."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from PIL import Image

from resnets.cli import main
from resnets.errors import ConfigError
from resnets.experiments import EXPERIMENTS, get_experiment
from resnets.experiments.base import RunRecord, RunSpec, recipe_dict
from resnets.experiments.runner import make_context, plan, reproduce

ORDER = ["degradation", "depth", "shortcuts", "identity-mappings", "responses", "lesion", "identity-toy"]


def test_every_experiment_is_registered():
    # the experiments after the first seven: their own test files
    later = ["survey", "cardinality", "detection", "width", "ensembles", "recurrent", "refinement",
             "identity-1000"]
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
    responses = load("responses")["results"]
    assert len(responses["ResNet-14"]["stds"]) == 2 * 6  # 6 basic units, 2 3x3 convs each
    assert responses["ResNet-14"]["sorted"] == sorted(responses["ResNet-14"]["stds"], reverse=True)
    lesion = load("lesion")["results"]
    assert len(lesion["ResNet-14"]["deleted_errors"]) == 6
    assert lesion["paths"]["num_blocks"] == 6 and len(lesion["paths"]["mean_norm"]) == 7
    identity = load("identity-mappings")["results"]
    assert identity["dropout"]["paper_fails"] and identity["original"]["paper_test_error"] == 6.61
    depth = load("depth")["results"]
    assert depth["ResNet-14"]["depth"] == 14


def test_experiments_share_runs_and_finished_runs_are_not_redone(smoke, monkeypatch):
    output, _, messages = smoke
    # degradation trained plain/ResNet-8/14; responses and lesion reused them
    assert sum("training" in m and "ResNet-14" in m for m in messages) == 1
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
    assert [m for m, _ in models["degradation"]] == [
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
    ]
    assert [m for m, _ in models["depth"]] == [
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet1202",
    ]
    assert ("resnet110", {}) in models["responses"]
    assert models["lesion"] == [("resnet56", {}), ("plain56", {}), ("vgg20_cifar", {})]
    assert models["shortcuts"] == [
        ("plain56", {}),
        ("resnet56", {}),
        ("resnet56", {"shortcut": "B"}),
        ("resnet56", {"shortcut": "C"}),
    ]
    assert len(models["identity-mappings"]) == 10
    assert {m for m, _ in models["identity-mappings"]} == {"resnet110"}
    assert ("resnet110", {"shortcut_kind": "dropout"}) in models["identity-mappings"]
    assert ("resnet110", {"unit": "full_preact"}) in models["identity-mappings"]
    # the paper's 45k/5k split and, for 110 layers, the 0.01 warm-up until training error < 80%
    degradation = dict((r["model"], r) for _, r in _paper_plan("degradation"))
    assert degradation["resnet56"]["val_split"] == 5000
    assert degradation["resnet56"]["warmup_until_error"] == 0.8


def test_paper_shortcuts_on_imagenet_use_resnet34_and_the_imagenet_recipe():
    runs = _paper_plan("shortcuts", dataset="imagenet")
    assert [(r["model"], r["model_kwargs"]) for _, r in runs] == [
        ("plain34", {}),
        ("resnet34", {"shortcut": "A"}),
        ("resnet34", {"shortcut": "B"}),
        ("resnet34", {"shortcut": "C"}),
    ]
    assert {spec.recipe for spec, _ in runs} == {"paper-imagenet"}


def test_cpu_budget_plans():
    experiment = get_experiment("degradation")
    specs = plan(experiment, make_context(experiment, budget="cpu", output="unused"))
    recipes = {recipe_dict(s)["model"]: recipe_dict(s) for s in specs}
    assert set(recipes) == {f"{kind}{depth}" for kind in ("plain", "resnet") for depth in (20, 32, 44, 56)}
    for recipe in recipes.values():
        assert recipe["dataset"] == "fashion-mnist" and recipe["iterations"] == 900
        assert recipe["milestones"] == [450, 675]  # the paper's 50% / 75%
        assert (recipe["warmup"], recipe["warmup_shape"]) == (150, "linear")  # the first sixth
        assert recipe["amp"] == "auto" and recipe["channels_last"]
    # --iterations replaces the budget's length, keeping the paper's 50% / 75% lr drops
    shorter = plan(experiment, make_context(experiment, budget="cpu", output="unused", iterations=300))
    assert all(s.name.endswith("-300it") and recipe_dict(s)["milestones"] == [150, 225] for s in shorter)
    assert all(recipe_dict(s)["warmup"] == 50 for s in shorter)  # the warm-up keeps its share
    with pytest.raises(ConfigError, match="trains no networks"):
        make_context(get_experiment("identity-toy"), iterations=300)
    with pytest.raises(ConfigError, match="positive integer"):
        make_context(experiment, iterations=0)
    # the cpu budget's ResNets start each residual branch at zero there (and only there)
    assert all(recipe_dict(s)["model_kwargs"] == ({"zero_init_last": True} if s.model.startswith("resnet")
                                                  else {}) for s in specs)
    # experiments that need the same networks name the same runs: after depth (ResNet-20..110 with the
    # paper's init) and degradation, the others train only their own variants
    trained = {s.name for s in specs}
    new_models = {}
    for name in ("depth", "responses", "lesion", "shortcuts", "identity-mappings"):
        other = get_experiment(name)
        other_specs = plan(other, make_context(other, budget="cpu", output="unused"))
        new_models[name] = sorted(recipe_dict(s)["model"] for s in other_specs if s.name not in trained)
        trained |= {s.name for s in other_specs}
    assert new_models["depth"] == ["resnet110", "resnet20", "resnet32", "resnet44", "resnet56"]
    assert new_models["responses"] == [] and new_models["lesion"] == ["vgg20_cifar"]
    assert new_models["shortcuts"] == ["resnet32", "resnet32"]  # options B and C
    assert len(new_models["identity-mappings"]) == 9  # every variant but the original unit


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
    from resnets.commands.train import build_config
    from resnets.commands.train import configure as configure_train

    assert main(["reproduce", "identity-mappings", "--budget", "paper", "--plan", "--output", "out"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    specs = [s for s, _ in _paper_plan("identity-mappings")]
    assert len(lines) == len(specs) == 10
    import argparse

    for line, spec in zip(lines, specs, strict=True):
        parser = argparse.ArgumentParser()
        configure_train(parser)
        config = build_config(parser.parse_args(shlex.split(line)[2:]))
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


@pytest.mark.parametrize("plain56,resnet56,shows", [(12.0, 6.0, True), (9.0, 6.0, False), (12.0, 8.0, False)])
def test_degradation_verdict(plain56, resnet56, shows):
    from resnets.experiments.degradation import Degradation

    nets = {
        ("plain", 20): _record("plain-20", _rows(10.0, 11.0)),
        ("plain", 56): _record("plain-56", _rows(plain56, 13.0)),
        ("resnet", 20): _record("ResNet-20", _rows(7.0, 9.0)),
        ("resnet", 56): _record("ResNet-56", _rows(resnet56, 8.0)),
    }
    text, verdict, gaps = Degradation._finding(nets, 20, 56)
    assert verdict is shows
    assert gaps["plain"]["train_gap"] == pytest.approx(plain56 - 10.0)
    assert f"{plain56:.2f}%" in text and "ResNet-56 ends with" in text


def test_lesion_verdict():
    from resnets.analysis.lesion import LesionResult
    from resnets.experiments.lesion import Lesion

    paths = {"central_90": [2, 9], "num_blocks": 27, "share_below_half": 0.8, "paths_below_half": 0.43}
    res = LesionResult(8.0, ["a", "b"], [9.0, 11.0], ["a<->b"], [8.5], [False, True])
    plain = LesionResult(9.0, ["a", "b"], [88.0, 90.0], ["a<->b"], [85.0])
    text, shows = Lesion._finding({"resnet": ("ResNet-56", res), "plain": ("plain-56", plain)}, paths)
    assert shows and "+2.00 points" in text and "+80.00 points" in text and "80% from paths" in text
    assert "keeps the shape costs +1.00 points" in text and "downsampling units +3.00" in text
    gentle = LesionResult(9.0, ["a", "b"], [12.0, 14.0], ["a<->b"], [10.0])
    _, shows = Lesion._finding({"resnet": ("ResNet-56", res), "plain": ("plain-56", gentle)}, paths)
    assert not shows  # the plain net did not break: nothing to contrast


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


@pytest.mark.parametrize("resnet56, words, shows", [
    ([0.80] * 4, "Deeper ResNets respond more weakly, as in the paper", True),
    ([0.905] * 4, "about as strongly as shallower ones (within 1%)", True),
    ([0.95] * 4, "Deeper ResNets do not respond more weakly", True),
    ([1.20] * 4, "Deeper ResNets do not respond more weakly", False),
])
def test_responses_finding_words_follow_the_numbers(resnet56, words, shows):
    from resnets.experiments.responses import Responses

    measured = {("plain", 20): [1.0] * 2, ("resnet", 20): [0.9] * 2,
                ("plain", 56): [1.1] * 4, ("resnet", 56): resnet56}
    finding, verdict, comparisons = Responses._finding(measured)
    assert words in finding
    assert verdict is shows  # every ResNet weaker than its plain net of the same depth
    assert comparisons["56"]["layers_weaker"] == (1.0 if shows else 0.0)


@pytest.mark.parametrize("error110, words, shows", [
    (8.0, "2.00 points in favour of depth", True),
    (12.0, "2.00 points against depth", False),
])
def test_depth_finding_says_which_way_depth_went(error110, words, shows):
    from resnets.experiments.depth import Depth

    depths, errors = [20, 56, 110], [10.0, 9.0, error110]
    specs = [(d, RunSpec(f"r{d}", f"ResNet-{d}", "paper-cifar", {"model": f"resnet{d}", "test_subset": 2000}))
             for d in depths]
    runs = {spec.name: _record(spec.label, _rows(5.0, e)) for (_, spec), e in zip(specs, errors, strict=True)}
    text, verdict, summary = Depth._finding(runs, specs, depths, errors, 0.01)
    assert words in text and verdict is shows
    assert summary["gain_shallowest_to_deepest"] == pytest.approx(10.0 - error110)
