"""The paper's testing protocols against direct computations on small images."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_bn

import resnets
from resnets.errors import ConfigError, DataError
from resnets.evaluate import (
    PAPER_SCALES,
    confusion_matrix,
    evaluate,
    flip_logits,
    fully_convolutional_scores,
    make_tta,
    mean_of_softmax,
    multiscale_logits,
    per_class_accuracy,
    ten_crop_logits,
    topk_correct,
    topk_errors,
)
from resnets.plots import confusion_matrix_figure as save_confusion_matrix


@pytest.fixture(scope="module")
def cifar_net():
    return randomize_bn(resnets.create_model("resnet20", num_classes=7, in_chans=1))


# -- counting -----------------------------------------------------------------------------------
def test_topk_counts_and_errors_on_a_worked_example():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    targets = torch.tensor([2, 0, 0])
    # sample 0: ranked (1, 2, 0); sample 1: (0, ...); sample 2: ranked (2, 1, 0)
    assert topk_correct(logits, targets, (1, 2, 5)) == [1, 2, 3]  # k=5 clamps to the 3 classes
    errors = topk_errors(logits, targets, (1, 2))
    assert errors == pytest.approx([200 / 3, 100 / 3])


def test_confusion_matrix_and_per_class_accuracy():
    logits = F.one_hot(torch.tensor([0, 1, 1, 2, 0]), 4).float()  # predictions
    targets = torch.tensor([0, 1, 2, 2, 2])
    matrix = confusion_matrix(logits, targets, 4)
    expected = torch.zeros(4, 4, dtype=torch.long)
    for t, p in [(0, 0), (1, 1), (2, 1), (2, 2), (2, 0)]:
        expected[t, p] += 1
    assert torch.equal(matrix, expected)
    acc = per_class_accuracy(matrix)
    assert acc[:3].tolist() == pytest.approx([1.0, 1.0, 1 / 3]) and math.isnan(acc[3])


def test_confusion_matrix_png(tmp_path):
    path = tmp_path / "cm.png"
    save_confusion_matrix(torch.tensor([[5, 1], [2, 7]]), ["cat", "dog"], path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]


# -- 10-crop ------------------------------------------------------------------------------------
def test_ten_crop_is_the_average_of_ten_explicit_crops(cifar_net):
    x = torch.randn(2, 1, 20, 24)  # shorter side already 20: no resize, so crops are exact slices
    square = x[..., :, 2:22]  # AlexNet: the central 20 x 20 square of the resized image
    c = 16
    crops = [
        square[..., :c, :c],
        square[..., :c, -c:],
        square[..., -c:, :c],
        square[..., -c:, -c:],
        square[..., 2 : 2 + c, 2 : 2 + c],
    ]
    crops += [crop.flip(-1) for crop in crops]
    with torch.no_grad():
        expected = torch.stack([cifar_net(crop).softmax(1) for crop in crops]).mean(0)
        got = ten_crop_logits(cifar_net, x, resize=20, crop=c).exp()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(1), torch.ones(2))


def test_ten_crop_batches_like_single_images(cifar_net):
    x = torch.randn(3, 1, 30, 26)
    with torch.no_grad():
        batched = ten_crop_logits(cifar_net, x, resize=18, crop=16)
        single = torch.cat([ten_crop_logits(cifar_net, x[i : i + 1], resize=18, crop=16) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_ten_crop_rejects_crop_larger_than_resize(cifar_net):
    with pytest.raises(ConfigError, match="crop size 32"):
        ten_crop_logits(cifar_net, torch.randn(1, 1, 28, 28), resize=28, crop=32)


# -- multi-scale fully-convolutional -----------------------------------------------------------
# One model of each family; input side at which the last feature map is 1x1.
FAMILIES = [
    ("resnet20", 4),
    ("plain20", 4),
    ("resnet18", 32),
    ("preact_resnet18", 32),
    ("preact_resnet164", 4),
    ("resnext50_32x4d", 32),
    ("wrn16_8", 4),
]


@pytest.mark.parametrize("name,side", FAMILIES)
def test_fully_convolutional_equals_forward_at_a_1x1_map(name, side):
    model = randomize_bn(resnets.create_model(name, num_classes=6))
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert fully_convolutional_scores(model, x).shape == (2, 6, 1, 1)
        dense = fully_convolutional_scores(model, x).flatten(1)
        torch.testing.assert_close(dense, model(x), rtol=1e-4, atol=1e-5)
        got = multiscale_logits(model, x, scales=(side,), flip=False).softmax(1)
        torch.testing.assert_close(got, model(x).softmax(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet18"])
def test_multiscale_averages_positions_flips_and_scales(name):
    model = randomize_bn(resnets.create_model(name, num_classes=5))
    x = torch.randn(2, 3, 40, 50)
    scales = (40, 64) if name == "preact_resnet18" else (12, 20)  # maps of 2x2 and 2x3, or 3x4 and 5x7
    with torch.no_grad():
        per_view = []
        for size in scales:  # sizes chosen so that the long side is a whole number: 50 * size / 40
            resized = (
                x
                if size == 40
                else F.interpolate(
                    x, size=(size, size * 5 // 4), mode="bilinear", antialias=True, align_corners=False
                )
            )
            for view in (resized, resized.flip(-1)):
                feats = model.forward_features(view)
                assert feats.shape[-2:] != (1, 1)  # the map has several positions
                probs = [
                    model.fc(feats[:, :, i, j]).softmax(1)
                    for i in range(feats.shape[2])
                    for j in range(feats.shape[3])
                ]
                per_view.append(torch.stack(probs).mean(0))
        expected = torch.stack(per_view).mean(0)
        got = multiscale_logits(model, x, scales=scales).exp()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_multiscale_averaging_logits_over_positions_is_the_forward_at_each_scale():
    model = randomize_bn(resnets.create_model("resnet20", num_classes=5))
    x = torch.randn(2, 3, 16, 20)
    with torch.no_grad():
        views = [model(x), model(x.flip(-1))]
        up = F.interpolate(x, size=(24, 30), mode="bilinear", antialias=True, align_corners=False)
        views += [model(up), model(up.flip(-1))]
        expected = torch.stack([v.softmax(1) for v in views]).mean(0)
        got = multiscale_logits(model, x, scales=(16, 24), position_average="logits").exp()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="position_average"):
        multiscale_logits(model, x, scales=(16,), position_average="max")


def test_flip_logits_average_the_mirror():
    model = randomize_bn(resnets.create_model("resnet20", num_classes=4))
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
        torch.testing.assert_close(flip_logits(model, x).exp(), expected)


def test_mean_of_softmax_is_stable_for_extreme_logits():
    a = torch.tensor([[1000.0, -1000.0]])
    b = torch.tensor([[-1000.0, 1000.0]])
    out = mean_of_softmax([a, b])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.exp(), torch.tensor([[0.5, 0.5]]))


def test_make_tta_scales_the_paper_sizes_to_the_training_size():
    ten = make_tta("10crop", image_size=32)
    assert ten.keywords == {"resize": 37, "crop": 32}  # 256 * 32/224, 224 * 32/224
    assert make_tta("10crop", image_size=224).keywords == {"resize": 256, "crop": 224}
    assert make_tta("multiscale", image_size=224).keywords["scales"] == PAPER_SCALES
    assert make_tta("multiscale", image_size=28).keywords["scales"] == (28, 32, 48, 60, 80)
    assert make_tta("multiscale", image_size=28, scales=[20, 30]).keywords["scales"] == (20, 30)
    with pytest.raises(ConfigError, match="choose one of"):
        make_tta("5crop")


# -- the loop -----------------------------------------------------------------------------------
def _batches(n_batches=3, batch=8, classes=7, side=16):
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randn(batch, 1, side, side, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(n_batches)
    ]


def test_evaluate_matches_a_direct_computation(cifar_net):
    batches = _batches()
    cifar_net.train()
    bn_mean = cifar_net.bn1.running_mean.clone()
    result = evaluate(cifar_net, batches, confusion=True)
    assert cifar_net.training  # mode restored
    assert torch.equal(cifar_net.bn1.running_mean, bn_mean)  # evaluated in eval mode: BN stats untouched
    cifar_net.eval()
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        logits = cifar_net(x)
    assert result["images"] == 24
    assert result["top1_correct"] == (logits.argmax(1) == y).sum()
    assert result["top1_error"] == pytest.approx(100 * (logits.argmax(1) != y).float().mean().item())
    top5 = logits.topk(5, 1).indices.eq(y[:, None]).any(1)
    assert result["top5_error"] == pytest.approx(100 * (1 - top5.float().mean().item()))
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert result["confusion"].sum() == 24
    assert result["confusion"].diagonal().sum() == (logits.argmax(1) == y).sum()


def test_evaluate_with_flip_uses_the_averaged_probabilities(cifar_net):
    batches = _batches(n_batches=1)
    result = evaluate(cifar_net, batches, tta="flip")
    x, y = batches[0]
    with torch.no_grad():
        probs = (cifar_net(x).softmax(1) + cifar_net(x.flip(-1)).softmax(1)) / 2
    assert result["loss"] == pytest.approx(F.nll_loss(probs.log(), y).item(), rel=1e-5)
    assert result["top1_error"] == pytest.approx(100 * (probs.argmax(1) != y).float().mean().item())


def test_top5_is_clamped_to_the_number_of_classes():
    model = resnets.create_model("resnet20", num_classes=3, in_chans=1)
    result = evaluate(model, _batches(classes=3))
    assert result["top5_k"] == 3 and result["top5_error"] == 0.0


def test_labels_beyond_the_model_classes_are_a_data_error(cifar_net):
    x, _ = _batches(n_batches=1)[0]
    with pytest.raises(DataError, match="label 9 is out of range.*7 classes"):
        evaluate(cifar_net, [(x, torch.full((8,), 9))])
    with pytest.raises(DataError, match="no images"):
        evaluate(cifar_net, [])


def test_confusion_matrix_and_top1_agree_on_tied_scores():
    from resnets.evaluate import confusion_matrix, per_class_accuracy, topk_correct

    # bfloat16 logits of a barely trained net tie often; both counts must pick the same class
    generator = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (500, 10), generator=generator).float()
    targets = torch.randint(0, 10, (500,), generator=generator)
    matrix = confusion_matrix(logits, targets, 10)
    assert int(matrix.diagonal().sum()) == topk_correct(logits, targets, (1,))[0]
    assert per_class_accuracy(matrix).shape == (10,)
