"""The training step never waits for the device: host reads and collectives per logging interval.

Counted on CPU, where the same code runs as on CUDA: every ``.item()``/``float()``/``int()``/``bool()``
of a tensor dispatches ``aten._local_scalar_dense``, and ``Tensor.tolist`` is counted by wrapping it.
Collectives are counted by making the process-group helpers believe a group exists.
"""

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from resnets.cli import main
from resnets.train import distributed

# 64 training images in batches of 4: 16 steps per epoch; iterations 8 and 16 stay in epoch 1
TINY = [
    "--model",
    "resnet_cifar",
    "--set",
    'model_kwargs={"depth": 8}',
    "--train-subset",
    "64",
    "--test-subset",
    "32",
    "--batch-size",
    "4",
    "--progress",
    "none",
    "--schedule",
    "constant",
    "--no-amp",
    "--no-channels-last",
]
LOG_EVERY = 4


class HostReads(TorchDispatchMode):
    """Counts the scalar reads that make the host wait for the device."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _run(tmp_path, monkeypatch, iterations, *, fake_group=False):
    tolist_calls = [0]
    original_tolist = torch.Tensor.tolist

    def counting_tolist(self):
        tolist_calls[0] += 1
        return original_tolist(self)

    collectives = [0]
    if fake_group:  # the helpers then all-reduce; a one-process "sum" is the identity
        monkeypatch.setattr(distributed, "is_active", lambda: True)

        def counting_collective(*args, **kwargs):
            collectives[0] += 1

        monkeypatch.setattr(dist, "all_reduce", counting_collective)
        monkeypatch.setattr(dist, "broadcast", counting_collective)  # the BN buffers at an epoch's end
        monkeypatch.setattr(dist, "barrier", lambda *a, **k: None)
    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    with HostReads() as reads:
        code = main(
            [
                "train",
                *TINY,
                "--iterations",
                str(iterations),
                "--log-every",
                str(LOG_EVERY),
                "--output",
                str(tmp_path / f"run{iterations}{fake_group}"),
            ]
        )
    monkeypatch.setattr(torch.Tensor, "tolist", original_tolist)
    assert code == 0
    return reads.count + tolist_calls[0], collectives[0]


def test_steps_between_logging_points_read_nothing_from_the_device(tmp_path, monkeypatch):
    short_reads, _ = _run(tmp_path, monkeypatch, 8)
    long_reads, _ = _run(tmp_path, monkeypatch, 16)
    extra_steps = 16 - 8
    # everything but the extra steps (set-up, evaluation, checkpoint) is the same in both runs
    assert long_reads - short_reads <= extra_steps // LOG_EVERY


def test_one_collective_per_logging_interval(tmp_path, monkeypatch):
    _, short = _run(tmp_path, monkeypatch, 8, fake_group=True)
    _, long = _run(tmp_path, monkeypatch, 16, fake_group=True)
    assert short > 0  # the fake group is used
    assert long - short <= (16 - 8) // LOG_EVERY
