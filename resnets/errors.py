"""User-facing errors: each says what is wrong and what to do about it.

The CLI prints these as one line (no traceback) and exits with status 2, and so it prints an
``OSError`` (a full disk, a permission: the machine's problem, described by ``os_error``); any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class ResnetsError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(ResnetsError, ValueError):
    """An unknown name, a misspelled option, or a value of the wrong type or range."""


class DataError(ResnetsError):
    """A dataset that is missing, corrupt, or does not match what the run expects."""


class CheckpointError(ResnetsError):
    """A checkpoint or weights file that is unreadable, truncated, or for another model."""


class Terminated(BaseException):
    """SIGTERM, raised where the command was (as ``KeyboardInterrupt`` is for SIGINT), so that every
    ``finally`` runs: temporary files are removed, nothing half-written stays."""


def closest_names(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The choices most similar to ``name`` (for 'did you mean' messages)."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not close:
        close = [c for c in choices if name.lower() in c.lower() or c.lower() in name.lower()][:n]
    return close


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> ConfigError:
    """A ConfigError for an unknown ``kind`` (model, dataset, recipe, option ...) named ``name``."""
    choices = sorted(choices)
    close = closest_names(name, choices)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    listing = ", ".join(choices) if len(choices) <= 40 else ", ".join(choices[:40]) + ", ..."
    return ConfigError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {listing}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a library's multi-line text cut to what says why)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# errno -> what to do, for file errors (full disk, permissions, a file where a folder is needed)
_OS_HINTS = {
    errno.ENOSPC: "free some space or write somewhere else",
    errno.EDQUOT: "free some space (disk quota exceeded) or write somewhere else",
    errno.EACCES: "check its permissions or use another path",
    errno.EPERM: "check its permissions or use another path",
    errno.EROFS: "the file system is read-only: use another path",
    errno.ENOTDIR: "a file stands where a folder is needed: use another path",
    errno.EEXIST: "a file of that name exists where a folder is needed: use another path",
    errno.EISDIR: "it is a folder: give a file name",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EBUSY: "wait for that process to finish, or write somewhere else",
}


def os_error(exc: OSError, action: str = "access", hint: str | None = None) -> ResnetsError:
    """An ``OSError`` as one line naming the path, the reason and what to do."""
    path = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        path = f"{path} -> {exc.filename2}"
    reason = exc.strerror or first_line(exc)
    todo = hint or _OS_HINTS.get(exc.errno, "check the path and try again")
    where = f" {str(path)!r}" if path != "" else ""
    return ResnetsError(f"cannot {action}{where}: {reason}; {todo}")
