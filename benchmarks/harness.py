"""Side-by-side measurement: ours and a peer run alternately in one process, medians and ratios.

Timings on a shared 2-core machine are noisy, so every benchmark alternates the contenders for
several rounds and reports medians; only ratios measured in the same run are quoted.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass
class Comparison:
    """Per-round values of one metric for several contenders (e.g. images/s of ours and the peer)."""

    metric: str
    higher_is_better: bool
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])

    def ratio(self, ours: str, peer: str) -> float:
        """How many times better ours is than the peer (>1 means ours wins)."""
        a, b = self.median(ours), self.median(peer)
        return a / b if self.higher_is_better else b / a

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "rounds": self.values,
            "median": {k: self.median(k) for k in self.values},
        }


def alternate(contenders: dict[str, Callable[[], float]], rounds: int, comparison: Comparison) -> Comparison:
    """Run each contender once per round, in turn, ``rounds`` times; record what each returns."""
    for _ in range(rounds):
        for name, run in contenders.items():
            comparison.add(name, run())
    return comparison


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass(frozen=True)
class BenchOptions:
    """What every benchmark is given by ``python -m benchmarks``."""

    quick: bool = False  # a few steps on small inputs: checks that the benchmark runs, numbers indicative
    rounds: int = 3  # alternations of ours and the peers
    data_dir: str | None = None  # Fashion-MNIST (default: the project's search path)
    checkpoint: str | None = None  # a trained Fashion-MNIST run for the int8 accuracy check
    time_cap: float = 1800.0  # seconds each contender of the time-to-accuracy benchmark may train
    peer_time_cap: float | None = None  # the peer's cap in time_to_accuracy (None: time_cap)
    recipe_set: tuple[str, ...] = ()  # KEY=VALUE changes to ours' fast-cpu recipe (to try a setting)
    long_epochs: int = 16  # time_to_accuracy: epochs of ours' fashion-long run for 94% (0: skip it)
    recipes: tuple[str, ...] = ()  # time_to_accuracy: only these recipes (the most accurate ones)
    results_dir: Path = RESULTS_DIR
    device: str | None = None  # None: CUDA when present, else CPU (resnets.runtime.select_device)

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @property
    def torch_device(self) -> torch.device:
        from resnets.runtime import select_device

        return select_device(self.device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer measures it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_info() -> dict:
    """CPU model and the instruction-set extensions that decide the fast paths (bf16, VNNI, AMX)."""
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["model"] = value.strip()
        elif key.strip() == "flags":
            wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
            info["flags"] = [f for f in value.split() if f in wanted]
            break
    return info


def machine_info() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_info(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_result(name: str, payload: dict, table: str, directory: Path = RESULTS_DIR) -> Path:
    """Write ``<directory>/<name>.json`` and ``<directory>/<name>.md``; return the markdown path."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "machine": machine_info(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        **payload,
    }
    (directory / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = directory / f"{name}.md"
    md.write_text(table + "\n")
    return md


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def logged_images_per_s(
    train: Callable[[object], dict],
    *,
    data_dir: str | None,
    warmup: int,
    log_every: int,
    batch: int,
    opts: BenchOptions,
    what: str,
) -> float:
    """One short run of a ``resnets`` training function (``train(RunOptions) -> summary``) in a temporary
    folder; images/s over its logged windows after ``warmup`` steps (``batch`` images a step)."""
    import tempfile

    from resnets.runs import read_steps
    from resnets.train.recipes import RunOptions

    with tempfile.TemporaryDirectory(prefix="resnets-bench-") as tmp:
        run = RunOptions(
            output=tmp,
            data_dir=data_dir,
            progress="none",
            log_every=log_every,
            plot=False,
            keep_last=1,
            device=str(opts.torch_device),
        )
        result = train(run)
        windows = [s for s in read_steps(Path(tmp) / "steps.jsonl") if s["iteration"] > warmup]
    if result.get("interrupted") or not windows:
        raise KeyboardInterrupt(f"ours' {what} run stopped before its timed steps")
    images = len(windows) * log_every * batch
    return images / sum(log_every * batch / w["images_per_s"] for w in windows)
