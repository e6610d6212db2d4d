"""Lesion study: Veit, Wilber and Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively
Shallow Networks", Sec. 4 (deleting and re-ordering units) and Sec. 5 (path lengths and gradients).

A trained ResNet and plain net of the same depth (the runs of ``depth`` and ``degradation``, shared when
the output folder is shared), and a VGG-style net (max-pool downsampling, no shortcut: the contrast of
Veit et al. Fig. 3, whose VGG "drops to chance" when any layer is deleted): delete one unit at a time, swap
adjacent units, and measure the test error; count the ResNet's paths by length and measure how much
gradient each length carries.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import torch

from ..analysis.lesion import lesion_study
from ..analysis.paths import gradient_by_path_length, path_length_fractions
from .base import Analysis, Context, Experiment, Runs, RunSpec
from .plans import LESION_DEPTH as DEPTH
from .plans import LESION_VGG_DEPTH as VGG_DEPTH
from .plans import lesion_runs
from .plots import plot_lesion, plot_path_lengths
from .tables import Table
from .trained import TrainedNets

# Gradient samples per path length (Veit et al. sample paths; each sample is one backward pass) and the
# images of the batch they are measured on.
GRADIENT_SAMPLES = {"smoke": 1, "cpu": 8, "paper": 32}
GRADIENT_BATCH = {"smoke": 8, "cpu": 128, "paper": 128}


class Lesion(Experiment):
    name = "lesion"
    title = "Lesion study: deleting a unit hurts a ResNet little and breaks a plain net"
    paper = "Veit et al. 2016, Sec. 4 (Fig. 3, 4 and 5) and Sec. 5 (Fig. 6)"
    claim = (
        "Deleting a single unit from a trained ResNet barely changes its test error (except, somewhat, "
        "the units that downsample), whereas deleting any layer of a plain net (VGG, their Fig. 3) drops it "
        "to chance; "
        "swapping adjacent units also costs little. A ResNet of n units is an ensemble of 2^n paths of "
        "binomially distributed length, and almost all of its gradient comes from short paths (5 to 17 "
        "of ResNet-110's 54 units)."
    )
    figures = (
        (
            "lesion.png",
            "Test error with each unit deleted (left) and each adjacent pair swapped "
            "(right); dotted: the intact network (Veit et al. Fig. 3 and 5)",
        ),
        (
            "paths.png",
            "Path lengths, gradient norm of one path of each length, and the share of "
            "the total gradient by length (Veit et al. Fig. 6)",
        ),
    )

    def _specs(self, ctx: Context) -> dict[str, RunSpec]:
        return lesion_runs(ctx)

    def runs(self, ctx: Context) -> list[RunSpec]:
        return list(self._specs(ctx).values())

    def settings(self, ctx: Context) -> dict[str, Any]:
        b = ctx.budget.name
        return {
            "networks": f"ResNet-{DEPTH[b]}, plain-{DEPTH[b]}, VGG-{VGG_DEPTH[b]} (VGG-style, max-pool "
                        "downsampling, no shortcuts)",
            "gradient by path length": f"{GRADIENT_SAMPLES[b]} sampled paths per length on "
            f"{GRADIENT_BATCH[b]} test images",
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        nets = TrainedNets(ctx)
        specs = self._specs(ctx)
        lesions, results, rows = {}, {}, []
        resnet_model = resnet_loader = None
        for kind, spec in specs.items():
            record = runs[spec.name]
            model, loader = nets.model(record), nets.test_loader(record)
            lesion = lesion_study(model, loader)
            lesions[kind] = (record.label, lesion)
            results[record.label] = lesion.to_dict()
            rows.append(
                [
                    record.label,
                    lesion.baseline_error,
                    statistics.mean(lesion.deleted_errors),
                    statistics.median(lesion.deleted_errors),
                    max(lesion.deleted_errors),
                    statistics.mean(lesion.swapped_errors) if lesion.swapped_errors else None,
                ]
            )
            if kind == "resnet":
                resnet_model, resnet_loader = model, loader
        lesion_figure, paths_figure = self.figure_paths(ctx)
        plot_lesion(
            {label: l.deleted_errors for label, l in lesions.values()},
            {label: l.baseline_error for label, l in lesions.values()},
            lesion_figure,
            swapped={label: l.swapped_errors for label, l in lesions.values()},
            downsampling=lesions["resnet"][1].downsampling,
            title=f"deleting (left) and swapping (right) units, {ctx.dataset} test split",
        )
        paths = self._paths(ctx, resnet_model, resnet_loader)
        results["paths"] = paths
        plot_path_lengths(
            paths["fractions"],
            paths_figure,
            lengths=paths["lengths"],
            mean_norm=paths["mean_norm"],
            total_norm=paths["total_norm"],
            title=f"{lesions['resnet'][0]}: paths and their gradients (Veit et al. Fig. 6)",
        )
        finding, shows = self._finding(lesions, paths)
        columns = ["network", "intact error (%)", "mean error, one unit deleted", "median", "worst",
                   "mean error, adjacent units swapped"]
        caption = "Test error with one unit deleted (its branch removed, its shortcut kept)"
        notes = [
            "Veit et al. lesion ResNet-110 on CIFAR-10 (single deletions raise the error only slightly; "
            "downsampling units more) and a VGG net on ImageNet for the plain case (chance level). "
            "They report no table of numbers, so the comparison is qualitative.",
            "The VGG-style net is a CIFAR net of 3x3 conv-BN-ReLU layers (16, 32, 64 maps) with 2x2 max "
            "pools between its stages (models/vgg.py, vgg_cifar); a deleted layer passes its input on, "
            "zero-padded where it widens. It is the plain contrast at VGG's depth; the plain net of the "
            "ResNet's depth is the other.",
            "In a plain net, deleting a unit keeps the parameter-free option-A mapping where the shape "
            "changes, so the rest of the net still receives a tensor of the right shape.",
        ]
        return Analysis(results, finding, shows, tables=[(caption, Table(columns, rows))], notes=notes)

    @staticmethod
    def _paths(ctx: Context, model: torch.nn.Module, loader: Any) -> dict[str, Any]:
        batch = GRADIENT_BATCH[ctx.budget.name]
        xs, ys, have = [], [], 0
        for x, y in loader:
            xs.append(x)
            ys.append(y)
            have += len(y)
            if have >= batch:
                break
        x, y = torch.cat(xs)[:batch], torch.cat(ys)[:batch]
        grads = gradient_by_path_length(model, x, y, samples=GRADIENT_SAMPLES[ctx.budget.name])
        n = grads.num_blocks
        return {
            "num_blocks": n,
            "fractions": path_length_fractions(n),
            **grads.to_dict(),
            "share_below_half": grads.share_below((n + 1) // 2),
            "paths_below_half": sum(path_length_fractions(n)[: (n + 1) // 2]),
        }

    @staticmethod
    def _finding(lesions: Mapping[str, tuple[str, Any]], paths: Mapping[str, Any]) -> tuple[str, bool]:
        (res_label, res), (plain_label, plain) = lesions["resnet"], lesions["plain"]
        res_cost = statistics.mean(res.deletion_increase)
        plain_cost = statistics.mean(plain.deletion_increase)
        # "Far less": a third of the plain net's cost or less, and the plain net really breaks (+10 points);
        # with the VGG-style net, it must break too (Veit et al. Fig. 3: VGG drops to chance).
        shows = plain_cost >= 10 and res_cost <= plain_cost / 3
        vgg = lesions.get("vgg")
        vgg_cost = statistics.mean(vgg[1].deletion_increase) if vgg else None
        if vgg_cost is not None:
            shows = shows and vgg_cost >= 10 and res_cost <= vgg_cost / 3
        low, high = paths["central_90"]
        n = paths["num_blocks"]
        text = (
            f"Deleting one unit changes {res_label}'s test error by {res_cost:+.2f} points on average "
            f"(from {res.baseline_error:.2f}%; worst {max(res.deleted_errors):.2f}%), and {plain_label}'s by "
            f"{plain_cost:+.2f} points (from {plain.baseline_error:.2f}%; median "
            f"{statistics.median(plain.deleted_errors):.2f}%). "
        )
        if vgg is not None:
            vgg_label, vgg_result = vgg
            text += (
                f"Deleting one layer of {vgg_label}, the VGG-style net, changes its error by {vgg_cost:+.2f} "
                f"points on average (from {vgg_result.baseline_error:.2f}%; median "
                f"{statistics.median(vgg_result.deleted_errors):.2f}%). "
            )
        inner, down = res.mean_increase(downsampling=False), res.mean_increase(downsampling=True)
        if inner is not None and down is not None:
            text += (
                f"In the ResNet, deleting a unit that keeps the shape costs {inner:+.2f} points on average "
                f"and deleting one of the downsampling units {down:+.2f} (Veit et al. also find those "
                "costlier). "
            )
        if res.swapped_errors and plain.swapped_errors:
            res_swap = statistics.mean(res.swapped_errors) - res.baseline_error
            plain_swap = statistics.mean(plain.swapped_errors) - plain.baseline_error
            text += (
                f"Swapping adjacent units changes the error by {res_swap:+.2f} points in the ResNet and "
                f"{plain_swap:+.2f} in the plain net. "
            )
        text += (
            f"Of the ResNet's 2^{n} paths, 90% of the gradient comes from paths through {low} to {high} of "
            f"its {n} units, and {100 * paths['share_below_half']:.0f}% from paths through fewer than half "
            f"its units, which are {100 * paths['paths_below_half']:.0f}% of all paths. "
        )
        if shows:
            ratio = plain_cost / max(res_cost, 1e-9)
            text += (
                f"The paper's finding shows: a deletion costs the ResNet "
                f"{'almost nothing' if res_cost < 1 else f'{ratio:.0f}x less than the plain net'}, "
                f"while the plain net{' and the VGG-style net' if vgg else ''} break{'' if vgg else 's'}."
            )
        else:
            text += (
                "The paper's finding does not show clearly at this budget (criterion: the plain net"
                f"{' and the VGG-style net each' if vgg else ''} lose{'' if vgg else 's'} at least 10 points "
                "per deletion and the ResNet at most a third of that)."
            )
        return text, shows
