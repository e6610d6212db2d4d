"""Where and how computations run: the device is chosen at run time, never at import."""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError


def select_device(name: str | None = None) -> torch.device:
    """``None``/"auto": CUDA when present, else Apple's MPS, else CPU. Otherwise the named device, checked."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(
            f"invalid device {name!r}: {exc}. Use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device {name!r} requested but MPS (Apple silicon, macOS 12.3+) is not available here; "
            f"use --device cpu."
        )
    return device


def computes_natively(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``device`` has arithmetic for ``dtype`` (not emulated through float32).

    Autocast to a dtype the hardware lacks is slower than float32, since every op converts to and
    from float32 (measured on CPUs with and without bf16: docs/training.md, "precision").
    """
    if device.type == "cuda":
        return dtype is torch.float16 or (dtype is torch.bfloat16 and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        if dtype is torch.bfloat16:
            return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        if dtype is torch.float16:
            return torch.cpu._is_amx_fp16_supported()
    return False


def autocast_dtype(amp: bool | str, amp_dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run: ``amp`` True forces ``amp_dtype``, "auto" uses it only where
    ``device`` computes it natively, False (or "auto" elsewhere) keeps float32."""
    dtype = getattr(torch, amp_dtype)
    if amp == "auto":
        return dtype if computes_natively(device, dtype) else None
    return dtype if amp else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``; no-op for None (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    """ "float32" or e.g. "bfloat16 autocast", as run summaries and ``resnets eval`` report it."""
    return "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"
