"""`resnets reproduce cardinality` (ResNeXt Table 3): the smoke budget writes every artefact and reruns
nothing, the cpu and paper series hold their multiply-adds within 5%, and the verdict follows the numbers."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from resnets.experiments import get_experiment
from resnets.experiments.cardinality import Cardinality, cardinality_runs, complexity
from resnets.experiments.runner import ReproduceOptions, make_context, reproduce

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("cardinality")
    options = ReproduceOptions(budget="smoke", output=output, device="cpu")
    written = reproduce("cardinality", options, log=lambda _: None)
    return output, options, written


def test_smoke_writes_its_table_figure_and_results_and_reruns_nothing(smoke):
    output, options, written = smoke
    results = json.loads(written["results"].read_text())
    nets = {k: v for k, v in results["results"].items() if isinstance(v, dict) and "test_error" in v}
    assert [(v["cardinality"], v["width"]) for v in nets.values()] == [(1, 64), (2, 40), (4, 24)]
    for net in nets.values():
        assert 0 <= net["test_error"] <= 100 and net["train_seconds"] > 0
        assert abs(net["complexity_ratio"] - 1) <= 0.05
    assert [v["paper_top1_error"] for v in nets.values()] == [23.9, 23.0, 22.6]
    report = written["report"].read_text()
    assert results["finding"]["text"] in report and "| ResNeXt-11 2x40d |" in report
    with Image.open(written["cardinality.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 300
    messages: list[str] = []
    reproduce("cardinality", options, log=messages.append)  # the same folder: every run is found finished
    assert sum("finished run found" in m for m in messages) == 3
    assert not any("training" in m for m in messages)


@pytest.mark.parametrize("budget, groups", [("cpu", [1, 2, 4, 8, 32]), ("paper", [1, 2, 4, 8, 32])])
def test_the_series_keeps_its_complexity(tmp_path, budget, groups):
    ctx = make_context(get_experiment("cardinality"), ReproduceOptions(budget=budget, output=tmp_path))
    runs = cardinality_runs(ctx)
    assert [c for (c, _), _ in runs] == groups
    macs = [complexity(spec, budget == "paper")[0] for _, spec in runs]
    assert max(abs(m / macs[0] - 1) for m in macs) <= 0.05
    if budget == "paper":  # Table 3's template: ResNet-50 at about 4.1 GFLOPs, ImageNet's recipe
        assert 4.0e9 < macs[0] < 4.2e9
        assert {spec.recipe for _, spec in runs} == {"paper-imagenet"}
        assert runs[-1][1].overrides["model_kwargs"] == {"groups": 32, "width_per_group": 4}


def _results(errors, ratios=None):
    ratios = ratios or [1.0] * len(errors)
    return {f"{c}x": {"complexity_ratio": r} for c, r in zip((1, 2, 4, 8, 32), ratios, strict=False)}


@pytest.mark.parametrize("errors, ratios, shows", [
    ([14.0, 13.5, 13.0, 12.5, 12.0], None, True),       # falls with cardinality, 2 points >> noise
    ([12.0, 12.5, 13.0, 13.5, 14.0], None, False),      # rises
    ([13.0, 13.1, 12.9, 13.0, 12.9], None, None),       # within the noise
    ([14.0, 13.5, 13.0, 12.5, 12.0], [1, 1, 1, 1, 1.2], None),  # complexity not held: no test
])
def test_the_verdict_follows_the_numbers(errors, ratios, shows):
    measured = [(c, e, 2000) for c, e in zip((1, 2, 4, 8, 32), errors, strict=True)]
    text, verdict, numbers = Cardinality._finding(_results(errors, ratios), measured)
    assert verdict is shows
    assert f"{errors[0]:.2f}% at cardinality 1 to {errors[-1]:.2f}% at 32" in text
    assert numbers["gain"] == pytest.approx(errors[0] - errors[-1])
