"""Shared test settings: deterministic seeds, no GUI backend for matplotlib."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` (make test): one worker process per core, each computing on one thread, since two
    # processes of two threads each on two cores wait on each other (3-6x slower). Before torch loads,
    # so that the worker's own subprocesses (torchrun, the CLI) inherit it too.
    os.environ["OMP_NUM_THREADS"] = "1"

from resnets import runtime  # noqa: E402 (torch loads here, after the thread count is set)

# Tests compile too: an emulated AVX2 run (ATEN_CPU_CAPABILITY=avx2) gets a compile cache of its own.
runtime.compile_cache_per_capability()


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny inputs: one intra-op thread is as fast, and far faster when other jobs share the two
    cores (OpenMP threads then wait on each other: 15x slower measured here). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
