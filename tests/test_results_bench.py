"""The results table (``python -m benchmarks results``) on two tiny models with tiny caps: its columns,
the values that can be checked exactly (parameters, mult-adds, sizes, batches, where it ran), the
resume of an interrupted run, the accuracy columns, and the one-line error of a pattern matching nothing.
No assertion on the timings beyond being positive and finite."""

import csv
import math
import time
import types

import pytest
import torch

import resnets
from benchmarks import results
from benchmarks.harness import cpu_info
from resnets.errors import ResnetsError
from resnets.runtime import autocast_dtype, precision_name

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = results.Settings(infer_batch=2, min_train_batch=2, max_train_batch=2, iterations=2, seconds=0.001)
MODELS = ["resnet20", "plain20"]
TIMINGS = ("infer_b1_img_s", "infer_img_s", "train_img_s")
MEASURE = results.measure


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def counting_measure(monkeypatch, fail_at=None):
    """Record the models measured; raise KeyboardInterrupt (a user's Ctrl-C) at the model ``fail_at``."""
    measured = []

    def measure(info, settings, opts):
        if info.name == fail_at:
            raise KeyboardInterrupt
        measured.append(info.name)
        return MEASURE(info, settings, opts)

    monkeypatch.setattr(results, "measure", measure)
    return measured


def test_rows_hold_exact_sizes_and_where_they_ran(tmp_path):
    output = tmp_path / "results.csv"
    returned = results.run_results(MODELS, output, TINY, log=lambda _: None)
    rows = read(output)
    assert rows == returned
    with open(output) as f:
        assert next(csv.reader(f)) == list(results.COLUMNS)
    assert [r["model"] for r in rows] == MODELS
    assert not results.partial_path(output).exists()  # complete: the partial file is gone
    precision = precision_name(autocast_dtype("auto", "bfloat16", torch.device("cpu")))
    for row in rows:
        model = resnets.create_model(row["model"])
        assert int(row["param_count"]) == sum(p.numel() for p in model.parameters())
        assert int(row["mult_adds"]) == resnets.summary(row["model"]).total_mult_adds
        assert (row["input_size"], row["in_chans"], row["num_classes"]) == ("32x32", "3", "10")
        assert (row["infer_batch"], row["train_batch"]) == ("2", "2")
        assert (row["precision"], row["channels_last"]) == (precision, "True")
        assert (row["cpu"], row["torch"], row["threads"]) == (cpu_info()["model"], torch.__version__, "1")
        assert row["bf16"] in ("yes", "no") and row["date"] == time.strftime("%Y-%m-%d")
        assert row["note"] == ""
        for key in TIMINGS:
            assert math.isfinite(float(row[key])) and float(row[key]) > 0


def test_an_interrupted_run_continues_with_the_missing_models_only(tmp_path, monkeypatch):
    output = tmp_path / "results.csv"
    counting_measure(monkeypatch, fail_at="plain20")
    with pytest.raises(KeyboardInterrupt):
        results.run_results(MODELS, output, TINY, log=lambda _: None)
    assert not output.exists()
    (before,) = read(results.partial_path(output))  # written after the first model
    assert before["model"] == "resnet20"

    measured = counting_measure(monkeypatch)
    rows = results.run_results(MODELS, output, TINY, log=lambda _: None)
    assert measured == ["plain20"]
    # kept as measured, timings included; the accuracy columns come from the registry at the end
    accuracy = ("our_top1", "our_weights", "publisher_top1", "publisher_weights")
    assert {k: rows[0][k] for k in before if k not in accuracy} == {
        k: v for k, v in before.items() if k not in accuracy
    }
    assert rows[0]["our_top1"] == results.accuracy_columns(["resnet20"])["resnet20"]["our_top1"]
    assert not results.partial_path(output).exists()


def test_a_row_measured_under_other_conditions_is_measured_again(tmp_path, monkeypatch):
    output = tmp_path / "results.csv"
    counting_measure(monkeypatch, fail_at="plain20")
    with pytest.raises(KeyboardInterrupt):
        results.run_results(MODELS, output, TINY, log=lambda _: None)
    partial = results.partial_path(output)
    (row,) = read(partial)
    partial.write_text(results.csv_text([row | {"torch": "0.0.1"}]))  # another torch
    measured = counting_measure(monkeypatch)
    results.run_results(MODELS, output, TINY, log=lambda _: None)
    assert measured == MODELS


def test_the_plan_measures_and_writes_nothing(tmp_path, monkeypatch):
    measured, lines = counting_measure(monkeypatch), []
    assert results.run_results(["resnet20"], tmp_path / "r.csv", TINY, plan_only=True, log=lines.append) == []
    assert measured == [] and list(tmp_path.iterdir()) == []
    assert "estimate" in lines[1] and "resnet20" in lines[-1]


def test_training_batch_shrinks_with_mult_adds_and_the_estimate_grows():
    settings = results.Settings()
    assert [settings.train_batch(int(g * 1e9)) for g in (0.041, 1.8, 4.09, 7.8, 35)] == [64, 32, 16, 8, 8]
    info = results.describe("resnet20")
    bigger = results.ModelInfo("x", info.input_size, 10, info.param_count, 100 * info.mult_adds, info.modules)
    rates = results.DEFAULT_RATES
    assert (
        0
        < results.estimate_seconds(info, settings, rates)
        < results.estimate_seconds(bigger, settings, rates)
    )


def test_a_pattern_matching_nothing_is_one_line(capsys):
    with pytest.raises(ResnetsError, match="'resnet5' matches no registered model. Did you mean: .*resnet50"):
        results.select_models(["resnet5"])
    assert results.select_models(["resnet2?", "plain20"]) == [
        "plain20",
        "resnet20",
        "resnet26",
    ]  # the registry's order
    assert results.main(["--models", "nosuchnet*", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --models 'nosuchnet*' matches no registered model") and err.count("\n") == 1


def test_accuracy_columns_read_the_weights_registry(monkeypatch):
    def entry(model, tag, shipped, metrics=None, metadata=None, default=False):
        return types.SimpleNamespace(
            model=model,
            tag=tag,
            shipped=shipped,
            metrics=metrics or {},
            metadata=metadata or {},
            default=default,
        )

    entries = {
        "resnet20.fashion_mnist": entry("resnet20", "fashion_mnist", True, {"acc@1": 93.33}),
        "resnet50.IMAGENET1K_V1": entry("resnet50", "IMAGENET1K_V1", False, metadata={"acc@1": 76.13}),
        "resnet50.IMAGENET1K_V2": entry(
            "resnet50", "IMAGENET1K_V2", False, metadata={"acc@1": 80.858}, default=True
        ),
        "resnet18.a1_in1k": entry("resnet18", "a1_in1k", False, metadata={"metrics": {"top1": 71.49}}),
    }
    monkeypatch.setattr(results, "list_pretrained", lambda: list(entries))
    monkeypatch.setattr(results, "get_weights", entries.__getitem__)
    columns = results.accuracy_columns(["resnet20", "resnet50", "resnet18", "plain20"])
    assert columns["resnet20"] == {"our_top1": "93.33", "our_weights": "fashion_mnist"}
    assert columns["resnet50"] == {
        "our_top1": "",
        "our_weights": "",
        "publisher_top1": "80.86",
        "publisher_weights": "IMAGENET1K_V2",
    }
    assert columns["resnet18"]["publisher_top1"] == "71.49"
    assert columns["plain20"] == {"our_top1": "", "our_weights": ""}
