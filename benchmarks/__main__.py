"""``python -m benchmarks [names...] [--quick] [--rounds N] ...``: run benchmarks, write results/.

``python -m benchmarks results [--models PATTERN ...]`` is the model zoo's results table
(docs/results.csv); it has its own options (``--help``) and is not part of the default run."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import BENCHMARKS, GPU_ONLY
from .harness import RESULTS_DIR, BenchOptions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}; "
        "`results` alone writes the model zoo's table (see `results --help`)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few steps on small inputs, written to results/quick/ (checks that it runs)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternations of ours and the peers (>= 1)")
    parser.add_argument("--data-dir", help="folder with the Fashion-MNIST files")
    parser.add_argument(
        "--checkpoint",
        help="a trained Fashion-MNIST resnet20 run or checkpoint for the "
        "int8 accuracy check (default: train one briefly)",
    )
    parser.add_argument(
        "--time-cap",
        type=float,
        default=1800.0,
        help="seconds each contender of time_to_accuracy may train (default 1800)",
    )
    parser.add_argument(
        "--peer-time-cap",
        type=float,
        help="time_to_accuracy: a shorter cap for the peer (default: --time-cap); enough "
        "to bound the ratio when the peer is far behind, and saves the benchmark's time",
    )
    parser.add_argument(
        "--long-epochs",
        type=int,
        default=16,
        help="time_to_accuracy: epochs of ours' fashion-long run, for 94%% (0 skips it)",
    )
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=[],
        metavar="NAME",
        help="time_to_accuracy: time only these recipes (e.g. fashion-best), no peer",
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        help="step_options only (after the names): settings such as bs=128,cl=1,amp=bf16",
    )
    parser.add_argument(
        "--set",
        dest="recipe_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change ours' fast-cpu recipe in train_throughput and time_to_accuracy "
        "(e.g. --set amp=True), to try a setting against the peer",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's, one per core); also ONNX Runtime's",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when available)")
    parser.add_argument(
        "--output",
        type=Path,
        help="results folder (default: benchmarks/results, or benchmarks/results/quick with --quick)",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    for cap in ("time_cap", "peer_time_cap"):
        if getattr(args, cap) is not None and getattr(args, cap) <= 0:
            parser.error(f"--{cap.replace('_', '-')} must be > 0 seconds")
    if args.long_epochs < 0:
        parser.error("--long-epochs must be >= 0")
    from resnets.train.recipes import RECIPES

    unknown_recipes = [r for r in args.recipes if r not in RECIPES]
    if unknown_recipes:
        parser.error(f"unknown recipe(s) {', '.join(unknown_recipes)}; choose from {', '.join(RECIPES)}")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.recipe_set:  # a bad key or value: say so now, not after an hour of benchmarks
        from resnets.commands._common import parse_set_args
        from resnets.errors import ConfigError
        from resnets.train.recipes import apply_overrides, get_recipe

        try:
            apply_overrides(get_recipe("fast-cpu"), parse_set_args(args.recipe_set))
        except ConfigError as exc:
            parser.error(f"--set: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["results"]:  # a table of every model, not a side-by-side: its own options
        from . import results

        return results.main(argv[1:])
    args = parse_args(argv)
    names = args.names or [n for n in BENCHMARKS if n not in GPU_ONLY or torch.cuda.is_available()]
    if len(names) > 1:
        return run_each_apart(names, [a for a in argv if a not in names])
    if args.threads:
        torch.set_num_threads(args.threads)
    output = args.output or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    opts = BenchOptions(
        quick=args.quick,
        rounds=args.rounds,
        data_dir=args.data_dir,
        checkpoint=args.checkpoint,
        time_cap=args.time_cap,
        peer_time_cap=args.peer_time_cap,
        recipe_set=tuple(args.recipe_set),
        long_epochs=args.long_epochs,
        results_dir=output,
        recipes=tuple(args.recipes),
        device=args.device,
    )
    name = names[0]
    module = importlib.import_module(BENCHMARKS[name])
    print(f"== {name} ==", flush=True)
    t0 = time.perf_counter()
    extra = {"configs": args.configs} if name == "step_options" and args.configs else {}
    table = module.run(opts, **extra)
    print(table)
    print(f"({time.perf_counter() - t0:.0f} s; results in {output})\n", flush=True)
    return 0


def run_each_apart(names: list[str], options: list[str]) -> int:
    """One process per benchmark: thread pools (OpenMP, ONNX Runtime, OpenVINO's TBB) and memory of
    one do not disturb the next (a DataLoader forking a process that had loaded OpenVINO crashed
    here), and one failure does not stop the others."""
    failed = []
    for name in names:
        code = subprocess.call([sys.executable, "-m", "benchmarks", name, *options])
        if code:
            print(f"benchmark {name} failed (exit code {code})", file=sys.stderr, flush=True)
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
