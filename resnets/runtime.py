"""Where and how computations run: the device is chosen at run time, never at import."""

from __future__ import annotations

import torch

from .errors import ConfigError


def select_device(name: str | None = None) -> torch.device:
    """``None``/"auto": CUDA when present, else CPU. Otherwise the named device, checked."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"invalid device {name!r}: {exc}. Use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use --device cpu.")
    return device
