"""The papers' published numbers that the reports set ours beside (test error in percent, CIFAR-10).

A value of None is a network the paper reports as failing ("fail": test error above 20%, Identity
Mappings Table 1) or does not report.
"""

from __future__ import annotations

# He et al. 2015, Table 6: ResNets on CIFAR-10 (option A), 64k iterations; for 110 layers the best of
# 5 runs ("6.43 (6.61 +- 0.16)": best, then mean and std).
CIFAR_TABLE6: dict[int, dict[str, float]] = {
    20: {"params_m": 0.27, "error": 8.75},
    32: {"params_m": 0.46, "error": 7.51},
    44: {"params_m": 0.66, "error": 7.17},
    56: {"params_m": 0.85, "error": 6.97},
    110: {"params_m": 1.7, "error": 6.43},
    1202: {"params_m": 19.4, "error": 7.93},
}

# He et al. 2015, Table 3: ImageNet validation, 10-crop testing, top-1 / top-5 error of 34-layer nets.
IMAGENET_TABLE3: dict[str, tuple[float, float]] = {
    "plain": (28.54, 10.02),
    "A": (25.03, 7.76),
    "B": (24.52, 7.46),
    "C": (24.19, 7.40),
}

# He et al. 2016 ("Identity Mappings"), Table 1: shortcut kinds on ResNet-110, CIFAR-10 (the gated rows
# with their best gate initialisation, b_g = -6; constant scaling with 0.5 on both paths).
SHORTCUT_KINDS_TABLE1: dict[str, float | None] = {
    "identity": 6.61,
    "constant_scaling": 12.35,
    "exclusive_gating": 8.70,
    "shortcut_only_gating": 6.91,
    "conv1x1": 12.22,
    "dropout": None,  # "fail"
}

# Identity Mappings Table 2: unit placements (Fig. 4), ResNet-110 (and ResNet-164), CIFAR-10.
UNITS_TABLE2: dict[str, dict[int, float]] = {
    "original": {110: 6.61, 164: 5.93},
    "bn_after_add": {110: 8.17, 164: 6.50},
    "relu_before_add": {110: 7.84, 164: 6.14},
    "relu_only_preact": {110: 6.71, 164: 5.91},
    "full_preact": {110: 6.37, 164: 5.46},
}
FAIL_THRESHOLD = 20.0  # Identity Mappings: "fail" means a test error higher than 20%
