"""One tiny real training run (``resnets train``), shared by the eval, predict and export tests.

The checkpoints these tests read come from the real training command, so that the checkpoint
format cannot drift between training and its consumers. The run is made once per test session.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

_RUNS: dict[Path, Path] = {}

# An 8-layer 6n+2 net (every code path of resnet20 at a third of the cost), 2 iterations.
TRAIN_ARGS = [
    "--model",
    "resnet_cifar",
    "--set",
    'model_kwargs={"depth": 8}',
    "--dataset",
    "fashion-mnist",
    "--train-subset",
    "128",
    "--val-split",
    "64",
    "--test-subset",
    "64",
    "--iterations",
    "2",
    "-b",
    "32",
    "--progress",
    "none",
    "--no-channels-last",
]


def trained_run(tmp_path_factory) -> Path:
    """The output folder of the run (best.pt, last.pt, model.safetensors, metrics.csv ...)."""
    base = tmp_path_factory.getbasetemp()
    if base not in _RUNS:
        from resnets.cli import main

        output = tmp_path_factory.mktemp("tiny_run")
        with contextlib.redirect_stdout(io.StringIO()):
            status = main(["train", *TRAIN_ARGS, "--output", str(output)])
        assert status == 0, f"resnets train failed with status {status}"
        _RUNS[base] = output
    return _RUNS[base]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``resnets ARGV`` in-process: (exit status, stdout, stderr)."""
    from resnets.cli import main

    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err
