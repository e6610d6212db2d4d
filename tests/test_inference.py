"""The fast inference path (BN folded, channels-last, ONNX Runtime / OpenVINO / compiled) matches eager
float32 logits; the int8 path is really int8, runs, and mostly predicts what the float model does."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_bn

import resnets
from resnets.errors import ConfigError
from resnets.inference import max_abs_diff, optimize_for_inference, quantize_int8

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@pytest.fixture(scope="module")
def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(resnets.create_model("resnet_cifar", depth=8, num_classes=10, in_chans=1))


def images(n: int, side: int = 28, chans: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, chans, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", ["onnxruntime", "eager", "compile", "openvino"])
def test_fast_path_matches_eager_logits(small_net, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    fast = optimize_for_inference(small_net, images(2), backend=backend)
    assert fast.flags["backend"] == backend and fast.flags["fold_bn"]
    assert fast.flags["channels_last"] == (backend in ("compile", "eager"))
    for n in (1, 5):  # the batch stays dynamic: other sizes than the example's
        x = images(n, seed=n)
        logits = fast(x)
        assert logits.shape == (n, 10) and logits.dtype == torch.float32
        assert max_abs_diff(fast, small_net, x) <= 1e-4


def test_fast_path_on_imagenet_and_preactivation_nets():
    # the ImageNet stem (maxpool, projection shortcuts) and a pre-activation net, whose
    # unit-opening BNs cannot fold: the path must still be exact
    for name, side in (("resnet18", 64), ("preact_resnet_cifar", 32)):
        kwargs = {"depth": 11} if name == "preact_resnet_cifar" else {}
        model = randomize_bn(resnets.create_model(name, num_classes=7, in_chans=3, **kwargs))
        fast = optimize_for_inference(model, images(1, side, 3), backend="onnxruntime")
        assert max_abs_diff(fast, model, images(3, side, 3, seed=5)) <= 1e-4


def test_fast_path_leaves_the_model_unchanged(small_net):
    small_net.train()
    before = {k: v.clone() for k, v in small_net.state_dict().items()}
    optimize_for_inference(small_net, images(1), backend="eager")
    assert small_net.training  # the caller's mode is kept; folding works on a copy
    assert all(torch.equal(before[k], v) for k, v in small_net.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in small_net.modules())
    small_net.eval()


def test_bad_inputs_raise_clear_errors(small_net):
    with pytest.raises(ConfigError, match="onnxruntime"):
        optimize_for_inference(small_net, images(1), backend="onnxrt")
    with pytest.raises(ConfigError, match="N x C x H x W"):
        optimize_for_inference(small_net, torch.zeros(1, 28, 28))
    with pytest.raises(ConfigError, match="at least one batch"):
        quantize_int8(small_net, [])
    with pytest.raises(ConfigError, match="qdq"):
        quantize_int8(small_net, images(4), fmt="int4")


def toy_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """10 classes, each a bright 7x7 square at its own place on noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 1, 28, 28, generator=g) * 0.3
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 4)
        x[i, 0, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7] += 2.0
    return x, y


@pytest.fixture(scope="module")
def trained_net() -> torch.nn.Module:
    torch.manual_seed(0)
    model = resnets.create_model("resnet_cifar", depth=8, num_classes=10, in_chans=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = toy_task(512, seed=0)
    model.train()
    for _ in range(3):
        for xb, yb in zip(x.split(64), y.split(64), strict=True):
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    return model.eval()


@pytest.mark.parametrize("fmt,int8_op", [("qdq", "DequantizeLinear"), ("qoperator", "QLinearConv")])
def test_int8_path_is_int8_and_agrees_with_float(trained_net, tmp_path, fmt, int8_op):
    x, y = toy_task(400, seed=1)
    with torch.inference_mode():
        eager = trained_net(x).argmax(1)
    assert (eager == y).float().mean() > 0.9  # a model that learnt the task, so agreement means something
    calibration, _ = toy_task(128, seed=2)
    path = tmp_path / "int8.onnx"
    int8 = quantize_int8(trained_net, calibration, fmt=fmt, path=path)
    assert int8.flags["dtype"] == "int8" and int8.flags["int8_format"] == fmt
    graph = onnx.load(str(path)).graph
    assert int8_op in {node.op_type for node in graph.node}
    conv_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in trained_net.modules())
    assert len(conv_weights) == convs  # every conv's weights are stored as int8
    predictions = int8(x).argmax(1)
    assert (predictions == eager).float().mean() >= 0.95
    assert 0 < max_abs_diff(int8, trained_net, x[:8])  # really quantised, not the float model
