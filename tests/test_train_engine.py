"""The training loop end to end on tiny Fashion-MNIST subsets: outputs, exact resume, fallbacks,
divergence, bad input, fine-tuning options. Runs the CLI in-process (``resnets.cli.main``)."""

import contextlib
import csv
import io
import json

import pytest
import torch

from resnets import checkpoints as ck
from resnets import runtime
from resnets.cli import main

# An 8-layer 6n+2 net: every code path of resnet20 at a third of the cost.
TINY = [
    "--model",
    "resnet_cifar",
    "--set",
    'model_kwargs={"depth": 8}',
    "--train-subset",
    "256",
    "--test-subset",
    "128",
    "--batch-size",
    "64",
    "--progress",
    "none",
]


def train(tmp_path, *extra, name="run"):
    out = tmp_path / name
    code = main(["train", *TINY, "--output", str(out), *extra])
    return code, out


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One short run, shared: 6 iterations = one full epoch of 4 and 2 of the next (an iteration budget
    that ends mid-epoch, as paper-cifar's 64k does)."""
    out = tmp_path_factory.mktemp("train") / "run"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(
            [
                "train",
                *TINY,
                "--output",
                str(out),
                "--iterations",
                "6",
                "--epochs",
                "2",
                "--log-every",
                "2",
                "--progress",
                "line",
            ]
        )
    return code, out, stderr.getvalue()


def test_a_run_writes_every_output(finished_run):
    code, out, printed = finished_run
    assert code == 0
    for name in (
        "config.json",
        "metrics.csv",
        "steps.jsonl",
        "last.pt",
        "last-1.pt",
        "best.pt",
        "model.safetensors",
        "curves.png",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    assert "epoch 2" in printed and "test error: final" in printed


def test_metrics_follow_the_iteration_budget(finished_run):
    _, out, _ = finished_run
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [(int(r["epoch"]), int(r["iteration"])) for r in rows] == [(1, 4), (2, 6)]
    assert all(0 <= float(r["test_error"]) <= 100 and float(r["images_per_s"]) > 0 for r in rows)
    assert all(r["val_error"] == "" for r in rows)  # fast-cpu has no validation split
    steps = [json.loads(line) for line in open(out / "steps.jsonl")]
    assert [s["iteration"] for s in steps] == [2, 4, 6]
    assert all(set(s) >= {"loss", "error", "lr", "images_per_s", "epoch"} for s in steps)
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["name"] == "fast-cpu" and config["recipe"]["iterations"] == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_test_error"] == pytest.approx(float(rows[-1]["test_error"]), abs=1e-3)
    assert summary["iterations"] == 6


def test_checkpoints_hold_what_eval_and_resume_need(finished_run):
    _, out, _ = finished_run
    ckpt = ck.load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["iteration"] == 6 and ckpt["data"]["dataset"] == "fashion-mnist"
    assert len(ckpt["data"]["classes"]) == 10 and ckpt["data"]["in_chans"] == 1
    assert ckpt["versions"]["torch"] == str(torch.__version__)
    assert ckpt["model"] == {"name": "resnet_cifar", "kwargs": {"depth": 8, "num_classes": 10, "in_chans": 1}}
    for key in ("optimizer", "scheduler", "scaler", "rng", "config"):
        assert ckpt[key] is not None, key
    assert ck.load_checkpoint(out / "last-1.pt")["epoch"] == 1
    # the final weights file and the checkpoint hold the same model
    from resnets.weights import load_weights

    model, _ = ck.load_model(out / "last.pt")
    final = load_weights(out / "model.safetensors")
    assert final.keys() == model.state_dict().keys()
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())


def test_non_finite_loss_stops_without_writing_bad_weights(tmp_path, capsys):
    code, out = train(tmp_path, "--epochs", "2", "--lr", "1e30", "--schedule", "constant")
    assert code == 2
    err = capsys.readouterr().err
    assert "loss is" in err and "lower --lr" in err
    for path in out.glob("*.pt"):
        assert ck.all_finite(ck.load_checkpoint(path)["state_dict"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet21"], "unknown model 'resnet21'"),
        (["--dataset", "fashion_mnist"], "unknown dataset"),
        (["--set", 'model_kwargs={"shortcutt": "B"}'], "unknown option 'shortcutt'"),
        (["--recipe", "fastcpu"], "unknown recipe"),
    ],
)
def test_bad_names_fail_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["train", "--output", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_freeze_bn_and_init_weights_fine_tune(tmp_path, capsys):
    from resnets import create_model
    from resnets.weights import save_weights

    source = create_model("resnet_cifar", depth=8, num_classes=5, in_chans=1)
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    save_weights(source, tmp_path / "init.safetensors")
    code, out = train(
        tmp_path,
        "--epochs",
        "1",
        "--init-weights",
        str(tmp_path / "init.safetensors"),
        "--freeze-bn",
        "--progress",
        "line",
    )
    assert code == 0
    assert "fc" in capsys.readouterr().err  # the report says the 5-class head was replaced
    trained = weights(out / "last.pt")
    src = source.state_dict()
    for key, value in src.items():
        if "running_" in key:
            assert torch.equal(trained[key], value), key  # statistics frozen
    assert not torch.equal(trained["conv1.weight"], src["conv1.weight"])  # weights trained
    assert trained["fc.weight"].shape == (10, 64)


def test_out_of_memory_suggests_a_smaller_batch(monkeypatch):
    from resnets.errors import ResnetsError
    from resnets.train import loop

    class Exploding(torch.nn.Module):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(ResnetsError, match="smaller --batch-size .e.g. 16"):
        with loop.explained_failures(torch.device("cpu"), 32):
            Exploding()(torch.zeros(32, 1, 8, 8))


def test_a_new_run_refuses_an_output_folder_holding_another_run(finished_run, capsys):
    _, out, _ = finished_run
    before = (out / "last.pt").read_bytes()
    assert main(["train", *TINY, "--output", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "last.pt").read_bytes() == before


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_on_cpu_trains_without_a_grad_scaler(tmp_path, dtype):
    # small batches: float16 arithmetic is emulated on most CPUs (slow), and 2 steps show what matters
    small = ["--batch-size", "16", "--test-subset", "32"]
    code, out = train(
        tmp_path, "--iterations", "2", "--amp", "--amp-dtype", dtype, "--no-channels-last", *small
    )
    assert code == 0
    ckpt = ck.load_checkpoint(out / "last.pt")
    assert ckpt["config"]["recipe"]["amp_dtype"] == dtype
    assert ckpt["scaler"] == {}  # GradScaler only for float16 on CUDA
    assert ck.all_finite(ckpt["state_dict"])
    assert all(v.dtype != torch.bfloat16 and v.dtype != torch.float16 for v in ckpt["state_dict"].values())


def test_amp_auto_resolves_at_run_time_and_the_summary_says_to_what(tmp_path, monkeypatch):
    # a CPU without bfloat16 arithmetic: "auto" must fall back to float32 there
    without_bf16 = runtime.CpuKind("AVX2", bfloat16=False, float16=False, compiler=False)
    monkeypatch.setattr(runtime, "cpu_kind", lambda: without_bf16)
    code, out = train(tmp_path, "--iterations", "2", "--set", "amp=auto")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "float32"
    assert ck.load_checkpoint(out / "last.pt")["config"]["recipe"]["amp"] == "auto"


def test_final_test_only_reads_the_test_split_once_at_the_end(tmp_path):
    # the reproductions' recipe: epochs evaluated on the validation split, the test set after the last
    code, out = train(tmp_path, "--iterations", "6", "--val-split", "64", "--set", "final_test_only=True")
    assert code == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["val_error"] != "" for r in rows] == [True, True]
    assert [r["test_error"] != "" for r in rows] == [False, True]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_test_error"] == pytest.approx(float(rows[-1]["test_error"]), abs=1e-3)
    assert main(["train", *TINY, "--set", "final_test_only=True", "--output", str(tmp_path / "x")]) == 2


def test_split_seed_keeps_one_validation_split_across_seeds():
    from resnets.data.loaders import DataConfig, _select

    labels = torch.arange(1000) % 10

    def held_out(**kwargs):
        return _select(DataConfig(val_split=100, **kwargs), labels, labels)[1].tolist()

    assert held_out(seed=0, split_seed=0) == held_out(seed=1, split_seed=0)  # fixed: paired runs
    assert held_out(seed=0) != held_out(seed=1)  # None: the run's seed, as before
    assert sorted(torch.bincount(labels[held_out(seed=3, split_seed=0)]).tolist()) == [10] * 10  # balanced
