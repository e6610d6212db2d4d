"""``python -m benchmarks results``: the model zoo's results table, as timm publishes its
``results-imagenet.csv`` and ``benchmark-infer-*.csv``.

One row per registered model (``resnets.list_models()``) in ``docs/results.csv``: its native input size,
parameters and mult-adds (``resnets.summary``), inference images/s at batch 1 and at batch 64, training
images/s (forward, backward and SGD step, at the batch the row names), and top-1 accuracy where trained
weights exist (ours, measured; and the publisher's stated one for the default published weights). Every
row names the date, the CPU, torch and the thread count. ``docs/results.md`` (also printed) is the
README-sized summary.

How it runs: eager PyTorch with the fast-cpu recipe's speed settings, so the precision is what
``resnets.runtime`` picks on this CPU (bfloat16 autocast where the CPU computes bfloat16, else float32)
and tensors are channels-last; random weights and synthetic inputs (speed does not depend on them).
Each measurement warms up once, then times iterations until ``--iterations`` or ``--seconds``, whichever
comes first, at least two; the rate is the batch over the median iteration. The plan (an estimate from
mult-adds) is printed before anything is measured; ``--plan`` prints it and stops. After each model the
rows so far are written atomically to ``<output stem>.partial.csv``: an interrupted run, started again
with the same command, keeps the rows measured on this CPU with this torch and measures the rest.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import gc
import io
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

import resnets
from resnets.errors import ResnetsError, closest_names
from resnets.io import write_text
from resnets.pretrained import get_weights, list_pretrained
from resnets.runtime import autocast, computes_natively, precision_name

from .harness import cpu_info, markdown_table
from .steps import AMP_DTYPES, StepOptions, make_step, synthetic_batch

DOCS = Path(__file__).resolve().parent.parent / "docs"
DEFAULT_OUTPUT = DOCS / "results.csv"
COLUMNS = (
    "model",
    "input_size",
    "in_chans",
    "num_classes",
    "param_count",
    "mult_adds",
    "infer_b1_img_s",
    "infer_batch",
    "infer_img_s",
    "train_batch",
    "train_img_s",
    "precision",
    "channels_last",
    "our_top1",
    "our_weights",
    "publisher_top1",
    "publisher_weights",
    "date",
    "cpu",
    "bf16",
    "cpu_flags",
    "torch",
    "threads",
    "note",
)
# A row of the partial file is kept only when these equal what this run would measure under
# (same network, batches, precision, CPU, torch and threads); timings and accuracy are not compared.
IDENTITY = (
    "model",
    "input_size",
    "in_chans",
    "num_classes",
    "param_count",
    "mult_adds",
    "infer_batch",
    "train_batch",
    "precision",
    "channels_last",
    "cpu",
    "bf16",
    "cpu_flags",
    "torch",
    "threads",
)
# The README-sized summary: the paper's CIFAR ResNets and plain nets, the ImageNet ResNets, one of
# each variant and family (rows of models that were not measured are left out).
SUMMARY_MODELS = (
    "resnet20",
    "resnet56",
    "resnet110",
    "resnet1202",
    "plain20",
    "plain56",
    "preact_resnet164",
    "preact_resnet1001",
    "resnext29_8x64d",
    "wrn28_10",
    "densenet_bc100_k12",
    "densenet_bc190_k40",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet50d",
    "seresnet50",
    "resnetv2_50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "densenet121",
    "vgg16_bn",
    "inception_v4",
    "inception_resnet_v2",
    "polynet",
)


@dataclass(frozen=True)
class Settings:
    """What is measured, and for how long."""

    infer_batch: int = 64
    # training batch: the largest power of two from min_train_batch to max_train_batch whose forward
    # pass stays within train_gmacs G mult-adds (64 for the CIFAR ResNets, 16 for ResNet-50, 8 for
    # ResNet-101 and VGG), so that the largest nets' steps take seconds, not minutes
    max_train_batch: int = 64
    min_train_batch: int = 8
    train_gmacs: float = 80.0
    iterations: int = 20  # timed iterations at most, per measurement
    seconds: float = 1.0  # timed seconds at most, per measurement (at least min_iterations are timed)
    min_iterations: int = 2
    warmup: int = 1

    def train_batch(self, mult_adds: int) -> int:
        batch = self.max_train_batch
        while batch > self.min_train_batch and batch * mult_adds > self.train_gmacs * 1e9:
            batch //= 2
        return max(batch, self.min_train_batch)


@dataclass(frozen=True)
class ModelInfo:
    """What the plan knows of a model before measuring it (from ``resnets.summary``, on the meta device)."""

    name: str
    input_size: tuple[int, int, int]  # (C, H, W): the model's native input (pretrained_cfg)
    num_classes: int
    param_count: int
    mult_adds: int  # at input_size, batch 1
    modules: int  # leaf modules: the per-call overhead of eager PyTorch grows with them

    def row(self, settings: Settings, env: dict[str, str]) -> dict[str, str]:
        c, h, w = self.input_size
        return {
            "model": self.name,
            "input_size": f"{h}x{w}",
            "in_chans": str(c),
            "num_classes": str(self.num_classes),
            "param_count": str(self.param_count),
            "mult_adds": str(self.mult_adds),
            "infer_batch": str(settings.infer_batch),
            "train_batch": str(settings.train_batch(self.mult_adds)),
            **env,
        }


def select_models(patterns: Iterable[str] | None) -> list[str]:
    """Registered names matching any fnmatch pattern (all when None), in the registry's order; a pattern
    that matches nothing is a ``ResnetsError`` (one line, with the closest names)."""
    names = resnets.list_models()
    if not patterns:
        return names
    patterns = list(patterns)
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            close = closest_names(pattern.strip("*?[]"), names)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ResnetsError(
                f"--models {pattern!r} matches no registered model.{hint} "
                f"`resnets models` lists all {len(names)}."
            )
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def describe(name: str) -> ModelInfo:
    """Input size, classes, parameters and mult-adds at the native input size, without any arithmetic."""
    with torch.device("meta"):
        model = resnets.create_model(name)
    input_size = tuple(model.pretrained_cfg["input_size"])
    info = resnets.summary(model, input_size=input_size)
    modules = sum(1 for m in model.modules() if not list(m.children()))
    return ModelInfo(
        name, info.input_size, model.num_classes, info.total_params, info.total_mult_adds, modules
    )


def environment(opts: StepOptions) -> dict[str, str]:
    """The columns that say where and how a row was measured."""
    cpu = cpu_info()
    bf16 = computes_natively(torch.device("cpu"), torch.bfloat16)
    return {
        "precision": precision_name(AMP_DTYPES.get(opts.amp)),
        "channels_last": str(opts.channels_last),
        "cpu": cpu["model"],
        "bf16": "yes" if bf16 else "no",
        "cpu_flags": " ".join(cpu["flags"]),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
    }


def step_options() -> StepOptions:
    """The fast-cpu recipe's speed settings on this CPU (autocast dtype resolved by resnets.runtime)."""
    from resnets.train.recipes import get_recipe

    return StepOptions.from_recipe(get_recipe("fast-cpu"), torch.device("cpu"))


def time_per_iteration(fn: Callable[[], object], settings: Settings) -> float:
    """Median seconds of one call of ``fn``: ``warmup`` calls, then calls until ``iterations`` or
    ``seconds`` (whichever first), at least ``min_iterations``."""
    for _ in range(settings.warmup):
        fn()
    times: list[float] = []
    while len(times) < settings.min_iterations or (
        len(times) < settings.iterations and sum(times) < settings.seconds
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(info: ModelInfo, settings: Settings, opts: StepOptions) -> dict[str, float]:
    """Images/s of inference at batch 1 and ``infer_batch`` and of training at the row's batch."""
    torch.manual_seed(0)
    model = resnets.create_model(info.name)
    dtype = AMP_DTYPES.get(opts.amp)
    memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
    model = model.eval().to(memory_format=memory_format)

    def inference_rate(batch: int) -> float:
        x = torch.randn(batch, *info.input_size).contiguous(memory_format=memory_format)

        def forward() -> None:
            with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
                model(x)

        return batch / time_per_iteration(forward, settings)

    rates = {"infer_b1_img_s": inference_rate(1), "infer_img_s": inference_rate(settings.infer_batch)}
    batch = settings.train_batch(info.mult_adds)
    x, y = synthetic_batch(
        batch, info.input_size[0], info.input_size[1], num_classes=max(info.num_classes, 1)
    )
    rates["train_img_s"] = batch / time_per_iteration(make_step(model, x, y, opts), settings)
    return rates


def accuracy_columns(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Per model: the top-1 of our shipped weights (measured by us: ``metrics["acc@1"]``; several joined
    by ";") and the publisher's stated top-1 of its default published weights (``metadata``; among the
    torchvision/timm entries, the one marked ``default``, else the model's first), from
    ``resnets.pretrained``; empty where there are none."""
    entries = [get_weights(n) for n in list_pretrained()]
    columns = {}
    for model in names:
        ours = [e for e in entries if e.model == model and e.shipped and _top1(e.metrics) is not None]
        published = [
            e for e in entries if e.model == model and not e.shipped and getattr(e, "source", "") != "resnets"
        ]
        default = next((e for e in published if getattr(e, "default", False)), published[:1] and published[0])
        columns[model] = {
            "our_top1": ";".join(_number(_top1(e.metrics)) for e in ours),
            "our_weights": ";".join(e.tag for e in ours),
        }
        if default and _top1(default.metadata) is not None:
            columns[model] |= {
                "publisher_top1": _number(_top1(default.metadata)),
                "publisher_weights": default.tag,
            }
    return columns


def _top1(values: dict | None) -> float | None:
    """``acc@1`` (torchvision's name) or ``top1`` (timm's), at the top level or under ``metrics``."""
    for d in (values or {}, (values or {}).get("metrics") or {}):
        for key in ("acc@1", "top1"):
            if isinstance(d.get(key), (int, float)):
                return float(d[key])
    return None


def _number(value: float) -> str:
    """Four significant digits, never in exponent form (0.0123, 1.234, 1234)."""
    if not math.isfinite(value) or value == 0:
        return str(value)
    decimals = max(0, 3 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


# --- the plan: seconds per model from mult-adds --------------------------------------------------------

# Assumed rates (G mult-adds per second; training per forward G mult-add, so img/s = rate / GMACs)
# and per-module overheads (s) of eager PyTorch, for a first run on 2 threads of a bfloat16 CPU (about
# what the 2-core AVX512-BF16 EPYC gave for ResNet-50, docs/performance.md; the AMX Xeon is faster).
# Once rows of this CPU exist in the partial file, the rates come from them.
DEFAULT_RATES = {"infer_b1_img_s": 60.0, "infer_img_s": 150.0, "train_img_s": 60.0}
OVERHEAD_PER_MODULE = {"infer_b1_img_s": 20e-6, "infer_img_s": 20e-6, "train_img_s": 80e-6}


def measured_rates(rows: Iterable[dict[str, str]]) -> dict[str, float] | None:
    """G mult-adds per second of each measurement, the median over measured rows of >= 1 GMACs (None
    without three such rows)."""
    rows = [r for r in rows if r.get("infer_img_s") and int(r["mult_adds"]) >= 1e9]
    if len(rows) < 3:
        return None
    return {
        key: statistics.median(int(r["mult_adds"]) / 1e9 * float(r[key]) for r in rows)
        for key in DEFAULT_RATES
    }


def estimate_seconds(info: ModelInfo, settings: Settings, rates: dict[str, float]) -> float:
    """Seconds to build and measure one model, as ``time_per_iteration`` will iterate."""
    total = 0.3 + info.param_count * 10e-9  # building it: random initialisation
    gmacs = info.mult_adds / 1e9
    for key, batch in (
        ("infer_b1_img_s", 1),
        ("infer_img_s", settings.infer_batch),
        ("train_img_s", settings.train_batch(info.mult_adds)),
    ):
        t = info.modules * OVERHEAD_PER_MODULE[key] + batch * gmacs / rates[key]
        timed = min(settings.iterations, max(settings.min_iterations, math.ceil(settings.seconds / t)))
        total += (settings.warmup + timed) * t
    return total


def _threads(count: str) -> str:
    return f"{count} thread{'' if count == '1' else 's'}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# --- the run ------------------------------------------------------------------------------------------


def partial_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.partial.csv")


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def csv_text(rows: Iterable[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: row.get(c, "") for c in COLUMNS} for row in rows)
    return buffer.getvalue()


def run_results(
    names: list[str],
    output: Path,
    settings: Settings | None = None,
    *,
    plan_only: bool = False,
    restart: bool = False,
    log: Callable[[str], None] = lambda text: print(text, flush=True),
) -> list[dict[str, str]]:
    """Measure ``names`` (keeping matching rows of the partial file unless ``restart``), write ``output``
    and return its rows; ``plan_only``: print the plan, measure and write nothing."""
    settings = settings or Settings()
    opts = step_options()
    env = environment(opts)
    partial = partial_path(output)
    log(f"planning {len(names)} models (resnets.summary at each native input size) ...")
    infos = [describe(n) for n in names]
    previous = {} if restart else {r["model"]: r for r in read_rows(partial)}
    # rows of models not selected now stay in the partial file, for the run they belong to
    others = [r for n, r in previous.items() if n not in set(names)]
    rows: dict[str, dict[str, str]] = {}
    for info in infos:
        planned, old = info.row(settings, env), previous.get(info.name)
        if old and not old.get("note") and all(old.get(k) == planned[k] for k in IDENTITY):
            rows[info.name] = old
    # the assumed rates are for 2 threads; rows measured here need no such guess
    assumed = {k: v * torch.get_num_threads() / 2 for k, v in DEFAULT_RATES.items()}
    rates = measured_rates(rows.values()) or assumed
    todo = [i for i in infos if i.name not in rows]
    estimates = {i.name: estimate_seconds(i, settings, rates) for i in todo}
    total = sum(estimates.values())
    source = "from the rows measured here" if rates is not assumed else "assumed: none measured here yet"
    log(
        f"plan: {len(todo)} of {len(infos)} models to measure ({len(rows)} kept from {partial}), "
        f"{sum(i.mult_adds for i in todo) / 1e9:.1f} G mult-adds per image in all; "
        f"estimate {_duration(total)} on {env['cpu']} ({_threads(env['threads'])}, {env['precision']}; "
        f"rates {source})"
    )
    if plan_only:
        for info in todo:
            log(
                f"  {info.name:24s} {info.mult_adds / 1e9:7.2f} GMACs  train batch "
                f"{settings.train_batch(info.mult_adds):2d}  ~{_duration(estimates[info.name])}"
            )
        return []
    started, spent_plan = time.perf_counter(), 0.0
    for k, info in enumerate(todo, 1):
        t0 = time.perf_counter()
        row = info.row(settings, env) | {"date": time.strftime("%Y-%m-%d")}
        try:
            row |= {key: _number(v) for key, v in measure(info, settings, opts).items()}
        except RuntimeError as exc:  # e.g. out of memory: say so in the row, measure the others
            row["note"] = f"failed: {str(exc).splitlines()[0][:200]}"
        gc.collect()
        rows[info.name] = row
        write_text(partial, csv_text([*(rows[n] for n in names if n in rows), *others]))
        spent_plan += estimates[info.name]
        left = (total - spent_plan) * (time.perf_counter() - started) / spent_plan
        rates_text = row.get("note") or (
            f"{row['infer_b1_img_s']} img/s at batch 1, {row['infer_img_s']} at {row['infer_batch']}, "
            f"training {row['train_img_s']} at {row['train_batch']}"
        )
        log(
            f"[{k}/{len(todo)}] {info.name}: {rates_text} "
            f"({time.perf_counter() - t0:.1f} s; about {_duration(left)} left)"
        )
    accuracy = accuracy_columns(names)
    final = [{c: (rows[n] | accuracy.get(n, {})).get(c, "") for c in COLUMNS} for n in names]
    write_text(output, csv_text(final))
    if others:
        write_text(partial, csv_text(others))
    else:
        partial.unlink(missing_ok=True)
    return final


def summary_markdown(rows: list[dict[str, str]], command: str, output: Path) -> str:
    """The README-sized table: SUMMARY_MODELS where measured (else every row), dated, CPU named."""
    if not rows:
        return "(no rows)"
    chosen = [r for r in rows if r["model"] in SUMMARY_MODELS] or rows
    first = rows[0]
    dates = sorted({r["date"] for r in rows if r.get("date")})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}" if dates else "?"
    header = [
        "model",
        "input",
        "params (M)",
        "GMACs",
        "img/s, batch 1",
        f"img/s, batch {first['infer_batch']}",
        "training img/s (batch)",
        "top-1 % (ours, weights)",
        "top-1 % (publisher's, weights)",
    ]
    table = []
    for r in chosen:
        failed = bool(r.get("note"))
        ours = f"{r['our_top1']} ({r['our_weights']})" if r.get("our_top1") else ""
        theirs = f"{r['publisher_top1']} ({r['publisher_weights']})" if r.get("publisher_top1") else ""
        table.append(
            [
                r["model"],
                r["input_size"],
                f"{int(r['param_count']) / 1e6:.2f}",
                f"{int(r['mult_adds']) / 1e9:.3f}",
                r["note"] if failed else r["infer_b1_img_s"],
                "" if failed else r["infer_img_s"],
                "" if failed else f"{r['train_img_s']} ({r['train_batch']})",
                ours,
                theirs,
            ]
        )
    bf16 = "with" if first["bf16"] == "yes" else "without"
    flags = first["cpu_flags"] or "none of the listed flags"
    layout = "channels-last" if first["channels_last"] == "True" else "contiguous"
    lines = [
        "# Results: the model zoo on this machine",
        "",
        f"Measured {when} on {first['cpu']} ({bf16} bfloat16 arithmetic; {flags}), "
        f"{_threads(first['threads'])}, torch {first['torch']}: eager PyTorch, {first['precision']}, "
        f"{layout} tensors, random weights and "
        "synthetic inputs at each model's native input size. Training: forward, backward and SGD step at the "
        "batch in brackets. Accuracy: ours is measured on the test set by us (shipped weights); the "
        "publisher's is what torchvision or timm state for the default published weights (ImageNet-1k).",
        "",
        f"Command: `{command}`. All {len(rows)} rows: `{_display_path(output)}`.",
        "",
        markdown_table(header, table),
    ]
    return "\n".join(lines)


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="PATTERN",
        help="only the registered models matching these fnmatch patterns (e.g. 'resnet*')",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="the CSV (default docs/results.csv); the summary goes beside it as .md",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch intra-op threads (default: every core this process may use)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=Settings.iterations,
        help="timed iterations at most per measurement (default %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=Settings.seconds,
        help="timed seconds at most per measurement, after one warm-up iteration; at least "
        "2 iterations are timed (default %(default)s)",
    )
    parser.add_argument(
        "--plan", action="store_true", help="print the plan and its estimate, measure nothing"
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="ignore the partial file of an interrupted run (measure everything again)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.iterations < 2:
        parser.error("--iterations must be >= 2")
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(iterations=args.iterations, seconds=args.seconds)
    try:
        names = select_models(args.models)
        rows = run_results(names, args.output, settings, plan_only=args.plan, restart=args.restart)
    except ResnetsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the rows measured so far are in {partial_path(args.output)}; the same command "
            "continues from there",
            file=sys.stderr,
        )
        return 130
    if args.plan:
        return 0
    command = shlex.join(["python", "-m", "benchmarks", "results", *argv])
    markdown = summary_markdown(rows, command, args.output)
    write_text(args.output.with_suffix(".md"), markdown + "\n")
    print(markdown)
    failed = [r["model"] for r in rows if r.get("note")]
    if failed:
        print(f"failed: {', '.join(failed)} (see their note column)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
