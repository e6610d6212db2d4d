"""Object detection: He et al. 2015, Sec. 4.3 and appendix A, Tables 7 and 8.

The paper replaced VGG-16 by ResNet-101 in Faster R-CNN, everything else equal, and COCO mAP@[.5, .95]
rose by 6.0 points (28% relative), "solely due to the learned representations". Here the same Faster
R-CNN (the paper's C4 design for every backbone: conv1-conv4 shared by the RPN and the RoI pooling, the
last stage and global pooling per region) gets a VGG-style, a plain and a ResNet backbone of the same
depth. As the paper's backbones were first ImageNet classifiers, each backbone is first trained as a
classifier (ordinary ``resnets train`` runs, the experiment's ``runs``), then fine-tuned as a detector
(``resnets detect train`` runs, trained by the analysis into ``OUTPUT/runs`` as well: finished ones are
not redone, interrupted ones resume).

Budgets: ``smoke`` and ``cpu`` use the Fashion-MNIST detection set (generated once into
``OUTPUT/data``: canvases of training-set items to train, of test-set items to test, so a classifier never
saw a test item); ``paper`` is the paper's setting for a GPU: VGG-16 against ResNet-101, ImageNet
classifiers (the paper-imagenet recipe) fine-tuned on Pascal VOC 2007 or COCO, read from
``--detection-data`` (a VOC year folder or a COCO folder; default data/VOCdevkit/VOC2007).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

from ..detection.data import coco_paths, open_detection_data
from ..detection.evaluate import coco_metrics, detect
from ..detection.loader import DetectionLoader
from ..detection.models import build_detector, load_detector, resolve_weights
from ..detection.plots import detection_grid
from ..detection.predict import predict
from ..detection.recipes import DETECTION_RECIPES, DetectionConfig
from ..detection.synthetic import SyntheticSpec, make_fashion_detection
from ..detection.train import train_detector
from ..runs import RunFolder
from ..train.recipes import RunOptions, get_recipe
from .base import Analysis, Context, Experiment, Runs, RunSpec
from .finetune import FineTuneRun, resnet_gaps, run_commands, seed_summary
from .paired import Net, overall, seeded_net, shows_flag, spread_cell, verdict_sentence
from .paper_numbers import DETECTION_TABLE7_VOC, DETECTION_TABLE8_COCO
from .plans import ITERATIONS, cifar_net, vgg_cifar_net
from .plots import plot_seeded_comparison
from .tables import Table

DEFAULT_PAPER_DATA = "data/VOCdevkit/VOC2007"

# (label, model, model options) of the paper budget's backbones, VGG first, the ResNet last.
PAPER_BACKBONES = (("VGG-16", "vgg16", {}), ("ResNet-101", "resnet101", {}))
# (label, kind, depth) of the smoke and cpu budgets' backbones, VGG-style first, the ResNet last: the
# nets degradation ("plain", "resnet") and lesion ("vgg") train, so their runs are shared.
CIFAR_BACKBONES: dict[str, tuple[tuple[str, str, int], ...]] = {
    budget: ((f"VGG-style-{d}", "vgg", d), (f"plain-{d}", "plain", d), (f"ResNet-{d}", "resnet", d))
    for budget, d in (("smoke", 8), ("cpu", 20))
}


def backbone_labels(budget: str) -> list[str]:
    if budget == "paper":
        return [label for label, _, _ in PAPER_BACKBONES]
    return [label for label, _, _ in CIFAR_BACKBONES[budget]]


def paper_counterpart(label: str) -> str | None:
    """The paper's backbone of the same kind: VGG-16 for a VGG-style net, ResNet-101 for a ResNet."""
    return "VGG-16" if label.startswith("VGG") else "ResNet-101" if label.startswith("ResNet") else None


# The generated detection set of each budget (the paper budget reads VOC or COCO instead).
SYNTHETIC: dict[str, SyntheticSpec] = {
    "smoke": SyntheticSpec(canvas=48, train_images=16, val_images=8, max_items=2, min_scale=14, max_scale=28),
    "cpu": SyntheticSpec(canvas=64, train_images=4000, val_images=500),
}
# Detector fine-tuning: iterations and the recipe fields each budget changes in fashion-cpu (smoke, cpu)
# or the paper's recipe (paper). cpu: about 5 minutes per detector on a 2-core CPU, 1.6 epochs.
DETECTION_ITERATIONS = {"smoke": 2, "cpu": 800, "paper": None}
DETECTION_SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "batch_size": 4,
        "eval_batch_size": 8,
        "warmup": 0.0,
        "milestones": (),
        "proposals_train": 100,
        "proposals_test": 50,
        "box_batch_size_per_image": 32,
        "rpn_batch_size_per_image": 64,
    },
    "cpu": {"batch_size": 8, "eval_batch_size": 32},
    "paper": {},
}
FIGURE_IMAGES = {"smoke": 3, "cpu": 4, "paper": 4}
# The test canvases are split into interleaved folds; a detector's AP per fold is the unit the verdict's
# bootstrap resamples (COCO AP is not a sum over images, so images cannot be resampled one by one cheaply).
FOLDS = 10
# Table 8: ResNet-101 minus VGG-16, COCO mAP@[.5, .95], points (27.2 - 21.2).
PAPER_AP_GAIN = DETECTION_TABLE8_COCO["ResNet-101"]["ap"] - DETECTION_TABLE8_COCO["VGG-16"]["ap"]


class DetectorRun(FineTuneRun):
    """One detector fine-tuning: a detection recipe (base name + overrides) on a classifier run."""

    what = "detector"
    command_words = ("resnets", "detect", "train")
    recipes = DETECTION_RECIPES

    def fit(self, options: RunOptions) -> dict[str, Any]:
        return train_detector(DetectionConfig(recipe=self.resolved(), run=options))


def paper_data(ctx: Context) -> tuple[Path, str]:
    """The paper budget's data folder and its recipe (paper-voc for a VOC folder, paper-coco for COCO)."""
    root = ctx.detection_data or Path(DEFAULT_PAPER_DATA)
    annotations, _ = coco_paths(root, get_recipe("paper-coco", DETECTION_RECIPES).train_split)
    return root, "paper-coco" if annotations.is_file() or "coco" in root.name.lower() else "paper-voc"


def data_root(ctx: Context) -> Path:
    if ctx.budget.name == "paper":
        return paper_data(ctx)[0]
    spec = SYNTHETIC[ctx.budget.name]
    return (
        ctx.output
        / "data"
        / f"fashion-det-c{spec.canvas}-n{spec.train_images}-{spec.val_images}-s{spec.seed}"
    )


def backbone_nets(ctx: Context) -> list[Net]:
    """The classifiers whose weights become the backbones, VGG first, the ResNet last, each with the
    budget's seeds. They normalise per channel (a detector's images are not 28 x 28, so a per-pixel mean
    image would not apply): the cpu budget's reproduce-cpu does, so there they are the nets degradation
    and lesion train."""
    if ctx.budget.name == "paper":
        nets = []
        for label, model, _ in PAPER_BACKBONES:

            def make(seed: int, model: str = model, label: str = label) -> RunSpec:
                return ctx.run(
                    model, label, iterations=None, recipe="paper-imagenet", dataset="imagenet", seed=seed
                )

            nets.append(seeded_net(ctx, make(0).name, label, make))
        return nets
    nets = []
    for label, kind, depth in CIFAR_BACKBONES[ctx.budget.name]:
        if kind == "vgg":
            nets.append(dataclasses.replace(vgg_cifar_net(ctx, depth), label=label))
        else:
            nets.append(cifar_net(ctx, kind, depth, label=label))
    if all(net.specs[0].resolved().normalization == "per_channel" for net in nets):
        return nets
    # A budget whose recipe subtracts a per-pixel mean image (smoke: paper-cifar) gets runs of its own.
    return [_per_channel_net(ctx, net.label, net.specs[0]) for net in nets]


def _per_channel_net(ctx: Context, label: str, spec: RunSpec) -> Net:
    def make(seed: int) -> RunSpec:
        return ctx.run(
            spec.model,
            label,
            iterations=ITERATIONS[ctx.budget.name],
            model_kwargs=spec.overrides.get("model_kwargs", {}),
            normalization="per_channel",
            seed=seed,
        )

    return seeded_net(ctx, make(0).name, label, make)


def detector_runs(ctx: Context) -> list[tuple[DetectorRun, ...]]:
    """Per backbone, one detector fine-tuning per seed: seed s of the classifier, detector seed s."""
    budget = ctx.budget.name
    recipe = paper_data(ctx)[1] if budget == "paper" else "fashion-cpu"
    iterations = ctx.iterations or DETECTION_ITERATIONS[budget]
    out = []
    for net in backbone_nets(ctx):
        runs = []
        for seed, spec in enumerate(net.specs):
            kwargs = dict(spec.overrides.get("model_kwargs", {}))
            overrides: dict[str, Any] = {
                "backbone": spec.model,
                "backbone_kwargs": kwargs,
                "head": "c4",
                **DETECTION_SETTINGS[budget],
            }
            if iterations is not None:
                overrides.update(
                    iterations=iterations, schedule_unit="iteration", milestones=(iterations * 3 // 4,)
                )
                if budget == "cpu":
                    overrides.update(warmup=iterations // 16, warmup_start_factor=0.01)
            if budget == "smoke":
                overrides["milestones"] = ()
            if seed:
                overrides["seed"] = seed
            tag = "-".join(
                [
                    spec.model,
                    *(f"{k}={v}" for k, v in sorted(kwargs.items())),
                    "c4",
                    budget,
                    f"{iterations}it" if iterations else recipe,
                    *([f"seed{seed}"] if seed else []),
                ]
            )
            runs.append(DetectorRun(f"detect-{tag}", net.label, recipe, overrides, spec))
        out.append(tuple(runs))
    return out


def fold_aps(ground_truth, detections: list[dict], image_ids: list[int]) -> list[float]:
    """AP@[.5, .95] (%) on each of ``FOLDS`` interleaved folds of the test images."""
    folds = [image_ids[k::FOLDS] for k in range(min(FOLDS, len(image_ids)))]
    out = []
    for ids in folds:
        chosen = set(ids)
        out.append(
            100 * coco_metrics(ground_truth, [d for d in detections if d["image_id"] in chosen], ids)["AP"]
        )
    return out


class DetectionExperiment(Experiment):
    name = "detection"
    detection_data_budgets = ("paper",)
    title = "Object detection: ResNet against VGG-style and plain backbones in the same Faster R-CNN"
    paper = "He et al. 2015, Sec. 4.3, Tables 7 and 8, appendix A (Faster R-CNN with ResNet-101)"
    claim = (
        "Replacing VGG-16 by ResNet-101 in Faster R-CNN, everything else equal, raises PASCAL VOC 2007 "
        "mAP@.5 "
        "from 73.2% to 76.4% and COCO mAP@[.5, .95] from 21.2% to 27.2% (mAP@.5 41.5% to 48.4%): a 28% "
        'relative gain "solely due to the learned representations".'
    )
    figures = (
        (
            "detection.png",
            "Test canvases: true boxes (white, dashed) and each detector's boxes of score >= 0.5, "
            "one row per backbone (seed 0)",
        ),
        (
            "detection_ap.png",
            "mAP@[.5,.95] per backbone (mean, seed range, seeds), the paired comparisons that decide the "
            "verdict, and Table 8's COCO numbers in a panel of their own",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in backbone_nets(ctx) for spec in net.specs]

    def settings(self, ctx: Context) -> dict[str, Any]:
        root = data_root(ctx)
        out: dict[str, Any] = {
            "backbones": ", ".join(backbone_labels(ctx.budget.name)),
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in backbone_nets(ctx)),
            "detector": "Faster R-CNN, C4 head (appendix A), FrozenBatchNorm2d backbone, "
            "stem and first stage fixed; seed s of a detector fine-tunes seed s of its classifier",
            "verdict": "the ResNet backbone's mAP@[.5,.95] above each other backbone's, two-sided: a "
            f"bootstrap over seeds and {FOLDS} interleaved folds of the test canvases (the same folds for "
            "both detectors), every seed pair agreeing",
        }
        if ctx.budget.name == "paper":
            out["detection data"] = f"{root} (--detection-data), recipe {paper_data(ctx)[1]}"
        else:
            spec = SYNTHETIC[ctx.budget.name]
            flags = [f"--{k.replace('_', '-')} {v}" for k, v in dataclasses.asdict(spec).items()]
            out["detection data"] = f"resnets detect make-data {root} {' '.join(flags)}"
        return {**out, **run_commands(detector_runs(ctx), ctx, root)}

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        budget = ctx.budget.name
        root = data_root(ctx)
        if budget != "paper":
            make_fashion_detection(root, SYNTHETIC[budget], data_dir=ctx.data_dir)
        per_backbone = detector_runs(ctx)
        results: dict[str, Any] = {}
        rows, first_detectors, test_set = [], {}, None
        for seeds in per_backbone:
            label, measured = seeds[0].label, []
            for run in seeds:
                classifier = runs[run.backbone_run.name]
                folder = run.train(ctx, root, resolve_weights(classifier.folder), _log)
                detector, ckpt = load_detector(folder, ctx.device)
                if test_set is None:
                    meta = ckpt["data"]
                    test_set = open_detection_data(
                        root, meta["eval_split"], in_chans=meta["in_chans"], classes=meta["classes"]
                    ).subset(run.resolved().eval_subset)
                loader = DetectionLoader(
                    test_set, batch_size=run.resolved().eval_batch_size, train=False, device=ctx.device
                )
                detections = detect(detector, loader)
                first_detectors.setdefault(label, detector)
                ids = [r.image_id for r in test_set.records]
                metrics = coco_metrics(test_set.coco(), detections, ids)
                entry = {name: (None if value < 0 else 100 * value) for name, value in metrics.items()}
                entry.update(
                    classifier_test_error=classifier.final_value("test_error"),
                    folds=fold_aps(test_set.coco(), detections, ids),
                    run=str(folder),
                    images_per_s=RunFolder(folder).summary().get("images_per_s"),
                )
                measured.append(entry)
            results[label] = seed_summary(measured, "AP")
            counterpart = paper_counterpart(label)  # the paper's row for this kind of backbone
            voc = DETECTION_TABLE7_VOC.get(counterpart, {}).get("voc07")
            coco = DETECTION_TABLE8_COCO.get(counterpart, {})
            rows.append(
                [
                    f"{label} ({counterpart})" if counterpart and counterpart != label else label,
                    len(measured),
                    spread_cell([m["classifier_test_error"] for m in measured]),
                    spread_cell([m["AP50"] or 0.0 for m in measured]),
                    spread_cell([m["AP"] or 0.0 for m in measured]),
                    spread_cell([m["AP75"] or 0.0 for m in measured]),
                    voc,
                    coco.get("ap50"),
                    coco.get("ap"),
                ]
            )
        assert test_set is not None  # every budget has at least one backbone
        finding, verdict, gaps = self._finding(backbone_labels(budget), results)
        results["gaps"] = gaps
        self._figures(ctx, per_backbone, first_detectors, test_set, results)
        shows = shows_flag(verdict)
        if budget == "smoke":  # a few iterations check the machinery and decide nothing
            finding, shows, verdict = finding + " (At the smoke budget no finding is judged.)", None, None
        results["verdict"] = verdict
        columns = [
            "backbone (paper's counterpart)",
            "seeds",
            "classifier test error (%)",
            "mAP@.5 (%)",
            "mAP@[.5,.95] (%)",
            "mAP@.75 (%)",
            "paper VOC07 mAP@.5",
            "paper COCO mAP@.5",
            "paper COCO mAP@[.5,.95]",
        ]
        dataset = (
            "PASCAL VOC / COCO"
            if budget == "paper"
            else f"the generated Fashion-MNIST set ({len(test_set)} test canvases)"
        )
        notes = [
            "Our columns: mean over seeds, seed range in brackets.",
            "Paper numbers: Table 7 (VOC 2007 test, trained on 07+12) and Table 8 (COCO val); the paper "
            "has no plain backbone.",
            "Every backbone gets the paper's C4 head (RoIAlign 14x14, or 8x8 at the smoke and cpu budgets, "
            "on the penultimate stage; the last stage per region); the paper's VGG-16 detector pools "
            "conv5_3 and keeps fc6-fc7 as its region head instead.",
            "Detectors train end to end (torchvision's approximate joint training), not in the paper's 4 "
            "alternating steps.",
        ]
        if budget != "paper":
            notes.append(
                "The backbones are Fashion-MNIST classifiers (the paper's were ImageNet classifiers) and "
                "the test canvases hold only Fashion-MNIST test images; absolute APs are not comparable "
                "with the paper's, the ordering is what the experiment tests."
            )
        notes += [
            f"{label} detectors: " + ", ".join(results[label]["runs"]) for label in backbone_labels(budget)
        ]
        table = Table(columns, rows)
        return Analysis(
            results, finding, shows, tables=[(f"Detection on {dataset}", table)], notes=notes, verdict=verdict
        )

    def _figures(
        self,
        ctx: Context,
        per_backbone: list[tuple[DetectorRun, ...]],
        detectors: dict[str, torch.nn.Module],
        test_set,
        results: dict[str, Any],
    ) -> None:
        grid_path, ap_path = self.figure_paths(ctx)
        count = min(FIGURE_IMAGES[ctx.budget.name], len(test_set))
        images = [test_set.image(i) for i in range(count)]
        truth = [test_set.records[i].boxes for i in range(count)]
        rows = {}
        for seeds in per_backbone:
            label = seeds[0].label
            found = predict(detectors[label], images, score_threshold=0.0)
            rows[label] = [
                {"image": image, "truth": boxes, **output}
                for image, boxes, output in zip(images, truth, found, strict=True)
            ]
        detection_grid(rows, test_set.classes, grid_path, title="Faster R-CNN (C4) on each backbone, seed 0")
        labels = backbone_labels(ctx.budget.name)
        plot_seeded_comparison(
            {label: results[label]["per_seed_AP"] for label in labels},
            {
                f"{labels[-1]} vs {other}\n(paper: higher)": tuple(results["gaps"][other]["interval"])
                for other in labels[:-1]
            },
            {name: DETECTION_TABLE8_COCO.get(name, {}).get("ap") for name in ("VGG-16", "ResNet-101")},
            ap_path,
            title=f"detection: mAP@[.5,.95] on the {'paper' if ctx.budget.name == 'paper' else 'generated'} "
            f"test set ({ctx.budget.name} budget)",
            ylabel="mAP@[.5,.95] (%)",
            paper_title="paper: COCO val (Table 8)",
            paper_ylabel="COCO mAP@[.5,.95] (%)",
        )

    @staticmethod
    def _finding(labels: list[str], results: dict[str, Any]) -> tuple[str, str, dict]:
        """The ResNet (last label) against every other backbone, each judged two-sided in the paper's
        direction (higher AP) on the per-fold APs; "shows" only when it beats all of them."""
        resnet = labels[-1]
        ours = results[resnet]
        gaps, sentences, verdicts = {}, [], []
        for other, gap in resnet_gaps(labels, results, "AP", PAPER_AP_GAIN).items():
            theirs, interval, judgement, per_seed = results[other], gap.interval, gap.judgement, gap.per_seed
            verdicts.append(judgement.verdict)
            gaps[other] = {
                "ap_gap": ours["AP"] - theirs["AP"],
                "ap50_gap": ours["AP50"] - theirs["AP50"],
                "fold_gap": interval.difference,
                "interval": [interval.difference, interval.low, interval.high],
                "standard_error": interval.standard_error,
                "detectable_effect": judgement.detectable,
                "per_seed_ap_gaps": per_seed,
                "verdict": judgement.verdict,
            }
            sentences.append(
                f"{resnet} reaches mAP@[.5,.95] {ours['AP']:.1f}% against {other}'s {theirs['AP']:.1f}% "
                f"(mAP@.5 {ours['AP50']:.1f}% against {theirs['AP50']:.1f}%); per test fold "
                f"{interval.difference:+.1f} points (95% interval {interval.low:+.1f} to "
                f"{interval.high:+.1f}, "
                f"bootstrap over seeds and folds; the budget detects {judgement.detectable:.1f}, the paper "
                f"gained {PAPER_AP_GAIN:.1f} over VGG-16): {judgement.verdict}"
            )
        verdict = overall(verdicts)
        relative = [g["ap_gap"] / max(results[o]["AP"], 1e-9) for o, g in gaps.items()]
        paper_relative = PAPER_AP_GAIN / DETECTION_TABLE8_COCO["VGG-16"]["ap"]
        closing = verdict_sentence(
            verdict,
            f"The paper's finding shows: the residual backbone gives the best detector, by "
            f"{100 * min(relative):.0f}% to {100 * max(relative):.0f}% relative (the paper: "
            f"{100 * paper_relative:.0f}% on COCO).",
        )
        return "; ".join(sentences) + ". " + closing, verdict, gaps


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def paper_detectors_build(ctx: Context, min_size: int = 64) -> dict[str, torch.nn.Module]:
    """The paper budget's detectors as the analysis would build them (random backbones, ``min_size``
    images): for checking the paper's setting without training it."""
    out = {}
    for seeds in detector_runs(ctx):
        run = seeds[0]
        recipe = run.resolved()
        out[run.label] = build_detector(
            recipe.backbone,
            20,
            backbone_kwargs=recipe.backbone_kwargs,
            min_size=min_size,
            max_size=min_size,
            **{k: v for k, v in recipe.detector_options().items() if k != "backbone_kwargs"},
        )
    return out


__all__ = ["DetectionExperiment", "DetectorRun", "backbone_nets", "detector_runs", "paper_detectors_build"]
