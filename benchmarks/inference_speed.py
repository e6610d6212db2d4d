"""ResNet-50 inference at 224x224: batch-1 latency and batch-32 throughput, ours against the peers.

Peers: torchvision's ``resnet50`` in eager mode (``inference_mode``), the same network exported
to ONNX and run by ONNX Runtime with its default session options, and OpenVINO (when installed)
with its latency hint. Ours: ``resnets.inference.optimize_for_inference`` on resnets' resnet50
holding the same weights, one contender per backend, and the opt-in int8 path (calibrated on
random images here: only its speed is measured; its accuracy is ``int8``'s benchmark).
Every contender's logits are compared with torchvision eager's (max abs diff).

The float32 ceiling: batch-1 latency is compute-bound, so each contender's rate (the network's
FLOPs, counted by ``FlopCounterMode``, per second) is set beside the fastest float32 kernels of each
library measured in the same run: MKL's sgemm (torch.matmul), ONNX Runtime's MatMul (MLAS) and a
oneDNN 3x3 convolution (torch, channels_last), to show how far any float32 path could go.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from .harness import BenchOptions, Comparison, alternate, markdown_table, write_result
from .utilisation import gemm_gflops

PEER = "torchvision eager"


def peer_onnxruntime(model: torch.nn.Module, example: Tensor) -> Callable[[Tensor], Tensor]:
    """What a user does with onnxruntime: export the eager model, open a session with the defaults."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        buffer,
        dynamo=True,
        input_names=["input"],
        dynamic_shapes=({0: "batch"},),
        external_data=False,
        verbose=False,
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def peer_openvino(model: torch.nn.Module, example: Tensor) -> Callable[[Tensor], Tensor] | None:
    """OpenVINO's documented PyTorch path (convert_model, compile for CPU, latency hint); None if absent."""
    try:
        import openvino as ov
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = ov.convert_model(model, example_input=example)
    converted.reshape({converted.inputs[0]: ov.PartialShape([-1, *example.shape[1:]])})
    compiled = ov.Core().compile_model(converted, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda x: torch.from_numpy(request.infer([x.numpy()])[0].copy())


def contenders(opts: BenchOptions, size: int) -> tuple[dict[str, Callable[[Tensor], Tensor]], dict, Tensor]:
    """name -> callable(images) -> logits, the flags of ours, and torchvision's model's input example."""
    import torchvision

    import resnets
    from resnets.inference import BACKENDS, optimize_for_inference, quantize_int8

    torch.manual_seed(0)
    peer = torchvision.models.resnet50().eval()
    _calibrate_bn(peer, size)  # random-init BN statistics would make every logit the same
    ours = resnets.create_model("resnet50").eval()
    ours.load_state_dict(peer.state_dict())  # torchvision's keys: the same network, the same weights
    example = torch.randn(1, 3, size, size)

    def eager(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return peer(x)

    runs: dict[str, Callable[[Tensor], Tensor]] = {
        PEER: eager,
        "onnxruntime (defaults)": peer_onnxruntime(peer, example),
    }
    openvino = peer_openvino(peer, example)
    if openvino is not None:
        runs["openvino (latency hint)"] = openvino
    flags = {}
    for backend in BACKENDS:
        try:
            fast = optimize_for_inference(ours, example, backend=backend)
        except Exception as exc:  # e.g. openvino not installed: report, keep going
            flags[f"ours ({backend})"] = {"error": str(exc)}
            continue
        runs[f"ours ({backend})"] = fast
        flags[f"ours ({backend})"] = fast.flags
    calibration = torch.randn(opts.scale(64, 8), 3, size, size)
    int8 = quantize_int8(ours, calibration)
    runs["ours int8 (onnxruntime)"] = int8
    flags["ours int8 (onnxruntime)"] = int8.flags
    return runs, flags, example


def _calibrate_bn(model: torch.nn.Module, size: int) -> None:
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, size, size))
    model.eval()


def model_flops(model: torch.nn.Module, x: Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def ort_matmul_gflops(n: int, repeat: int) -> float:
    """ONNX Runtime's float32 MatMul (its MLAS kernels, chosen by CPUID) of n x n by n x n."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in "ab"]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        inputs,
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"a": torch.randn(n, n).numpy(), "b": torch.randn(n, n).numpy()}
    session.run(None, feed)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        session.run(None, feed)
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e9


def onednn_conv_gflops(repeat: int, batch: int = 32, channels: int = 256, size: int = 28) -> float:
    """A 3x3 float32 convolution through oneDNN (torch, channels_last): ResNet-50's commonest kind."""
    x = torch.randn(batch, channels, size, size).to(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.nn.functional.conv2d(x, w, padding=1)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeat):
            torch.nn.functional.conv2d(x, w, padding=1)
        seconds = time.perf_counter() - t0
    return 2 * batch * size * size * channels * channels * 9 * repeat / seconds / 1e9


def float32_ceiling(opts: BenchOptions) -> Comparison:
    n, batch = opts.scale(2048, 256), opts.scale(32, 2)
    kernels = {
        f"MKL sgemm {n}x{n} (torch.matmul)": lambda: gemm_gflops(n, opts.scale(10, 2)),
        f"ONNX Runtime MatMul {n}x{n} (MLAS)": lambda: ort_matmul_gflops(n, opts.scale(10, 2)),
        f"oneDNN conv 3x3, 256 ch, 28x28, batch {batch} (torch channels_last)": lambda: onednn_conv_gflops(
            opts.scale(5, 1), batch=batch
        ),
    }
    return alternate(kernels, opts.rounds, Comparison("float32 GFLOP/s", higher_is_better=True))


def latency(fn: Callable[[Tensor], Tensor], x: Tensor, repeat: int) -> float:
    """Median milliseconds of one call."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2]


def run(opts: BenchOptions) -> str:
    import torchvision

    size = opts.scale(224, 64)
    batch = opts.scale(32, 4)
    runs, flags, example = contenders(opts, size)
    x1 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    xb = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reference = runs[PEER](xb)
    diffs = {}
    for name, fn in runs.items():  # warm-up (compiles for both shapes) and the accuracy check
        fn(x1)
        diffs[name] = float((fn(xb).float() - reference).abs().max())
    lat = alternate(
        {n: (lambda f=f: latency(f, x1, opts.scale(10, 3))) for n, f in runs.items()},
        opts.rounds,
        Comparison("batch-1 latency (ms)", higher_is_better=False),
    )
    thr = alternate(
        {n: (lambda f=f: batch / latency(f, xb, opts.scale(3, 2)) * 1000) for n, f in runs.items()},
        opts.rounds,
        Comparison(f"batch-{batch} images/s", higher_is_better=True),
    )
    flops = model_flops(torchvision.models.resnet50().eval(), x1)
    ceiling = float32_ceiling(opts)
    rows = [
        [
            name,
            lat.median(name),
            lat.median(name) / lat.median(PEER),
            flops / lat.median(name) / 1e6,
            thr.median(name),
            thr.ratio(name, PEER),
            f"{diffs[name]:.2g}" if "int8" not in name else f"({diffs[name]:.2g})",
        ]
        for name in runs
    ]
    half = 2 * flops / lat.median(PEER) / 1e6  # the rate batch-1 latency at 0.5x the peer's needs
    fastest = max(ceiling.median(k) for k in ceiling.values)
    table = (
        f"ResNet-50 inference, {size}x{size}, {torch.get_num_threads()} threads, {opts.rounds} "
        f"alternating rounds, medians. Latency ratio: ours/peer (lower is better); "
        f"throughput: x the peer; GFLOP/s = the network's {flops / 1e9:.2f} GFLOP per image "
        f"/ latency.\n\n"
        + markdown_table(
            [
                "contender",
                "batch-1 ms",
                f"x {PEER} latency",
                "batch-1 GFLOP/s",
                f"batch-{batch} img/s",
                f"x {PEER} throughput",
                "max abs logit diff",
            ],
            rows,
        )
        + "\n\nint8 logits differ by design (quantisation); its accuracy change is the int8 benchmark."
        + f"\n\nThe float32 ceiling: batch-1 latency at 0.5x {PEER} needs {half:.0f} GFLOP/s; the "
        f"fastest float32 kernel measured here reaches {fastest:.0f}.\n\n"
        + markdown_table(
            ["float32 kernel", "GFLOP/s"], [[kernel, ceiling.median(kernel)] for kernel in ceiling.values]
        )
    )
    payload = {
        "image_size": size,
        "batch": batch,
        "latency": lat.to_dict(),
        "throughput": thr.to_dict(),
        "max_abs_diff_vs_eager": diffs,
        "flags": flags,
        "quick": opts.quick,
        "flops_per_image": flops,
        "float32_ceiling": ceiling.to_dict(),
        "gflops_needed_for_half_latency": half,
    }
    write_result("inference", payload, table, opts.results_dir)
    return table
