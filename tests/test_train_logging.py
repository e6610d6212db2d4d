"""Metrics files, progress display and the Fig. 6 style curves."""

import io
import json

from resnets.plots import training_curves
from resnets.runs import RunFolder, read_metrics, read_steps
from resnets.train.engine import Classification, summary_lines
from resnets.train.logging import MetricsLog, Progress


def test_metrics_log_writes_csv_and_jsonl_and_trims_on_resume(tmp_path):
    log = MetricsLog(RunFolder(tmp_path))
    for epoch in (1, 2, 3):
        log.log_epoch(
            {
                "epoch": epoch,
                "iteration": 10 * epoch,
                "lr": 0.1,
                "train_loss": 1.0 / epoch,
                "train_error": 50.0,
                "test_error": 40.0 - epoch,
                "images_per_s": 100.0,
                "epoch_time_s": 1.0,
                "elapsed_s": float(epoch),
                "not_a_column": "dropped",
            }
        )
        for it in range(10 * epoch - 9, 10 * epoch + 1, 5):
            log.log_step({"iteration": it, "loss": 1.0})
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[0]["val_error"] is None
    assert rows[2]["test_error"] == 37.0 and "not_a_column" not in rows[0]

    # resuming from the epoch-2 checkpoint drops what came after it
    MetricsLog(RunFolder(tmp_path), resume_epoch=2, resume_iteration=20)
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.csv")] == [1, 2]
    assert max(s["iteration"] for s in read_steps(tmp_path / "steps.jsonl")) <= 20
    # a fresh run in the same folder starts new files
    MetricsLog(RunFolder(tmp_path))
    assert read_metrics(tmp_path / "metrics.csv") == [] and read_steps(tmp_path / "steps.jsonl") == []


def test_read_steps_stops_at_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text(json.dumps({"iteration": 1}) + "\n" + '{"iteration": 2, "lo')
    assert read_steps(path) == [{"iteration": 1}]


def test_progress_bar_and_lines():
    stream = io.StringIO()
    bar = Progress("bar", stream=stream)
    seen = []
    for i in bar.epoch(range(3), epoch=1, epochs=2, total=3):
        bar.update(loss=0.5)
        bar.message(f"event {i}")
        seen.append(i)
    assert seen == [0, 1, 2] and "epoch 1/2" in stream.getvalue() and "event 2" in stream.getvalue()

    stream = io.StringIO()
    lines = Progress("auto", stream=stream)  # not a terminal: one line per epoch
    assert lines.mode == "line" and list(lines.epoch(range(2), 1, 1, 2)) == [0, 1]
    row = {
        "epoch": 1,
        "iteration": 2,
        "lr": 0.1,
        "train_loss": 0.3,
        "train_error": 10.0,
        "test_error": 12.5,
        "images_per_s": 99.0,
        "elapsed_s": 61.0,
    }
    lines.epoch_line(Classification.epoch_line(None, row))
    assert stream.getvalue().strip() == (
        "epoch 1 | iter 2 | lr 0.1 | loss 0.3000 | train err 10.00% | test err 12.50% | 99 img/s | 1:01"
    )

    quiet, other_rank = (
        Progress("none", stream=io.StringIO()),
        Progress("line", enabled=False, stream=io.StringIO()),
    )
    quiet.epoch_line("epoch 1")  # nothing shown in mode "none"
    quiet.message("warning")
    other_rank.message("warning")
    assert quiet.stream.getvalue() == "warning\n" and other_rank.stream.getvalue() == ""


def test_summary_lines():
    lines = summary_lines(
        {
            "epochs_done": 5,
            "iterations": 1170,
            "elapsed_s": 500.0,
            "images_per_s": 600.0,
            "final_test_error": 6.93,
            "best_test_error": 6.93,
            "best_test_epoch": 5,
            "output": "runs/x",
        }
    )
    assert lines[0].startswith("finished 5 epochs (1170 iterations) in 8:20")
    assert "accuracy 93.07%" in lines[1] and lines[-1] == "outputs in runs/x"


def test_training_curves_png(tmp_path):
    rows = [
        {"iteration": 10, "train_error": 50.0},
        {"iteration": 20, "train_error": 30.0},
        {"iteration": 20, "test_error": 35.0, "train_error": None},
    ]
    path = training_curves({"resnet20": rows, "plain20": rows}, tmp_path / "sub" / "curves.png", title="t")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
