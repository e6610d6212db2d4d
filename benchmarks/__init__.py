"""Side-by-side benchmarks of resnets against what users would otherwise run (``python -m benchmarks``).

Not part of the test suite: the numbers depend on the machine and on what else runs on it.
Each module has ``run(opts: BenchOptions) -> str`` (the markdown table it wrote to results/).
"""

from __future__ import annotations

# name -> module, in the order ``python -m benchmarks`` runs them
BENCHMARKS = {
    "step_options": "benchmarks.step_options",
    "cpu_paths": "benchmarks.cpu_paths",
    "train_throughput": "benchmarks.train_throughput",
    "augment_throughput": "benchmarks.augment_throughput",
    "inference": "benchmarks.inference_speed",
    "int8": "benchmarks.int8_accuracy",
    "utilisation": "benchmarks.utilisation",
    "profile": "benchmarks.profile_step",
    "time_to_accuracy": "benchmarks.time_to_accuracy",
    "gpu_utilisation": "benchmarks.gpu_utilisation",
    "detection_throughput": "benchmarks.detection_throughput",
    "segmentation_throughput": "benchmarks.segmentation_throughput",
}
GPU_ONLY = {"gpu_utilisation"}  # left out of the default run on a machine without CUDA
