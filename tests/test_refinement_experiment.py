"""`resnets reproduce refinement` (Greff et al. 2017): the measurement on hand-built nets whose branches
are known, on zoo nets, the verdict from made-up numbers, the shared runs, the smoke artefacts and the
paper plan."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from torch import nn

from resnets import create_model
from resnets.analysis.refinement import StageRefinement, refinement
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.experiments import get_experiment
from resnets.experiments.base import recipe_dict
from resnets.experiments.refinement import (
    SMALL_RATIO,
    IterativeRefinement,
    first_unit_larger,
    later_units_small,
)
from resnets.experiments.runner import ReproduceOptions, make_context, reproduce
from resnets.models.blocks import BlockConfig, ResidualBlock

pytestmark = pytest.mark.usefixtures("one_thread")



# --- the measurement on nets whose branches are known ------------------------------------------


class ScaledShortcut(ResidualBlock):
    """y = c * h(x) + h(x): the branch is the shortcut's output scaled by ``c`` (option A shortcuts)."""

    def __init__(self, c: float, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__(BlockConfig(shortcut="A"))
        self.c = c
        self.add_shortcut(in_chans, out_chans, stride, BlockConfig(shortcut="A"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.c * self.forward_shortcut(x)
        return self.join(x, out)


class ToyNet(nn.Module):
    """Two stages: 2 units at 4 channels, then 3 at 8 (the first downsamples, option A)."""

    def __init__(self, scales: list[float]) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(ScaledShortcut(scales[0], 4, 4, 1), ScaledShortcut(scales[1], 4, 4, 1))
        self.layer2 = nn.Sequential(ScaledShortcut(scales[2], 4, 8, 2),
                                    *(ScaledShortcut(c, 8, 8, 1) for c in scales[3:]))

    def residual_blocks(self):
        return [(f"{s}.{i}", b) for s in ("layer1", "layer2") for i, b in enumerate(getattr(self, s))]

    def forward(self, x):
        return self.layer2(self.layer1(x))


def _batches():
    return [torch.randn(5, 4, 8, 8), (torch.randn(3, 4, 8, 8), torch.zeros(3))]  # a tensor and an (x, y)


def test_zero_branches_change_nothing():
    found = refinement(ToyNet([0.0] * 5), _batches())
    assert found.images == 8
    assert found.names == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer2.2"]
    assert found.stages == ["layer1", "layer1", "layer2", "layer2", "layer2"]
    assert found.projected == [False, False, True, False, False]  # option A where the shape changes
    assert found.pairs == ["layer1.0->layer1.1", "layer2.0->layer2.1", "layer2.1->layer2.2"]  # not across
    assert found.ratio == [0.0] * 5 and found.ratio_std == [0.0] * 5
    assert found.cosine == [0.0] * 3


def test_an_identity_branch_has_ratio_one_and_cosine_one():
    # F = h(x): ratio 1, also for the downsampling unit (measured against its option-A output, not x:
    # x has 4 channels at 8x8, F 8 channels at 4x4); each unit doubles its input, so F_i+1 = 2 F_i.
    found = refinement(ToyNet([1.0] * 5), _batches())
    assert found.ratio == pytest.approx([1.0] * 5)
    assert found.cosine == pytest.approx([1.0] * 3)


def test_scaled_branches_give_their_scale_and_the_sign_of_successive_changes():
    model = ToyNet([2.0, -0.1, 3.0, 0.2, 0.3])
    x = torch.randn(4, 4, 8, 8)
    model.train()
    before = model(x)
    found = refinement(model, [x])
    assert found.ratio == pytest.approx([2.0, 0.1, 3.0, 0.2, 0.3])
    assert found.cosine == pytest.approx([-1.0, 1.0, 1.0])  # F_1 = -0.1 x_1 points against F_0 = 2 x_0
    assert model.training and torch.equal(model(x), before)  # mode restored, output untouched
    for _, unit in model.residual_blocks():  # every hook removed
        assert not unit._forward_hooks and not unit._forward_pre_hooks and not unit.drop_path._forward_hooks
    stage1, stage2 = found.stage_summaries()
    assert (stage1.stage, stage1.first_projected, stage2.first_projected) == ("layer1", False, True)
    assert stage2.first_ratio == pytest.approx(3.0) and stage2.later_median == pytest.approx(0.25)
    assert stage2.gap == pytest.approx(2.75, abs=1e-6) and stage2.gap_std == pytest.approx(0.0, abs=1e-6)
    assert first_unit_larger(stage2) is True and later_units_small(stage2) is True
    assert stage1.later_median == pytest.approx(0.1) and stage1.gap == pytest.approx(1.9, abs=1e-6)
    assert found.to_dict()["stage_summaries"][1]["later_median"] == pytest.approx(0.25)


def test_zoo_nets_measure_the_branch_before_the_addition():
    x = torch.randn(6, 1, 28, 28)
    zero = create_model("resnet_cifar", depth=8, num_classes=10, in_chans=1, zero_init_last=True)
    assert refinement(zero, [x]).ratio == [0.0, 0.0, 0.0]  # each branch ends in a zero BN scale
    model = create_model("resnet_cifar", depth=14, num_classes=10, in_chans=1).eval()
    found = refinement(model, [x, x], max_batches=1)
    assert found.images == 6 and found.projected == [False, False, True, False, True, False]
    with torch.no_grad():  # unit layer1.1 by hand: F = bn2(conv2(relu(bn1(conv1(x))))), h = x
        h = model.layer1[0](model.forward_stem(x))
        unit = model.layer1[1]
        f = unit.bn2(unit.conv2(unit.relu(unit.bn1(unit.conv1(h)))))
        expected = (f.flatten(1).norm(dim=1) / h.flatten(1).norm(dim=1)).mean()
    assert found.ratio[1] == pytest.approx(float(expected), rel=1e-5)
    assert all(-1 <= c <= 1 for c in found.cosine)


def test_nets_without_residual_units_and_empty_input_are_refused():
    with pytest.raises(ConfigError, match="plain unit"):
        refinement(create_model("plain_cifar", depth=8, num_classes=10), [torch.randn(2, 3, 32, 32)])
    with pytest.raises(ConfigError, match="no batches"):
        refinement(ToyNet([1.0] * 5), [])


# --- the verdict from made-up numbers ----------------------------------------------------------


def _stage(name, first, later, gap_std=0.05, later_std=0.05, projected=True, images=2000):
    return StageRefinement(name, [f"{name}.0", f"{name}.1"], first, projected, later, later_std,
                           first - later, gap_std, images)


def _verdict(stages):
    return IterativeRefinement._finding({"ResNet-56": stages}, {"ResNet-56": {"layer2": 0.3}},
                                        caveat=" Short training.")


@pytest.mark.parametrize("stages, shows", [
    # downsampling units well above the rest, the rest far below 0.5: shows
    ([_stage("layer1", 0.1, 0.2, projected=False), _stage("layer2", 0.9, 0.2), _stage("layer3", 1.1, 0.3)],
     True),
    # stage 1's first unit (identity shortcut) is not judged, even when smaller
    ([_stage("layer1", 0.05, 0.3, projected=False), _stage("layer2", 0.9, 0.2)], True),
    # later units change their input by more than half its size: does not show
    ([_stage("layer2", 1.5, 0.8)], False),
    # the first unit larger beyond the noise (s.e. 0.05 / sqrt(2000)) but not beyond the spread over images
    ([_stage("layer2", 0.25, 0.2, gap_std=0.1)], False),
    # the first unit smaller: does not show
    ([_stage("layer2", 0.1, 0.2)], False),
    # within the noise: 64 images, s.e. 0.05 of the gap
    ([_stage("layer2", 0.21, 0.2, gap_std=0.4, images=64)], None),
    ([_stage("layer2", 0.9, SMALL_RATIO - 0.01, later_std=0.4, images=64)], None),
])
def test_the_verdict_follows_the_numbers(stages, shows):
    text, verdict, checks = _verdict(stages)
    assert verdict is shows
    assert {c["verdict"] for c in checks} >= {shows}
    assert f"later units' median {stages[-1].later_median:.2f}" in text
    assert "mean cosine of successive changes layer2 +0.30" in text
    assert ("does not show" in text) == (shows is False) and ("Undecided" in text) == (shows is None)
    assert text.endswith(" Short training.") == (shows is not True)  # the budget's caveat, where it fails


def test_stages_of_one_unit_leave_nothing_to_judge():
    lone = StageRefinement("layer1", ["layer1.0"], 0.7, False, None, None, None, None, 64)
    assert first_unit_larger(lone) is None and later_units_small(lone) is None
    text, shows, checks = IterativeRefinement._finding({"ResNet-8": [lone]}, {"ResNet-8": {}})
    assert shows is None and checks == [] and "nothing to judge" in text
    assert math.isinf(StageRefinement("s", ["s.0", "s.1"], 1, True, 0.1, 0.1, 0.9, 0.1, 1).gap_se)


# --- the plans: depth's runs, the paper's schedule ----------------------------------------------


def _names(name: str, budget: str) -> list[str]:
    experiment = get_experiment(name)  # runs() alone: plan() would also build depth's ResNet-1202
    return [s.name for s in experiment.runs(make_context(experiment, budget=budget, output="unused"))]


@pytest.mark.parametrize("budget", ["smoke", "cpu", "paper"])
def test_it_trains_nothing_after_depth(budget):
    ours = _names("refinement", budget)
    assert len(ours) == (1 if budget == "smoke" else 3) and set(ours) <= set(_names("depth", budget))
    if budget != "paper":  # degradation's ResNets (paper init at every budget) are the same runs
        assert set(ours[:2]) <= set(_names("degradation", budget))


def test_paper_plan_is_cifar10_at_the_papers_schedule(capsys):
    experiment = get_experiment("refinement")
    specs = experiment.runs(make_context(experiment, budget="paper", output="unused"))
    recipes = [recipe_dict(s) for s in specs]
    assert [r["model"] for r in recipes] == ["resnet20", "resnet56", "resnet110"]
    for r in recipes:
        assert r["dataset"] == "cifar10" and r["iterations"] == 64_000 and r["milestones"] == [32_000, 48_000]
        assert r["batch_size"] == 128 and r["lr"] == 0.1 and r["test_subset"] is None
        assert r["model_kwargs"] == {}
    # --plan resolves every run (models, recipes, datasets) without training
    assert main(["reproduce", "refinement", "--budget", "paper", "--plan", "--output", "out"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    assert len(lines) == 3 and all("dataset=cifar10" in ln for ln in lines)


# --- the smoke budget end to end ----------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("refinement")
    options = ReproduceOptions(budget="smoke", output=output, device="cpu")
    return output, options, reproduce("refinement", options, log=lambda _: None)


def test_smoke_writes_every_artefact(smoke):
    output, _, written = smoke
    document = json.loads(written["results"].read_text())
    results = document["results"]
    assert document["experiment"] == "refinement" and document["finding"]["shows"] in (True, False, None)
    net = results["ResNet-14"]
    assert net["names"] == [f"layer{s}.{i}" for s in (1, 2, 3) for i in (0, 1)] and net["images"] == 64
    assert net["projected"] == [False, False, True, False, True, False]
    assert all(r >= 0 for r in net["ratio"]) and all(-1 <= c <= 1 for c in net["cosine"])
    assert len(net["cosine"]) == 3 and len(net["stage_summaries"]) == 3
    for stage in net["stage_summaries"]:  # the gap is the first unit's ratio less the later one's
        assert stage["gap"] == pytest.approx(stage["first_ratio"] - stage["later_median"], abs=1e-9)
    # ResNet-14 has a later unit in each stage: 2 downsampling checks and 3 "later units small" checks
    assert [c["check"] for c in results["checks"]].count("later units small") == 3
    assert len(results["checks"]) == 5
    report = written["report"].read_text()
    assert document["finding"]["text"] in report and "](refinement.png)" in report
    assert "| ResNet-14 | layer2 | 2 | projection / option A |" in report
    with Image.open(written["refinement.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
    assert (output / "runs" / next(iter(document["runs"])) / "summary.json").is_file()
    assert not list((output / "refinement").glob(".*.tmp"))
