"""What a run records: metrics.csv (one row per epoch), steps.jsonl (one record per logged step),
and what it shows: a tqdm bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

from ..runs import RunFolder

METRIC_COLUMNS = [
    "epoch",
    "iteration",
    "lr",
    "train_loss",
    "train_error",
    "val_loss",
    "val_error",
    "test_loss",
    "test_error",
    "images_per_s",
    "epoch_time_s",
    "elapsed_s",
]


class MetricsLog:
    """Appends to the run folder's ``metrics.csv`` and ``steps.jsonl``.

    On resume, records after the checkpoint's epoch/iteration are dropped first, so the files
    describe exactly the run that the weights came from.
    """

    def __init__(
        self,
        folder: RunFolder,
        columns: list[str] = METRIC_COLUMNS,
        resume_epoch: int | None = None,
        resume_iteration: int | None = None,
    ) -> None:
        folder.path.mkdir(parents=True, exist_ok=True)
        self.columns = columns  # the task's: a classifier's errors, a detector's AP
        self.csv_path, self.steps_path = folder.metrics_path, folder.steps_path
        if resume_epoch is None:
            self.csv_path.unlink(missing_ok=True)
            self.steps_path.unlink(missing_ok=True)
        else:
            rows = [r for r in folder.metrics() if int(r["epoch"]) <= resume_epoch]
            self.csv_path.unlink(missing_ok=True)
            for row in rows:
                self.log_epoch(row)
            last = resume_iteration or 0
            steps = [s for s in folder.steps() if s.get("iteration", 0) <= last]
            with open(self.steps_path, "w") as f:
                f.writelines(json.dumps(s) + "\n" for s in steps)

    def log_epoch(self, row: dict[str, Any]) -> None:
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in self.columns})

    def log_step(self, record: dict[str, Any]) -> None:
        with open(self.steps_path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class Progress:
    """A tqdm bar per epoch on a terminal ("bar"), one line per epoch otherwise ("line")."""

    def __init__(self, mode: str = "auto", enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "line"
        self.enabled = enabled
        self.mode = mode if enabled else "none"
        self._bar = None

    def message(self, text: str) -> None:
        """Warnings and events: shown in every mode (only "line"/"bar" show per-epoch progress)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def epoch(self, iterable: Iterable, epoch: int, epochs: int, total: int | None) -> Iterator:
        if self.mode != "bar":
            yield from iterable
            return
        with tqdm(
            iterable,
            total=total,
            desc=f"epoch {epoch}/{epochs}",
            file=self.stream,
            dynamic_ncols=True,
            leave=False,
        ) as bar:
            self._bar = bar
            try:
                yield from bar
            finally:
                self._bar = None

    def update(self, **values: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)

    def epoch_line(self, text: str) -> None:
        """The end of an epoch's line (not in mode "none")."""
        if self.mode != "none":
            self.message(text)


def epoch_parts(row: dict[str, Any]) -> list[str]:
    """The start of every task's epoch line: epoch, iteration, lr and training loss."""
    return [
        f"epoch {row['epoch']}",
        f"iter {row['iteration']}",
        f"lr {row['lr']:.4g}",
        f"loss {row['train_loss']:.4f}",
    ]


def finished_line(result: dict[str, Any], rate: str = ".1f") -> str:
    """The first line of every task's summary: epochs, iterations, time and throughput."""
    return (
        f"finished {result['epochs_done']} epochs ({result['iterations']} iterations) in "
        f"{duration(result['elapsed_s'])}, {result['images_per_s']:{rate}} train images/s"
    )


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"
