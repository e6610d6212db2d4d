"""``python benchmarks/fault_injection.py [--points 30] [--seed 0]``: kill -9 a tiny training at seeded
random points, resume it each time, and check that it ends bit for bit where an uninterrupted run ends.

The points are drawn from a seeded RNG over the phases of a run: inside a training step (after the
backward pass, before the update), during an evaluation (after its first batches), and each phase of
a checkpoint save (``write`` at a random byte, ``fsync``, ``rotate``, ``replace``, the ``link`` of
best.pt; ``RESNETS_FAULT`` in resnets/io.py). Each point is one process, forked from this driver (which
imports torch once and runs no tensor op itself), that SIGKILLs itself there; the next process
resumes the run (``resnets train --resume RUN``, or starts it again when no checkpoint was written
yet) and is killed at the next point, and so on; a last process finishes the run. After each kill
the driver checks the run folder: every ``last*.pt`` a complete file, never fewer of them than
before. Then the final weights (model, EMA, model.safetensors), metrics.csv and summary.json are
compared with those of one straight run. tests/test_reliability_faults.py runs this script; the
figures are in docs/reliability.md. Not part of ``python -m benchmarks`` (it measures no speed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import struct
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from resnets import checkpoints, runs  # noqa: E402
from resnets.cli import main  # noqa: E402
from resnets.io import FAULT_ENV  # noqa: E402
from resnets.runs import RunFolder  # noqa: E402
from resnets.train import engine  # noqa: E402

PHASES = ("step", "eval", "write", "fsync", "rotate", "replace", "link")
STEPS_PER_EPOCH = 4  # 64 training images, batches of 16
EVAL_BATCHES = 4  # 32 test images, batches of 8


def tiny_data(folder: Path, seed: int = 0) -> Path:
    """An MNIST-format dataset a depth-8 net learns in a few epochs: each class a bright patch."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 64), ("t10k", 32)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 80, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[i, 4 + 12 * row : 10 + 12 * row, 2 + 5 * col : 6 + 5 * col] = 255
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + images.tobytes()
        )
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">BBBBI", 0, 0, 8, 1, n) + labels.astype(np.uint8).tobytes()
        )
    return folder


def train_args(data: Path, epochs: int) -> list[str]:
    return [
        "train",
        "--model",
        "resnet_cifar",
        "--set",
        'model_kwargs={"depth": 8}',
        "--dataset",
        "mnist",
        "--data-dir",
        str(data),
        "--no-verify-checksums",
        "--batch-size",
        "16",
        "--set",
        "eval_batch_size=8",
        "--epochs",
        str(epochs),
        "--deterministic",
        "--schedule",
        "step",
        "--set",
        f"milestones={epochs // 2}",
        "--lr",
        "0.05",
        "--ema",
        "--ema-decay",
        "0.9",
        "--no-amp",
        "--no-channels-last",
        "--log-every",
        "2",
        "--progress",
        "line",
    ]


def draw_points(count: int, seed: int, checkpoint_bytes: int) -> list[dict]:
    """``count`` kill points, every phase about equally often, in a seeded random order."""
    rng = random.Random(seed)
    phases = [PHASES[i % len(PHASES)] for i in range(count)]
    rng.shuffle(phases)
    points = []
    for phase in phases:
        point = {"phase": phase, "n": rng.randint(1, 2)}
        if phase == "step":
            point["n"] = rng.randint(1, 2 * STEPS_PER_EPOCH)
        elif phase == "eval":
            point["batch"] = rng.randint(1, EVAL_BATCHES - 1)
        elif phase == "write":
            point["byte"] = rng.randint(1, checkpoint_bytes - 1)
        points.append(point)
    return points


def _arm(point: dict) -> None:
    """In the child: SIGKILL this process when it reaches ``point``."""

    def kill() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    phase, n, count = point["phase"], point["n"], [0]
    if phase == "step":  # inside the n-th step: forward and backward done, the update not yet
        real_step = torch.amp.GradScaler.step

        def step(self, optimizer, *args, **kwargs):
            count[0] += 1
            if count[0] == n:
                kill()
            return real_step(self, optimizer, *args, **kwargs)

        torch.amp.GradScaler.step = step
    elif phase == "eval":  # during the n-th evaluation, after some of its batches
        real_evaluate = engine.evaluate

        def evaluate(model, loader, **kwargs):
            count[0] += 1
            if count[0] != n:
                return real_evaluate(model, loader, **kwargs)

            def batches():
                for i, batch in enumerate(loader):
                    if i == point["batch"]:
                        kill()
                    yield batch

            return real_evaluate(model, batches(), **kwargs)

        engine.evaluate = evaluate
    else:  # a phase of the n-th checkpoint save, through resnets.io's hook
        name = "best.pt" if phase == "link" else "last.pt"
        action = f"kill@{point['byte']}" if phase == "write" else "kill"
        os.environ[FAULT_ENV] = f"{name}:{phase}:{n}:{action}"


def run_child(argv: list[str], log: Path, point: dict | None = None) -> tuple[str, int]:
    """Fork, (arm the point,) run ``resnets ARGV``; ``("killed", 9)`` or ``("exit", status)``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            torch.set_num_threads(1)
            if point is not None:
                _arm(point)
            status = main(argv)
        except BaseException:  # a traceback here is a finding: it lands in the log
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "killed", os.WTERMSIG(status)
    return "exit", os.WEXITSTATUS(status)


def complete_checkpoints(folder: Path) -> tuple[int, list[str]]:
    """(complete rotated checkpoints, names of incomplete ones)."""
    found = RunFolder(folder).checkpoints()
    bad = [p.name for p in found if not zipfile.is_zipfile(p)]
    return len(found) - len(bad), bad


def campaign(points: int, seed: int, workdir: Path, epochs: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    data = tiny_data(workdir / "data")
    straight, chained, logs = workdir / "straight", workdir / "chained", workdir / "logs"
    logs.mkdir(exist_ok=True)
    start = time.perf_counter()
    straight_run = run_child(train_args(data, epochs) + ["--output", str(straight)], logs / "straight.log")
    if straight_run != ("exit", 0):
        raise SystemExit(f"the straight run failed ({straight_run}); see {logs / 'straight.log'}")
    straight_s = time.perf_counter() - start
    plan = draw_points(points, seed, (straight / "last.pt").stat().st_size)
    results, findings = [], []
    for i, point in enumerate(plan):
        before, _ = complete_checkpoints(chained)
        argv = (
            ["train", "--resume", str(chained), "--progress", "line"]
            if before
            else train_args(data, epochs) + ["--output", str(chained)]
        )
        outcome = run_child(argv, logs / f"point-{i:02d}.log", point)
        after, bad = complete_checkpoints(chained)
        hidden = chained.glob(".*") if chained.exists() else []
        leftovers = sorted(p.name for p in hidden if p.name != runs.LOCK)
        record = {
            **point,
            "resumed": bool(before),
            "outcome": f"{outcome[0]} {outcome[1]}",
            "checkpoints_before": before,
            "checkpoints_after": after,
            "temp_files_left": leftovers,
        }
        results.append(record)
        if outcome != ("killed", signal.SIGKILL):
            findings.append(f"point {i} ({point}) was not reached: {outcome}")
        if bad or after < before:
            findings.append(f"point {i} ({point}): {before} -> {after} complete checkpoints, damaged {bad}")
    final = run_child(["train", "--resume", str(chained), "--progress", "line"], logs / "final.log")
    if final != ("exit", 0):
        findings.append(f"the final resume ended with {final}")
    tracebacks = [p.name for p in logs.glob("*.log") if "Traceback" in p.read_text(errors="replace")]
    findings += [f"traceback in {name}" for name in tracebacks]

    # --- the comparison (no more forks: tensor ops are safe from here on)
    compared = compare(straight, chained)
    findings += compared["differences"]
    kills = sum(r["outcome"] == f"killed {int(signal.SIGKILL)}" for r in results)
    return {
        "points": points,
        "seed": seed,
        "epochs": epochs,
        "kills": kills,
        "resumes": sum(r["resumed"] for r in results) + 1,
        "bit_exact": not compared["differences"],
        "per_phase": {p: sum(r["phase"] == p for r in results) for p in PHASES},
        "tracebacks": len(tracebacks),
        "straight_s": round(straight_s, 1),
        "total_s": round(time.perf_counter() - start, 1),
        "findings": findings,
        "results": results,
    }


def compare(straight: Path, chained: Path) -> dict:
    differences = []
    a, b = checkpoints.load_checkpoint(straight / "last.pt"), checkpoints.load_checkpoint(chained / "last.pt")
    for part in ("state_dict", "ema"):
        if a[part].keys() != b[part].keys() or not all(torch.equal(a[part][k], b[part][k]) for k in a[part]):
            differences.append(f"final {part} differs")
    for key in ("epoch", "iteration"):
        if a[key] != b[key]:
            differences.append(f"final {key}: {a[key]} vs {b[key]}")
    if (straight / "model.safetensors").read_bytes() != (chained / "model.safetensors").read_bytes():
        differences.append("model.safetensors differs")
    columns = ("epoch", "iteration", "lr", "train_loss", "train_error", "test_loss", "test_error")
    rows = [
        [[r[c] for c in columns] for r in csv.DictReader(open(run / "metrics.csv"))]
        for run in (straight, chained)
    ]
    if rows[0] != rows[1]:
        differences.append("metrics.csv differs (epochs lost, repeated or mixed)")
    summaries = [json.loads((run / "summary.json").read_text()) for run in (straight, chained)]
    for key in ("final_test_error", "best_test_error", "best_test_epoch", "iterations", "epochs_done"):
        if summaries[0].get(key) != summaries[1].get(key):
            differences.append(f"summary {key}: {summaries[0].get(key)} vs {summaries[1].get(key)}")
    return {"differences": differences}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=30, help="kill -9 points (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the points (default 0)")
    parser.add_argument("--epochs", type=int, default=40, help="length of the tiny run (default 40)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the runs go (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    return parser.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is None:
        import tempfile

        args.workdir = Path(tempfile.mkdtemp(prefix="resnets-faults-"))
    result = campaign(args.points, args.seed, args.workdir, args.epochs)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['kills']}/{result['points']} kill -9 points reached, {result['resumes']} resumes, "
            f"bit-exact: {result['bit_exact']}, tracebacks: {result['tracebacks']}, "
            f"{result['total_s']} s (straight run {result['straight_s']} s); phases {result['per_phase']}"
        )
        for finding in result["findings"]:
            print(f"FINDING: {finding}")
        print(f"runs and logs: {args.workdir}")
    return 0 if not result["findings"] and result["kills"] == result["points"] else 1


if __name__ == "__main__":
    sys.exit(cli())
