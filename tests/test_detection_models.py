"""Detectors on the zoo's backbones: the C4 head (RoI features from conv4, conv5 per region), the FPN,
frozen BN and stages, backbone weights through load_weights_into, rebuilding from the spec."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from resnets import create_model
from resnets.detection.models import build_detector, detector_from_spec
from resnets.errors import ConfigError
from resnets.weights import save_weights
from tests.helpers import randomize_bn

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {
    "min_size": 64,
    "max_size": 64,
    "proposals_train": 50,
    "proposals_test": 20,
    "box_batch_size_per_image": 16,
    "fpn_channels": 16,
    "representation_size": 32,
}


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    """A CIFAR-style ResNet-8 classifier for 1-channel images with non-trivial BN statistics, saved as
    `resnets train` saves its weights."""
    torch.manual_seed(1)
    model = randomize_bn(create_model("resnet_cifar", depth=8, in_chans=1, num_classes=10))
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_weights(model, path)
    return model, path


def test_c4_pools_rois_from_conv4_and_runs_conv5_per_region(classifier_file):
    classifier, path = classifier_file
    detector = build_detector(
        "resnet_cifar", 3, head="c4", in_chans=1, backbone_kwargs={"depth": 8}, backbone_weights=path, **SMALL
    ).eval()
    # the RoI pooling and the RPN read one map: conv4's (the stem and every stage but the last), stride 2 here
    assert detector.roi_heads.box_roi_pool.featmap_names == ["0"]
    assert detector.rpn.anchor_generator.sizes == ((16, 32, 64),)  # 8, 16, 32 x the stride
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        features = detector.backbone(x)
        expected = classifier.layer2(classifier.layer1(classifier.forward_stem(x)))
        assert list(features) == ["0"] and features["0"].shape == (2, 32, 32, 32)
        assert torch.allclose(features["0"], expected, atol=1e-5)
        # the head is conv5 (the classifier's layer3 with its weights), then global average pooling
        head = detector.roi_heads.box_head
        regions = torch.randn(5, 32, 14, 14)
        assert torch.allclose(head(regions), classifier.layer3(regions).mean((2, 3)), atol=1e-5)
    assert not hasattr(detector.backbone.net, "layer3") and detector.backbone.net.stage_names == [
        "layer1",
        "layer2",
    ]
    head_params = {id(p) for p in head.parameters()}
    assert head_params and not head_params & {id(p) for p in detector.backbone.parameters()}
    for name, value in classifier.layer3.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(head.stage.state_dict()[name], value)
    assert detector.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes and the background


def test_backbone_batchnorm_is_frozen_and_the_first_stages_fixed(classifier_file):
    classifier, path = classifier_file
    detector = build_detector(
        "resnet_cifar", 3, head="c4", in_chans=1, backbone_kwargs={"depth": 8}, backbone_weights=path, **SMALL
    )
    norms = [m for m in detector.modules() if isinstance(m, nn.BatchNorm2d | FrozenBatchNorm2d)]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    assert len(norms) == sum(isinstance(m, nn.BatchNorm2d) for m in classifier.modules())
    net = detector.backbone.net
    assert not any(p.requires_grad for p in [*net.conv1.parameters(), *net.layer1.parameters()])
    assert all(p.requires_grad for p in net.layer2.parameters())
    assert detector.resnets_spec["kwargs"]["frozen_stages"] == 2
    # the classifier's per-channel statistics are not recorded in a bare save_weights file: ImageNet's
    assert detector.transform.image_mean == [pytest.approx(0.449)]
    trainable = build_detector(
        "resnet_cifar", 3, in_chans=1, backbone_kwargs={"depth": 8}, backbone_norm="batchnorm", **SMALL
    )
    assert any(isinstance(m, nn.BatchNorm2d) for m in trainable.modules())
    assert all(p.requires_grad for p in trainable.backbone.parameters())  # no weights: nothing fixed


def test_fpn_over_every_stage_with_torchvisions_anchor_rule():
    detector = build_detector(
        "resnet_cifar", 2, head="fpn", in_chans=1, backbone_kwargs={"depth": 8}, **SMALL
    )
    with torch.no_grad():
        features = detector.backbone(torch.rand(1, 1, 64, 64))
    assert list(features) == ["0", "1", "2", "pool"]
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert all(f.shape[1] == 16 for f in features.values())
    assert detector.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,))  # 8 x each level's stride
    assert detector.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2"]


@pytest.mark.parametrize("head, scales", [("fpn", [1.0, 0.5, 0.25]), ("c4", [0.5])])
def test_roi_align_scales_are_the_strides_whatever_the_first_image(head, scales):
    # torchvision would infer them from its first batch: a 34-pixel-high image padded to 64 reads as
    # stride 1/2 on level "0" (64 / 34 rounds to 2), and that scale would stay for every later image
    detector = build_detector("resnet_cifar", 2, head=head, in_chans=1, backbone_kwargs={"depth": 8}, **SMALL)
    detector.eval()
    with torch.no_grad():
        detector([torch.rand(1, 34, 64)])
    assert detector.roi_heads.box_roi_pool.scales == scales


def test_c4_on_vgg_and_preactivation_backbones_registers_every_parameter_once():
    vgg = build_detector("vgg11", 2, head="c4", **SMALL)
    head = list(vgg.roi_heads.box_head.stage)
    assert [m.out_channels for m in head if isinstance(m, nn.Conv2d)] == [512, 512]  # conv5_1, conv5_2
    assert isinstance(head[-1], nn.MaxPool2d)
    keys = [k for k in vgg.state_dict() if k.endswith("weight")]
    assert len(set(map(id, vgg.parameters()))) == len(list(vgg.parameters()))
    assert not any("features.16" in k for k in keys if k.startswith("backbone."))  # moved to the head
    preact = build_detector(
        "preact_resnet_cifar", 2, head="c4", in_chans=1, backbone_kwargs={"depth": 11}, **SMALL
    )
    assert preact.backbone.net.final_bn is None and isinstance(
        preact.roi_heads.box_head.final_bn, FrozenBatchNorm2d
    )


def test_torchvision_weights_and_rebuilding_from_the_spec(tmp_path):
    torch.manual_seed(2)
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    lines = []
    detector = build_detector(
        "resnet18", 2, head="fpn", in_chans=1, backbone_weights=path, log=lines.append, **SMALL
    )
    assert any("adapted conv1.weight from 3 to 1 input channels" in line for line in lines)
    conv1 = detector.backbone.body.conv1.weight
    assert torch.allclose(conv1, reference.conv1.weight.sum(1, keepdim=True))
    rebuilt = detector_from_spec(detector.resnets_spec)
    rebuilt.load_state_dict(detector.state_dict())
    # the backbone's keys are torchvision's (backbone.body.conv1...); those of detectors saved when it was
    # wrapped (backbone.body.net.conv1...) still load
    assert "backbone.body.conv1.weight" in detector.state_dict()
    wrapped = {
        k.replace("backbone.body.", "backbone.body.net.", 1): v for k, v in detector.state_dict().items()
    }
    rebuilt.load_state_dict(wrapped)
    x = [torch.rand(1, 64, 64)]
    detector.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(detector.backbone(x[0][None])["0"], rebuilt.backbone(x[0][None])["0"])
    with pytest.raises(ConfigError, match="unknown model 'resnet19'"):
        build_detector("resnet19", 2)
    with pytest.raises(ConfigError, match="unknown detection head 'c5'; choose one of fpn, c4"):
        build_detector("resnet_cifar", 2, head="c5", backbone_kwargs={"depth": 8})
