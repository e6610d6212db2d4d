"""Where and how computations run: the device is chosen at run time, never at import."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True)
class CpuKind:
    """What this processor offers torch, as torch will use it: ``ATEN_CPU_CAPABILITY`` and
    ``ONEDNN_MAX_CPU_ISA`` are honoured, so that an AVX2-only CPU emulated on a newer one is one."""

    capability: str  # ATen's vector kernels: "AVX512", "AVX2", "DEFAULT" (torch.backends.cpu)
    bfloat16: bool  # bfloat16 arithmetic (AVX512-BF16 or AMX) in both ATen's and oneDNN's kernels
    float16: bool  # float16 arithmetic (AMX-FP16)
    compiler: bool  # a C++ compiler, which torch.compile's CPU backend (inductor) needs

    def describe(self) -> str:
        return f"{self.capability} CPU {'with' if self.bfloat16 else 'without'} bfloat16"


# ONEDNN_MAX_CPU_ISA values below AVX512_CORE_BF16: oneDNN then emulates bfloat16 through float32
_ONEDNN_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


@functools.cache
def cpu_kind() -> CpuKind:
    capability = torch.backends.cpu.get_cpu_capability()
    onednn_bf16 = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() not in _ONEDNN_WITHOUT_BF16
    wide = capability.startswith("AVX512") and onednn_bf16
    hardware_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    compiler = any(shutil.which(name) for name in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++"))
    return CpuKind(capability, wide and hardware_bf16, wide and torch.cpu._is_amx_fp16_supported(), compiler)


def computes_natively(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``device`` has arithmetic for ``dtype`` (not emulated through float32).

    Autocast to a dtype the hardware lacks is slower than float32, since every op converts to and
    from float32 (measured on CPUs with and without bf16: docs/training.md, "precision").
    """
    if device.type == "cuda":
        return dtype is torch.float16 or (dtype is torch.bfloat16 and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        kind = cpu_kind()
        return (dtype is torch.bfloat16 and kind.bfloat16) or (dtype is torch.float16 and kind.float16)
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


Choice = bool | Literal["auto"]
# torch.compile's start-up (30-70 s for resnet20 on 2 cores) against float32 steps 1.2-1.6x faster on
# AVX2 CPUs: it pays for itself after about 55k (a real AVX2 core) to 300k images (one emulated on a
# Xeon); docs/performance.md, "Execution paths on each kind of CPU".
COMPILE_MIN_IMAGES = 150_000


@dataclass(frozen=True)
class ExecutionPath:
    """How a run computes: precision, memory layout and compilation, each chosen or forced."""

    precision: torch.dtype | None  # autocast dtype, None: float32
    channels_last: bool
    compile: bool
    reason: str  # why "auto" chose so, or "forced" where every choice was given

    def describe(self) -> str:
        layout = "channels-last" if self.channels_last else "NCHW"
        compiled = "compiled" if self.compile else "eager"
        return f"{precision_name(self.precision)}, {layout}, {compiled}; {self.reason}"

    def to_dict(self) -> dict[str, object]:
        return {
            "precision": precision_name(self.precision),
            "channels_last": self.channels_last,
            "compile": self.compile,
            "reason": self.reason,
        }


def uses_channels_last(choice: Choice, device: torch.device) -> bool:
    """ "auto": channels-last on CPU (oneDNN's layout: 1.05x eager, 1.53x compiled on an AVX2-only EPYC)
    and CUDA (tensor cores); NCHW on MPS, where it is not measured."""
    return device.type in ("cpu", "cuda") if choice == "auto" else bool(choice)


def execution_path(
    amp: Choice,
    amp_dtype: str,
    channels_last: Choice,
    compile: Choice,
    device: torch.device,
    images: int,
) -> ExecutionPath:
    """The path a run of ``images`` training images takes on ``device``: "auto" fields pick the fastest
    path measured for this processor (``python -m benchmarks cpu_paths``), True/False force it.

    It depends only on the settings, the run's length and the processor, so a seeded run computes the
    same on one machine every time. On CPU: bfloat16 autocast where the CPU computes it natively;
    channels-last; ``torch.compile`` on the float32 path, where a C++ compiler is found and the run is
    long enough to repay the compilation (in bfloat16 its steps were 1.05x faster and the main job 15%
    slower with the compilation). CUDA and MPS: eager (not measured there).
    """
    precision = autocast_dtype(amp, amp_dtype, device)
    layout = uses_channels_last(channels_last, device)
    if compile != "auto":
        compiled = bool(compile)
    else:
        kind = cpu_kind()
        compiled = (
            device.type == "cpu" and precision is None and kind.compiler and images >= COMPILE_MIN_IMAGES
        )
    settings = {"amp": amp, "channels_last": channels_last, "compile": compile}
    forced = [name for name, value in settings.items() if value != "auto"]
    if len(forced) == len(settings):
        reason = "forced"
    else:
        reason = f"auto for an {cpu_kind().describe()}" if device.type == "cpu" else f"auto for {device.type}"
        reason += f" ({', '.join(forced)} forced)" if forced else ""
    return ExecutionPath(precision, layout, compiled, reason)
