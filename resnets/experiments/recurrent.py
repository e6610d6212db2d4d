"""A ResNet in recurrent form: Liao and Poggio 2016, "Bridging the Gaps Between Residual Learning, Recurrent
Neural Networks and Visual Cortex" (arXiv:1604.03640), the lecture's "ResNet with shared weights".

A shallow recurrent net unrolled in time is a deep ResNet whose units share their weights. Three CIFAR
ResNets trained alike: ResNet-56 (the run of ``degradation``, shared when the output folder is), the same
56 layers with the weights of each stage's units 2..9 shared (``share_weights``: 0.176M parameters, each
unit keeping its own BN as Liao and Poggio's time-specific batch normalization does), and the 6n+2 ResNet
whose parameter count is closest to the shared net's (ResNet-14, 0.173M: the shared net is ResNet-14's
weights plus the BNs of each extra time step). The finding: the shared net keeps most of the deep net's
accuracy with the shallow net's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Analysis, Context, Experiment, Runs, RunSpec, error_curves
from .paper_numbers import CIFAR_TABLE6
from .plans import cifar_run, net_label, params_cifar
from .plots import plot_recurrent
from .stats import evaluated_images, gap_noise, sampling_noise, strength
from .tables import Table

# Liao and Poggio 2016 (CBMM Memo 047, arXiv:1604.03640), abstract: "a shallow RNN is exactly
# equivalent to a very deep ResNet with weight sharing among the layers. A direct implementation of such
# a RNN, although having orders of magnitude fewer parameters, leads to a performance similar to the
# corresponding ResNet", tested on CIFAR-10 (and ImageNet in the September 2016 version). Their CIFAR nets
# are not these 6n+2 ones and they give no table of parameters and errors that matches them, so the
# report compares with no number of theirs; the unshared ResNet-56's CIFAR-10 error is He et al. 2015's
# Table 6 (6.97%). BN: "[Liao and Poggio, 2016] and [Cooijmans et al., 2016] independently proposed
# 'time-specific batch normalization': different normalization statistics are used for different
# timesteps" (Liao, Kawaguchi and Poggio 2016, "Streaming Normalization", Sec. 1).
LIAO_POGGIO_2016: dict[str, Any] = {
    "dataset": "CIFAR-10",
    "claim": "a ResNet with weights shared among its layers performs similarly to the unshared ResNet "
             "with orders of magnitude fewer parameters",
    "normalization": "time-specific batch normalization (separate statistics at each time step)",
}

# The deep net's depth (6n+2), and the shallow net of about the shared net's parameters. The smoke budget
# needs n >= 3 for any weight to be shared (units 2 and 3 of each stage).
DEPTH: dict[str, int] = {"smoke": 20, "cpu": 56, "paper": 56}
SHALLOW: dict[str, int] = {"smoke": 14, "cpu": 14, "paper": 14}
KEYS = ("deep", "shared", "shallow")  # the three nets, in table order
# A difference is beyond the noise when it exceeds this many standard errors (as cardinality's verdict).
NOISE_FACTOR = 1.0


def recurrent_runs(ctx: Context) -> dict[str, RunSpec]:
    """The deep, the shared (recurrent) and the shallow net's runs, by ``KEYS``."""
    depth, shallow = DEPTH[ctx.budget.name], SHALLOW[ctx.budget.name]
    return {
        # exactly degradation's ResNet of that depth (seed 0) where degradation trains that depth
        "deep": cifar_run(ctx, "resnet", depth),
        "shared": cifar_run(ctx, "resnet", depth, label=f"{net_label('resnet', depth)} shared",
                            model_kwargs={"share_weights": True}),
        "shallow": cifar_run(ctx, "resnet", shallow),
    }


class Recurrent(Experiment):
    name = "recurrent"
    title = "ResNet in recurrent form: shared-weight units keep a deep net's accuracy at a shallow net's size"
    paper = "Liao and Poggio 2016 (Bridging the Gaps Between Residual Learning, RNNs and Visual Cortex)"
    claim = (
        "A deep ResNet whose units share their weights is a shallow recurrent net unrolled in time; "
        "implemented directly it has orders of magnitude fewer parameters yet performs similarly to the "
        "unshared ResNet of the same depth on CIFAR-10 (with time-specific batch normalization). Here: the "
        "shared ResNet-56 keeps most of ResNet-56's accuracy with about ResNet-14's parameters."
    )
    figures = (
        (
            "recurrent.png",
            "Test error against parameters with one standard error of sampling noise (left); training "
            "(dashed) and test (bold) error against iterations (right)",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return list(recurrent_runs(ctx).values())

    def settings(self, ctx: Context) -> dict[str, Any]:
        specs = recurrent_runs(ctx)
        return {
            "networks": ", ".join(spec.label for spec in specs.values()),
            "weight sharing": "within each stage, units 2..n use unit 2's convolutions; every unit keeps its "
                              "own BN (time-specific batch normalization)",
            "shallow net": "the 6n+2 ResNet whose parameter count is closest to the shared net's",
            "initialisation": "the paper's",
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        specs = recurrent_runs(ctx)
        results: dict[str, Any] = {}
        rows, points, curves = [], {}, {}
        measured: dict[str, tuple[float, int]] = {}
        for key, spec in specs.items():
            record = runs[spec.name]
            params = params_cifar(spec)
            error, images = record.final_value("test_error"), evaluated_images(record)
            noise = sampling_noise(error, images)
            depth = DEPTH[ctx.budget.name] if key != "shallow" else SHALLOW[ctx.budget.name]
            paper = CIFAR_TABLE6.get(depth, {}).get("error") if key == "deep" else None
            seconds = float(record.summary.get("elapsed_s") or 0.0)
            results[spec.label] = {
                "role": key, "depth": depth, "shared": key == "shared", "params": params,
                "test_error": error, "test_noise": noise, "test_images": images,
                "final_train_error": record.final_value("train_error"), "train_seconds": seconds,
                "paper_test_error": paper,
            }
            rows.append([spec.label, f"{params / 1e6:.3f}M", error, f"{noise:.2f}",
                         record.final_value("train_error"), seconds, paper])
            points[spec.label] = (params, error, noise)
            curves[spec.label] = error_curves(record)
            measured[key] = (error, images)
        (figure,) = self.figure_paths(ctx)
        plot_recurrent(points, curves, figure,
                       title=f"{ctx.dataset} ({ctx.budget.name}): weights shared within each stage")
        params = {key: results[spec.label]["params"] for key, spec in specs.items()}
        finding, shows, summary = self._finding(measured, params, {k: s.label for k, s in specs.items()})
        results["summary"] = summary
        columns = ["network", "params (CIFAR-10)", "test error (%)", "+- sampling noise (points)",
                   "final training error (%)", "training time (s)", "paper test error (%)"]
        notes = [
            "The shared net has the deep net's depth and compute (each shared conv runs once per unit) and "
            "the shallow net's weights plus one BN per extra unit; its training time is the deep net's.",
            "Liao and Poggio 2016 give no CIFAR-10 table that matches these nets; the paper column is He "
            "et al. 2015's Table 6 error of the unshared deep net (CIFAR-10, 64k iterations), comparable to "
            "ours only at the paper budget on CIFAR-10.",
            "Sampling noise: the binomial standard error of each test error on its test images.",
        ]
        caption = "Deep, shared (recurrent) and shallow ResNet: parameters, test error and training time"
        return Analysis(results, finding, shows, tables=[(caption, Table(columns, rows))], notes=notes)

    @staticmethod
    def _finding(
        measured: Mapping[str, tuple[float, int]], params: Mapping[str, int], labels: Mapping[str, str]
    ) -> tuple[str, bool | None, dict[str, Any]]:
        """The verdict from the three nets' ``(test error %, test images)``, by ``KEYS``.

        The deep net must beat the shallow one beyond the noise (else there is no gap to keep). Then the
        shared net is closer to the deep net than to the shallow one, i.e. keeps more than half of the
        gap, when e_shallow + e_deep - 2 e_shared > 0 beyond that sum's standard error: True; closer to
        the shallow net beyond it: False; else undecided.
        """
        (e_deep, n_deep), (e_shared, n_shared), (e_shallow, n_shallow) = (measured[k] for k in KEYS)
        gap = e_shallow - e_deep
        gap_sd = gap_noise(e_shallow, n_shallow, e_deep, n_deep)
        closer = e_shallow + e_deep - 2 * e_shared  # > 0: nearer the deep net's error
        closer_sd = (sampling_noise(e_shallow, n_shallow) ** 2 + sampling_noise(e_deep, n_deep) ** 2
                     + 4 * sampling_noise(e_shared, n_shared) ** 2) ** 0.5
        kept = (e_shallow - e_shared) / gap if gap else None
        summary = {"gap": gap, "gap_noise": gap_sd, "closer": closer, "closer_noise": closer_sd,
                   "gap_kept": kept, "params_shared_over_deep": params["shared"] / params["deep"],
                   "params_shared_over_shallow": params["shared"] / params["shallow"]}
        deep, shared, shallow = labels["deep"], labels["shared"], labels["shallow"]
        share = 100 * params["shared"] / params["deep"]
        text = (
            f"{shared} has {params['shared'] / 1e6:.3f}M parameters, {share:.0f}% of {deep}'s "
            f"{params['deep'] / 1e6:.3f}M and {params['shared'] / params['shallow']:.2f}x "
            f"{shallow}'s {params['shallow'] / 1e6:.3f}M. Test error: {deep} {e_deep:.2f}%, {shared} "
            f"{e_shared:.2f}%, {shallow} {e_shallow:.2f}%. {deep} is {abs(gap):.2f} points "
            f"{'better' if gap > 0 else 'worse'} than {shallow} ({strength(gap, gap_sd)}). "
        )
        shows: bool | None
        if gap <= NOISE_FACTOR * gap_sd:
            shows = None
            text += ("Depth does not beat the shallow net beyond the noise here, so there is no gap for the "
                     "shared net to keep and this budget cannot test the claim.")
        else:
            text += (f"{shared} keeps {100 * kept:.0f}% of that gap (half or more: closer to {deep}; "
                     f"{strength(closer, closer_sd)} for the distance to the midpoint). ")
            if closer > NOISE_FACTOR * closer_sd:
                shows = True
                text += ("The shared net is closer to the deep net than to the shallow one beyond the "
                         "noise: it keeps most of the depth's accuracy with the shallow net's parameters, "
                         "as Liao and Poggio found.")
            elif closer < -NOISE_FACTOR * closer_sd:
                shows = False
                text += ("The shared net is closer to the shallow net beyond the noise: sharing the weights "
                         "lost most of what the depth gained, unlike Liao and Poggio's finding.")
            else:
                shows = None
                text += "The shared net sits within the noise of the midpoint, so this budget cannot tell."
        return text, shows, summary
