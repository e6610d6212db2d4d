"""The execution path (precision, layout, compilation) chosen from what the processor reports.

The CPU's capabilities are stubbed, so every kind is tested on whichever CPU runs the suite; the paths
themselves are checked to compute the same loss on a tiny batch.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from resnets import create_model, runtime
from resnets.cli import main
from resnets.runtime import COMPILE_MIN_IMAGES, CpuKind, cpu_kind, execution_path
from resnets.train.recipes import get_recipe

CPU = torch.device("cpu")
LONG, SHORT = COMPILE_MIN_IMAGES, COMPILE_MIN_IMAGES - 1
BF16_CPU = CpuKind("AVX512", bfloat16=True, float16=False, compiler=True)
AVX2_CPU = CpuKind("AVX2", bfloat16=False, float16=False, compiler=True)


def stub_cpu(monkeypatch, kind: CpuKind) -> None:
    monkeypatch.setattr(runtime, "cpu_kind", lambda: kind)


def auto(device=CPU, images=LONG, **forced):
    settings = {"amp": "auto", "channels_last": "auto", "compile": "auto", **forced}
    return execution_path(
        settings["amp"], "bfloat16", settings["channels_last"], settings["compile"], device, images
    )


@pytest.fixture
def fresh_cpu_kind(monkeypatch):
    """``cpu_kind`` is cached per process: read the stubbed capabilities anew, and forget them after."""
    cpu_kind.cache_clear()
    yield
    cpu_kind.cache_clear()


@pytest.mark.parametrize(
    ("capability", "onednn", "hardware", "expected"),
    [
        ("AVX512", None, True, True),  # AVX512-BF16 or AMX: bfloat16 arithmetic
        ("AVX512", "AVX512_CORE_AMX", True, True),
        ("AVX512", None, False, False),  # Ice Lake, Skylake: AVX-512 without bfloat16
        ("AVX2", None, True, False),  # ATEN_CPU_CAPABILITY=avx2: ATen's kernels emulate it
        ("AVX512", "AVX2", True, False),  # ONEDNN_MAX_CPU_ISA=AVX2: oneDNN's convolutions emulate it
        ("AVX512", "avx512_core", True, False),
    ],
)
def test_cpu_kind_honours_the_emulation_variables(
    monkeypatch, fresh_cpu_kind, capability, onednn, hardware, expected
):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: hardware)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    if onednn is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn)
    kind = cpu_kind()
    assert kind.bfloat16 is expected and kind.capability == capability
    assert runtime.computes_natively(CPU, torch.bfloat16) is expected


def test_cpu_kind_looks_for_a_cxx_compiler(monkeypatch, fresh_cpu_kind):
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    assert not cpu_kind().compiler
    cpu_kind.cache_clear()
    monkeypatch.setenv("CXX", "my-g++")
    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/opt/bin/my-g++" if name == "my-g++" else None)
    assert cpu_kind().compiler


def test_a_bfloat16_cpu_trains_in_bfloat16_channels_last_and_eager(monkeypatch):
    stub_cpu(monkeypatch, BF16_CPU)
    path = auto()
    assert (path.precision, path.channels_last, path.compile) == (torch.bfloat16, True, False)
    assert path.reason == "auto for an AVX512 CPU with bfloat16"
    assert auto(amp=False).compile  # its float32 path compiles as an AVX2 CPU's does


def test_an_avx2_cpu_trains_in_float32_and_compiles_a_long_run(monkeypatch):
    stub_cpu(monkeypatch, AVX2_CPU)
    path = auto(images=LONG)
    assert (path.precision, path.channels_last, path.compile) == (None, True, True)
    assert path.reason == "auto for an AVX2 CPU without bfloat16"
    assert not auto(images=SHORT).compile  # compiling would cost more than it saves
    stub_cpu(monkeypatch, CpuKind("AVX2", bfloat16=False, float16=False, compiler=False))
    assert not auto(images=LONG).compile  # inductor needs a C++ compiler


def test_every_choice_can_be_forced(monkeypatch):
    stub_cpu(monkeypatch, BF16_CPU)
    path = auto(amp=False, channels_last=False, compile=True, images=SHORT)
    assert (path.precision, path.channels_last, path.compile, path.reason) == (None, False, True, "forced")
    stub_cpu(monkeypatch, AVX2_CPU)
    assert auto(amp=True).precision is torch.bfloat16  # forced even where it is emulated
    partly = auto(compile=False)
    assert not partly.compile and partly.reason == "auto for an AVX2 CPU without bfloat16 (compile forced)"


def test_gpus_run_eager_and_mps_in_nchw(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    cuda = auto(device=torch.device("cuda"))
    assert (cuda.precision, cuda.channels_last, cuda.compile) == (torch.bfloat16, True, False)
    mps = auto(device=torch.device("mps"))
    assert (mps.precision, mps.channels_last, mps.compile) == (None, False, False)


def test_the_same_settings_choose_the_same_path(monkeypatch):
    """No choice changes what a seeded run computes on one machine from one run to the next."""
    stub_cpu(monkeypatch, AVX2_CPU)
    assert auto() == auto() and auto(images=SHORT) == auto(images=SHORT)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype, channels_last: bool, compiled: bool):
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    with runtime.autocast(CPU, dtype):
        return nn.functional.cross_entropy(forward(x).float(), y).item()


def test_every_path_computes_the_same_loss_on_a_tiny_batch():
    torch.manual_seed(0)
    model = create_model("resnet_cifar", depth=8, num_classes=10, in_chans=1).train()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    reference = _loss(model, x, y, None, channels_last=False, compiled=False)
    for channels_last, compiled in ((True, False), (True, True)):
        assert _loss(model, x, y, None, channels_last, compiled) == pytest.approx(reference, rel=1e-4)
    # bfloat16 keeps 8 bits of mantissa: within about 1% of the float32 loss
    assert _loss(model, x, y, torch.bfloat16, True, False) == pytest.approx(reference, rel=2e-2)


def test_the_first_line_and_summary_name_the_chosen_path(monkeypatch, tmp_path, capsys):
    stub_cpu(monkeypatch, AVX2_CPU)
    argv = ["train", "--model", "resnet_cifar", "--set", 'model_kwargs={"depth": 8}', "--train-subset", "64"]
    argv += ["--test-subset", "32", "--batch-size", "32", "--iterations", "1", "--progress", "line"]
    assert main([*argv, "--output", str(tmp_path / "run")]) == 0
    first = capsys.readouterr().err.strip().splitlines()[0]  # progress goes to stderr
    kept = runtime.allocator_tunable()  # glibc, as on this project's machines
    memory = ", freed memory kept" if kept else ""
    assert f"float32, channels-last, eager{memory}; auto for an AVX2 CPU without bfloat16" in first
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["execution_path"] == {
        "precision": "float32",
        "channels_last": True,
        "compile": False,
        "keeps_freed_memory": kept,
        "reason": "auto for an AVX2 CPU without bfloat16",
    }
    forced = ["--no-channels-last", "--no-amp", "--no-compile"]
    assert main([*argv, *forced, "--output", str(tmp_path / "forced")]) == 0
    assert f"float32, NCHW, eager{memory}; forced" in capsys.readouterr().err


FAULTS = """
import resource, torch
from resnets import runtime
print(runtime.keep_freed_memory())
for i in range(12):  # a step's activations (six of 16 MiB), all freed at its end
    if i == 2:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    activations = [torch.empty(4 << 20).fill_(1.0) for _ in range(6)]
    del activations
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of_ten_steps(**environment: str) -> tuple[bool, int]:
    env = {**os.environ, **environment, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env, check=True)
    kept, faults = out.stdout.split()
    return kept == "True", int(faults)


@pytest.mark.skipif(not runtime.allocator_tunable(), reason="glibc's malloc only")
def test_kept_freed_memory_is_reused_without_page_faults():
    # A user's own glibc setting is left alone; with this one every block is mapped afresh and returned
    # when freed, so each of the 10 steps faults on every 4 KiB page of its 96 MiB again.
    kept, default_faults = faults_of_ten_steps(MALLOC_MMAP_THRESHOLD_="131072")
    assert not kept and default_faults == pytest.approx(10 * 6 * 4096, rel=0.1)
    kept, faults = faults_of_ten_steps()
    assert kept and faults < default_faults / 20  # at most the first step's block or so


def test_each_aten_capability_compiles_into_a_cache_of_its_own(monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    default = os.path.abspath(default_cache_dir())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default)  # as importing torch leaves it
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    runtime.compile_cache_per_capability()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == default
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "AVX2")
    runtime.compile_cache_per_capability()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == default + "_avx2"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/mine")
    runtime.compile_cache_per_capability()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/mine"


def test_freed_memory_is_kept_on_cpu_only_and_not_against_the_users_malloc_settings(monkeypatch):
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("glibc", "2.36"))
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert auto().keeps_freed_memory and not auto(device=torch.device("cuda")).keeps_freed_memory
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")
    assert not auto().keeps_freed_memory
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert not auto().keeps_freed_memory
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))  # musl, macOS, Windows
    assert not auto().keeps_freed_memory


def test_the_cpu_paths_benchmark_measures_every_path_this_cpu_runs_fast():
    from benchmarks.cpu_paths import candidates
    from benchmarks.step_options import StepConfig

    default, *others = candidates(bfloat16=False)
    first = StepConfig.parse(default)
    assert (first.batch_size, first.options.channels_last, first.options.compile, first.options.amp) == (
        get_recipe("fast-cpu").batch_size,
        False,
        False,
        None,
    )
    options = [StepConfig.parse(c).options for c in others]
    paths = {(o.amp, o.channels_last, o.compile) for o in options}
    assert paths == {(None, False, True), (None, True, False), (None, True, True)}
    with_bf16 = [StepConfig.parse(c).options for c in candidates(bfloat16=True)]
    assert len(with_bf16) == 8 and sum(o.amp == "bf16" for o in with_bf16) == 4


@pytest.mark.skipif(not runtime.allocator_tunable(), reason="glibc's malloc only")
def test_the_cpu_paths_benchmark_alternates_the_allocators_in_two_processes():
    from benchmarks.cpu_paths import ALLOCATORS, allocator_comparison
    from benchmarks.harness import BenchOptions

    comparison = allocator_comparison(BenchOptions(quick=True, rounds=2), "bs=16,cl=1,compile=0")
    assert list(comparison.values) == list(ALLOCATORS)
    assert all(len(rounds) == 2 and min(rounds) > 0 for rounds in comparison.values.values())
