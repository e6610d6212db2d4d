"""Faster R-CNN detectors on any registered backbone that has stage features (torchvision's detector).

Two ways to join backbone and detector:

- ``head="fpn"``: torchvision's Feature Pyramid Network over every stage's output (and a max-pooled
  level above the last), RoIAlign on the pyramid level that fits each box, a two-layer MLP per region.
  This is torchvision's ``fasterrcnn_resnet50_fpn`` built on our backbone.
- ``head="c4"``: the paper's design (He et al. 2015, appendix A): "we view the conv layers of ImageNet
  classification as shared with the RPN": conv1 to conv4 (the stem and every stage but the last) compute
  one stride-16 map for the RPN and the RoI pooling; "RoI pooling is performed before conv5_1. On this
  RoI-pooled feature, all layers of conv5_x and up are adopted for each region, playing the roles of
  VGG-16's fc layers": the last stage runs per region, then global average pooling and the class and box
  layers. RoIAlign (14 x 14, so that conv5's stride gives 7 x 7) replaces the paper's RoI max pooling, as
  in Detectron's C4 models.

The backbone's BatchNorm layers become ``FrozenBatchNorm2d`` by default: "the BN layers are fixed ... we
use the mean and variance computed on ImageNet" (appendix A), since detection batches are too small for
batch statistics. Backbone weights come from a file ``resnets.weights.load_weights_into`` reads (a
``resnets train`` run, torchvision, timm), so a classifier trained here becomes a detector's backbone.

A detector records ``resnets_spec`` (``{"name": "faster_rcnn", "kwargs": ...}``) as the zoo's models do,
so checkpoints, resume and ``model.safetensors`` treat it like any model; ``detector_from_spec`` rebuilds it.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.poolers import initLevelMapper

from ..checkpoints import load_checkpoint, load_state_into
from ..errors import CheckpointError, ConfigError, first_line
from ..models.base import ResNetBase
from ..models.classifier import Classifier
from ..models.registry import create_model, list_models
from ..runs import RunFolder
from ..weights import load_weights_into, load_weights_metadata, read_state_dict

DETECTOR = "faster_rcnn"
SEGMENTERS = ("fcn", "deeplabv3", "mask_rcnn")  # resnets.segmentation's models (checkpoints to send there)
HEADS = ("fpn", "c4")
BACKBONE_NORMS = ("frozen", "batchnorm")  # FrozenBatchNorm2d (the paper's fixed BN), or BN that trains
ANCHOR_SCALES_C4 = (8, 16, 32)  # x the stride: the paper's 128, 256, 512 anchors at stride 16
ANCHOR_SCALE_FPN = 8  # x each level's stride: torchvision's 32 ... 512 for strides 4 ... 64
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --- the backbone -----------------------------------------------------------------------------------


def resolve_weights(path: str | os.PathLike) -> Path:
    """A weights file, or a run folder's ``model.safetensors`` (its newest checkpoint without one)."""
    path = Path(path)
    if path.is_dir():
        folder = RunFolder(path)
        for candidate in (folder.weights_path, folder.last):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"{path} holds neither {folder.weights_path.name} nor {folder.last.name}: not a "
            f"finished or started `resnets train` run"
        )
    return path


def weights_normalization(path: str | os.PathLike) -> tuple[list[float], list[float]] | None:
    """The per-channel mean and std (in [0, 1] units) a ``resnets train`` classifier saw, from its weights
    file or checkpoint; None for files of other libraries. A per-pixel mean image is averaged per channel:
    a detector's images have other sizes."""
    path = resolve_weights(path)
    try:
        if path.suffix == ".safetensors":
            record = json.loads(load_weights_metadata(path).get("data", "null"))
        else:
            record = load_checkpoint(path).get("data")
    except (CheckpointError, ValueError):
        return None
    norm = (record or {}).get("normalization") if isinstance(record, dict) else None
    if not isinstance(norm, dict):
        return None
    mean, std = (
        torch.tensor(norm["mean"], dtype=torch.float64),
        torch.tensor(norm["std"], dtype=torch.float64),
    )
    return mean.flatten(1).mean(1).tolist(), std.flatten().tolist()


def backbone_network(
    name: str,
    in_chans: int,
    kwargs: dict[str, Any],
    weights: str | os.PathLike | None,
    log: Callable[[str], None],
) -> nn.Module:
    """The backbone with every feature map (``features_only``), its weights loaded from ``weights``.

    The file is loaded into the whole classifier first (``load_weights_into`` checks every key and shape
    there, and adapts stem filters to ``in_chans``), then its feature layers are copied over."""
    if name not in list_models():
        create_model(name)  # the unknown-name error with its suggestions
    try:
        net = create_model(name, features_only=True, in_chans=in_chans, **kwargs)
    except ConfigError as exc:
        raise ConfigError(
            f"backbone {name} cannot give stage features ({first_line(exc)}); choose a backbone "
            f"with features_only support (resnets models)"
        ) from None
    if weights is None:
        return net
    path = resolve_weights(weights)
    state = read_state_dict(path)
    classifier = f"{net.pretrained_cfg.get('classifier', 'fc')}.weight"
    classes = int(state[classifier].shape[0]) if classifier in state else 0
    full = create_model(name, num_classes=classes, in_chans=in_chans, **kwargs)
    report = load_weights_into(full, path)
    for line in report.lines():
        log(f"backbone: {line}")
    result = net.load_state_dict(full.state_dict(), strict=False)
    if result.missing_keys:  # every feature layer is a layer of the classifier: cannot happen; guard anyway
        raise CheckpointError(f"{path}: the backbone's keys {result.missing_keys[:5]} did not load")
    return net


def freeze_batchnorm(module: nn.Module) -> int:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by a ``FrozenBatchNorm2d`` holding its statistics
    and affine parameters (appendix A: BN becomes a fixed linear map); returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.running_mean is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen.to(next(child.buffers()).device))
            count += 1
        else:
            count += freeze_batchnorm(child)
    return count


def stage_parts(net: nn.Module) -> list[list[nn.Parameter]]:
    """The backbone's parameters in forward order: the stem's, then each stage's."""
    stages = [list(getattr(net, name).parameters()) for name in net.stage_names]
    in_stages = {id(p) for params in stages for p in params}
    final = {id(p) for p in (net.final_bn.parameters() if getattr(net, "final_bn", None) is not None else ())}
    stem = [p for p in net.parameters() if id(p) not in in_stages and id(p) not in final]
    return [stem, *stages]


def freeze_stages(net: nn.Module, count: int) -> None:
    """No gradient for the first ``count`` parts (1: the stem, 2: the stem and the first stage, as
    Detectron's FREEZE_AT=2 and torchvision's trainable_layers=3)."""
    parts = stage_parts(net)
    if not 0 <= count <= len(parts):
        raise ConfigError(
            f"frozen_stages must be 0 to {len(parts)} (the stem and {len(parts) - 1} stages), got {count}"
        )
    for params in parts[:count]:
        for p in params:
            p.requires_grad_(False)


def name_feature_maps(net: nn.Module, names: dict[str, int]) -> nn.Module:
    """Make ``net`` (a ``features_only`` backbone) return ``{name: feature map}`` (an ordered dict; the
    indices count in its list of maps: 0 the stem's, k stage k's, -1 the last), as torchvision's
    ``IntermediateLayerGetter`` does. A forward hook rather than a wrapper module, so the state-dict keys stay
    the backbone's (``conv1.weight``, ``layer1.0...``): torchvision's detection and segmentation weights
    load as they are. Returns ``net``."""
    net.register_forward_hook(functools.partial(_named_maps, tuple(names.items())))
    return net


def _named_maps(
    names: tuple[tuple[str, int], ...], net: nn.Module, inputs: tuple, maps: list[torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((name, maps[index]) for name, index in names)


class BackboneFPN(nn.Module):
    """torchvision's ``BackboneWithFPN`` on our backbone, with its keys: ``body`` (the backbone, returning
    its stage outputs "0", "1", ...), ``fpn``."""

    def __init__(self, net: nn.Module, out_channels: int) -> None:
        super().__init__()
        stages = len(net.feature_info) - 1  # the stem's map is not a pyramid level
        self.body = name_feature_maps(net, {str(i): i + 1 for i in range(stages)})
        self.fpn = FeaturePyramidNetwork(
            net.feature_info.channels()[1:], out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels
        self.register_load_state_dict_pre_hook(_rename_wrapped_body_keys)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def _rename_wrapped_body_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Detectors saved before the backbone kept torchvision's keys held it as ``body.net``."""
    old = f"{prefix}body.net."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[f"{prefix}body.{key[len(old) :]}"] = state_dict.pop(key)


class C4Trunk(nn.Module):
    """conv1 to conv4: the stem and every stage but the last, shared by the RPN and the RoI head."""

    def __init__(self, net: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.net = net
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict([("0", self.net.forward_features(x))])


class C4Head(nn.Module):
    """conv5 on each RoI-pooled region, then global average pooling: the region's representation."""

    def __init__(self, stage: nn.Module, final_bn: nn.Module | None) -> None:
        super().__init__()
        self.stage = stage
        self.final_bn = final_bn
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage(x)
        if self.final_bn is not None:  # pre-activation nets end with BN-ReLU (Identity Mappings Sec. 4.1)
            x = self.relu(self.final_bn(x))
        return x.mean((2, 3))


def split_last_stage(net: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """Take the last stage (and a pre-activation net's final BN) out of ``net``; returns them. ``net``'s
    ``forward_features`` then ends at the stage before, and each parameter is registered once."""
    if getattr(type(net), "final_act", None) not in (ResNetBase.final_act, Classifier.final_act):
        raise ConfigError(
            f"{type(net).__name__} ends with its own final layers; the C4 head splits plain "
            f"stages only: use head='fpn'"
        )
    name = net.stage_names[-1]
    stage = getattr(net, name)
    if isinstance(stage, nn.Module):
        delattr(net, name)
    else:  # a view of modules registered elsewhere (VGG's features.N): move them out of their container
        modules = list(stage)
        paths = {id(m): path for path, m in net.named_modules()}
        for module in modules:
            parent_path, _, child = paths[id(module)].rpartition(".")
            parent = net.get_submodule(parent_path) if parent_path else net
            if isinstance(parent, nn.Sequential) and child.isdigit():
                parent[int(child)] = nn.Identity()
            else:
                setattr(parent, child, nn.Identity())
        stage = nn.Sequential(*modules)
    net.stage_names = net.stage_names[:-1]
    final_bn = getattr(net, "final_bn", None)
    if final_bn is not None:
        net.final_bn = None
    return stage, final_bn


# --- the detector -----------------------------------------------------------------------------------


def _check(options: dict[str, Any]) -> None:
    if options["head"] not in HEADS:
        raise ConfigError(f"unknown detection head {options['head']!r}; choose one of {', '.join(HEADS)}")
    if options["backbone_norm"] not in BACKBONE_NORMS:
        raise ConfigError(
            f"backbone_norm must be one of {', '.join(BACKBONE_NORMS)}, got {options['backbone_norm']!r}"
        )
    if options["num_classes"] < 1:
        raise ConfigError("a detector needs at least one object class")
    if options["min_size"] < 1 or options["max_size"] < options["min_size"]:
        raise ConfigError(f"need 1 <= min_size <= max_size, got {options['min_size']}, {options['max_size']}")
    for key in ("image_mean", "image_std"):
        if len(options[key]) != options["in_chans"]:
            raise ConfigError(
                f"{key} has {len(options[key])} values for {options['in_chans']} input channels"
            )


def input_normalization(
    backbone_weights: str | os.PathLike | None, in_chans: int
) -> tuple[list[float], list[float]]:
    """(mean, std) of a network's inputs: the statistics the backbone's resnets classifier was trained
    with, else ImageNet's (their average on each channel of a non-RGB input)."""
    norm = weights_normalization(backbone_weights) if backbone_weights is not None else None
    if norm is not None:
        return norm
    if in_chans == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [sum(IMAGENET_MEAN) / 3] * in_chans, [sum(IMAGENET_STD) / 3] * in_chans


def resolve_options(
    backbone: str,
    num_classes: int,
    *,
    head: str = "fpn",
    backbone_weights: str | os.PathLike | None = None,
    in_chans: int = 3,
    backbone_kwargs: dict[str, Any] | None = None,
    backbone_norm: str = "frozen",
    frozen_stages: int | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    anchor_sizes: Sequence[int] = (),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    fpn_channels: int = 256,
    representation_size: int = 1024,
    roi_output_size: int | None = None,
    rpn_batch_size_per_image: int = 256,
    box_batch_size_per_image: int = 512,
    proposals_train: int = 2000,
    proposals_test: int = 1000,
    box_score_thresh: float = 0.05,
    box_detections_per_img: int = 100,
) -> dict[str, Any]:
    """The options of a detector for ``num_classes`` object classes (the background not counted) on
    ``backbone``, defaults resolved and checked: its ``resnets_spec`` kwargs.

    ``frozen_stages`` None: the stem and the first stage stay fixed when ``backbone_weights`` are given
    (Detectron, torchvision), nothing without them. ``image_mean``/``image_std`` None: the statistics the
    backbone's resnets classifier was trained with, else ImageNet's. ``anchor_sizes`` (): 8, 16, 32 x the
    stride for C4 (the paper's 128, 256, 512), 8 x each level's stride for FPN (torchvision's)."""
    norm = input_normalization(backbone_weights, in_chans)
    options = {
        "backbone": backbone,
        "backbone_kwargs": dict(backbone_kwargs or {}),
        "head": head,
        "num_classes": int(num_classes),
        "in_chans": int(in_chans),
        "backbone_norm": backbone_norm,
        "frozen_stages": (2 if backbone_weights is not None else 0)
        if frozen_stages is None
        else int(frozen_stages),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "image_mean": [float(v) for v in (image_mean if image_mean is not None else norm[0])],
        "image_std": [float(v) for v in (image_std if image_std is not None else norm[1])],
        "anchor_sizes": [int(s) for s in anchor_sizes],
        "aspect_ratios": [float(r) for r in aspect_ratios],
        "fpn_channels": int(fpn_channels),
        "representation_size": int(representation_size),
        "roi_output_size": int(roi_output_size or (14 if head == "c4" else 7)),
        "rpn_batch_size_per_image": int(rpn_batch_size_per_image),
        "box_batch_size_per_image": int(box_batch_size_per_image),
        "proposals_train": int(proposals_train),
        "proposals_test": int(proposals_test),
        "box_score_thresh": float(box_score_thresh),
        "box_detections_per_img": int(box_detections_per_img),
    }
    _check(options)
    return options


def build_detector(
    backbone: str,
    num_classes: int,
    *,
    backbone_weights: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> FasterRCNN:
    """A Faster R-CNN for ``num_classes`` object classes (the background not counted) on ``backbone``;
    ``settings`` are ``resolve_options``' keywords (the head, sizes, anchors, ...)."""
    options = resolve_options(backbone, num_classes, backbone_weights=backbone_weights, **settings)
    log = log or (lambda message: None)
    net = backbone_network(backbone, options["in_chans"], options["backbone_kwargs"], backbone_weights, log)
    return _assemble(net, options)


def detector_arguments(net: nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """torchvision's ``FasterRCNN`` keyword arguments (``MaskRCNN`` takes them too) for ``options`` on the
    backbone ``net``: its BN frozen and first stages fixed as the options say, the FPN or C4 head."""
    if options["backbone_norm"] == "frozen":
        freeze_batchnorm(net)
    freeze_stages(net, options["frozen_stages"])
    channels, reductions = net.feature_info.channels(), net.feature_info.reduction()
    ratios = tuple(options["aspect_ratios"])
    if options["head"] == "fpn":
        body = BackboneFPN(net, options["fpn_channels"])
        strides = [*reductions[1:], reductions[-1] * 2]  # the stages, then LastLevelMaxPool's level
        sizes = options["anchor_sizes"] or [ANCHOR_SCALE_FPN * s for s in strides]
        if len(sizes) != len(strides):
            raise ConfigError(
                f"FPN anchors: give one size per pyramid level ({len(strides)}: the "
                f"{len(strides) - 1} stages and the pooled level), got {sizes}"
            )
        anchors = AnchorGenerator(tuple((s,) for s in sizes), (ratios,) * len(sizes))
        pool = roi_align(strides[:-1], options["roi_output_size"])
        box_head: nn.Module = TwoMLPHead(
            options["fpn_channels"] * options["roi_output_size"] ** 2, options["representation_size"]
        )
        representation = options["representation_size"]
    else:
        if len(net.stage_names) < 2:
            raise ConfigError(
                "the C4 head needs a backbone of at least two stages (the last runs per region)"
            )
        stride = reductions[-2]
        trunk_channels = channels[-2]
        stage, final_bn = split_last_stage(net)
        body = C4Trunk(net, trunk_channels)
        sizes = options["anchor_sizes"] or [scale * stride for scale in ANCHOR_SCALES_C4]
        anchors = AnchorGenerator((tuple(sizes),), (ratios,))
        pool = roi_align([stride], options["roi_output_size"])
        box_head = C4Head(stage, final_bn)
        representation = channels[-1]
    return {
        "backbone": body,
        "num_classes": None,
        "min_size": options["min_size"],
        "max_size": options["max_size"],
        "image_mean": options["image_mean"],
        "image_std": options["image_std"],
        "rpn_anchor_generator": anchors,
        "box_roi_pool": pool,
        "box_head": box_head,
        "box_predictor": FastRCNNPredictor(representation, options["num_classes"] + 1),
        "rpn_pre_nms_top_n_train": options["proposals_train"],
        "rpn_post_nms_top_n_train": options["proposals_train"],
        "rpn_pre_nms_top_n_test": options["proposals_test"],
        "rpn_post_nms_top_n_test": options["proposals_test"],
        "rpn_batch_size_per_image": options["rpn_batch_size_per_image"],
        "box_batch_size_per_image": options["box_batch_size_per_image"],
        "box_score_thresh": options["box_score_thresh"],
        "box_detections_per_img": options["box_detections_per_img"],
    }


def roi_align(strides: Sequence[int], output_size: int) -> MultiScaleRoIAlign:
    """torchvision's RoIAlign over the levels ``"0", "1", ...`` of these strides (sampling ratio 2), their
    scales set from the strides. torchvision would infer them at its first call, from the feature maps'
    and the images' heights rounded to a power of 2, and keep them: small images padded by more than
    sqrt(2) (34 pixels high, padded to 64 for size_divisible=32) get twice the true scale, and a model's
    first batch decides for all later ones (in PyTorch; an ONNX file keeps its trace's)."""
    pool = MultiScaleRoIAlign([str(i) for i in range(len(strides))], output_size, sampling_ratio=2)
    pool.scales = [1.0 / stride for stride in strides]
    levels = [round(math.log2(stride)) for stride in strides]
    pool.map_levels = initLevelMapper(
        levels[0], levels[-1], canonical_scale=pool.canonical_scale, canonical_level=pool.canonical_level
    )
    return pool


def _assemble(net: nn.Module, options: dict[str, Any]) -> FasterRCNN:
    detector = FasterRCNN(**detector_arguments(net, options))
    detector.resnets_spec = {"name": DETECTOR, "kwargs": copy.deepcopy(options)}
    return detector


def detector_from_spec(spec: dict[str, Any]) -> FasterRCNN:
    """Rebuild a detector (fresh weights) from its ``resnets_spec``."""
    if not isinstance(spec, dict) or spec.get("name") != DETECTOR or not isinstance(spec.get("kwargs"), dict):
        if isinstance(spec, dict) and spec.get("name") in SEGMENTERS:
            raise CheckpointError(
                f"a {spec['name']} segmenter's checkpoint, not a detector's: use `resnets segment "
                f"eval|predict|export` for it"
            )
        raise CheckpointError(
            f"not a detector's spec: {spec!r:.200}; is this a classification checkpoint? "
            f"Use `resnets eval` for those"
        )
    options = copy.deepcopy(spec["kwargs"])
    try:
        _check(options)
        net = create_model(
            options["backbone"],
            features_only=True,
            in_chans=options["in_chans"],
            **options["backbone_kwargs"],
        )
        return _assemble(net, options)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"a detector spec this resnets cannot build ({exc!r}): {spec!r:.200}") from None


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[FasterRCNN, dict]:
    """A detection run's newest checkpoint (a run folder or a ``.pt``): the detector in eval mode and the
    checkpoint (its ``data`` entry holds the class names)."""
    path = Path(path)
    file = RunFolder(path).last if path.is_dir() else path
    ckpt = load_checkpoint(file)
    detector = detector_from_spec(ckpt["model"])
    load_state_into(detector, ckpt["state_dict"], source=f"checkpoint {str(file)!r}")
    return detector.to(device).eval(), ckpt


def class_names(ckpt: dict[str, Any]) -> list[str]:
    """The object classes of a detection checkpoint, in label order (label 1 is the first)."""
    classes = (ckpt.get("data") or {}).get("classes")
    if not isinstance(classes, list):
        raise CheckpointError(
            "the checkpoint records no class names: it was not written by `resnets detect train`"
        )
    return classes
