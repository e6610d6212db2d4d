"""The main job's training images/s under two source trees, alternately: did a change slow training?

    git worktree add /tmp/before <rev>
    python -m benchmarks.ab_trees /tmp/before . --rounds 3 --iterations 300

Each round runs ``resnets train`` (the fast-cpu recipe, the main job's settings) for ``--iterations``
steps under each tree in turn, in a fresh process with that tree first on ``PYTHONPATH``, and reads
the steady-state images/s from its steps.jsonl (the first ``--warmup`` steps left out). Run it alone
on the machine; only the ratio means something.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def images_per_s(tree: Path, iterations: int, warmup: int, log_every: int) -> float:
    with tempfile.TemporaryDirectory(prefix="resnets-ab-") as out:
        env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "resnets",
                "train",
                "--iterations",
                str(iterations),
                "--log-every",
                str(log_every),
                "--progress",
                "none",
                "--output",
                out,
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        steps = [json.loads(line) for line in (Path(out) / "steps.jsonl").read_text().splitlines()]
    timed = [s for s in steps if s["iteration"] > warmup]
    return len(timed) / sum(1 / s["images_per_s"] for s in timed)  # images-weighted mean rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ab_trees",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--log-every", type=int, default=25)
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for name in rates:
            tree = getattr(args, name)
            rates[name].append(images_per_s(tree, args.iterations, args.warmup, args.log_every))
            print(f"{name}: {rates[name][-1]:.0f} images/s", flush=True)
    before, after = (statistics.median(rates[k]) for k in ("before", "after"))
    print(
        f"median images/s: before {before:.0f}, after {after:.0f}; after/before = {after / before:.3f} "
        f"({args.rounds} alternating rounds of {args.iterations} iterations)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
