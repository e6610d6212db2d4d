"""Figures as small pure functions: data in, PNG out (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a no-op when a backend is already set
    import matplotlib.pyplot as plt

    return plt


def training_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, *,
                    title: str | None = None, x: str = "iteration", test_key: str = "test_error",
                    train_key: str = "train_error", ylim: tuple[float, float] | None = None) -> Path:
    """Error (%) against iterations, as the paper's Fig. 1 and Fig. 6: training error dashed,
    test error bold, one colour per run.

    ``runs`` maps a label (e.g. "resnet20") to the rows of its metrics.csv (dicts holding ``x``,
    ``train_key`` and ``test_key``; missing values are skipped). Returns the written path.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (label, rows) in enumerate(runs.items()):
            color = colors[i % len(colors)]
            for key, style, width, suffix in ((train_key, "--", 1.0, " train"),
                                              (test_key, "-", 2.2, " test")):
                pts = [(r[x], r[key]) for r in rows if r.get(key) is not None and r.get(x) is not None]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(xs, ys, style, color=color, linewidth=width, label=f"{label}{suffix}")
        ax.set_xlabel("iterations" if x == "iteration" else x)
        ax.set_ylabel("error (%)")
        if ylim is not None:
            ax.set_ylim(*ylim)
        if title:
            ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
