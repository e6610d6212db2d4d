"""Data-parallel training under ``torchrun``: process group set-up, rank helpers, count reduction.

``torchrun --nproc-per-node N -m resnets train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; we
then join a process group (gloo on CPU, nccl on CUDA), each process takes one GPU
(``cuda:LOCAL_RANK``) and one shard of the data, and only rank 0 writes files. Without those
variables everything here is a no-op and the run is a single process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..runtime import select_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank and world size from torchrun's environment variables (single process without them)."""
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as exc:
        raise ConfigError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}") from None


def setup(device_name: str | None = None, timeout_minutes: float = 30) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; choose this process's device."""
    info = env_info()
    device = select_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if backend == "nccl" else {}
        timeout = datetime.timedelta(minutes=timeout_minutes)
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    return info, device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_active():
        dist.barrier()


def sum_counts(values: list[float], device: torch.device) -> list[float]:
    """Sum per-process counts over all processes (loss sums, error counts, image counts).

    Metrics are reduced as counts, not averaged per process, so shards of unequal size
    still give the exact global error rate.
    """
    if not is_active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def sum_tensor(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over all processes (itself without a process group); no host read."""
    if is_active():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_buffers(*modules: torch.nn.Module | None) -> None:
    """Every buffer of ``modules`` (BN running statistics) made rank 0's on every process; None and a
    single process: nothing to do."""
    if not is_active():
        return
    for module in modules:
        for buffer in module.buffers() if module is not None else ():
            dist.broadcast(buffer, src=0)


def gather_objects(obj: object) -> list[object]:
    """``obj`` from every process, in rank order (a list of one without a process group)."""
    if not is_active():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
