"""Figures of the reproduced experiments: data in, PNG out.

matplotlib's object API (``Figure``, no pyplot): no global state, no display, safe in tests and
threads. ``resnets.io.save_figure`` writes each PNG atomically, so a killed run never leaves a
half-written one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Series = tuple[Sequence[float], Sequence[float]]  # (x values, y values)


def _figure(**kwargs: Any) -> Figure:
    from matplotlib.figure import Figure  # heavy: imported when a figure is drawn, not with the package

    return Figure(**kwargs)


def _colors(n: int) -> list:
    from matplotlib import colormaps  # heavy: imported when a figure is drawn, not with the package

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _finish(fig: Figure, path: str | Path, title: str, title_axes: Axes | None = None) -> Path:
    """Title the figure (or ``title_axes``), lay it out and write it."""
    if title:
        if title_axes is None:
            fig.suptitle(title)
        else:
            title_axes.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_error_curves(
    panels: Mapping[str, Mapping[str, Mapping[str, Series]]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Paper Fig. 1 / Fig. 6: one panel per family (e.g. plain | ResNet), training error dashed and
    test error bold against iterations, one colour per network.

    ``panels[panel][network]`` maps ``"train"`` and/or ``"test"`` to ``(iterations, error %)``.
    Networks with the same name share a colour across panels; all panels share the y axis.
    """
    networks = list(dict.fromkeys(name for nets in panels.values() for name in nets))
    color = dict(zip(networks, _colors(len(networks)), strict=True))
    fig = _figure(figsize=(5.2 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (panel, nets) in zip(axes, panels.items(), strict=True):
        for name, series in nets.items():
            if "train" in series:
                few = len(series["train"][0]) < 3  # a marker, or a lone point would not show
                ax.plot(
                    *series["train"],
                    "--",
                    marker="." if few else None,
                    color=color[name],
                    linewidth=1.0,
                    label=f"{name} train",
                )
            if "test" in series:  # evaluated once per epoch: few points, each marked
                ax.plot(
                    *series["test"],
                    "-",
                    marker="o",
                    markersize=3,
                    color=color[name],
                    linewidth=2.2,
                    label=f"{name} test",
                )
        ax.set_title(panel)
        ax.set_xlabel("iterations")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("error (%)")
    return _finish(fig, path, title)


def plot_ours_vs_paper(
    labels: Sequence[str],
    ours: Sequence[float | None],
    paper: Sequence[float | None],
    path: str | Path,
    *,
    ylabel: str = "test error (%)",
    title: str = "",
    ours_label: str = "ours",
    paper_label: str = "paper",
) -> Path:
    """Grouped bars: our number beside the paper's for each entry (a missing value leaves a gap)."""
    fig = _figure(figsize=(max(5.0, 0.9 * len(labels) + 2), 4.2))
    ax = fig.subplots()
    width = 0.4
    xs = range(len(labels))
    for offset, values, name, color in (
        (-width / 2, ours, ours_label, "tab:blue"),
        (width / 2, paper, paper_label, "tab:gray"),
    ):
        pts = [(x + offset, v) for x, v in zip(xs, values, strict=True) if v is not None]
        if pts:
            ax.bar([p[0] for p in pts], [p[1] for p in pts], width, label=name, color=color)
    ax.set_xticks(
        list(xs),
        labels=list(labels),
        rotation=30 if len(labels) > 5 else 0,
        ha="right" if len(labels) > 5 else "center",
    )
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path, title, ax)


def plot_responses(series: Mapping[str, Sequence[float]], path: str | Path, *, title: str = "") -> Path:
    """Paper Fig. 7: std of each 3x3 layer's response, in layer order (top) and sorted descending (bottom).

    Plain nets dashed, residual nets solid, as the paper draws them (labels starting "plain" are plain).
    """
    fig = _figure(figsize=(7.5, 6.4))
    top, bottom = fig.subplots(2, 1)
    for (label, stds), color in zip(series.items(), _colors(len(series)), strict=True):
        style = "--" if label.lower().startswith("plain") else "-"
        top.plot(range(1, len(stds) + 1), stds, style, color=color, label=label)
        bottom.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), style, color=color, label=label)
    top.set_xlabel("layer index (original order)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _finish(fig, path, title, top)


def plot_lesion(
    deleted: Mapping[str, Sequence[float]],
    baseline: Mapping[str, float],
    path: str | Path,
    *,
    swapped: Mapping[str, Sequence[float]] | None = None,
    downsampling: Sequence[bool] = (),
    title: str = "",
) -> Path:
    """Veit et al. Fig. 3/4: test error with each unit deleted (and with adjacent units swapped),
    the intact network's error as a dotted line of the same colour. Units that downsample
    (``downsampling[i]`` true) are shaded: Veit et al. single them out as the costly ones."""
    panels = 2 if swapped else 1
    fig = _figure(figsize=(6.8 * panels, 4.2))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    colors = dict(zip(deleted, _colors(len(deleted)), strict=True))
    for i, down in enumerate(downsampling):
        if down:
            axes[0].axvspan(i + 0.5, i + 1.5, color="0.85", zorder=0,
                            label="downsampling unit" if i == downsampling.index(True) else None)
    for ax, data, xlabel in (
        (axes[0], deleted, "deleted unit"),
        *(((axes[1], swapped, "swapped pair (unit i with i+1)"),) if swapped else ()),
    ):
        for label, errors in data.items():
            if not errors:
                continue
            ax.plot(range(1, len(errors) + 1), errors, "o-", markersize=3, color=colors[label], label=label)
            ax.axhline(baseline[label], linestyle=":", color=colors[label])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test error (%)")
        ax.set_ylim(0, 100)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return _finish(fig, path, title)


def plot_path_lengths(
    fractions: Sequence[float],
    path: str | Path,
    *,
    lengths: Sequence[int] | None = None,
    mean_norm: Sequence[float] | None = None,
    total_norm: Sequence[float] | None = None,
    title: str = "",
) -> Path:
    """Veit et al. Fig. 6: distribution of path lengths; with gradients measured, the gradient norm of one
    path of each length and the total gradient per length (norm x number of paths)."""
    panels = 3 if mean_norm is not None else 1
    fig = _figure(figsize=(4.6 * panels, 3.8))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].bar(range(len(fractions)), fractions, color="tab:blue")
    axes[0].set_xlabel("path length (units passed through their branch)")
    axes[0].set_ylabel("fraction of paths")
    axes[0].set_title("(a) path lengths")
    if mean_norm is not None and lengths is not None and total_norm is not None:
        axes[1].semilogy(lengths, mean_norm, "o-", markersize=3, color="tab:orange")
        axes[1].set_xlabel("path length")
        axes[1].set_ylabel("gradient norm of one path")
        axes[1].set_title("(b) gradient per path")
        total = sum(total_norm)
        axes[2].bar(lengths, [t / total for t in total_norm], color="tab:green")
        axes[2].set_xlabel("path length")
        axes[2].set_ylabel("share of total gradient")
        axes[2].set_title("(c) total gradient by length")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return _finish(fig, path, title)


def plot_loss_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    thresholds: Sequence[float] = (),
    title: str = "",
) -> Path:
    """Loss against steps on a log scale (the identity toy); plain curves dashed, thresholds dotted."""
    fig = _figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for (label, losses), color in zip(curves.items(), _colors(len(curves)), strict=True):
        style = "--" if label.lower().startswith("plain") else "-"
        ax.semilogy(range(1, len(losses) + 1), losses, style, color=color, label=label)
    for t in thresholds:
        ax.axhline(t, linestyle=":", color="gray", linewidth=0.8)
    ax.set_xlabel("steps")
    ax.set_ylabel("mean squared error")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path, title, ax)


def plot_error_vs_cost(
    points: Mapping[str, tuple[float, float, float]],
    path: str | Path,
    *,
    published: Mapping[str, tuple[float, float]] | None = None,
    title: str = "",
) -> Path:
    """The survey's figure: test error against parameters (left, log scale) and against training time
    (right), one labelled point per network; ``points[label] = (parameters, seconds, error %)``.
    ``published[label] = (parameters, error %)`` adds the papers' (CIFAR-10) numbers to the left panel as
    open grey markers, on a second y axis: another dataset, so another scale."""
    fig = _figure(figsize=(11.5, 4.6))
    by_params, by_time = fig.subplots(1, 2)
    colors = dict(zip(points, _colors(len(points)), strict=True))
    for label, (params, seconds, error) in points.items():
        for ax, x in ((by_params, params), (by_time, seconds)):
            ax.plot([x], [error], "o", color=colors[label], markersize=6)
            ax.annotate(label, (x, error), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if published:
        paper_ax = by_params.twinx()
        for label, (params, error) in published.items():
            paper_ax.plot([params], [error], "s", markerfacecolor="none", color="0.55", markersize=5)
            paper_ax.annotate(label, (params, error), textcoords="offset points", xytext=(4, -8), fontsize=6,
                              color="0.45")
        paper_ax.set_ylabel("published CIFAR-10 test error (%), open squares", color="0.45")
    by_params.set_xscale("log")
    by_params.set_xlabel("parameters (CIFAR-10 network)")
    by_time.set_xlabel("training time (s)")
    for ax in (by_params, by_time):
        ax.set_ylabel("our test error (%)")
        ax.grid(True, alpha=0.3)
    return _finish(fig, path, title)
