"""`resnets reproduce refinement` (Greff et al. 2017): the measurement on hand-built nets whose branches
are known, on zoo nets, the relative two-sided verdict on constructed per-image ratios (shows, contradicts,
cannot be judged), the shared runs and their seeds, the smoke artefacts and the paper plan."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from resnets import create_model
from resnets.analysis.refinement import refinement
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.experiments import get_experiment
from resnets.experiments.base import recipe_dict
from resnets.experiments.plans import cifar_run
from resnets.experiments.refinement import (
    closing,
    judge_stage,
    refinement_nets,
    refinement_verdict,
    stage_verdicts,
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
        self.layer2 = nn.Sequential(
            ScaledShortcut(scales[2], 4, 8, 2), *(ScaledShortcut(c, 8, 8, 1) for c in scales[3:])
        )

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
    assert stage1.later_median == pytest.approx(0.1) and stage1.gap == pytest.approx(1.9, abs=1e-6)
    assert found.to_dict()["stage_summaries"][1]["later_median"] == pytest.approx(0.25)
    first, later = found.stage_images("layer2")  # per image: the first unit and the later units' median
    assert first.shape == later.shape == (4,)
    assert first.tolist() == pytest.approx([3.0] * 4) and later.tolist() == pytest.approx([0.25] * 4)
    # the verdict on it (one seed): the later units change their input less, in every image
    (judged1, judged2) = stage_verdicts("toy", [found])
    assert (judged1.deciding, judged2.deciding) == (False, True)  # identity first unit: reported only
    assert judged2.judgement.verdict == "shows" and judged2.quotient == pytest.approx(0.25 / 3.0)


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


# --- the verdict on constructed per-image ratios ------------------------------------------------

IMAGES = 2_000


def _ratios(mean: float, seed: int, seeds: int = 3, spread: float = 0.2) -> np.ndarray:
    """Seeds x images relative changes around ``mean`` (the spread over images of a trained net)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(mean, spread, size=(seeds, IMAGES)), 0.0, None)


def _stage(first: float, later: float, deciding: bool = True, name: str = "layer2", seed: int = 0):
    return judge_stage("ResNet-56", name, deciding, _ratios(first, seed), _ratios(later, seed + 1))


def test_later_units_below_the_first_beyond_the_noise_show():
    judged = _stage(0.6, 0.35)
    assert judged.judgement.verdict == "shows" and judged.judgement.expected == "lower"
    i = judged.judgement.interval
    assert i.low < i.difference < i.high < 0 and i.difference == pytest.approx(-0.25, abs=0.01)
    assert all(d < 0 for d in judged.per_seed) and len(judged.per_seed) == 3
    assert judged.quotient == pytest.approx(0.35 / 0.6, rel=0.02)
    assert judged.to_dict()["verdict"] == "shows" and "shows" in judged.sentence()


def test_later_units_above_the_first_beyond_the_noise_contradict():
    judged = _stage(0.3, 0.5)
    assert judged.judgement.verdict == "contradicts"
    assert 0 < judged.judgement.interval.low


def test_a_difference_within_the_noise_or_split_seeds_cannot_be_judged():
    within = _stage(0.4, 0.4 - 1e-4)
    assert within.judgement.verdict == "cannot be judged"
    assert 0 < within.judgement.detectable < 0.05  # stated in the ratio's own units
    assert "smallest detectable difference" in within.sentence()
    # two seeds lower, one higher: the seeds disagree, so no verdict whatever the interval
    first = _ratios(0.5, 0)
    later = first + np.array([[-0.2], [-0.2], [0.05]])
    assert judge_stage("n", "layer2", True, first, later).judgement.verdict == "cannot be judged"


def test_every_deciding_stage_of_every_net_must_show_and_stage_1_decides_nothing():
    shows, against, open_ = _stage(0.6, 0.3), _stage(0.3, 0.6, seed=4), _stage(0.4, 0.4 - 1e-4, seed=6)
    reported_against = _stage(0.3, 0.6, deciding=False, name="layer1", seed=8)
    assert refinement_verdict([reported_against, shows, shows]) == "shows"
    assert refinement_verdict([shows, against]) == "cannot be judged"  # one stage the other way
    assert refinement_verdict([against, against, reported_against]) == "contradicts"
    assert refinement_verdict([shows, open_]) == "cannot be judged"
    assert refinement_verdict([reported_against]) == "cannot be judged"  # nothing deciding
    text = closing("cannot be judged", [shows, against, open_])
    assert "more than the first unit beyond the noise in ResNet-56 layer2" in text
    assert "within the noise in ResNet-56 layer2 (smallest detectable" in text and "it shows in" in text
    assert closing("shows", [shows]).startswith("The paper's finding shows")
    assert closing("contradicts", [against]).startswith("The opposite of the paper's finding holds")


# --- the plans: degradation's and depth's runs, their seeds, the paper's schedule ---------------


def _names(name: str, budget: str) -> set[str]:
    experiment = get_experiment(name)  # runs() alone: plan() would also build depth's ResNet-1202
    return {s.name for s in experiment.runs(make_context(experiment, budget=budget, output="unused"))}


@pytest.mark.parametrize("budget", ["smoke", "cpu", "paper"])
def test_it_trains_nothing_after_degradation_and_depth(budget):
    ours = _names("refinement", budget)
    nets = 1 if budget == "smoke" else 3
    assert len(ours) == 2 * nets  # the budget's two seeds of each net
    assert ours <= _names("depth", budget) | _names("degradation", budget)


def test_a_further_seed_already_finished_is_measured_too(tmp_path):
    experiment = get_experiment("refinement")
    ctx = make_context(experiment, budget="cpu", output=tmp_path)
    third = cifar_run(ctx, "resnet", 56, seed=2)
    assert third.name == "resnet56-fashion-mnist-cpu-seed2"  # degradation's third seed, by name
    (ctx.runs_dir / third.name).mkdir(parents=True)
    assert [len(n.specs) for n in refinement_nets(ctx).values()] == [2, 2, 2]  # started, not finished
    (ctx.runs_dir / third.name / "summary.json").write_text("{}")
    nets = refinement_nets(ctx)
    assert [len(n.specs) for n in nets.values()] == [2, 3, 2] and nets[56].specs[2] == third
    assert "ResNet-56 3" in experiment.settings(ctx)["seeds"]


def test_paper_plan_is_cifar10_at_the_papers_schedule(capsys):
    experiment = get_experiment("refinement")
    specs = experiment.runs(make_context(experiment, budget="paper", output="unused"))
    recipes = [recipe_dict(s) for s in specs]
    assert [r["model"] for r in recipes] == [
        "resnet20",
        "resnet20",
        "resnet56",
        "resnet56",
        "resnet110",
        "resnet110",
    ]
    assert [r["seed"] for r in recipes] == [0, 1] * 3
    for r in recipes:
        assert r["dataset"] == "cifar10" and r["iterations"] == 64_000 and r["milestones"] == [32_000, 48_000]
        assert r["batch_size"] == 128 and r["lr"] == 0.1 and r["test_subset"] is None
        assert r["model_kwargs"] == {}
    # --plan resolves every run (models, recipes, datasets) without training
    assert main(["reproduce", "refinement", "--budget", "paper", "--plan", "--output", "out"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnets train")]
    assert len(lines) == 6 and all("dataset=cifar10" in ln for ln in lines)


def test_cpu_plan_has_one_recipe_for_every_net(capsys, tmp_path):
    assert main(["reproduce", "refinement", "--budget", "cpu", "--plan", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert not [ln for ln in out.splitlines() if ln.startswith("# differs:")]
    assert "# every run: recipe=reproduce-cpu" in out and "init=the model's" in out


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
    assert results["verdict"] in ("shows", "contradicts", "cannot be judged")
    assert document["finding"]["shows"] == {"shows": True, "contradicts": False}.get(results["verdict"])
    net = results["ResNet-14"]
    assert net["seeds"] == 2 and len(net["test_error"]) == 2 and len(net["per_seed"]) == 2
    for seed in net["per_seed"]:
        assert seed["names"] == [f"layer{s}.{i}" for s in (1, 2, 3) for i in (0, 1)] and seed["images"] == 64
        assert seed["projected"] == [False, False, True, False, True, False]
        assert all(r >= 0 for r in seed["ratio"]) and all(-1 <= c <= 1 for c in seed["cosine"])
        assert len(seed["cosine"]) == 3 and len(seed["stage_summaries"]) == 3
    # every stage has a later unit: stage 1 reported, stages 2 and 3 deciding
    stages = results["stages"]
    assert [(s["stage"], s["deciding"]) for s in stages] == [
        ("layer1", False),
        ("layer2", True),
        ("layer3", True),
    ]
    for s in stages:
        assert s["interval"][0] <= s["difference"] <= s["interval"][1] and len(s["per_seed_differences"]) == 2
        assert s["difference"] == pytest.approx(
            s["later_median"]["mean"] - s["first_ratio"]["mean"], abs=1e-9
        )
    report = written["report"].read_text()
    assert document["finding"]["text"] in report and "](refinement.png)" in report
    assert "| ResNet-14 | layer2 | 2 | projection / option A | 2 |" in report
    with Image.open(written["refinement.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
    assert (output / "runs" / next(iter(document["runs"])) / "summary.json").is_file()
    assert not list((output / "refinement").glob(".*.tmp"))
