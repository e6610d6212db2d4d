"""Where and how computations run: the device is chosen at run time, never at import."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

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
    """How a run computes: precision, memory layout and compilation, each chosen or forced, and whether
    the C library keeps freed memory for the next step (``keep_freed_memory``)."""

    precision: torch.dtype | None  # autocast dtype, None: float32
    channels_last: bool
    compile: bool
    reason: str  # why "auto" chose so, or "forced" where every choice was given
    keeps_freed_memory: bool = False

    def describe(self) -> str:
        layout = "channels-last" if self.channels_last else "NCHW"
        compiled = "compiled" if self.compile else "eager"
        memory = ", freed memory kept" if self.keeps_freed_memory else ""
        return f"{precision_name(self.precision)}, {layout}, {compiled}{memory}; {self.reason}"

    def to_dict(self) -> dict[str, object]:
        return {
            "precision": precision_name(self.precision),
            "channels_last": self.channels_last,
            "compile": self.compile,
            "keeps_freed_memory": self.keeps_freed_memory,
            "reason": self.reason,
        }


# glibc's mallopt parameters (malloc.h), and the environment through which a user sets them instead
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_ENVIRONMENT = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)


def allocator_tunable() -> bool:
    """Whether ``keep_freed_memory`` applies here: glibc, with none of its malloc settings given by the user
    (``MALLOC_TRIM_THRESHOLD_=131072``, glibc's default, is how a user keeps the default behaviour)."""
    given = any(name in os.environ for name in _MALLOC_ENVIRONMENT)
    given = given or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
    return not given and platform.libc_ver()[0] == "glibc"


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse rather than return it to the system.

    By default glibc maps every block above an adaptive threshold afresh and trims the heap when much of it
    is free, so a CPU training step page-faults on its activations again each time (the measured gain:
    docs/performance.md, "Execution paths"). Blocks up to 32 MiB (glibc's largest threshold) then come
    from the heap, and up to 1 GiB of free heap is kept. Process-wide; returns whether it took effect.
    """
    if not allocator_tunable():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def compile_cache_per_capability() -> None:
    """Give torch.compile's on-disk cache its own folder for each ``ATEN_CPU_CAPABILITY`` (call it before the
    first compilation). inductor vectorises for the capability that variable names, but its cache key
    leaves it out: a graph compiled natively (AVX-512) and reused under ``ATEN_CPU_CAPABILITY=avx2``, as
    when an AVX2 CPU is emulated, gave a loss of 3.5e36 for 2.6 (torch 2.14.1). A cache folder the user
    chose (``TORCHINDUCTOR_CACHE_DIR``) is left alone; importing torch sets it to its default."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # where torch keeps it

    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    default = os.path.abspath(default_cache_dir())
    if capability and (chosen is None or os.path.abspath(chosen) == default):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default}_{capability.lower()}"


def compile_module(module: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """``torch.compile(module, **options)`` into the cache folder of this ``ATEN_CPU_CAPABILITY``
    (``compile_cache_per_capability``): every compilation of the package goes through here."""
    compile_cache_per_capability()
    return torch.compile(module, **options)


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
    keeps_memory = device.type == "cpu" and allocator_tunable()
    settings = {"amp": amp, "channels_last": channels_last, "compile": compile}
    forced = [name for name, value in settings.items() if value != "auto"]
    if len(forced) == len(settings):
        reason = "forced"
    else:
        reason = f"auto for an {cpu_kind().describe()}" if device.type == "cpu" else f"auto for {device.type}"
        reason += f" ({', '.join(forced)} forced)" if forced else ""
    return ExecutionPath(precision, layout, compiled, reason, keeps_memory)
