"""Figures of the reproduced experiments: data in, PNG out.

matplotlib's object API (``Figure``, no pyplot): no global state, no display, safe in tests and
threads. ``resnets.io.save_figure`` writes each PNG atomically, so a killed run never leaves a
half-written one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..analysis.lesion import ReorderingResult
from ..analysis.refinement import Refinement, stage_of
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
    panels: Mapping[str, Mapping[str, Mapping[str, Sequence[Sequence[float]]]]],
    path: str | Path,
    *,
    title: str = "",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Paper Fig. 1 / Fig. 6: one panel per family (e.g. plain | ResNet), training error dashed,
    validation error (or test error, where the epochs were tested) bold, and a final test error a star,
    against iterations, one colour per network.

    ``panels[panel][network]`` maps ``"train"``, ``"val"`` and/or ``"test"`` to ``(iterations, error %)``
    or, over seeds, ``(iterations, mean, min, max)``: the mean drawn, the seed range shaded. Networks with
    the same name share a colour across panels; all panels share the y axis (``ylim``: its range).
    """
    networks = list(dict.fromkeys(name for nets in panels.values() for name in nets))
    color = dict(zip(networks, _colors(len(networks)), strict=True))
    fig = _figure(figsize=(5.2 * len(panels), 4.4))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    styles = {  # (line, marker, width, what)
        "train": ("--", None, 1.0, "training"),
        "val": ("-", "o", 2.2, "validation"),
        "test": ("-", "o", 2.2, "test"),
    }
    shown: dict[str, tuple[str, str | None, float]] = {}  # the curve kinds drawn: one legend entry each
    for ax, (panel, nets) in zip(axes, panels.items(), strict=True):
        for name, series in nets.items():
            tested_per_epoch = len(series.get("test", ((),))[0]) > 1
            named = False  # the network's name goes on its first curve only; the style legend says which
            for key, (line, marker, width, what) in styles.items():
                if key not in series or not len(series[key][0]):
                    continue
                xs, ys = series[key][0], series[key][1]
                if key == "test" and not tested_per_epoch:  # read once, at the end
                    line, marker, width, what = "none", "*", 0, "test (once, at the end)"
                few = len(xs) < 3
                ax.plot(
                    xs,
                    ys,
                    line,
                    marker=marker or ("." if few else None),
                    markersize=9 if marker == "*" else 3,
                    color=color[name],
                    linewidth=width,
                    label=None if named else name,
                )
                named = True
                shown[what] = (line, marker, width)
                if len(series[key]) == 4 and len(xs) > 1:
                    ax.fill_between(
                        xs, series[key][2], series[key][3], color=color[name], alpha=0.12, linewidth=0
                    )
        ax.set_title(panel)
        ax.set_xlabel("iterations")
        ax.grid(True, alpha=0.3)
        if ylim is not None:
            ax.set_ylim(*ylim)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper right")
    if shown:
        from matplotlib.lines import Line2D  # heavy: imported when a figure is drawn

        handles = [
            Line2D(
                [],
                [],
                linestyle=line,
                marker=marker,
                linewidth=max(width, 1.0),
                color="gray",
                markersize=9 if marker == "*" else 4,
                label=what,
            )
            for what, (line, marker, width) in shown.items()
        ]
        axes[0].add_artist(axes[0].legend(handles=handles, fontsize=7, loc="upper center"))
        if axes[0].lines:
            axes[0].legend(fontsize=7, loc="upper right")
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


Differences = Mapping[str, tuple[float, float, float]]  # comparison name -> (B - A, low, high), points


def _seed_points(
    ax: Axes, labels: Sequence[str], per_seed: Mapping[str, Sequence[float]], color: Any
) -> None:
    """Each label's mean over seeds with its seed range as an error bar, and every seed as a dot."""
    for x, label in enumerate(labels):
        values = list(per_seed[label])
        mean = sum(values) / len(values)
        ax.errorbar(
            [x],
            [mean],
            yerr=[[mean - min(values)], [max(values) - mean]],
            fmt="o",
            color=color,
            capsize=4,
            markersize=6,
            zorder=3,
        )
        ax.scatter([x] * len(values), values, s=10, color="black", alpha=0.6, zorder=4)


def _label_axis(ax: Axes, labels: Sequence[str]) -> None:
    long = len(labels) > 4 or max(len(label) for label in labels) > 9
    ax.set_xticks(
        range(len(labels)),
        labels=list(labels),
        rotation=35 if long else 0,
        ha="right" if long else "center",
        fontsize=8,
    )
    ax.set_xlim(-0.6, len(labels) - 0.4)


def plot_differences(ax: Axes, differences: Differences) -> None:
    """A forest plot: each comparison's paired difference with its interval, and the zero line."""
    names = list(differences)
    for y, name in enumerate(names):
        diff, low, high = differences[name]
        ax.errorbar([diff], [y], xerr=[[diff - low], [high - diff]], fmt="s", color="tab:red", capsize=4)
    ax.axvline(0.0, color="gray", linewidth=1)
    ax.set_yticks(range(len(names)), labels=names, fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("paired difference B - A (points, 95% interval)")
    ax.grid(True, axis="x", alpha=0.3)


def plot_seeded_comparison(
    per_seed: Mapping[str, Sequence[float]],
    differences: Differences,
    paper: Mapping[str, float | None],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "test error (%)",
    paper_title: str = "the paper's numbers",
    paper_ylabel: str = "test error (%)",
) -> Path:
    """Ours (mean over seeds, seed range as error bars, each seed a dot; the axis fits our values), the
    paired differences that decide the verdict, and the paper's numbers in a panel of their own."""
    labels = list(per_seed)
    published = [(label, value) for label, value in paper.items() if value is not None]
    panels = 2 + bool(published)
    fig = _figure(figsize=(4.2 * panels + 1.2, 4.4))
    axes = fig.subplots(1, panels, gridspec_kw={"width_ratios": [1.2, 1.0] + [0.9] * bool(published)})
    ours = axes[0]
    _seed_points(ours, labels, per_seed, "tab:blue")
    _label_axis(ours, labels)
    ours.set_ylabel(ylabel)
    ours.set_title("ours: mean, seed range, seeds", fontsize=9)
    ours.grid(True, axis="y", alpha=0.3)
    plot_differences(axes[1], differences)
    axes[1].set_title("paired comparisons (decide the verdict)", fontsize=9)
    if published:
        ax = axes[2]
        ax.bar(range(len(published)), [v for _, v in published], 0.6, color="tab:gray")
        _label_axis(ax, [label for label, _ in published])
        ax.set_ylabel(paper_ylabel)
        ax.set_title(paper_title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    return _finish(fig, path, title)


def plot_responses(
    series: Mapping[str, Sequence[Sequence[float]]],
    path: str | Path,
    *,
    differences: Differences | None = None,
    title: str = "",
) -> Path:
    """Paper Fig. 7: std of each 3x3 layer's response, in layer order (top) and sorted descending
    (middle), each the mean over seeds with the seed range shaded (``series[net]``: seeds x layers);
    below, the comparisons that decide the verdict with their intervals.

    Plain nets dashed, residual nets solid, as the paper draws them (labels starting "plain" are plain).
    """
    rows = 3 if differences else 2
    fig = _figure(figsize=(7.5, 3.2 * rows))
    axes = fig.subplots(rows, 1)
    top, middle = axes[0], axes[1]
    for (label, per_seed), color in zip(series.items(), _colors(len(series)), strict=True):
        style = "--" if label.lower().startswith("plain") else "-"
        for ax, seeds in ((top, per_seed), (middle, [sorted(s, reverse=True) for s in per_seed])):
            layers = range(1, len(seeds[0]) + 1)
            mean = [sum(v) / len(v) for v in zip(*seeds, strict=True)]
            ax.plot(layers, mean, style, color=color, label=label)
            if len(seeds) > 1:
                ax.fill_between(
                    layers,
                    [min(v) for v in zip(*seeds, strict=True)],
                    [max(v) for v in zip(*seeds, strict=True)],
                    color=color,
                    alpha=0.2,
                    linewidth=0,
                )
    top.set_xlabel("layer index (original order)")
    middle.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, middle):
        ax.set_ylabel("std")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if differences:
        plot_differences(axes[2], differences)
        axes[2].set_xlabel("difference of mean std, B - A (95% interval over seeds and layers)")
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
            axes[0].axvspan(
                i + 0.5,
                i + 1.5,
                color="0.85",
                zorder=0,
                label="downsampling unit" if i == downsampling.index(True) else None,
            )
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
    curves: Mapping[str, Sequence[Sequence[float]]],
    path: str | Path,
    *,
    thresholds: Sequence[float] = (),
    title: str = "",
) -> Path:
    """Loss against steps on a log scale (the identity toy): ``curves[label]`` is seeds x steps, drawn as
    the median with the seed range shaded; plain curves dashed, thresholds dotted."""
    fig = _figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for (label, per_seed), color in zip(curves.items(), _colors(len(curves)), strict=True):
        style = "--" if label.lower().startswith("plain") else "-"
        steps = range(1, len(per_seed[0]) + 1)
        by_step = list(zip(*per_seed, strict=True))
        ax.semilogy(steps, [sorted(v)[len(v) // 2] for v in by_step], style, color=color, label=label)
        if len(per_seed) > 1:
            ax.fill_between(
                steps,
                [min(v) for v in by_step],
                [max(v) for v in by_step],
                color=color,
                alpha=0.15,
                linewidth=0,
            )
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
            paper_ax.annotate(
                label, (params, error), textcoords="offset points", xytext=(4, -8), fontsize=6, color="0.45"
            )
        paper_ax.set_ylabel("published CIFAR-10 test error (%), open squares", color="0.45")
    by_params.set_xscale("log")
    by_params.set_xlabel("parameters (CIFAR-10 network)")
    by_time.set_xlabel("training time (s)")
    for ax in (by_params, by_time):
        ax.set_ylabel("our test error (%)")
        ax.grid(True, alpha=0.3)
    return _finish(fig, path, title)


def plot_ensembles(
    deletions: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float]]],
    reorderings: Mapping[str, ReorderingResult],
    chance: float,
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Veit et al. Fig. 5: (a) test error against the units deleted at random, the mean over draws with
    their spread (standard deviation) as error bars, one colour per net; (b) test error of each random
    re-ordering against its Kendall tau (points), with the mean per number of swaps (line), tau falling to
    the right. Dotted: chance."""
    fig = _figure(figsize=(12.4, 4.4))
    left, right = fig.subplots(1, 2)
    colors = dict(zip(deletions, _colors(len(deletions)), strict=True))
    for label, (ks, means, stds) in deletions.items():
        left.errorbar(
            ks, means, yerr=stds, fmt="o-", markersize=4, capsize=3, color=colors[label], label=label
        )
    left.set_xlabel("units deleted at random")
    left.set_title("(a) deleting units")
    for label, result in reorderings.items():
        color = colors.get(label, "0.3")
        right.plot(result.taus, result.errors, "o", markersize=3, alpha=0.5, color=color)
        rows = result.by_swaps()
        means = sorted([(1.0, result.baseline_error), *((tau, m) for _, tau, m, _ in rows)], reverse=True)
        right.plot([t for t, _ in means], [m for _, m in means], "-", color=color, label=label)
    right.set_xlabel("Kendall tau of the re-ordering (1: the original order)")
    right.set_title("(b) re-ordering units")
    if right.lines:
        right.invert_xaxis()
    for ax in (left, right):
        ax.axhline(chance, linestyle=":", color="0.4", label="chance")
        ax.set_ylabel("test error (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    left.xaxis.get_major_locator().set_params(integer=True)
    return _finish(fig, path, title)


def plot_recurrent(
    points: Mapping[str, tuple[float, float, float]],
    curves: Mapping[str, Mapping[str, Series]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Left: test error against parameters, ``points[label] = (parameters, error %, standard error)``, one
    labelled point with its error bar per net. Right: ``curves[label]`` (``"train"`` dashed, ``"test"`` bold,
    as ``(iterations, error %)``), one colour per net in both panels."""
    fig = _figure(figsize=(11.0, 4.4))
    by_params, by_time = fig.subplots(1, 2)
    colors = dict(zip(points, _colors(len(points)), strict=True))
    for index, (label, (params, error, noise)) in enumerate(points.items()):
        by_params.errorbar([params], [error], yerr=[noise], fmt="o", color=colors[label], capsize=3)
        # the shared and the shallow net sit at about the same x: labels above and below alternately
        by_params.annotate(
            label,
            (params, error),
            textcoords="offset points",
            xytext=(5, 5 if index % 2 == 0 else -12),
            fontsize=8,
        )
    by_params.set_xscale("log")
    by_params.set_xlabel("parameters (CIFAR-10 network)")
    by_params.set_ylabel("test error (%)")
    for label, series in curves.items():
        for kind, style, width in (("train", "--", 1.0), ("test", "-", 2.2)):
            xs, ys = _points(series.get(kind))
            if xs:
                by_time.plot(
                    xs,
                    ys,
                    style,
                    marker="o" if kind == "test" else None,
                    markersize=3,
                    color=colors.get(label),
                    linewidth=width,
                    label=f"{label} {kind}",
                )
    by_time.set_xlabel("iterations")
    by_time.set_ylabel("error (%)")
    if by_time.lines:
        by_time.legend(fontsize=7)
    for ax in (by_params, by_time):
        ax.grid(True, alpha=0.3)
    return _finish(fig, path, title)


def _points(series: Series | None) -> tuple[Sequence[float], Sequence[float]]:
    return ((), ()) if series is None else series


def plot_width(
    points: Mapping[str, tuple[float, float, float]],
    series: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Test error against parameters (left, log scale) and against training time (right):
    ``points[label] = (parameters, seconds, error %)``; the ``series`` labels joined by a line, each
    (deep, wide) pair of ``pairs`` by a dotted one, deep nets as triangles and wide ones as squares."""
    fig = _figure(figsize=(11.5, 4.6))
    by_params, by_time = fig.subplots(1, 2)
    colors = _colors(len(pairs) + 1)
    deep = {d for d, _ in pairs}
    wide = {w for _, w in pairs}
    for ax, index in ((by_params, 0), (by_time, 1)):
        xs = [points[label][index] for label in series]
        ax.plot(xs, [points[label][2] for label in series], "-o", color=colors[0], label="width series")
        for i, (d, w) in enumerate(pairs):
            color = colors[i + 1]
            ax.plot([points[d][index], points[w][index]], [points[d][2], points[w][2]], ":", color=color)
            ax.plot(
                [points[d][index]], [points[d][2]], "^", color=color, markersize=8, label=f"{d} (deep-thin)"
            )
            ax.plot(
                [points[w][index]],
                [points[w][2]],
                "s",
                color=color,
                markersize=8,
                markerfacecolor="none",
                label=f"{w} (shallow-wide)",
            )
        for label, (params, seconds, error) in points.items():
            if label not in series and label not in deep | wide:
                ax.plot([(params, seconds)[index]], [error], "o", color="0.5")
            ax.annotate(
                label,
                ((params, seconds)[index], error),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
        ax.set_ylabel("test error (%)")
        ax.grid(True, alpha=0.3)
    by_params.set_xscale("log")
    by_params.set_xlabel("parameters (CIFAR-10 network)")
    by_time.set_xlabel("training time (s, steps only)")
    by_params.legend(fontsize=7)
    return _finish(fig, path, title)


def plot_identity_1000(
    nets: Mapping[str, Mapping[str, Series]],
    path: str | Path,
    *,
    threshold: float | None = None,
    title: str = "",
) -> Path:
    """Fig. 1 of Identity Mappings: training loss (left axis; logged points faint, smoothed solid) and
    test error after each epoch (dots, right axis) against iterations, one colour per net.

    ``nets[label]`` maps ``"loss"``, ``"smoothed"`` and ``"test"`` to ``(iterations, values)``."""
    fig = _figure(figsize=(7.0, 4.4))
    ax = fig.subplots()
    right = ax.twinx()
    for color, (label, series) in zip(_colors(len(nets)), nets.items(), strict=True):
        few = len(series["smoothed"][0]) < 3  # a marker, or a lone point would not show
        ax.plot(*series["loss"], "-", color=color, alpha=0.3, linewidth=0.8)
        ax.plot(
            *series["smoothed"],
            "-",
            color=color,
            linewidth=1.6,
            marker="." if few else None,
            label=f"{label}: training loss",
        )
        if series.get("test") and series["test"][0]:
            right.plot(*series["test"], "o", color=color, markersize=3.5, label=f"{label}: test error")
    if threshold is not None:
        ax.axhline(threshold, linestyle=":", color="gray", linewidth=0.8)
    ax.set_xlabel("iterations")
    ax.set_ylabel("training loss")
    right.set_ylabel("test error (%)")
    ax.grid(True, alpha=0.3)
    (left_lines, left_labels), (right_lines, right_labels) = (
        ax.get_legend_handles_labels(),
        right.get_legend_handles_labels(),
    )
    ax.legend(left_lines + right_lines, left_labels + right_labels, fontsize=8, loc="upper right")
    return _finish(fig, path, title, ax)


def plot_refinement(
    measured: Mapping[str, Refinement],
    path: str | Path,
    *,
    threshold: float,
    title: str = "",
) -> Path:
    """One row per net: ||F|| / ||x|| per unit (shaded: +- its std over images; squares: units whose
    shortcut is not the identity) and the cosine between successive units' changes (plotted between the
    two units, per stage); dotted lines mark stage boundaries."""
    fig = _figure(figsize=(11.0, 2.9 * len(measured) + 0.6))
    axes = fig.subplots(len(measured), 2, squeeze=False)
    colors = _colors(len(measured))
    for (label, m), (ratio_ax, cos_ax), color in zip(measured.items(), axes, colors, strict=True):
        xs = list(range(1, len(m.names) + 1))
        low = [max(r - s, 0.0) for r, s in zip(m.ratio, m.ratio_std, strict=True)]
        high = [r + s for r, s in zip(m.ratio, m.ratio_std, strict=True)]
        for k, idx in enumerate(m.stage_units().values()):  # one line per stage: units of one estimate
            ratio_ax.fill_between(
                [xs[i] for i in idx],
                [low[i] for i in idx],
                [high[i] for i in idx],
                color=color,
                alpha=0.2,
                linewidth=0,
            )
            ratio_ax.plot(
                [xs[i] for i in idx],
                [m.ratio[i] for i in idx],
                "o-",
                markersize=3,
                color=color,
                label=label if k == 0 else None,
            )
        projected = [(x, r) for x, r, p in zip(xs, m.ratio, m.projected, strict=True) if p]
        if projected:
            ratio_ax.plot(
                *zip(*projected, strict=True),
                "s",
                markersize=7,
                markerfacecolor="none",
                color="k",
                label="shortcut not the identity",
            )
        ratio_ax.axhline(threshold, linestyle="--", color="gray", linewidth=0.8)
        ratio_ax.set_ylim(bottom=0)
        ratio_ax.set_ylabel("||F(x)|| / ||x||")
        index = {name: i for i, name in enumerate(m.names)}
        for stage in dict.fromkeys(m.stages):
            pairs = [
                (index[p.split("->")[0]] + 1.5, c)
                for p, c in zip(m.pairs, m.cosine, strict=True)
                if stage_of(p.split("->")[0]) == stage
            ]
            if pairs:
                cos_ax.plot(*zip(*pairs, strict=True), "o-", markersize=3, color=color)
        cos_ax.axhline(0.0, color="gray", linewidth=0.8)
        cos_ax.set_ylim(-1.05, 1.05)
        cos_ax.set_ylabel("cos(F_i, F_i+1)")
        for ax in (ratio_ax, cos_ax):
            for i in range(1, len(m.stages)):
                if m.stages[i] != m.stages[i - 1]:
                    ax.axvline(i + 0.5, linestyle=":", color="0.4", linewidth=1.0)
            ax.set_xlim(0.5, len(m.names) + 0.5)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(True, alpha=0.3)
        ratio_ax.set_title(f"{label}: relative change per unit", fontsize=9)
        cos_ax.set_title(f"{label}: successive changes within a stage", fontsize=9)
        ratio_ax.legend(fontsize=7)
    axes[-1][0].set_xlabel("unit (forward order)")
    axes[-1][1].set_xlabel("between units i and i+1")
    return _finish(fig, path, title)
