"""Segmentation models: torchvision's fcn_resnet50, deeplabv3_resnet50 and maskrcnn_resnet50_fpn weights load
strictly into ours and give equal outputs; output strides, the auxiliary head, other backbones, specs and
the errors of bad arguments."""

import pytest
import torch
import torchvision
from torchvision.models.detection import MaskRCNN
from torchvision.models.segmentation import FCN, DeepLabV3

from resnets.errors import CheckpointError, ConfigError
from resnets.models import registry
from resnets.segmentation import deeplabv3, fcn, mask_rcnn, segmenter_from_spec
from tests.helpers import randomize_bn

pytestmark = pytest.mark.usefixtures("one_thread")
segmentation = torchvision.models.segmentation


def assert_equal_outputs(reference: torch.nn.Module, ours: torch.nn.Module, inputs) -> None:
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.eval(), ours.eval()
    with torch.no_grad():
        expected, actual = reference(inputs), ours(inputs)
    torch.testing.assert_close(actual, expected)


def test_torchvision_fcn_resnet50_weights_load_and_outputs_are_equal():
    torch.manual_seed(0)
    reference = randomize_bn(segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True))
    ours = fcn("resnet50", 21)
    assert isinstance(ours, FCN) and list(ours.state_dict()) == list(reference.state_dict())
    assert_equal_outputs(reference, ours, torch.randn(1, 3, 64, 64))


def test_torchvision_deeplabv3_resnet50_weights_load_and_outputs_are_equal():
    torch.manual_seed(0)
    reference = randomize_bn(
        segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=True)
    )
    ours = deeplabv3("resnet50", 21)
    assert isinstance(ours, DeepLabV3) and ours.resnets_spec["kwargs"]["atrous_rates"] == [12, 24, 36]
    assert_equal_outputs(reference, ours, torch.randn(1, 3, 64, 64))


def test_torchvision_maskrcnn_resnet50_fpn_weights_load_and_detections_are_equal():
    torch.manual_seed(0)
    small = {"min_size": 96, "max_size": 96, "box_score_thresh": 0.0, "box_detections_per_img": 5}
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=91,
        rpn_pre_nms_top_n_test=50,
        rpn_post_nms_top_n_test=50,
        **small,
    )
    reference = randomize_bn(reference)
    # torchvision's 91 classes count the background; without backbone weights its backbone has trainable BN
    ours = mask_rcnn("resnet50", 90, backbone_norm="batchnorm", proposals_test=50, **small)
    assert isinstance(ours, MaskRCNN)
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.eval(), ours.eval()
    images = [torch.rand(3, 96, 80)]
    with torch.no_grad():
        expected, actual = reference(images)[0], ours(images)[0]
    assert len(expected["boxes"]) == 5 and expected["masks"].amax() > 0  # real detections with masks
    for key in ("boxes", "labels", "scores", "masks"):
        torch.testing.assert_close(actual[key], expected[key])


@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_sets_the_feature_map_and_outputs_have_the_input_size(output_stride):
    model = fcn("resnet18", 3, output_stride=output_stride).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features, outputs = model.backbone(x), model(x)
    size = 64 // output_stride
    assert features["out"].shape == (1, 512, size, size) and features["aux"].shape == (1, 256, size, size)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {"out": (1, 3, 64, 64), "aux": (1, 3, 64, 64)}


def test_the_aux_output_exists_only_with_aux_loss():
    model = deeplabv3("resnet18", 3, aux_loss=False, output_stride=16).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64))
    assert model.aux_classifier is None and list(outputs) == ["out"]
    assert not any(k.startswith("aux_classifier") for k in model.state_dict())
    # the paper's ASPP rates at output stride 16 (DeepLabV3 Sec. 3.3)
    assert model.resnets_spec["kwargs"]["atrous_rates"] == [6, 12, 18]


def test_a_cifar_backbone_keeps_its_own_strides_and_rebuilds_from_the_spec():
    torch.manual_seed(0)
    model = fcn("resnet_cifar", 4, in_chans=1, output_stride=None, backbone_kwargs={"depth": 8}).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        features, outputs = model.backbone(x), model(x)
    # CIFAR ResNets downsample by 4 in all; the aux head reads the second of their three stages
    assert features["out"].shape == (2, 64, 16, 16) and features["aux"].shape == (2, 32, 32, 32)
    assert outputs["out"].shape == outputs["aux"].shape == (2, 4, 64, 64)
    rebuilt = segmenter_from_spec(model.resnets_spec)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), outputs)


def test_mask_rcnn_on_a_cifar_backbone_rebuilds_from_the_spec():
    model = mask_rcnn("resnet_cifar", 2, in_chans=1, backbone_kwargs={"depth": 8}, fpn_channels=16)
    assert model.roi_heads.mask_roi_pool.featmap_names == ["0", "1", "2"]  # one per stage, as the boxes'
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3  # 2 classes and the background
    rebuilt = segmenter_from_spec(model.resnets_spec)
    assert isinstance(rebuilt, MaskRCNN) and rebuilt.resnets_spec == model.resnets_spec
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_bad_arguments_say_what_is_wrong_and_what_to_do(monkeypatch):
    with pytest.raises(ConfigError, match="unknown model 'resnet19'"):
        fcn("resnet19")
    with pytest.raises(ConfigError, match=r"output_stride must be 8 or 16 .* or None .*got 32"):
        deeplabv3("resnet18", output_stride=32)
    with pytest.raises(ConfigError, match=r"num_classes must be at least 1 .*got 0"):
        fcn("resnet18", 0)
    with pytest.raises(ConfigError, match="a detector needs at least one object class"):
        mask_rcnn("resnet18", 0)
    with pytest.raises(
        ConfigError,
        match=r"backbone resnet_cifar cannot dilate its stages to output_stride=8 .*pass output_stride=None",
    ):
        fcn("resnet_cifar", backbone_kwargs={"depth": 8})
    with pytest.raises(ConfigError, match=r"atrous_rates must be positive integers"):
        deeplabv3("resnet18", atrous_rates=(6, 0))
    with pytest.raises(ConfigError, match=r"Mask R-CNN is built on the FPN .*leave out head='c4'"):
        mask_rcnn("resnet18", 2, head="c4")

    def no_stage_features(**kwargs):  # a registered net that cannot return its feature maps
        if kwargs.get("features_only"):
            raise ConfigError("features_only is not supported")
        return registry.create_model("resnet_cifar", depth=8, **kwargs)

    monkeypatch.setitem(registry._MODELS, "flat_net", no_stage_features)
    with pytest.raises(ConfigError, match="backbone flat_net cannot give stage features"):
        fcn("flat_net", output_stride=None)
    with pytest.raises(CheckpointError, match="not a segmentation model's spec"):
        segmenter_from_spec({"name": "faster_rcnn", "kwargs": {}})
