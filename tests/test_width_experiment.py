"""`resnets reproduce width` (Wide ResNets, Table 4): the smoke budget writes every artefact and reruns
nothing; the cpu and paper plans hold the nets, recipes and equal-parameter pairs they promise, with the
paper's parameter counts; the verdict follows the numbers."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.experiments import EXPERIMENTS
from resnets.experiments.base import RunRecord, RunSpec, recipe_dict
from resnets.experiments.plans import params_cifar
from resnets.experiments.runner import ReproduceOptions, make_context, plan, reproduce
from resnets.experiments.width import (
    PARAMS_TOLERANCE,
    WRN_TABLE4,
    Measured,
    PairOutcome,
    Width,
    finding_text,
    seconds_per_epoch,
    series_outcome,
    verdict,
    width_runs,
)

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
    assert [(v["depth"], v["widen_factor"]) for v in nets.values()] == [(10, 1), (10, 2), (22, 1)]
    for net in nets.values():
        assert 0 <= net["test_error"] <= 100 and net["noise"] > 0
        assert net["seconds_per_epoch"] > 0 and net["train_seconds"] >= net["seconds_per_epoch"]
        assert net["paper_error"] is None  # no smoke net is a row of Table 4
    # the CIFAR-10 nets' parameters, whatever the dataset (Fashion-MNIST has 1 channel)
    assert nets["WRN-10-2"]["params"] == 303_706 and nets["WRN-22-1"]["params"] == 272_282
    assert nets["WRN-10-1"]["mult_adds"] < nets["WRN-10-2"]["mult_adds"]
    assert results["series"]["nets"] == ["WRN-10-1", "WRN-10-2"]
    (pair,) = results["pairs"]
    assert (pair["deep"], pair["wide"]) == ("WRN-22-1", "WRN-10-2")
    assert pair["params_ratio"] == pytest.approx(303_706 / 272_282)
    assert pair["error_gap"] == pytest.approx(nets["WRN-22-1"]["test_error"] - nets["WRN-10-2"]["test_error"])
    assert document["finding"]["shows"] in (True, False, None)
    report = written["report"].read_text()
    assert document["finding"]["text"] in report
    for text in ("| WRN-22-1 | 22 | 1 |", "The equal-parameter pairs", "| WRN-28-10 | 36.50 | 4.17 |"):
        assert text in report
    with Image.open(written["width.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 400
    messages: list[str] = []
    reproduce("width", options, log=messages.append)  # the same folder: every run is found finished
    assert sum("finished run found" in m for m in messages) == 3
    assert not any("training" in m for m in messages)


def _runs(budget: str) -> dict[tuple[int, int], RunSpec]:
    return width_runs(make_context(Width(), ReproduceOptions(budget=budget, output="unused")))


def _params(spec: RunSpec) -> int:
    with torch.device("meta"):  # counting only: no memory, no initialisation of the 52M-parameter nets
        return params_cifar(spec)


def test_cpu_plan_is_the_width_series_and_two_equal_parameter_pairs():
    runs = _runs("cpu")
    assert list(runs) == [(16, 1), (16, 2), (16, 3), (16, 4), (40, 1), (28, 2)]
    for (depth, k), spec in runs.items():
        recipe = recipe_dict(spec)
        assert recipe["model"] == "wrn" and recipe["model_kwargs"] == {"depth": depth, "widen_factor": k}
        assert recipe["dataset"] == "fashion-mnist" and recipe["name"] == "reproduce-cpu"
        assert recipe["iterations"] is None and recipe["channels_last"]  # the budget's epochs for all
    for deep, wide in (((40, 1), (16, 2)), ((28, 2), (16, 3))):
        small, large = sorted((_params(runs[deep]), _params(runs[wide])))
        assert large / small <= 1 + PARAMS_TOLERANCE
    assert _params(runs[(40, 1)]) == 563_930  # Table 4's 0.6M


def test_paper_plan_trains_table_4_with_the_wrn_recipe_and_its_parameter_counts():
    runs = _runs("paper")
    assert set(runs) == set(WRN_TABLE4)
    for net, spec in runs.items():
        recipe = recipe_dict(spec)
        assert spec.recipe == "wrn" and recipe["dataset"] == "cifar10"
        assert (recipe["epochs"], recipe["iterations"], recipe["batch_size"]) == (200, None, 128)
        optimizer = (recipe["lr"], recipe["momentum"], recipe["nesterov"], recipe["weight_decay"])
        assert optimizer == (0.1, 0.9, True, 5e-4)
        assert recipe["milestones"] == [60, 120, 160] and recipe["gamma"] == 0.2 and recipe["warmup"] == 0
        assert recipe["model_kwargs"].get("drop_rate", 0.0) == 0.0  # the table's rows are without dropout
        assert round(_params(spec) / 1e6, 1) == WRN_TABLE4[net]["params_m"], net
    assert recipe_dict(runs[(28, 10)])["model"] == "wrn28_10"  # the zoo's name where it has one
    for deep, wide in (((40, 8), (28, 10)), ((40, 4), (16, 8)), ((22, 8), (16, 10))):
        small, large = sorted((_params(runs[deep]), _params(runs[wide])))
        assert large / small <= 1 + PARAMS_TOLERANCE


def test_cli_plan_lists_the_ten_table_nets(capsys, tmp_path):
    assert main(["reproduce", "width", "--budget", "paper", "--plan", "--output", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    assert len(lines) == 10 and all("--recipe wrn" in ln for ln in lines)
    assert any("model=wrn28_10" in ln for ln in lines)


def test_smoke_and_cpu_plans_resolve(tmp_path):
    for budget in ("smoke", "cpu"):
        ctx = make_context(EXPERIMENTS["width"], ReproduceOptions(budget=budget, output=tmp_path))
        assert len(plan(EXPERIMENTS["width"], ctx)) == {"smoke": 3, "cpu": 6}[budget]


# --- the verdict ------------------------------------------------------------------------------------------


def _m(depth: int, k: int, error: float, seconds: float = 10.0, images: int = 2000) -> Measured:
    return Measured(depth, k, 1000 * depth * k * k, error, images, seconds)


SERIES_FALLS = [_m(16, 1, 12.0), _m(16, 2, 10.5), _m(16, 3, 9.8), _m(16, 4, 9.0)]


def test_series_outcome():
    found = series_outcome(SERIES_FALLS)
    assert found.outcome == "holds" and found.gain == pytest.approx(3.0) and not found.rises
    assert found.noise == pytest.approx(((12 * 88 + 9 * 91) / 2000) ** 0.5, rel=1e-6)
    assert series_outcome(SERIES_FALLS[::-1]).outcome == "reversed"
    bump = series_outcome([_m(16, 1, 12.0), _m(16, 2, 9.0), _m(16, 3, 11.5), _m(16, 4, 10.0)])
    assert bump.outcome == "undecided" and bump.rises == ("WRN-16-2 -> WRN-16-3",)
    assert series_outcome([_m(16, 1, 10.0), _m(16, 4, 9.8)]).outcome == "undecided"  # within noise


@pytest.mark.parametrize("deep, wide, accuracy, speed, outcome", [
    ((10.0, 20.0), (9.0, 15.0), "not worse", "faster", "holds"),
    ((10.0, 20.0), (10.3, 15.0), "not worse", "faster", "holds"),      # worse, but within the noise
    ((10.0, 20.0), (12.0, 15.0), "worse", "faster", "reversed"),       # 2 points >> 0.95 of noise
    ((10.0, 20.0), (9.0, 25.0), "not worse", "slower", "reversed"),
    ((10.0, 20.0), (9.0, 20.5), "not worse", "alike", "undecided"),    # 2.5% apart: timing noise
    ((10.0, 0.0), (9.0, 20.0), "not worse", "unmeasured", "undecided"),
])
def test_pair_outcome(deep, wide, accuracy, speed, outcome):
    pair = PairOutcome(_m(40, 1, *deep), _m(16, 2, *wide))
    assert (pair.accuracy, pair.speed, pair.outcome) == (accuracy, speed, outcome)
    assert pair.error_gap == pytest.approx(deep[0] - wide[0])


def test_verdict_combines_the_series_and_the_pairs():
    falls = series_outcome(SERIES_FALLS)
    good = PairOutcome(_m(40, 1, 10.0, 20.0), _m(16, 2, 9.5, 15.0))
    slow = PairOutcome(_m(28, 2, 10.0, 20.0), _m(16, 3, 9.5, 30.0))
    alike = PairOutcome(_m(28, 2, 10.0, 20.0), _m(16, 3, 9.5, 20.2))
    assert verdict(falls, [good, good]) is True
    assert verdict(falls, [good, slow]) is False
    assert verdict(falls, [good, alike]) is None
    assert verdict(series_outcome(SERIES_FALLS[::-1]), [good]) is False
    text = finding_text(SERIES_FALLS, falls, [good, slow], False)
    assert "from 12.00% to 9.00% (3.00 points lower, well above the sampling noise" in text
    assert "WRN-16-3 is slower per epoch than WRN-28-2" in text and "GPUs" in text
    assert finding_text(SERIES_FALLS, falls, [good], True).endswith("as in the paper.")


def test_the_papers_own_errors_pass_the_accuracy_tests():
    """Table 4 on 10,000 CIFAR-10 test images: WRN-40-k falls beyond the noise, and no wide net of the
    three pairs is worse beyond it (WRN-16-10 trails WRN-22-8 by 0.18 points, within the noise)."""
    def paper(depth: int, k: int) -> Measured:
        return Measured(depth, k, 0, WRN_TABLE4[(depth, k)]["error"], 10_000, 0.0)

    assert series_outcome([paper(40, k) for k in (1, 2, 4, 8)]).outcome == "holds"
    pairs = [PairOutcome(paper(*a), paper(*b)) for a, b in (((40, 8), (28, 10)), ((40, 4), (16, 8)),
                                                           ((22, 8), (16, 10)))]
    assert [p.accuracy for p in pairs] == ["not worse"] * 3
    assert pairs[2].error_gap == pytest.approx(-0.18)


def test_seconds_per_epoch_is_the_median_of_the_training_steps_time():
    rows = [{"epoch": 1, "epoch_time_s": 30.0}, {"epoch": 2, "epoch_time_s": 10.0},
            {"epoch": 3, "epoch_time_s": 12.0}]
    record = RunRecord(None, None, rows, [], {})  # type: ignore[arg-type]
    assert seconds_per_epoch(record) == 12.0
    assert seconds_per_epoch(RunRecord(None, None, [], [], {})) == 0.0  # type: ignore[arg-type]
