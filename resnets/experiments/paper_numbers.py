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

# He et al. 2015, Tables 7 and 8: Faster R-CNN with VGG-16 or ResNet-101 as the backbone, everything else
# equal (appendix A). Table 7: PASCAL VOC mAP@.5 (%), 2007 test trained on 07+12, 2012 test on 07++12.
# Table 8: COCO val mAP@.5 and mAP@[.5, .95] (%), trained on COCO train.
DETECTION_TABLE7_VOC: dict[str, dict[str, float]] = {
    "VGG-16": {"voc07": 73.2, "voc12": 70.4},
    "ResNet-101": {"voc07": 76.4, "voc12": 73.8},
}
DETECTION_TABLE8_COCO: dict[str, dict[str, float]] = {
    "VGG-16": {"ap50": 41.5, "ap": 21.2},
    "ResNet-101": {"ap50": 48.4, "ap": 27.2},
}

# The survey's CIFAR-10 comparison (test error in percent with the standard augmentation, "C10+";
# parameters in millions, None where the source prints none): the lecture's table of ResNet and its rivals.
# Where a paper gives a best run and a mean, the mean (the lecture's figure) is listed.
SURVEY_CIFAR10: dict[str, dict[str, float | str | None]] = {
    "Maxout": {"params_m": None, "error": 9.38, "source": "He et al. 2015, Table 6"},
    "NIN": {"params_m": None, "error": 8.81, "source": "He et al. 2015, Table 6"},
    "DSN": {"params_m": None, "error": 8.22, "source": "He et al. 2015, Table 6"},
    "FitNet-19": {"params_m": 2.5, "error": 8.39, "source": "He et al. 2015, Table 6"},
    "Highway-19": {"params_m": 2.3, "error": 7.72, "source": "He et al. 2015, Table 6 (best 7.54)"},
    "ResNet-110": {"params_m": 1.7, "error": 6.61, "source": "He et al. 2015, Table 6 (best 6.43)"},
    "ResNet-1202": {"params_m": 19.4, "error": 7.93, "source": "He et al. 2015, Table 6"},
    "pre-act ResNet-164": {
        "params_m": 1.7,
        "error": 5.46,
        "source": "He et al. 2016 (Identity Mappings), Table 2",
    },
    "pre-act ResNet-110": {
        "params_m": 1.7,
        "error": 6.37,
        "source": "He et al. 2016 (Identity Mappings), Table 2, full pre-activation",
    },
    "pre-act ResNet-1001": {"params_m": 10.2, "error": 4.92, "source": "Identity Mappings, Table 4"},
    "WRN-40-4": {"params_m": 8.9, "error": 4.53, "source": "Zagoruyko and Komodakis 2016"},
    "WRN-16-8": {"params_m": 11.0, "error": 4.27, "source": "Zagoruyko and Komodakis 2016"},
    "WRN-28-10": {"params_m": 36.5, "error": 4.00, "source": "Zagoruyko and Komodakis 2016"},
    "FractalNet-20": {
        "params_m": 38.6,
        "error": 4.60,
        "source": "Larsson et al. 2017, Table 1, drop-path + dropout (5.22 without; 4.68 "
        "deepest column alone)",
    },
    "FractalNet-20 (no drop-path)": {
        "params_m": 38.6,
        "error": 5.22,
        "source": "Larsson et al. 2017, Table 1, with augmentation, without drop-path or dropout",
    },
    "DenseNet-40 (k=12)": {"params_m": 1.0, "error": 5.24, "source": "Huang et al. 2017, Table 2"},
    "DenseNet-BC-100 (k=12)": {"params_m": 0.8, "error": 4.51, "source": "Huang et al. 2017, Table 2"},
    "DenseNet-BC-250 (k=24)": {"params_m": 15.3, "error": 3.62, "source": "Huang et al. 2017, Table 2"},
    "DenseNet-BC-190 (k=40)": {"params_m": 25.6, "error": 3.46, "source": "Huang et al. 2017, Table 2"},
    "RoR-3-WRN58-4 + SD": {"params_m": None, "error": 3.77, "source": "Zhang et al. (RoR), abstract"},
    "Multi-ResNet (best)": {"params_m": None, "error": 3.73, "source": "Abdi and Nahavandi 2016, abstract"},
}

# Xie et al. 2017 (ResNeXt), Table 3: ResNet-50-sized nets of about 4.1 GFLOPs, cardinality x bottleneck
# width of the first stage, ImageNet-1K top-1 validation error (224x224 single crop).
RESNEXT_TABLE3: dict[tuple[int, int], float] = {
    (1, 64): 23.9,
    (2, 40): 23.0,
    (4, 24): 22.6,
    (8, 14): 22.3,
    (32, 4): 22.2,
}

# Zagoruyko and Komodakis 2016 (Wide Residual Networks), Table 4 (as the lecture reprints it): (depth, k)
# -> parameters (M) and CIFAR-10 test error (%), no dropout, standard augmentation.
WRN_TABLE4: dict[tuple[int, int], dict[str, float]] = {
    (40, 1): {"params_m": 0.6, "error": 6.85},
    (40, 2): {"params_m": 2.2, "error": 5.33},
    (40, 4): {"params_m": 8.9, "error": 4.97},
    (40, 8): {"params_m": 35.7, "error": 4.66},
    (28, 10): {"params_m": 36.5, "error": 4.17},
    (28, 12): {"params_m": 52.5, "error": 4.33},
    (22, 8): {"params_m": 17.2, "error": 4.38},
    (22, 10): {"params_m": 26.8, "error": 4.44},
    (16, 8): {"params_m": 11.0, "error": 4.81},
    (16, 10): {"params_m": 17.1, "error": 4.56},
}

# He et al. 2016 (Identity Mappings), Table 3: CIFAR-10 test error (%) of the bottleneck ResNets with the
# original and with the full pre-activation unit; parameters (millions) from Table 4 (ResNet-1001, 10.2M)
# and Table 2 (ResNet-164, 1.7M). Table 4 also gives ResNet-1001's pre-activation mean over 5 runs,
# 4.89 +- 0.14. (CIFAR-100, Table 3: ResNet-164 25.16 / 24.33, ResNet-1001 27.82 / 22.71.) The basic-unit
# ResNet-110 pair is Table 2's (UNITS_TABLE2: 6.61 / 6.37).
IDENTITY_1000_TABLE3: dict[int, dict[str, float]] = {
    164: {"params_m": 1.7, "original": 5.93, "preact": 5.46},
    1001: {"params_m": 10.2, "original": 7.61, "preact": 4.92},
}

# Veit, Wilber and Belongie 2016 ("Residual Networks Behave Like Ensembles of Relatively Shallow Networks"):
# no table; what their figures show, read off them. Fig. 3 (CIFAR-10): deleting any one layer of a VGG net
# drops it to chance (90% error on 10 classes), deleting one unit of ResNet-110 (54 units) changes its error
# by about a point or less, the downsampling units somewhat more. Fig. 5(a): deleting up to 20 units at
# random raises ResNet-110's error smoothly; Fig. 5(b): so does re-ordering them as the Kendall tau falls.
# "cost_gap" is the gap their Fig. 3 implies between a VGG layer's deletion cost and a ResNet unit's, in
# points: the VGG net from about 8% to chance against about a point (approximate, read off the plot).
VEIT_2016: dict[str, float | int | str] = {
    "network": "ResNet-110",
    "dataset": "CIFAR-10",
    "units": 54,
    "chance_error": 90.0,
    "vgg_one_deletion_error": 90.0,
    "deleted_up_to": 20,
    "cost_gap": 80.0,
}

# The COCO 2015 segmentation entry the ResNet paper's abstract names (1st place): Multi-task Network
# Cascades (Dai, He and Sun, CVPR 2016, Sec. 5, COCO test-dev), instance-mask mAP (%) with the same
# system on VGG-16 and on ResNet-101.
SEGMENTATION_MNC_COCO: dict[str, dict[str, float]] = {
    "VGG-16": {"ap50": 39.7, "ap": 19.5},
    "ResNet-101": {"ap50": 44.3, "ap": 24.6},
}
