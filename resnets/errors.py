"""User-facing errors: each says what is wrong and what to do about it.

The CLI prints these as one line (no traceback) and exits with status 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ResnetsError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(ResnetsError, ValueError):
    """An unknown name, a misspelled option, or a value of the wrong type or range."""


class DataError(ResnetsError):
    """A dataset that is missing, corrupt, or does not match what the run expects."""


class CheckpointError(ResnetsError):
    """A checkpoint or weights file that is unreadable, truncated, or for another model."""


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
