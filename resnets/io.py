"""Atomic file writes: the one place that writes a file a reader may see half-written.

Every writer makes a temporary file in the target's folder, fsyncs it, then ``os.replace``s it over the
target, so a crash at any moment leaves either the old file or the new one, never a partial file. A
failed write removes its temporary file and raises the ``OSError`` itself (a full disk is
``ENOSPC``, also where torch or safetensors would hide it behind their own message). Files get the
mode the umask gives (``0o666 & ~umask``), as ``open`` would, not ``mkstemp``'s 0600.

``staged`` + ``commit`` are the two halves of ``write_atomic`` for callers that do something in
between (``RunFolder.save_checkpoint`` rotates the old checkpoints once the new one is safely on disk).

Fault injection (test-only, docs/reliability.md): ``RESNETS_FAULT="NAME:PHASE:N:ACTION"`` makes the
N-th time this process reaches PHASE while writing a file called NAME (``*``: any) do ACTION. Phases:
``write`` (``ACTION@BYTE`` acts once BYTE bytes are written), ``fsync``, ``rotate`` (before each step
of a checkpoint rotation), ``replace``, ``link``; actions: ``kill`` (SIGKILL itself), ``enospc``
(an ``OSError`` "No space left on device"), ``sigint2`` (two SIGINTs, a user's double Ctrl-C),
``sigterm`` (one SIGTERM). Unset, it costs one dictionary lookup per phase.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

import torch
from safetensors.torch import save as safetensors_bytes

FAULT_ENV = "RESNETS_FAULT"
LOCK_NAME = ".lock"  # a run folder's lock file (``runs.RunFolder.lock``): flock held by its one writer
_held: set[str] = set()  # the folders this process holds the lock of (it may write there)
_CHUNK = 1 << 20  # bytes per write() of an in-memory file


def hold_folder(folder: str | os.PathLike, held: bool = True) -> None:
    """Record that this process holds (or, ``held=False``, no longer holds) ``folder``'s lock."""
    key = os.path.realpath(folder)
    if held:
        _held.add(key)
    else:
        _held.discard(key)


def lock_holder(folder: str | os.PathLike) -> str | None:
    """Who holds ``folder``'s run lock when it is another process ("process PID on HOST ..."), else None.

    Every writer here asks before it writes (``check_target``), so no file lands in a run folder that
    another process is writing, whatever command writes it."""
    path = os.path.join(folder, LOCK_NAME)
    if fcntl is None or os.path.realpath(folder) in _held:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody writes there
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").split(" ", 3)
            if len(holder) >= 3 and holder[0].isdigit():
                return f"process {holder[0]} on {holder[1]} (since {holder[2]})"
            return "another process"
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_target(path: str | os.PathLike) -> None:
    """What every writer checks before it writes ``path``: its folder is not a run folder that another
    process holds (an ``OSError`` EBUSY naming the holder)."""
    folder = os.path.dirname(os.path.abspath(path))
    holder = lock_holder(folder)
    if holder is not None:
        raise OSError(errno.EBUSY, f"its folder is a run being written by {holder}", str(path))


def file_mode() -> int:
    """The mode a new file gets under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux >= 4.7: read it without changing it (os.umask's read is a write, racy in threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Writer(io.RawIOBase):
    """A file that keeps the exception of a failed write (an ``OSError``, a ``KeyboardInterrupt``: torch.save
    would report "unexpected pos ...") and passes each write through the fault-injection hook."""

    def __init__(self, f: Any, path: Path) -> None:
        super().__init__()
        self.f, self.path, self.written, self.error = f, path, 0, None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        try:
            fault_point("write", self.path, self.written, self.written + size)
            n = self.f.write(data)
        except BaseException as exc:
            self.error = exc
            raise
        self.written += size
        return n if n is not None else size

    def flush(self) -> None:
        self.f.flush()


def write_file(tmp: Path, target: Path, fill: Callable[[Any], Any]) -> None:
    """Open ``tmp``, let ``fill(file)`` write it through a ``_Writer`` (named after ``target``)."""
    with open(tmp, "wb") as f:
        writer = _Writer(f, target)
        try:
            fill(writer)
            f.flush()
        except BaseException as exc:
            if writer.error is not None and exc is not writer.error:
                raise writer.error from None  # the disk's reason (or the user's Ctrl-C), not the serializer's
            raise


@contextlib.contextmanager
def staged(path: str | os.PathLike, write: Callable[[Path], Any]) -> Iterator[Path]:
    """``write(tmp)`` a temporary file beside ``path``, give it the umask's mode and fsync it; yields
    its path (``commit`` moves it into place) and removes it if it is still there afterwards."""
    path = Path(path)
    check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        fault_point("write", path, 0, 0)
        write(tmp)
        os.chmod(tmp, file_mode())
        fault_point("fsync", path)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def commit(tmp: Path, path: str | os.PathLike) -> Path:
    """``os.replace`` a staged file over ``path`` and make the rename durable."""
    path = Path(path)
    fault_point("replace", path)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` for a temporary path beside ``path``, fsync, then ``os.replace``."""
    with staged(path, write) as tmp:
        return commit(tmp, path)


def _bytes_writer(data: bytes, target: Path) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        view = memoryview(data)
        write_file(
            tmp, target, lambda f: [f.write(view[i : i + _CHUNK]) for i in range(0, len(view), _CHUNK)]
        )

    return write


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, _bytes_writer(data, Path(path)))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON with a final newline."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def torch_writer(obj: Any, target: str | os.PathLike) -> Callable[[Path], None]:
    """A ``write(tmp)`` for ``staged``: ``torch.save(obj)`` through a file whose errors surface."""
    return lambda tmp: write_file(tmp, Path(target), lambda f: torch.save(obj, f))


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)``, atomically."""
    return write_atomic(path, torch_writer(obj, path))


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    return write_bytes(path, safetensors_bytes(tensors, metadata=metadata))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A matplotlib ``Figure`` as PNG (the Figure API needs no pyplot state, so it is thread-safe)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return write_bytes(path, buffer.getvalue())


def link_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make ``dst`` the same file as ``src`` (a hard link, or a copy where links fail), atomically."""
    src, dst = Path(src), Path(dst)
    check_target(dst)
    fault_point("link", dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOENT):
                raise
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX needs the folder fsynced too)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- fault injection (test-only; see the module docstring and docs/reliability.md) -----------------

_fault_seen: dict[str, int] = {}


def fault_point(phase: str, path: str | os.PathLike, start: int = 0, end: int = 0) -> None:
    """Act as ``$RESNETS_FAULT`` says when it names this phase of writing ``path``; else nothing."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        if _fault_seen:
            _fault_seen.clear()  # unset between two settings: the next one counts from 0 again
        return
    name, want_phase, nth, action = spec.split(":", 3)
    if want_phase != phase or name not in ("*", Path(path).name):
        return
    action, _, at = action.partition("@")
    if phase == "write":  # BYTE 0: before the writer starts; else the write() carrying byte BYTE
        byte = int(at or 0)
        if not (start == end == byte == 0 or start <= byte < end and byte > 0):
            return
    _fault_seen[spec] = _fault_seen.get(spec, 0) + 1  # counted per setting: a new one starts at 0
    if _fault_seen[spec] != int(nth):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # never reached: SIGKILL cannot be handled
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    elif action == "sigterm":  # a service manager's stop, or `kill PID`
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
    elif action == "sigint2":
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # lets the handler run between the two, as between two key presses
    else:
        raise ValueError(f"{FAULT_ENV}: unknown action {action!r}")
