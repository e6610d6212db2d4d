"""Semantic segmentation: the ResNet paper's COCO segmentation claim, in the detection experiment's design.

He et al. 2015 (abstract, Sec. 4.3) report 1st place in COCO 2015 segmentation with ResNet-101; the entry
was Multi-task Network Cascades (Dai, He and Sun 2016), whose instance-mask mAP on COCO test-dev rose
from 19.5% with VGG-16 to 24.6% with ResNet-101, the system otherwise the same. Here the same
segmentation head (torchvision's FCN head, with its auxiliary head, on the backbone's own strides) gets a
VGG-style, a plain and a ResNet backbone of one depth: the classifiers the detection experiment fine-tunes
(shared runs), each fine-tuned as a segmenter (``resnets segment train`` runs, trained by the analysis
into ``OUTPUT/runs``). The measure is semantic: mean IoU over the classes and the background, on every
test canvas.

Budgets: ``smoke`` and ``cpu`` use the generated Fashion-MNIST segmentation set (written once into
``OUTPUT/data``: canvases of training-set items to train, of test-set items to test, so no classifier saw
a test item); the segmenters train for a length fixed before the run (no evaluation during training, so
nothing is chosen on the test canvases) and are evaluated once at the end. ``paper`` plans VGG-16 and
ResNet-101 ImageNet classifiers fine-tuned with torchvision's Pascal VOC recipe on ``--detection-data`` (a
VOC year folder with ``ImageSets/Segmentation``, or a COCO folder; default data/VOCdevkit/VOC2012).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from ..detection.data import coco_paths
from ..detection.models import resolve_weights
from ..detection.synthetic import SyntheticSpec
from ..runs import RunFolder
from ..segmentation.data import open_segmentation_data
from ..segmentation.loader import Augmentation, SegmentationLoader
from ..segmentation.metrics import confusion_matrix, segmentation_scores
from ..segmentation.plots import segmentation_grid
from ..segmentation.predict import load_segmenter, predict_masks
from ..segmentation.recipes import SEGMENTATION_RECIPES, SegmentationConfig
from ..segmentation.synthetic import make_fashion_segmentation
from ..segmentation.train import train_segmenter
from ..train.recipes import RunOptions
from .base import Analysis, Context, Experiment, Runs, RunSpec
from .detection import FOLDS, backbone_labels, backbone_nets, paper_counterpart
from .finetune import FineTuneRun, resnet_gaps, run_commands, seed_summary
from .paired import overall, shows_flag, spread_cell, verdict_sentence
from .paper_numbers import SEGMENTATION_MNC_COCO
from .plots import plot_seeded_comparison
from .tables import Table

DEFAULT_PAPER_DATA = "data/VOCdevkit/VOC2012"
SYNTHETIC: dict[str, SyntheticSpec] = {
    "smoke": SyntheticSpec(canvas=48, train_images=16, val_images=8, max_items=2, min_scale=14, max_scale=28),
    "cpu": SyntheticSpec(canvas=64, train_images=4000, val_images=500),
}
TEST_SPLIT = {"smoke": "val", "cpu": "val"}  # the generated set's canvases of test-set items
# The recipe fields each budget sets in fashion-cpu (smoke, cpu) or torchvision-voc (paper). cpu: 16 epochs
# of the 4,000 training canvases (4,000 iterations at batch 16), fixed before the run from the training
# loss alone (at 8 epochs it still fell 3% an epoch); eval_split None: nothing is evaluated during
# training, the analysis tests the last weights once.
SEGMENTER_SETTINGS: dict[str, dict[str, Any]] = {
    # every budget: one lr for the whole net (torchvision's reference, and the recipes, train the
    # auxiliary head at 10 x; the cpu budget was measured so)
    "smoke": {
        "aux_lr_factor": 1.0,
        "epochs": 1,
        "batch_size": 4,
        "eval_batch_size": 8,
        "amp": False,  # float32 on every machine: the same numbers everywhere
    },
    "cpu": {
        "aux_lr_factor": 1.0,
        "epochs": 16,
        "batch_size": 16,
        "eval_batch_size": 50,
        "amp": "auto",  # bfloat16 where the CPU computes it natively (the segmentation task runs NCHW, eager)
    },
    "paper": {"aux_lr_factor": 1.0},
}
FIGURE_IMAGES = {"smoke": 3, "cpu": 5, "paper": 4}
# MNC's ResNet-101 minus VGG-16, COCO test-dev instance-mask mAP@[.5, .95], points (24.6 - 19.5): the
# paper's effect the budget's detectable effect is set beside (a different measure on other data).
PAPER_GAIN = SEGMENTATION_MNC_COCO["ResNet-101"]["ap"] - SEGMENTATION_MNC_COCO["VGG-16"]["ap"]


class SegmenterRun(FineTuneRun):
    """One segmenter fine-tuning: a segmentation recipe (base name + overrides) on a classifier run."""

    what = "segmenter"
    command_words = ("resnets", "segment", "train")
    recipes = SEGMENTATION_RECIPES

    def fit(self, options: RunOptions) -> dict[str, Any]:
        return train_segmenter(SegmentationConfig(recipe=self.resolved(), run=options))


def data_root(ctx: Context) -> Path:
    if ctx.budget.name == "paper":
        return ctx.detection_data or Path(DEFAULT_PAPER_DATA)
    spec = SYNTHETIC[ctx.budget.name]
    name = f"fashion-seg-c{spec.canvas}-n{spec.train_images}-{spec.val_images}-s{spec.seed}"
    return ctx.output / "data" / name


def paper_recipe(root: Path) -> str:
    """torchvision-coco for a COCO folder (train2017 / val2017), torchvision-voc otherwise."""
    annotations, _ = coco_paths(root, SEGMENTATION_RECIPES["torchvision-coco"].train_split)
    return "torchvision-coco" if annotations.is_file() or "coco" in root.name.lower() else "torchvision-voc"


def segmenter_runs(ctx: Context) -> list[tuple[SegmenterRun, ...]]:
    """Per backbone, one segmenter per seed: seed s of the classifier, segmenter seed s."""
    budget = ctx.budget.name
    recipe = paper_recipe(data_root(ctx)) if budget == "paper" else "fashion-cpu"
    out = []
    for net in backbone_nets(ctx):
        runs = []
        for seed, spec in enumerate(net.specs):
            kwargs = dict(spec.overrides.get("model_kwargs", {}))
            overrides: dict[str, Any] = {
                "backbone": spec.model,
                "backbone_kwargs": kwargs,
                # one head for every backbone: VGG nets cannot dilate, so none does
                "output_stride": None,
                "eval_split": None,
                **SEGMENTER_SETTINGS[budget],
            }
            if seed:
                overrides["seed"] = seed
            epochs = overrides.get("epochs")
            tag = "-".join(
                [
                    spec.model,
                    *(f"{k}={v}" for k, v in sorted(kwargs.items())),
                    "fcn",
                    budget,
                    f"{epochs}ep" if epochs else recipe,
                    *([f"seed{seed}"] if seed else []),
                ]
            )
            runs.append(SegmenterRun(f"segment-{tag}", net.label, recipe, overrides, spec))
        out.append(tuple(runs))
    return out


def test_split(ctx: Context) -> str:
    if ctx.budget.name == "paper":
        return SEGMENTATION_RECIPES[paper_recipe(data_root(ctx))].eval_split or "val"
    return TEST_SPLIT[ctx.budget.name]


@torch.inference_mode()
def image_confusions(
    model: torch.nn.Module, loader: SegmentationLoader, num_classes: int
) -> list[torch.Tensor]:
    """Each test image's confusion matrix, in the data set's order (sums give any fold's scores)."""
    out = []
    for images, masks in loader.batches():
        if isinstance(images, torch.Tensor):
            predictions = model(images)["out"].argmax(1)
        else:  # images of different sizes, one at a time
            predictions = [model(x[None])["out"].argmax(1)[0] for x in images]
        out += [confusion_matrix(m, p, num_classes).cpu() for p, m in zip(predictions, masks, strict=True)]
    return out


def fold_mious(confusions: list[torch.Tensor]) -> list[float]:
    """Mean IoU (%) on each of ``FOLDS`` interleaved folds of the test images."""
    folds = range(min(FOLDS, len(confusions)))
    return [100 * segmentation_scores(sum(confusions[k::FOLDS])).mean_iou for k in folds]


def train_losses(folder: Path) -> list[float]:
    """The run's training loss at the end of each epoch: flat at the end when the run has converged."""
    return [row["train_loss"] for row in RunFolder(folder).metrics() if row.get("train_loss") is not None]


class SegmentationExperiment(Experiment):
    name = "segmentation"
    detection_data_budgets = ("paper",)
    title = "Semantic segmentation: ResNet against VGG-style and plain backbones under the same FCN head"
    paper = (
        "He et al. 2015, abstract and Sec. 4.3 (1st place, COCO 2015 segmentation); the entry: Dai, He and "
        "Sun 2016 (Multi-task Network Cascades), Sec. 5"
    )
    claim = (
        "Deep residual nets won COCO 2015 segmentation: with everything else equal, Multi-task Network "
        "Cascades' instance-mask mAP@[.5, .95] on COCO test-dev rose from 19.5% (VGG-16) to 24.6% "
        "(ResNet-101), mAP@.5 from 39.7% to 44.3%; the better representation segments better."
    )
    figures = (
        (
            "segmentation.png",
            "Test canvases: the true masks (top row) and each segmenter's (seed 0), one row per backbone",
        ),
        (
            "segmentation_miou.png",
            "Mean IoU per backbone (mean, seed range, seeds), the paired comparisons that decide the "
            "verdict, and the COCO entry's mask mAP in a panel of its own",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in backbone_nets(ctx) for spec in net.specs]

    def settings(self, ctx: Context) -> dict[str, Any]:
        root = data_root(ctx)
        out: dict[str, Any] = {
            "backbones": ", ".join(backbone_labels(ctx.budget.name)),
            "seeds": ", ".join(f"{net.label} {len(net.specs)}" for net in backbone_nets(ctx)),
            "segmenter": "torchvision's FCN head and auxiliary head (loss weight 0.5) on the backbone's own "
            "strides, the whole net fine-tuned; seed s of a segmenter fine-tunes seed s of its classifier",
            "verdict": "the ResNet backbone's mean IoU above each other backbone's, two-sided: a bootstrap "
            f"over seeds and {FOLDS} interleaved folds of the test images (the same folds for both "
            "segmenters), every seed pair agreeing",
        }
        if ctx.budget.name == "paper":
            out["segmentation data"] = f"{root} (--detection-data), recipe {paper_recipe(root)}"
        else:
            spec = SYNTHETIC[ctx.budget.name]
            flags = [f"--{k.replace('_', '-')} {v}" for k, v in spec.__dict__.items()]
            out["segmentation data"] = f"resnets segment make-data {root} {' '.join(flags)}"
        return {**out, **run_commands(segmenter_runs(ctx), ctx, root)}

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        budget = ctx.budget.name
        root = data_root(ctx)
        if budget != "paper":
            make_fashion_segmentation(root, SYNTHETIC[budget], data_dir=ctx.data_dir)
        per_backbone = segmenter_runs(ctx)
        results: dict[str, Any] = {}
        rows, first_segmenters, test_set, classes = [], {}, None, []
        for seeds in per_backbone:
            label, measured = seeds[0].label, []
            for run in seeds:
                classifier = runs[run.backbone_run.name]
                folder = run.train(ctx, root, resolve_weights(classifier.folder), _log)
                model, ckpt = load_segmenter(folder, ctx.device)
                meta = ckpt["data"]
                if test_set is None:
                    classes = meta["classes"]
                    test_set = open_segmentation_data(root, test_split(ctx), in_chans=meta["in_chans"])
                recipe = run.resolved()
                loader = SegmentationLoader(
                    test_set,
                    batch_size=recipe.eval_batch_size,
                    train=False,
                    augment=Augmentation(meta.get("base_size"), None, 1.0, 1.0, False),
                    device=ctx.device,
                    mean=meta["image_mean"],
                    std=meta["image_std"],
                )
                confusions = image_confusions(model, loader, len(classes))
                scores = segmentation_scores(sum(confusions))
                losses = train_losses(folder)
                measured.append(
                    {
                        "miou": 100 * scores.mean_iou,
                        "pixel_accuracy": 100 * scores.pixel_accuracy,
                        "iou": dict(zip(classes, (100 * v for v in scores.iou), strict=True)),
                        "classifier_test_error": classifier.final_value("test_error"),
                        "folds": fold_mious(confusions),
                        "train_loss": losses,
                        "run": str(folder),
                        "images_per_s": RunFolder(folder).summary().get("images_per_s"),
                    }
                )
                first_segmenters.setdefault(label, (model, ckpt))
            results[label] = seed_summary(measured, "miou")
            counterpart = paper_counterpart(label)
            coco = SEGMENTATION_MNC_COCO.get(counterpart, {})
            rows.append(
                [
                    f"{label} ({counterpart})" if counterpart and counterpart != label else label,
                    len(measured),
                    spread_cell([m["classifier_test_error"] for m in measured]),
                    spread_cell([m["miou"] for m in measured]),
                    spread_cell([m["pixel_accuracy"] for m in measured]),
                    ", ".join(_loss_tail(m["train_loss"]) for m in measured),
                    coco.get("ap50"),
                    coco.get("ap"),
                ]
            )
        assert test_set is not None  # every budget has at least one backbone
        finding, verdict, gaps = self._finding(backbone_labels(budget), results)
        results["gaps"] = gaps
        results["test_images"] = len(test_set)
        self._figures(ctx, first_segmenters, test_set, classes, results)
        shows = shows_flag(verdict)
        if budget == "smoke":  # a few iterations check the machinery and decide nothing
            finding, shows, verdict = finding + " (At the smoke budget no finding is judged.)", None, None
        results["verdict"] = verdict
        columns = [
            "backbone (the entry's counterpart)",
            "seeds",
            "classifier test error (%)",
            "mean IoU (%)",
            "pixel accuracy (%)",
            "training loss, last 2 epochs (per seed)",
            "MNC COCO mask mAP@.5",
            "MNC COCO mask mAP@[.5,.95]",
        ]
        dataset = (
            "Pascal VOC / COCO"
            if budget == "paper"
            else f"the generated Fashion-MNIST set ({len(test_set)} test canvases, {len(classes)} classes "
            "with the background)"
        )
        notes = [
            "Our columns: mean over seeds, seed range in brackets; every test image counted once.",
            "The COCO numbers are instance-mask mAP of the Multi-task Network Cascades entry (Dai, He and "
            "Sun 2016, COCO test-dev); ours is semantic mean IoU: the ordering of the backbones is what "
            "is compared, not the values. The entry has no plain backbone.",
            "The segmenters train for a length fixed before the run and are tested once, on their last "
            "weights; the training loss of the last two epochs shows whether they had converged.",
        ]
        if budget != "paper":
            notes.append(
                "The backbones are Fashion-MNIST classifiers (the entry's were ImageNet classifiers) and "
                "the test canvases hold only Fashion-MNIST test images."
            )
        notes += [
            f"{label} segmenters: " + ", ".join(results[label]["runs"]) for label in backbone_labels(budget)
        ]
        table = Table(columns, rows)
        return Analysis(
            results,
            finding,
            shows,
            tables=[(f"Segmentation on {dataset}", table)],
            notes=notes,
            verdict=verdict,
        )

    def _figures(
        self,
        ctx: Context,
        segmenters: dict[str, tuple[torch.nn.Module, dict]],
        test_set,
        classes: list[str],
        results: dict[str, Any],
    ) -> None:
        grid_path, miou_path = self.figure_paths(ctx)
        count = min(FIGURE_IMAGES[ctx.budget.name], len(test_set))
        images = [test_set.image(i) for i in range(count)]
        rows = {"ground truth": [(image, test_set.mask(i)) for i, image in enumerate(images)]}
        for label, (model, ckpt) in segmenters.items():
            rows[label] = list(zip(images, predict_masks(model, images, ckpt), strict=True))
        segmentation_grid(rows, classes, grid_path, title="FCN head on each backbone, seed 0")
        labels = backbone_labels(ctx.budget.name)
        plot_seeded_comparison(
            {label: results[label]["per_seed_miou"] for label in labels},
            {
                f"{labels[-1]} vs {other}\n(paper: higher)": tuple(results["gaps"][other]["interval"])
                for other in labels[:-1]
            },
            {name: SEGMENTATION_MNC_COCO[name]["ap"] for name in ("VGG-16", "ResNet-101")},
            miou_path,
            title=f"segmentation: mean IoU on the {'paper' if ctx.budget.name == 'paper' else 'generated'} "
            f"test set ({ctx.budget.name} budget)",
            ylabel="mean IoU (%)",
            paper_title="COCO 2015 entry (MNC, test-dev)",
            paper_ylabel="COCO mask mAP@[.5,.95] (%)",
        )

    @staticmethod
    def _finding(labels: list[str], results: dict[str, Any]) -> tuple[str, str, dict]:
        """The ResNet (last label) against every other backbone, each judged two-sided in the paper's
        direction (higher mean IoU) on the per-fold mean IoUs; "shows" only when it beats all of them."""
        resnet = labels[-1]
        ours = results[resnet]
        gaps, sentences, verdicts = {}, [], []
        for other, gap in resnet_gaps(labels, results, "miou", PAPER_GAIN).items():
            theirs, interval, judgement, per_seed = results[other], gap.interval, gap.judgement, gap.per_seed
            verdicts.append(judgement.verdict)
            gaps[other] = {
                "miou_gap": ours["miou"] - theirs["miou"],
                "fold_gap": interval.difference,
                "interval": [interval.difference, interval.low, interval.high],
                "standard_error": interval.standard_error,
                "detectable_effect": judgement.detectable,
                "per_seed_miou_gaps": per_seed,
                "verdict": judgement.verdict,
            }
            sentences.append(
                f"{resnet} reaches mean IoU {ours['miou']:.1f}% against {other}'s {theirs['miou']:.1f}%; "
                f"per test fold {interval.difference:+.1f} points (95% interval {interval.low:+.1f} to "
                f"{interval.high:+.1f}, bootstrap over seeds and folds; the budget detects "
                f"{judgement.detectable:.1f}, the COCO entry gained {PAPER_GAIN:.1f} points of mask mAP "
                f"over VGG-16): {judgement.verdict}"
            )
        verdict = overall(verdicts)
        closing = verdict_sentence(
            verdict,
            "The paper's finding shows: under the same head, the residual backbone segments best.",
        )
        return "; ".join(sentences) + ". " + closing, verdict, gaps


def _loss_tail(losses: list[float]) -> str:
    return " / ".join(f"{v:.3f}" for v in losses[-2:]) if losses else "-"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


__all__ = ["SegmentationExperiment", "SegmenterRun", "segmenter_runs"]
