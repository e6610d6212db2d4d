"""Shortcut kinds and unit placements: He et al. 2016, "Identity Mappings in Deep Residual Networks",
Table 1 (Fig. 2) and Table 2 (Fig. 4).

Every variant is the original ResNet with one change: the shortcut (constant scaling, exclusive gating,
shortcut-only gating, 1x1 conv, dropout) or where BN and ReLU sit in the unit (BN after addition, ReLU
before addition, ReLU-only pre-activation, full pre-activation). The paper (ResNet-110, CIFAR-10): every
shortcut that is not the identity hampers training and tests worse; full pre-activation is the best unit.

The verdict, fixed before the runs: each of the five other shortcut kinds against the identity on the same
test images (the paper: higher error); "shows" when at least three of the five show and none contradicts
(Table 1's gaps are 0.3 to 5.7 points and a failure: shortcut-only gating's 0.30 is below what any budget
here detects), "contradicts" when at least three contradict. The unit placements are measured against the
original unit and reported with the smallest effect this budget detects (Table 2's gaps are 0.1 to 1.6
points), deciding nothing.
"""

from __future__ import annotations

from typing import Any

from .base import Analysis, Context, Experiment, Runs, RunSpec
from .paired import (
    Comparison,
    Net,
    Scores,
    compare,
    differences_of,
    overall,
    shows_flag,
    spread_cell,
    verdict_sentence,
)
from .paper_numbers import FAIL_THRESHOLD, SHORTCUT_KINDS_TABLE1, UNITS_TABLE2
from .plans import cifar_net, net_label
from .plots import plot_seeded_comparison
from .tables import Table

# (depth, recipe): the paper's ResNet-110 with its warm-up recipe; ResNet-20 at the cpu budget (the
# original unit is then depth's ResNet-20 run).
PLANS: dict[str, tuple[int, str | None]] = {
    "smoke": (8, None),
    "cpu": (20, None),
    "paper": (110, "preact-cifar"),
}
SHORTCUT_VARIANTS = ("constant_scaling", "exclusive_gating", "shortcut_only_gating", "conv1x1", "dropout")
UNIT_VARIANTS = ("bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")
LABELS = {
    "original": "original",
    "constant_scaling": "constant scaling (0.5, 0.5)",
    "exclusive_gating": "exclusive gating",
    "shortcut_only_gating": "shortcut-only gating",
    "conv1x1": "1x1 conv shortcut",
    "dropout": "dropout shortcut (0.5)",
    "bn_after_add": "BN after addition",
    "relu_before_add": "ReLU before addition",
    "relu_only_preact": "ReLU-only pre-activation",
    "full_preact": "full pre-activation",
}


def paper_error(variant: str) -> float | None:
    """ResNet-110 test error of Table 1 or 2; None for the dropout shortcut, which 'fails'."""
    if variant == "original":
        return UNITS_TABLE2["original"][110]
    if variant in SHORTCUT_KINDS_TABLE1:
        return SHORTCUT_KINDS_TABLE1[variant]
    return UNITS_TABLE2[variant][110]


SHOWS_NEEDED = 3  # of the five shortcut kinds (see the module's docstring)
SHOWS = (
    "The paper's finding shows: the identity shortcut beats the other shortcut kinds beyond the noise "
    f"(at least {SHOWS_NEEDED} of the 5, none reversed)."
)


def _effect(variant: str) -> float | None:
    paper, original = paper_error(variant), paper_error("original")
    return None if paper is None or original is None else paper - original


def variant_nets(ctx: Context) -> dict[str, Net]:
    depth, recipe = PLANS[ctx.budget.name]
    variants: dict[str, dict[str, str]] = {"original": {}}
    variants.update({kind: {"shortcut_kind": kind} for kind in SHORTCUT_VARIANTS})
    variants.update({unit: {"unit": unit} for unit in UNIT_VARIANTS})
    return {
        v: cifar_net(ctx, "resnet", depth, label=LABELS[v], recipe=recipe, model_kwargs=extra)
        for v, extra in variants.items()
    }


def variant_comparisons(ctx: Context) -> tuple[list[Comparison], list[Comparison]]:
    """(deciding: each shortcut kind against the identity; reported: each unit placement)."""
    nets = variant_nets(ctx)
    original = nets["original"]
    shortcuts = [Comparison(original, nets[v], "higher", _effect(v)) for v in SHORTCUT_VARIANTS]
    units = [
        Comparison(original, nets[v], "lower" if v == "full_preact" else "higher", _effect(v))
        for v in UNIT_VARIANTS
    ]
    return shortcuts, units


class IdentityMappings(Experiment):
    name = "identity-mappings"
    title = "Identity Mappings: shortcut kinds and unit placements"
    paper = "He et al. 2016 (Identity Mappings in Deep Residual Networks), Tables 1 and 2"
    claim = (
        "On ResNet-110 (CIFAR-10) every shortcut other than the identity tests worse than the original "
        "6.61%: constant scaling 12.35%, exclusive gating 8.70%, shortcut-only gating 6.91%, 1x1 conv "
        "12.22%, dropout fails (>20%). Of the unit placements, BN after addition (8.17%) and ReLU before "
        "addition (7.84%) hurt, ReLU-only pre-activation is on par (6.71%) and full pre-activation is best "
        "(6.37%)."
    )
    figures = (
        (
            "identity_mappings.png",
            "Test error of each variant (mean, seed range, seeds), the paired comparisons against the "
            "original, and the paper's ResNet-110 errors in a panel of their own",
        ),
    )

    def runs(self, ctx: Context) -> list[RunSpec]:
        return [spec for net in variant_nets(ctx).values() for spec in net.specs]

    def comparisons(self, ctx: Context) -> list[Comparison]:
        return variant_comparisons(ctx)[0]

    def settings(self, ctx: Context) -> dict[str, Any]:
        depth, recipe = PLANS[ctx.budget.name]
        return {
            "network": net_label("resnet", depth) + (" (the paper uses ResNet-110)" if depth != 110 else ""),
            "variants": ", ".join(LABELS.values()),
            "recipe": recipe or ctx.budget.recipe,
            "seeds": ctx.seeds,
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        nets, scores = variant_nets(ctx), Scores(ctx, runs)
        results: dict[str, Any] = {}
        per_seed, rows = {}, {}
        for v, net in nets.items():
            test = scores.test_errors(net)
            train = [runs[spec.name].final_value("train_error") for spec in net.specs]
            per_seed[LABELS[v]] = test
            results[v] = {
                "label": LABELS[v],
                "test_error": test,
                "final_train_error": train,
                "paper_test_error": paper_error(v),
                "paper_fails": paper_error(v) is None,
            }
            value = paper_error(v)
            paper_cell = f"fail (>{FAIL_THRESHOLD:.0f})" if value is None else f"{value:.2f}"
            rows[v] = [LABELS[v], len(net.specs), spread_cell(train), spread_cell(test), paper_cell]
        shortcuts, units = variant_comparisons(ctx)
        decided = [compare(scores, c) for c in shortcuts]
        described = [compare(scores, c) for c in units]
        verdict = overall([m.verdict for m in decided], required=SHOWS_NEEDED)
        results["comparisons"] = {m.comparison.name: m.to_dict() for m in decided + described}
        results["verdict"] = verdict
        (figure,) = self.figure_paths(ctx)
        plot_seeded_comparison(
            per_seed,
            differences_of(decided + described),
            {LABELS[v]: paper_error(v) for v in nets},
            figure,
            title="test error of each shortcut kind and unit placement",
            paper_title="paper: ResNet-110, CIFAR-10\n(dropout: fails, > 20%)",
        )
        finding = (
            "Shortcut kinds against the identity: "
            + " ".join(m.sentence() for m in decided)
            + " "
            + verdict_sentence(verdict, SHOWS)
            + " Unit placements against the original unit (reported, not deciding): "
            + " ".join(m.sentence() for m in described)
        )
        columns = ["variant", "seeds", "final training error (%)", "test error (%)", "paper, ResNet-110 (%)"]
        depth = PLANS[ctx.budget.name][0]
        notes = [
            "Table 1's gated rows are those with the best gate initialisation (b_g = -6), which the models "
            "use; 'fail' means a test error above 20%. Errors: mean over seeds (seed range).",
        ]
        if depth != 110:
            notes.append(
                f"The paper's network is ResNet-110; at this budget it is {net_label('resnet', depth)}, "
                "where every unit matters less, so the differences are expected to be smaller."
            )
        tables = [
            ("Shortcut kinds (Table 1)", Table(columns, [rows[v] for v in ("original", *SHORTCUT_VARIANTS)])),
            ("Unit placements (Table 2)", Table(columns, [rows[v] for v in ("original", *UNIT_VARIANTS)])),
        ]
        return Analysis(results, finding, shows_flag(verdict), tables=tables, notes=notes, verdict=verdict)
