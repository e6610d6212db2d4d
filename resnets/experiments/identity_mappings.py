"""Shortcut kinds and unit placements: He et al. 2016, "Identity Mappings in Deep Residual Networks",
Table 1 (Fig. 2) and Table 2 (Fig. 4).

Every variant is the original ResNet with one change: the shortcut (constant scaling, exclusive gating,
shortcut-only gating, 1x1 conv, dropout) or where BN and ReLU sit in the unit (BN after addition, ReLU
before addition, ReLU-only pre-activation, full pre-activation). The paper (ResNet-110, CIFAR-10): every
shortcut that is not the identity hampers training and tests worse; full pre-activation is the best unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Analysis, Context, Experiment, Runs, RunSpec
from .paper_numbers import FAIL_THRESHOLD, SHORTCUT_KINDS_TABLE1, UNITS_TABLE2
from .plans import cifar_run, net_label
from .plots import plot_ours_vs_paper
from .stats import evaluated_images, pairwise_noise
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
    figures = (("identity_mappings.png", "Test error of each variant, ours beside the paper's"),)

    def _specs(self, ctx: Context) -> dict[str, RunSpec]:
        depth, recipe = PLANS[ctx.budget.name]
        variants: dict[str, dict[str, str]] = {"original": {}}
        variants.update({kind: {"shortcut_kind": kind} for kind in SHORTCUT_VARIANTS})
        variants.update({unit: {"unit": unit} for unit in UNIT_VARIANTS})
        return {
            v: cifar_run(ctx, "resnet", depth, label=LABELS[v], recipe=recipe, model_kwargs=extra)
            for v, extra in variants.items()
        }

    def runs(self, ctx: Context) -> list[RunSpec]:
        return list(self._specs(ctx).values())

    def settings(self, ctx: Context) -> dict[str, Any]:
        depth, recipe = PLANS[ctx.budget.name]
        return {
            "network": net_label("resnet", depth) + (" (the paper uses ResNet-110)" if depth != 110 else ""),
            "variants": ", ".join(LABELS.values()),
            "recipe": recipe or ctx.budget.recipe,
        }

    def analyze(self, ctx: Context, runs: Runs) -> Analysis:
        specs = self._specs(ctx)
        errors = {v: runs[s.name].final_value("test_error") for v, s in specs.items()}
        results = {
            v: {
                "label": LABELS[v],
                "test_error": e,
                "final_train_error": runs[specs[v].name].final_value("train_error"),
                "paper_test_error": paper_error(v),
                "paper_fails": paper_error(v) is None,
            }
            for v, e in errors.items()
        }

        def paper_cell(v: str) -> str:
            value = paper_error(v)
            return f"fail (>{FAIL_THRESHOLD:.0f})" if value is None else f"{value:.2f}"

        shortcut_rows = [
            [LABELS[v], results[v]["final_train_error"], errors[v], paper_cell(v)]
            for v in ("original", *SHORTCUT_VARIANTS)
        ]
        unit_rows = [
            [LABELS[v], results[v]["final_train_error"], errors[v], paper_cell(v)]
            for v in ("original", *UNIT_VARIANTS)
        ]
        columns = ["variant", "final training error (%)", "test error (%)", "paper, ResNet-110 (%)"]
        order = list(specs)
        (figure,) = self.figure_paths(ctx)
        plot_ours_vs_paper(
            [LABELS[v] for v in order],
            [errors[v] for v in order],
            [paper_error(v) for v in order],
            figure,
            paper_label="paper (ResNet-110; dropout: fail, not drawn)",
            title="test error of each shortcut kind and unit placement",
        )
        noise = pairwise_noise((e, evaluated_images(runs[specs[v].name])) for v, e in errors.items())
        finding, shows, summary = self._finding(errors, noise)
        results["summary"] = summary
        depth = PLANS[ctx.budget.name][0]
        notes = [
            "Table 1's gated rows are those with the best gate initialisation (b_g = -6), which the models "
            "use; 'fail' means a test error above 20%."
        ]
        if depth != 110:
            notes.append(
                f"The paper's network is ResNet-110; at this budget it is {net_label('resnet', depth)}, "
                "where every unit matters less, so the differences are expected to be smaller."
            )
        tables = [
            ("Shortcut kinds (Table 1)", Table(columns, shortcut_rows)),
            ("Unit placements (Table 2)", Table(columns, unit_rows)),
        ]
        return Analysis(results, finding, shows, tables=tables, notes=notes)

    @staticmethod
    def _finding(errors: Mapping[str, float], noise: float) -> tuple[str, bool, dict[str, Any]]:
        # Pairwise orderings: of every two variants the paper separates, does ours order them alike?
        # ("fail" counts as worse than any number.)
        def paper_key(v: str) -> float:
            value = paper_error(v)
            return float("inf") if value is None else value

        variants = list(errors)
        pairs = [
            (a, b) for i, a in enumerate(variants) for b in variants[i + 1 :] if paper_key(a) != paper_key(b)
        ]
        agree = sum((paper_key(a) < paper_key(b)) == (errors[a] < errors[b]) for a, b in pairs)
        concordance = agree / len(pairs)
        original = errors["original"]
        worse_shortcuts = [v for v in SHORTCUT_VARIANTS if errors[v] > original]
        best_other = min(SHORTCUT_VARIANTS, key=errors.__getitem__)
        identity_best = original <= errors[best_other] + noise
        preact_ok = errors["full_preact"] <= original + noise
        shows = identity_best and preact_ok
        summary = {
            "pairwise_concordance": concordance,
            "pairs": len(pairs),
            "noise": noise,
            "identity_best_within_noise": identity_best,
            "full_preact_not_worse_within_noise": preact_ok,
        }
        text = (
            f"{len(worse_shortcuts)} of the {len(SHORTCUT_VARIANTS)} other shortcut kinds test worse than "
            f"the identity shortcut ({original:.2f}%); the best of them, {LABELS[best_other]}, reaches "
            f"{errors[best_other]:.2f}%. Full pre-activation reaches {errors['full_preact']:.2f}% against "
            f"the original unit's {original:.2f}% (the paper: 6.37% against 6.61%). Of the {len(pairs)} "
            f"pairs of variants the paper orders, ours orders {agree} alike ({100 * concordance:.0f}%; 50% "
            "is chance). "
        )
        if shows:
            text += (
                "The paper's headline findings show (within the sampling noise of about "
                f"{noise:.2f} points): no shortcut beats the identity, and full pre-activation is at least "
                "as good as the original unit."
            )
        else:
            text += (
                "The paper's headline findings (no shortcut beats the identity; full pre-activation at least "
                f"as good as the original unit, each within the sampling noise of about {noise:.2f} points) "
                "do not both show at this budget."
            )
        return text, shows, summary
