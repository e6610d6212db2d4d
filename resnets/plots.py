"""Figures of runs as small pure functions: data in, PNG out.

One convention for every figure of the package (the experiments' too): matplotlib's object API
(``Figure``, no pyplot state, no backend switch) and the atomic save of ``resnets.io``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from .io import save_figure


def training_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    x: str = "iteration",
    test_key: str = "test_error",
    train_key: str = "train_error",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Error (%) against iterations, as the paper's Fig. 1 and Fig. 6: training error dashed,
    test error bold, one colour per run.

    ``runs`` maps a label (e.g. "resnet20") to the rows of its metrics.csv (dicts holding ``x``,
    ``train_key`` and ``test_key``; missing values are skipped). Returns the written path.
    """
    # matplotlib is imported when a figure is drawn: it is slow to import and optional for training
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.add_subplot()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, rows) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        for key, style, width, suffix in ((train_key, "--", 1.0, " train"), (test_key, "-", 2.2, " test")):
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
    return save_figure(fig, path, dpi=120)


def confusion_matrix_figure(
    confusion: Tensor, classes: Sequence[str], path: str | os.PathLike, *, title: str = ""
) -> Path:
    """A confusion-matrix PNG (rows: true class, columns: predicted; colours: row-normalised)."""
    from matplotlib.figure import Figure  # lazily, as above

    counts = confusion.double()
    rates = (counts / counts.sum(dim=1, keepdim=True).clamp_min(1)).numpy()
    n = len(classes)
    size = min(4 + 0.45 * n, 30)
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    if n <= 40:  # beyond that the labels overlap and say nothing
        ax.set_xticks(range(n), labels=classes, rotation=90)
        ax.set_yticks(range(n), labels=classes)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    int(confusion[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
