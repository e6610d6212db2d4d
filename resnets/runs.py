"""A run folder: the files a training run writes, and reading a finished (or interrupted) run.

``resnets train --output RUN`` writes::

    RUN/config.json        the resolved TrainConfig (recipe + run options)
    RUN/metrics.csv        one row per epoch           RUN/steps.jsonl   one record per logged step
    RUN/last.pt            the newest checkpoint       RUN/last-1.pt ... the previous ones (rotation)
    RUN/best.pt            the best epoch's checkpoint (a hard link)
    RUN/model.safetensors  the evaluated weights       RUN/curves.png    training curves
    RUN/summary.json       written last: its presence marks a finished run

Everything that reads a run (eval, export, predict, the experiments) goes through this module, so
none of them needs the training package.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import socket
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; run folders are then not locked
    fcntl = None

import torch
from torch import nn

from . import checkpoints
from .errors import CheckpointError, ConfigError, DataError, first_line, os_error
from .io import LOCK_NAME, commit, fault_point, hold_folder, lock_holder, staged, torch_writer

CONFIG = "config.json"
METRICS = "metrics.csv"
STEPS = "steps.jsonl"
LAST = "last.pt"
BEST = "best.pt"
WEIGHTS = "model.safetensors"
CURVES = "curves.png"
SUMMARY = "summary.json"
LOCK = LOCK_NAME  # held (flock) by the one process writing the run; names it: "PID HOST TIME COMMAND"
DAMAGED = ".damaged"  # suffix of a checkpoint resume could not read, set aside out of the rotation
RUN_FILES = (CONFIG, METRICS, STEPS, LAST, BEST, WEIGHTS, SUMMARY)
RESULTS = (BEST, WEIGHTS, SUMMARY)  # with the checkpoints: what a run produced, never written over


def rotated_names(keep: int) -> list[str]:
    """``last.pt`` then the older ones kept beside it: ``last-1.pt`` ... ``last-{keep-1}.pt``."""
    return [LAST] + [f"last-{i}.pt" for i in range(1, keep)]


@dataclass(frozen=True)
class RunFolder:
    """The files of one run; reading them never needs the training code."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def steps_path(self) -> Path:
        return self.path / STEPS

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    @property
    def curves_path(self) -> Path:
        return self.path / CURVES

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def finished(self) -> bool:
        return self.summary_path.is_file()

    def config(self) -> dict[str, Any]:
        """``config.json`` as a plain dict (``{"recipe": {...}, "run": {...}}``); {} when absent."""
        return read_json(self.config_path, "run configuration") if self.config_path.is_file() else {}

    def summary(self) -> dict[str, Any] | None:
        return read_json(self.summary_path, "run summary") if self.finished else None

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_path)

    def steps(self) -> list[dict[str, Any]]:
        return read_steps(self.steps_path)

    def checkpoints(self) -> list[Path]:
        """The rotated checkpoints that exist, newest first."""
        return [self.path / name for name in rotated_names(100) if (self.path / name).is_file()]

    def load_model(self, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
        """The newest checkpoint's model (eval mode) and the checkpoint."""
        return checkpoints.load_model(self.last, device)

    def holds_run(self) -> bool:
        """Whether the folder holds any file of a run (a checkpoint, its config, logs or summary)."""
        return any((self.path / name).exists() for name in RUN_FILES) or bool(self.checkpoints())

    def holds_results(self) -> bool:
        """Whether the folder holds anything a run produced (a checkpoint, ``best.pt``, the weights, the
        summary). Logs alone (config, metrics, steps) are those of a run that never saved a checkpoint:
        it can only start again, and starting it again loses nothing."""
        return any((self.path / name).exists() for name in RESULTS) or bool(self.checkpoints())

    def is_run_file(self, name: str) -> bool:
        """Whether ``name`` is one of the files a run writes in its folder."""
        return name in (*RUN_FILES, CURVES, LOCK) or (name.startswith("last-") and name.endswith(".pt"))

    def save_checkpoint(self, ckpt: dict[str, Any], keep: int) -> Path:
        """Write ``last.pt``, keeping the previous ``keep - 1`` as ``last-1.pt``, ``last-2.pt``...

        New first: the checkpoint is written to a temporary file and fsynced before any old one
        moves, so a failure while writing (a full disk at any byte, an interrupt) leaves the folder
        as it was. Then the complete older checkpoints move up one place (hard links, so that every
        name always holds a complete file), and the new one is renamed to ``last.pt``. A checkpoint
        that is not a complete file (truncated) is dropped, never moved over a good one.
        """
        names = rotated_names(keep)
        with staged(self.last, torch_writer(ckpt, self.last)) as tmp:
            good = [p for p in self.checkpoints() if _complete(p)][: keep - 1]
            for slot in range(len(good), 0, -1):  # oldest first: a move only overwrites what has moved
                fault_point("rotate", self.last)
                _move(good[slot - 1], self.path / names[slot])
            for stale in self.path.glob("last-*.pt"):  # damaged ones left in the slots, or beyond keep
                index = stale.name[len("last-") : -len(".pt")]
                if not index.isdigit() or int(index) > len(good):
                    stale.unlink(missing_ok=True)
            commit(tmp, self.last)
        return self.last

    def set_aside(self, damaged: list[Path]) -> list[Path]:
        """Rename damaged checkpoints ``X.pt`` to ``X.pt.damaged``: kept for a look, out of the rotation."""
        moved = []
        for path in damaged:
            if path.parent.resolve() == self.path.resolve() and path.is_file():
                target = path.with_name(path.name + DAMAGED)
                os.replace(path, target)
                moved.append(target)
        return moved

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder for this process (created if needed); a second writer gets a
        ``ConfigError`` naming the holder. The kernel drops the lock when its holder dies, so a lock
        file left by a killed process is stale and taken over. Temporary files that a killed writer
        left behind are removed."""
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = _acquire(self.path / LOCK)
        except OSError as exc:
            raise _folder_error(exc, self.path) from None
        hold_folder(self.path)  # this process's own writers may write here; every other one is refused
        try:
            for leftover in [*self.path.glob(".*.tmp"), *self.path.glob(".*.link")]:
                leftover.unlink(missing_ok=True)
            yield
        finally:
            hold_folder(self.path, held=False)
            (self.path / LOCK).unlink(missing_ok=True)
            os.close(fd)
            if created:
                with contextlib.suppress(OSError):
                    self.path.rmdir()  # nothing was written: leave no empty folder behind


def _complete(path: Path) -> bool:
    """Whether a checkpoint file is whole (a zip archive ends with its directory; a truncated one
    has none). Reads a few bytes at its end."""
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


_NO_LINKS = (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP)


def _move(src: Path, dst: Path) -> None:
    """Give ``dst`` the contents of ``src``: a hard link, so ``src`` keeps them too (a rename where
    the file system has no hard links)."""
    if src == dst:
        return
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        os.replace(src, dst)
        return
    try:
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _acquire(path: Path) -> int:
    """An open descriptor of ``path`` holding an exclusive flock, with this process's name in it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").split(" ", 3)
            os.close(fd)
            raise ConfigError(_locked_message(path.parent, holder)) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder before us may have removed the file between our open and our flock
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    command = " ".join(["resnets", *sys.argv[1:]]) if sys.argv else "python"
    os.ftruncate(fd, 0)
    os.write(
        fd, f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')} {command}".encode()
    )
    return fd


def _locked_message(folder: Path, holder: list[str]) -> str:
    if len(holder) >= 3 and holder[0].isdigit():
        pid, host, since = holder[:3]
        who = f"process {pid} on {host} (since {since}{': ' + holder[3][:120] if len(holder) > 3 else ''})"
    else:
        who = "another process"
    return (
        f"run folder {folder} is being written by {who}; two writers would mix their runs: wait for it "
        f"to finish, stop it, or choose another --output"
    )


def _folder_error(exc: OSError, folder: Path) -> Exception:
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) or (folder.exists() and not folder.is_dir()):
        return ConfigError(
            f"cannot use {str(folder)!r} as a run folder: it, or a folder above it, is a "
            f"file; choose another --output"
        )
    return os_error(exc, "write the run folder", "choose a writable --output")


def check_output(
    path: str | os.PathLike,
    flag: str,
    *,
    reads: Iterable[Any] = (),
    folder: bool = False,
    own_run: str | os.PathLike | None = None,
) -> Path:
    """The one check of every output path (docs/architecture.md, "Outputs"), made before any work.

    ``path`` (a file; ``folder=True``: a folder to write files into) is refused with a ``ConfigError``
    when it is one of the files the command ``reads``, or lies inside a folder it reads (a dataset);
    when it is a file of a run folder (``last.pt``, ``config.json`` ...) other than ``own_run``, the run
    being written or resumed; when its folder is a run that another process is writing (its lock); and
    when it, or its folder, cannot be written. ``io``'s writers check the lock again as they write."""
    out = Path(path)
    for source in reads:
        if source is None or source == "":
            continue
        if same_file(out, source):
            raise ConfigError(
                f"{flag} {path} is {source}, which this command reads: writing it would "
                f"destroy it; choose another {flag}"
            )
        if Path(source).is_dir() and _inside(out, source):
            raise ConfigError(
                f"{flag} {path} lies inside {source}, which this command reads: writing there "
                f"would change its input; choose another {flag}"
            )
    target_folder = out if folder else out.parent
    holder = lock_holder(target_folder) if target_folder.is_dir() else None
    if holder is not None:
        raise ConfigError(
            f"{flag} {path}: {target_folder} is a run being written by {holder}; wait for it "
            f"to finish, or choose another {flag}"
        )
    run = RunFolder(out.parent)
    if (
        not folder
        and run.is_run_file(out.name)
        and run.holds_run()
        and (own_run is None or not same_file(run.path, own_run))
    ):
        raise ConfigError(
            f"{flag} {path} is a file of the run in {run.path}: writing it would destroy that "
            f"run's {out.name}; choose another {flag}"
        )
    if folder:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{flag} {path} is a file, not a folder; choose another {flag}")
        check_writable_folder(out, flag)
    else:
        if out.is_dir():
            raise ConfigError(f"{flag} {path} is a folder; give a file name")
        if out.exists() and not out.is_file():
            raise ConfigError(f"{flag} {path} is not a regular file (a pipe or a device); give a file name")
        check_writable_folder(out.parent, flag, path)
    return out


def check_writable_folder(folder: str | os.PathLike, flag: str, given: object = None) -> None:
    """The folder exists and is writable, or can be made (its nearest existing parent is a writable
    folder); else a ``ConfigError`` saying which part is wrong."""
    given = folder if given is None else given
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {given}: {existing} is a file, not a folder; choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{flag} {given}: the folder {existing} is not writable by this user; choose another {flag}"
        )


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """The same file (hard links included), or the same real path where either does not exist."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def run_folder_of(resume: str | os.PathLike) -> Path:
    """The run folder ``--resume`` continues: the folder given, or the folder of the file given."""
    path = Path(resume)
    return path if path.is_dir() else path.parent


def checkpoint_candidates(path: str | os.PathLike) -> list[Path]:
    """What ``--resume`` tries, best first: a file as given, or a folder's rotated ``last*.pt``."""
    path = Path(path)
    if path.is_dir():
        found = RunFolder(path).checkpoints()
        if not found:
            raise CheckpointError(f"no checkpoint ({LAST}) in {str(path)!r}; nothing to resume")
        return found
    if not path.exists():
        raise CheckpointError(f"--resume {str(path)!r}: no such file or folder")
    siblings = RunFolder(path.parent).checkpoints()
    return [path] + [p for p in siblings if p.resolve() != path.resolve() and p.name != BEST]


def load_for_resume(
    path: str | os.PathLike, log: Callable[[str], None] = print, skipped: list[Path] | None = None
) -> tuple[Path, dict]:
    """The newest readable, resumable checkpoint among ``checkpoint_candidates(path)``; says which it
    skipped (and appends them to ``skipped``)."""
    errors = []
    for candidate in checkpoint_candidates(path):
        try:
            ckpt = checkpoints.load_checkpoint(candidate)
            checkpoints.check_resumable(ckpt, candidate)
        except CheckpointError as exc:
            errors.append(str(exc))
            log(f"warning: {exc}; falling back to the previous checkpoint")
            if skipped is not None:
                skipped.append(candidate)
            continue
        return candidate, ckpt
    raise CheckpointError("no usable checkpoint to resume from: " + " | ".join(errors))


@dataclass
class Resumed:
    """A checkpoint chosen for resuming, read once (by the command, which takes the run's config from it)
    and handed to the training loop; what was skipped on the way is said by the loop, which sets it aside."""

    path: Path
    checkpoint: dict[str, Any]
    warnings: list[str]
    damaged: list[Path]


def read_for_resume(path: str | os.PathLike) -> Resumed:
    """``load_for_resume`` with its warnings and skipped files kept for the loop to report."""
    warnings: list[str] = []
    damaged: list[Path] = []
    found, ckpt = load_for_resume(path, log=warnings.append, skipped=damaged)
    return Resumed(found, ckpt, warnings, damaged)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a metrics.csv with numbers as floats (ints for epoch/iteration), blanks as None; a
    ``DataError`` naming the file when it is not such a table (binary garbage, no epoch column)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row or reader.fieldnames is None or "epoch" not in reader.fieldnames:
                    raise ValueError(f"line {reader.line_num} does not match the header")
                out.append({k: _parse_cell(k, v) for k, v in row.items()})
                if not isinstance(out[-1]["epoch"], int):
                    raise ValueError(f"line {reader.line_num} has no epoch number")
    except (UnicodeDecodeError, csv.Error, ValueError, OverflowError) as exc:
        raise DataError(
            f"{path} is not a run's metrics table ({first_line(exc)}); move it away (the run's "
            f"checkpoints do not need it) or restore it"
        ) from None
    except OSError as exc:
        raise os_error(exc, "read") from None
    return out


def _parse_cell(column: str, value: str | None) -> Any:
    if value in ("", None):
        return None
    if column in ("epoch", "iteration"):
        return int(float(value))
    try:
        return float(value)
    except ValueError:
        return value


def read_steps(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a steps.jsonl, up to the first line a crash cut short (or that is no record)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise os_error(exc, "read") from None
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut by a crash: everything before it is good
        if not isinstance(record, dict) or not isinstance(record.get("iteration", 0), int | float):
            break
        records.append(record)
    return records


def read_json(path: str | os.PathLike, what: str) -> Any:
    """A run's JSON file (``config.json``, ``summary.json``), or a ``DataError`` naming it when it is
    cut short or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path} is not a readable {what} ({first_line(exc)}): it was cut short or "
            f"damaged; move it away, or run again"
        ) from None
