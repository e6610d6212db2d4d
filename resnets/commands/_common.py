"""Argument helpers shared by several commands."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError


def parse_set_args(items: Sequence[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` from repeated ``--set k=v`` flags into a dict of raw strings.

    Typing is the consumer's job (a recipe checks values against its field types).
    """
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.replace("-", "_")] = value.strip()
    return out
