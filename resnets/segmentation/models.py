"""Segmentation models on any registered backbone that has stage features, built from torchvision's own parts.

- ``fcn``: FCN (Long et al. 2015) as torchvision builds ``fcn_resnet50``: its ``FCNHead`` (3x3 conv, BN,
  ReLU, dropout, 1x1 conv to the classes) on the last stage, the scores upsampled bilinearly to the input.
- ``deeplabv3``: DeepLabV3 (Chen et al. 2017) as torchvision builds ``deeplabv3_resnet50``: its
  ``DeepLabHead`` (atrous spatial pyramid pooling, then a 3x3 conv and a 1x1 conv to the classes).
- ``mask_rcnn``: Mask R-CNN (He et al. 2017), torchvision's ``MaskRCNN``, which "extends Faster R-CNN by
  adding a branch for predicting an object mask": ``resnets.detection``'s Faster R-CNN with its FPN on our
  backbone, and torchvision's mask branch.

FCN and DeepLabV3 keep resolution as the papers do: ``output_stride`` 8 or 16 replaces the strides of
the last stages by dilations (``replace_stride_with_dilation``; torchvision's builders use 8), and
``aux_loss`` adds torchvision's auxiliary ``FCNHead`` on the stage before the last (layer3 of a ResNet).
The backbone is the ``features_only`` network itself, returning ``{"aux", "out"}`` as torchvision's
``IntermediateLayerGetter`` does, so the state-dict keys are torchvision's (``backbone.layer1...``,
``classifier...``, ``aux_classifier...``; ``backbone.body...`` for Mask R-CNN): torchvision's
``fcn_resnet50``, ``deeplabv3_resnet50`` and ``maskrcnn_resnet50_fpn`` weights load into the ``resnet50``
models strictly.

Every model records ``resnets_spec`` (``{"name", "kwargs"}``) as the zoo's models and the detectors do;
``segmenter_from_spec`` rebuilds it (fresh weights).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.segmentation import FCN, DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from ..detection.models import (
    backbone_network,
    detector_arguments,
    name_feature_maps,
    resolve_options,
    roi_align,
)
from ..errors import CheckpointError, ConfigError
from ..models.registry import create_model, model_options

OUTPUT_STRIDES = (8, 16, None)  # None: the backbone's own strides, nothing dilated
# DeepLabV3 Sec. 3.3: ASPP rates (6, 12, 18) at output stride 16, "doubled when output stride = 8"
# (torchvision's DeepLabHead default)
ATROUS_RATES = {16: (6, 12, 18)}
ATROUS_RATES_DEFAULT = (12, 24, 36)
MASK_ROI_SIZE = 14  # torchvision's mask RoIAlign (Mask R-CNN Fig. 4: 14 x 14 RoI features, 28 x 28 masks)
MASK_HEAD_WIDTH = 256  # the channels of torchvision's mask head (each of its MaskRCNNHeads' layers)
MASK_HEAD_LAYERS = 4  # torchvision's four 3x3 convs (Mask R-CNN Fig. 4, right)


# --- FCN and DeepLabV3 ------------------------------------------------------------------------------


def fcn(
    backbone: str = "resnet50",
    num_classes: int = 21,
    *,
    aux_loss: bool = True,
    output_stride: int | None = 8,
    in_chans: int = 3,
    backbone_kwargs: dict[str, Any] | None = None,
    backbone_weights: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> FCN:
    """FCN with torchvision's heads on ``backbone`` for ``num_classes`` classes (the background included:
    21 for Pascal VOC). ``backbone_weights``: a file ``resnets.weights.load_weights_into`` reads (a
    ``resnets train`` run, torchvision, timm); ``output_stride=None`` keeps the backbone's own strides (the
    only choice for nets that cannot dilate, such as the CIFAR ones)."""
    net, options = _semantic_backbone(
        backbone, num_classes, aux_loss, output_stride, in_chans, backbone_kwargs, backbone_weights, log
    )
    channels = net.feature_info.channels()
    model = FCN(net, FCNHead(channels[-1], num_classes), _aux_head(channels, num_classes, aux_loss))
    model.resnets_spec = {"name": "fcn", "kwargs": options}
    return model


def deeplabv3(
    backbone: str = "resnet50",
    num_classes: int = 21,
    *,
    aux_loss: bool = True,
    output_stride: int | None = 8,
    atrous_rates: Sequence[int] | None = None,
    in_chans: int = 3,
    backbone_kwargs: dict[str, Any] | None = None,
    backbone_weights: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> DeepLabV3:
    """DeepLabV3 with torchvision's heads on ``backbone``; the options are ``fcn``'s. ``atrous_rates``
    None: the paper's (6, 12, 18) at output stride 16, torchvision's (12, 24, 36) otherwise."""
    rates = ATROUS_RATES.get(output_stride, ATROUS_RATES_DEFAULT) if atrous_rates is None else atrous_rates
    if (
        isinstance(rates, str)
        or not isinstance(rates, Sequence)
        or not rates
        or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates)
    ):
        raise ConfigError(f"atrous_rates must be positive integers such as (12, 24, 36), got {rates!r}")
    net, options = _semantic_backbone(
        backbone, num_classes, aux_loss, output_stride, in_chans, backbone_kwargs, backbone_weights, log
    )
    channels = net.feature_info.channels()
    model = DeepLabV3(
        net, DeepLabHead(channels[-1], num_classes, rates), _aux_head(channels, num_classes, aux_loss)
    )
    model.resnets_spec = {"name": "deeplabv3", "kwargs": {**options, "atrous_rates": list(rates)}}
    return model


def _semantic_backbone(
    backbone: str,
    num_classes: int,
    aux_loss: bool,
    output_stride: int | None,
    in_chans: int,
    backbone_kwargs: dict[str, Any] | None,
    backbone_weights: str | os.PathLike | None,
    log: Callable[[str], None] | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone returning ``{"aux": the stage before the last, "out": the last}`` (only "out" without
    ``aux_loss``), and the model's spec kwargs."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(
            f"num_classes must be at least 1 (the classes a pixel can take, the background included: "
            f"21 for Pascal VOC), got {num_classes!r}"
        )
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(
            f"output_stride must be 8 or 16 (the last stages dilated; torchvision's FCN and DeepLabV3 "
            f"use 8) or None (the backbone's own strides), got {output_stride!r}"
        )
    if aux_loss not in (True, False):
        raise ConfigError(f"aux_loss must be True or False, got {aux_loss!r}")
    kwargs = dict(backbone_kwargs or {})
    if output_stride is not None:
        _check_dilation(backbone, output_stride, in_chans, kwargs)
        kwargs["output_stride"] = output_stride
    net = backbone_network(backbone, in_chans, kwargs, backbone_weights, log or (lambda message: None))
    name_feature_maps(net, {"aux": -2, "out": -1} if aux_loss else {"out": -1})
    options = {
        "backbone": backbone,
        "num_classes": num_classes,
        "aux_loss": aux_loss,
        "output_stride": output_stride,
        "in_chans": in_chans,
        "backbone_kwargs": dict(backbone_kwargs or {}),
    }
    return net, options


def _check_dilation(backbone: str, output_stride: int, in_chans: int, kwargs: dict[str, Any]) -> None:
    """Only backbones with an ``output_stride`` option (the ImageNet-family ResNets) can dilate."""
    with torch.device("meta"):  # its class and the other options' errors, without allocating weights
        probe = create_model(backbone, in_chans=in_chans, **kwargs)
    if "output_stride" not in model_options(type(probe), {}):
        raise ConfigError(
            f"backbone {backbone} cannot dilate its stages to output_stride={output_stride} (an option "
            f"of the ImageNet-family ResNets such as resnet50); pass output_stride=None to keep its own "
            f"strides"
        )


def _aux_head(channels: list[int], num_classes: int, aux_loss: bool) -> FCNHead | None:
    """torchvision's auxiliary head: an ``FCNHead`` on the stage before the last (layer3 of a ResNet)."""
    return FCNHead(channels[-2], num_classes) if aux_loss else None


# --- Mask R-CNN -------------------------------------------------------------------------------------


def mask_rcnn(
    backbone: str = "resnet50",
    num_classes: int = 90,
    *,
    backbone_weights: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    mask_head_width: int = MASK_HEAD_WIDTH,
    **detector_settings: Any,
) -> MaskRCNN:
    """Mask R-CNN for ``num_classes`` object classes, the background NOT counted (as
    ``resnets.detection.build_detector``; torchvision's ``num_classes=91`` is our 90) on ``backbone``
    with the FPN. ``detector_settings`` are ``resnets.detection.models.resolve_options``' keywords
    (sizes, anchors, ``backbone_norm`` ...): a Faster R-CNN built as ``build_detector`` builds it, then
    torchvision's mask branch (RoIAlign on the same pyramid levels, four 3x3 convs, a transposed conv, a
    1x1 conv per class), ``mask_head_width`` channels wide (torchvision's 256; fewer for small CPU runs:
    four 256-channel 3x3 convs on a 14 x 14 region cost some 0.46 G multiply-adds, ten times a CIFAR
    ResNet-20 on a 32 x 32 image)."""
    if detector_settings.get("head", "fpn") != "fpn":
        raise ConfigError(
            f"Mask R-CNN is built on the FPN (as torchvision's maskrcnn_resnet50_fpn); leave out "
            f"head={detector_settings['head']!r}"
        )
    if isinstance(mask_head_width, bool) or not isinstance(mask_head_width, int) or mask_head_width < 1:
        raise ConfigError(f"mask_head_width must be a positive number of channels, got {mask_head_width!r}")
    options = resolve_options(backbone, num_classes, backbone_weights=backbone_weights, **detector_settings)
    log = log or (lambda message: None)
    net = backbone_network(backbone, options["in_chans"], options["backbone_kwargs"], backbone_weights, log)
    arguments = detector_arguments(net, options)
    box_pool = arguments["box_roi_pool"]  # the mask branch pools the same levels
    width = mask_head_width
    model = MaskRCNN(
        **arguments,
        mask_roi_pool=roi_align([round(1 / scale) for scale in box_pool.scales], MASK_ROI_SIZE),
        mask_head=MaskRCNNHeads(options["fpn_channels"], (width,) * MASK_HEAD_LAYERS, 1),
        mask_predictor=MaskRCNNPredictor(width, width, options["num_classes"] + 1),
    )
    model.resnets_spec = {"name": "mask_rcnn", "kwargs": {**copy.deepcopy(options), "mask_head_width": width}}
    return model


# --- specs ------------------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[..., nn.Module]] = {"fcn": fcn, "deeplabv3": deeplabv3, "mask_rcnn": mask_rcnn}


def segmenter_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a segmentation model (fresh weights) from its ``resnets_spec``."""
    if (
        not isinstance(spec, dict)
        or spec.get("name") not in BUILDERS
        or not isinstance(spec.get("kwargs"), dict)
    ):
        raise CheckpointError(
            f"not a segmentation model's spec ({', '.join(BUILDERS)}): {spec!r:.200}; a classifier's or a "
            f"detector's checkpoint is read by `resnets eval` or `resnets detect`"
        )
    try:
        return BUILDERS[spec["name"]](**copy.deepcopy(spec["kwargs"]))
    except TypeError as exc:
        raise CheckpointError(
            f"a segmentation spec this resnets cannot build ({exc}): {spec!r:.200}"
        ) from None
