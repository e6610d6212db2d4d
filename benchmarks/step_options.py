"""Which speed options pay on this machine: resnet20's training step under each setting, alternately.

The settings the fast-cpu recipe chooses between: channels_last on/off, bfloat16 autocast on/off,
``torch.compile`` on/off, the optimizer implementation (for-loop, foreach, fused) and the batch size.
Synthetic 28x28 single-channel batches, so only the step itself is timed (the data pipeline is
measured by ``train_throughput``). Each setting is built and warmed up once (compilation included),
then the settings run in turn for several rounds; images/s medians and each setting's speed
relative to the first one.

Run one setting list of your own: ``python -m benchmarks step_options --configs "bs=128,cl=1" "bs=128,cl=0"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from .harness import BenchOptions, Comparison, alternate, markdown_table, write_result
from .steps import OPTIMIZER_IMPLS, StepOptions, make_step, synthetic_batch

# The brief's questions, each against the same baseline (the fast-cpu recipe's setting at batch 128).
BASELINE = "bs=128,cl=1"
DEFAULT_CONFIGS = (
    BASELINE,
    "bs=128,cl=0",
    "bs=128,cl=1,amp=bf16",
    "bs=128,cl=1,opt=foreach",
    "bs=128,cl=1,opt=fused",
    "bs=256,cl=1",
    "bs=512,cl=1",
    "bs=128,cl=1,compile=1",
)
KEYS = {
    "bs": "batch_size",
    "cl": "channels_last",
    "amp": "amp",
    "compile": "compile",
    "opt": "optimizer",
    "model": "model",
    "size": "image_size",
    "chans": "in_chans",
}


@dataclass(frozen=True)
class StepConfig:
    batch_size: int = 128
    options: StepOptions = StepOptions()
    model: str = "resnet20"
    image_size: int = 28
    in_chans: int = 1

    @classmethod
    def parse(cls, spec: str) -> StepConfig:
        """``"bs=128,cl=1,amp=bf16,compile=1,opt=fused"`` -> StepConfig (unknown keys raise)."""
        values: dict = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, _, value = item.partition("=")
            if key not in KEYS:
                raise ValueError(f"unknown step option {key!r} in {spec!r}; known: {', '.join(KEYS)}")
            field = KEYS[key]
            if field in ("channels_last", "compile"):
                values[field] = value.lower() in ("1", "true", "yes", "on")
            elif field in ("batch_size", "image_size", "in_chans"):
                values[field] = int(value)
            else:
                values[field] = None if value.lower() in ("", "none", "0", "off") else value
        step_fields = {
            k: values.pop(k) for k in ("channels_last", "amp", "compile", "optimizer") if k in values
        }
        if step_fields.get("optimizer", "loop") not in OPTIMIZER_IMPLS:
            raise ValueError(f"opt must be one of {', '.join(OPTIMIZER_IMPLS)}")
        # the fast-cpu recipe's loss: label smoothing 0.1
        return cls(options=StepOptions(label_smoothing=0.1, **step_fields), **values)

    def build(self) -> Callable[[], object]:
        import resnets

        torch.manual_seed(0)
        model = resnets.create_model(self.model, num_classes=10, in_chans=self.in_chans)
        x, y = synthetic_batch(self.batch_size, self.in_chans, self.image_size)
        return make_step(model, x, y, self.options)


def images_per_s(step: Callable[[], None], batch_size: int, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - t0)


def run(opts: BenchOptions, configs: list[str] | None = None, name: str = "step_options") -> str:
    table, _ = measure(opts, list(configs or DEFAULT_CONFIGS), name)
    return table


def measure(opts: BenchOptions, specs: list[str], name: str) -> tuple[str, Comparison]:
    """Each setting's training step, alternately; the table and the comparison, written as ``name``."""
    parsed = {spec: StepConfig.parse(spec) for spec in specs}
    images = opts.scale(2560, 512)  # per setting and round: short rounds, many of them, resist drifting load
    warmup = opts.scale(5, 2)
    runners, compile_s = {}, {}
    for spec, cfg in parsed.items():
        step = cfg.build()
        t0 = time.perf_counter()
        for _ in range(warmup):  # compiles, fills oneDNN's caches
            step()
        compile_s[spec] = time.perf_counter() - t0
        # the same number of images per round for every setting, so each round is comparable in length
        n = max(1, images // cfg.batch_size)
        runners[spec] = lambda s=step, b=cfg.batch_size, k=n: images_per_s(s, b, k)
    comparison = alternate(runners, opts.rounds, Comparison("images/s", higher_is_better=True))
    base = specs[0]
    rows = [
        [
            spec,
            comparison.median(spec),
            comparison.ratio(spec, base),
            max(comparison.values[spec]),
            max(comparison.values[spec]) / max(comparison.values[base]),
            compile_s[spec],
        ]
        for spec in specs
    ]
    models = ", ".join(sorted({f"{c.model} at {c.image_size}x{c.image_size}" for c in parsed.values()}))
    table = (
        f"Training step ({models}), synthetic batches, "
        f"{opts.rounds} alternating rounds of {images} images per setting, medians and best rounds\n\n"
        + markdown_table(
            ["setting", "images/s", f"x vs {base}", "best round img/s", "x (best rounds)", "warm-up s"], rows
        )
    )
    payload = {
        "configs": {s: asdict(c) for s, c in parsed.items()},
        "images_per_round": images,
        "warmup": warmup,
        "warmup_s": compile_s,
        "result": comparison.to_dict(),
        "quick": opts.quick,
    }
    write_result(name, payload, table, opts.results_dir)
    return table, comparison
