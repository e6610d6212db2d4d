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
import json
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..detection.data import coco_paths, open_detection_data
from ..detection.evaluate import coco_metrics, detect
from ..detection.loader import DetectionLoader
from ..detection.models import build_detector, load_detector, resolve_weights
from ..detection.plots import detection_grid
from ..detection.predict import predict
from ..detection.recipes import (
    DetectionConfig,
    DetectionRecipe,
    apply_detection_overrides,
    get_detection_recipe,
)
from ..detection.synthetic import SyntheticSpec, make_fashion_detection
from ..detection.train import train_detector
from ..errors import ConfigError
from ..runs import RunFolder
from ..train.recipes import RunOptions
from .base import Analysis, Context, Experiment, Runs, RunSpec, config_differences
from .paper_numbers import DETECTION_TABLE7_VOC, DETECTION_TABLE8_COCO
from .plans import ITERATIONS
from .stats import strength
from .tables import Table

DEFAULT_PAPER_DATA = "data/VOCdevkit/VOC2007"

# (label, model, model options) of each backbone, VGG-style first, the ResNet last.
BACKBONES: dict[str, tuple[tuple[str, str, dict[str, Any]], ...]] = {
    "smoke": (
        ("VGG-style-8", "vgg_cifar", {"depth": 8}),
        ("plain-8", "plain_cifar", {"depth": 8}),
        ("ResNet-8", "resnet_cifar", {"depth": 8}),
    ),
    "cpu": (
        ("VGG-style-20", "vgg_cifar", {"depth": 20}),
        ("plain-20", "plain20", {}),
        ("ResNet-20", "resnet20", {}),
    ),
    "paper": (("VGG-16", "vgg16", {}), ("ResNet-101", "resnet101", {})),
}


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
FIGURE_IMAGES = {"smoke": 3, "cpu": 6, "paper": 4}
FOLDS = 10  # the test images are split into folds; the spread of the per-fold AP gaps is their noise


@dataclass(frozen=True)
class DetectorRun:
    """One detector fine-tuning: a detection recipe (base name + overrides) on a classifier run."""

    name: str
    label: str
    recipe: str
    overrides: Mapping[str, Any]
    backbone_run: RunSpec

    def resolved(self) -> DetectionRecipe:
        return apply_detection_overrides(get_detection_recipe(self.recipe), dict(self.overrides))

    def command(self, folder: Path, data_dir: Path, weights: Path) -> str:
        words = ["resnets", "detect", "train", "--recipe", self.recipe]
        for key, value in self.overrides.items():
            if isinstance(value, tuple | list):
                text = ",".join(map(str, value))
            else:
                text = json.dumps(value) if isinstance(value, dict) else str(value)
            words += ["--set", f"{key}={text}"]
        words += ["--data-dir", str(data_dir), "--backbone-weights", str(weights), "--output", str(folder)]
        return shlex.join(words)


def paper_data(ctx: Context) -> tuple[Path, str]:
    """The paper budget's data folder and its recipe (paper-voc for a VOC folder, paper-coco for COCO)."""
    root = ctx.detection_data or Path(DEFAULT_PAPER_DATA)
    annotations, _ = coco_paths(root, get_detection_recipe("paper-coco").train_split)
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


def backbone_runs(ctx: Context) -> list[RunSpec]:
    """The classifiers whose weights become the backbones (per-channel normalisation: a detector's images
    are not 28 x 28, so a per-pixel mean image would not apply)."""
    if ctx.budget.name == "paper":
        return [
            ctx.run(
                model,
                label,
                iterations=None,
                recipe="paper-imagenet",
                model_kwargs=kwargs,
                dataset="imagenet",
            )
            for label, model, kwargs in BACKBONES["paper"]
        ]
    return [
        ctx.run(
            model,
            label,
            iterations=ITERATIONS[ctx.budget.name],
            model_kwargs=kwargs,
            normalization="per_channel",
        )
        for label, model, kwargs in BACKBONES[ctx.budget.name]
    ]


def detector_runs(ctx: Context) -> list[DetectorRun]:
    budget = ctx.budget.name
    recipe = paper_data(ctx)[1] if budget == "paper" else "fashion-cpu"
    iterations = ctx.iterations or DETECTION_ITERATIONS[budget]
    out = []
    for spec, (label, model, kwargs) in zip(backbone_runs(ctx), BACKBONES[budget], strict=True):
        overrides: dict[str, Any] = {
            "backbone": model,
            "backbone_kwargs": dict(kwargs),
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
        tag = "-".join(
            [
                model,
                *(f"{k}={v}" for k, v in sorted(kwargs.items())),
                "c4",
                budget,
                f"{iterations}it" if iterations else recipe,
            ]
        )
        out.append(DetectorRun(f"detect-{tag}", label, recipe, overrides, spec))
    return out


def train_detector_run(run: DetectorRun, ctx: Context, weights: Path, log: Callable[[str], None]) -> Path:
    """Fine-tune ``run`` into ``OUTPUT/runs/<name>`` unless finished there; resume it when started."""
    folder = ctx.runs_dir / run.name
    recipe = run.resolved()
    stored = RunFolder(folder).config() if RunFolder(folder).config_path.is_file() else None
    if stored is not None:
        differences = config_differences(recipe.to_dict(), stored.get("recipe", {}))
        if differences:
            raise ConfigError(
                f"run folder {folder} was trained with other settings ({'; '.join(differences[:4])}); "
                "use another --output, or delete that folder to retrain it"
            )
    if RunFolder(folder).finished:
        log(f"[{ctx.experiment}] {run.label} detector: finished run found in {folder}")
        return folder
    resume = RunFolder(folder).last.is_file()
    log(f"[{ctx.experiment}] {run.label} detector: {'resuming' if resume else 'training'} {folder}")
    options = RunOptions(
        output=str(folder),
        resume=str(folder) if resume else None,
        device=str(ctx.device),
        data_dir=str(data_root(ctx)),
        init_weights=None if resume else str(weights),
        progress="line",
    )
    result = train_detector(DetectionConfig(recipe=recipe, run=options))
    if result.get("interrupted"):
        log(f"[{ctx.experiment}] interrupted; run the same command again to continue where it stopped")
        raise KeyboardInterrupt
    return folder


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
            "one row per backbone",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return backbone_runs(ctx)

    def settings(self, ctx: Context) -> dict[str, Any]:
        root = data_root(ctx)
        out: dict[str, Any] = {
            "backbones": ", ".join(label for label, _, _ in BACKBONES[ctx.budget.name]),
            "detector": "Faster R-CNN, C4 head (appendix A), FrozenBatchNorm2d backbone, "
            "stem and first stage fixed",
        }
        if ctx.budget.name == "paper":
            out["detection data"] = f"{root} (--detection-data), recipe {paper_data(ctx)[1]}"
        else:
            spec = SYNTHETIC[ctx.budget.name]
            flags = [f"--{k.replace('_', '-')} {v}" for k, v in dataclasses.asdict(spec).items()]
            out["detection data"] = f"resnets detect make-data {root} {' '.join(flags)}"
        for run in detector_runs(ctx):
            weights = ctx.runs_dir / run.backbone_run.name
            out[f"detector {run.label}"] = run.command(ctx.runs_dir / run.name, root, weights)
        return out

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        log = _log
        budget = ctx.budget.name
        root = data_root(ctx)
        if budget != "paper":
            make_fashion_detection(root, SYNTHETIC[budget], data_dir=ctx.data_dir)
        specs = detector_runs(ctx)
        folders = {}
        for run in specs:
            classifier = runs[run.backbone_run.name]
            folders[run.label] = train_detector_run(run, ctx, resolve_weights(classifier.folder), log)

        results: dict[str, Any] = {}
        rows, detections_of, test_set = [], {}, None
        for run in specs:
            detector, ckpt = load_detector(folders[run.label], ctx.device)
            meta = ckpt["data"]
            if test_set is None:
                test_set = open_detection_data(
                    root, meta["eval_split"], in_chans=meta["in_chans"], classes=meta["classes"]
                )
                test_set = test_set.subset(run.resolved().eval_subset)
            loader = DetectionLoader(
                test_set, batch_size=run.resolved().eval_batch_size, train=False, device=ctx.device
            )
            detections = detect(detector, loader)
            detections_of[run.label] = (detector, detections)
            metrics = coco_metrics(test_set.coco(), detections, [r.image_id for r in test_set.records])
            classifier = runs[run.backbone_run.name]
            entry = {name: (None if value < 0 else 100 * value) for name, value in metrics.items()}
            entry.update(
                classifier_test_error=classifier.final_value("test_error"),
                folds=fold_aps(test_set.coco(), detections, [r.image_id for r in test_set.records]),
                run=str(folders[run.label]),
                images_per_s=RunFolder(folders[run.label]).summary().get("images_per_s"),
            )
            results[run.label] = entry
            counterpart = paper_counterpart(run.label)  # the paper's row for this kind of backbone
            voc = DETECTION_TABLE7_VOC.get(counterpart, {}).get("voc07")
            coco = DETECTION_TABLE8_COCO.get(counterpart, {})
            rows.append(
                [
                    f"{run.label} ({counterpart})" if counterpart and counterpart != run.label else run.label,
                    entry["classifier_test_error"],
                    entry["AP50"],
                    entry["AP"],
                    entry["AP75"],
                    voc,
                    coco.get("ap50"),
                    coco.get("ap"),
                ]
            )
        self._figure(ctx, specs, detections_of, test_set)
        finding, shows, gaps = self._finding(specs, results)
        if budget == "smoke":  # a few iterations check the machinery and decide nothing
            finding, shows = finding + " (At the smoke budget no finding is judged.)", None
        results["gaps"] = gaps
        columns = [
            "backbone (paper's counterpart)",
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
        notes += [f"{label} detector: {results[label]['run']}" for label in (r.label for r in specs)]
        table = Table(columns, rows)
        return Analysis(results, finding, shows, tables=[(f"Detection on {dataset}", table)], notes=notes)

    def _figure(self, ctx: Context, specs: list[DetectorRun], detections_of: dict, test_set) -> None:
        count = min(FIGURE_IMAGES[ctx.budget.name], len(test_set))
        images = [test_set.image(i) for i in range(count)]
        truth = [test_set.records[i].boxes for i in range(count)]
        rows = {}
        for run in specs:
            detector, _ = detections_of[run.label]
            found = predict(detector, images, score_threshold=0.0)
            rows[run.label] = [
                {"image": image, "truth": boxes, **output}
                for image, boxes, output in zip(images, truth, found, strict=True)
            ]
        (path,) = self.figure_paths(ctx)
        detection_grid(rows, test_set.classes, path, title="Faster R-CNN (C4) on each backbone")

    @staticmethod
    def _finding(specs: list[DetectorRun], results: dict[str, Any]) -> tuple[str, bool | None, dict]:
        resnet, others = specs[-1].label, [s.label for s in specs[:-1]]
        ours = results[resnet]
        gaps, sentences = {}, []
        for other in others:
            gap = ours["AP"] - results[other]["AP"]
            per_fold = [a - b for a, b in zip(ours["folds"], results[other]["folds"], strict=True)]
            mean = sum(per_fold) / len(per_fold)
            spread = (sum((g - mean) ** 2 for g in per_fold) / max(len(per_fold) - 1, 1)) ** 0.5
            noise = spread / len(per_fold) ** 0.5
            gaps[other] = {"ap_gap": gap, "ap50_gap": ours["AP50"] - results[other]["AP50"], "noise": noise}
            sentences.append(
                f"{resnet} reaches mAP@[.5,.95] {ours['AP']:.1f}% against {other}'s "
                f"{results[other]['AP']:.1f}% "
                f"({gap:+.1f} points, {strength(gap, noise) if noise > 0 else 'no noise estimate'}; mAP@.5 "
                f"{ours['AP50']:.1f}% against {results[other]['AP50']:.1f}%)"
            )
        relative = [g["ap_gap"] / max(results[o]["AP"], 1e-9) for o, g in gaps.items()]
        shows = all(g["ap_gap"] > 0 and g["ap50_gap"] > 0 for g in gaps.values())
        if all(g["ap_gap"] > 0 and g["ap_gap"] < g["noise"] for g in gaps.values()):
            shows = None  # ahead, but within the noise: not decidable at this budget
        paper_gain = DETECTION_TABLE8_COCO["ResNet-101"]["ap"] / DETECTION_TABLE8_COCO["VGG-16"]["ap"] - 1
        verdict = {
            True: f"The paper's finding shows: the residual backbone gives the best detector, by "
            f"{100 * min(relative):.0f}% to {100 * max(relative):.0f}% relative (the paper: "
            f"{100 * paper_gain:.0f}% on COCO).",
            None: "The residual backbone is ahead, but not by more than the noise between test folds.",
            False: "The paper's finding does not show at this budget: the residual backbone does not give "
            "the best detector on both measures.",
        }[shows]
        return "; ".join(sentences) + ". " + verdict, shows, gaps


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def paper_detectors_build(ctx: Context, min_size: int = 64) -> dict[str, torch.nn.Module]:
    """The paper budget's detectors as the analysis would build them (random backbones, ``min_size``
    images): for checking the paper's setting without training it."""
    out = {}
    for run in detector_runs(ctx):
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


__all__ = ["DetectionExperiment", "DetectorRun", "backbone_runs", "detector_runs", "paper_detectors_build"]
