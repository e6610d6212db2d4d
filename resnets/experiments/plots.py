"""Figures of the reproduced experiments: data in, PNG out.

matplotlib's object API (``Figure``, no pyplot): no global state, no display, safe in tests and
threads. ``resnets.io.save_figure`` writes each PNG atomically, so a killed run never leaves a
half-written one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


Differences = Mapping[str, tuple[float, float, float]]  # comparison name -> (B - A, low, high), points


def off_scale(extents: Mapping[str, float], factor: float = 5.0) -> set[str]:
    """The names whose extent (distance from a reference) is over ``factor`` times the largest of the
    rest, largest first, leaving at least two on the scale: one diverged seed must not flatten the gaps
    that every other comparison's verdict rests on."""
    ordered = sorted(extents, key=extents.get, reverse=True)
    outliers: set[str] = set()
    for i, name in enumerate(ordered[:-2]):
        if extents[name] <= factor * max(extents[ordered[i + 1]], 1e-9):
            break
        outliers.add(name)
    return outliers


def _seed_points(
    ax: Axes, labels: Sequence[str], per_seed: Mapping[str, Sequence[float]], color: Any
) -> None:
    """Each label's mean over seeds with its seed range as an error bar, and every seed as a dot. A label
    far off the others' scale (``off_scale``) is written at the top edge with its mean and range."""
    means = {label: sum(per_seed[label]) / len(per_seed[label]) for label in labels}
    centre = sorted(means.values())[len(means) // 2]
    extents = {label: max(abs(v - centre) for v in per_seed[label]) for label in labels}
    outliers = off_scale(extents)
    if outliers:
        kept = [v for label in labels if label not in outliers for v in per_seed[label]]
        pad = 0.15 * (max(kept) - min(kept)) or 0.5
        ax.set_ylim(min(kept) - pad, max(kept) + 2 * pad)
    for x, label in enumerate(labels):
        values = list(per_seed[label])
        mean = means[label]
        if label in outliers:
            top = ax.get_ylim()[1]
            ax.annotate(
                f"{mean:.1f}\n({min(values):.1f}-{max(values):.1f})\noff scale",
                xy=(x, top),
                xytext=(x, top - 0.3 * (top - ax.get_ylim()[0])),
                ha="center",
                fontsize=7,
                color=color,
                arrowprops={"arrowstyle": "->", "color": color},
            )
            continue
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
    """A forest plot: each comparison's paired difference with its interval, and the zero line. A
    comparison far off the others' scale (``off_scale``) is written at the edge with its numbers."""
    names = list(differences)
    outliers = off_scale({name: max(abs(low), abs(high)) for name, (_, low, high) in differences.items()})
    if outliers:
        kept = [bound for name in names if name not in outliers for bound in differences[name]] + [0.0]
        pad = 0.1 * (max(kept) - min(kept)) or 0.5
        low_edge, high_edge = min(kept) - pad, max(kept) + pad
        width = high_edge - low_edge
        for name in outliers:  # room for the label on the outlier's side
            if differences[name][0] > 0:
                high_edge += 0.9 * width
            else:
                low_edge -= 0.9 * width
        ax.set_xlim(low_edge, high_edge)
    for y, name in enumerate(names):
        diff, low, high = differences[name]
        if name in outliers:
            edge = ax.get_xlim()[1 if diff > 0 else 0]
            ax.annotate(
                f"{diff:+.1f} [{low:+.1f}, {high:+.1f}]\noff scale",
                xy=(edge, y),
                xytext=(edge - 0.6 * (edge - sum(ax.get_xlim()) / 2), y),
                ha="center",
                va="center",
                fontsize=7,
                color="tab:red",
                arrowprops={"arrowstyle": "->", "color": "tab:red"},
            )
            continue
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


def _yerr(means: Sequence[float], lows: Sequence[float], highs: Sequence[float]) -> list[list[float]]:
    """matplotlib's asymmetric error bars from each point's mean and its low and high ends."""
    return [
        [m - lo for m, lo in zip(means, lows, strict=True)],
        [hi - m for m, hi in zip(means, highs, strict=True)],
    ]


_LINE = {"fmt": "o-", "markersize": 4, "capsize": 3}  # a curve of means with error bars


def plot_lesion(
    deleted: Mapping[str, Sequence[Sequence[float]]],
    intact: Mapping[str, Sequence[float]],
    costs: Sequence[Sequence[float]],
    differences: Differences,
    reported: Differences,
    path: str | Path,
    *,
    downsampling: Sequence[bool],
    focus: str,
    chance: float,
    title: str = "",
) -> Path:
    """Veit et al. Fig. 3: (a) test error with each unit deleted (``deleted[net]``: seeds x units), the mean
    over seeds with the seed range shaded, the intact net's mean dotted in the same colour, chance dashed;
    (b) the ``focus`` net's cost of each deletion (``costs``: seeds x units, points), the mean with the seed
    range as error bars, downsampling units in their own colour (Veit et al. single them out); (c) the
    paired comparisons that decide the verdict; (d) the one reported beside them."""
    fig = _figure(figsize=(11.0, 8.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.5, 1.0])
    errors, cost_ax = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    colors = dict(zip(deleted, _colors(len(deleted)), strict=True))
    for label, per_seed in deleted.items():
        mean, low, high = _seed_band(per_seed)
        units = range(1, len(mean) + 1)
        errors.plot(units, mean, "o-", markersize=3, color=colors[label], label=f"{label}, one unit deleted")
        errors.fill_between(units, low, high, color=colors[label], alpha=0.25, linewidth=0)
        seeds = list(intact[label])
        errors.axhline(sum(seeds) / len(seeds), linestyle=":", color=colors[label])
    errors.axhline(chance, linestyle="--", color="0.4", label="chance")
    errors.set_xlabel("deleted unit (in forward order)")
    errors.set_ylabel("test error (%)")
    errors.set_ylim(0, 100)
    errors.set_title("(a) error with one unit deleted; dotted: intact", fontsize=10)
    errors.legend(fontsize=8, loc="center right")
    mean, low, high = _seed_band(costs)
    bar_colors = ["tab:purple" if down else colors.get(focus, "tab:blue") for down in downsampling]
    units = range(1, len(mean) + 1)
    cost_ax.bar(units, mean, 0.8, color=bar_colors)
    cost_ax.errorbar(
        units,
        mean,
        yerr=_yerr(mean, low, high),
        fmt="none",
        ecolor="black",
        capsize=2,
        linewidth=0.8,
    )
    if any(downsampling):
        from matplotlib.patches import Patch  # heavy: imported when a figure is drawn

        cost_ax.legend(handles=[Patch(color="tab:purple", label="downsampling unit")], fontsize=8)
    cost_ax.axhline(0.0, color="gray", linewidth=1)
    cost_ax.set_xlabel("deleted unit (1: the first stage's first unit)")
    cost_ax.set_ylabel("error deleted minus intact (points)")
    cost_ax.set_title(f"(b) {focus}: cost of each deletion, seed range", fontsize=10)
    for ax in (errors, cost_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
    panels = (
        (differences, "(c) deciding: mean cost of a deletion"),
        (reported, f"(d) {focus}: where the cost sits"),
    )
    for i, (data, name) in enumerate(panels):
        ax = fig.add_subplot(grid[1, i])
        plot_differences(ax, data)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("cost of B minus A (points, 95% interval)")
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


def plot_ensembles(
    deletions: Mapping[str, Sequence[tuple[int, float, float, float]]],
    reordered: Sequence[tuple[float, float, float, float]],
    intact: float,
    differences: Differences,
    chance: float,
    path: str | Path,
    *,
    reordered_label: str,
    title: str = "",
) -> Path:
    """Veit et al. Fig. 5: (a) test error against the units deleted at random (``deletions[net]``: (k, mean,
    low, high) per k, the mean over seeds and draws with the draws' percentiles as error bars); (b) the
    ``reordered_label`` net's error under random re-orderings, per Kendall-tau bin ((tau, mean, low, high),
    tau falling to the right from the intact order's 1); (c) the paired comparisons that decide the
    verdict. Dotted: chance. Percentiles of error rates stay inside 0-100%."""
    fig = _figure(figsize=(11.0, 7.6))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.6, 1.0])
    left, right = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    colors = dict(zip(deletions, _colors(len(deletions)), strict=True))
    for i, (label, points) in enumerate(deletions.items()):
        ks, means, lows, highs = zip(*points, strict=True)
        dodge = 0.12 * (i - (len(deletions) - 1) / 2)  # side by side, so that the error bars do not overlap
        xs = [k + dodge for k in ks]
        left.errorbar(xs, means, yerr=_yerr(means, lows, highs), **_LINE, color=colors[label], label=label)
    left.set_xlabel("units deleted at random (k)")
    left.set_title("(a) deleting units: mean, central 90% of the draws", fontsize=10)
    left.xaxis.get_major_locator().set_params(integer=True)
    taus, means, lows, highs = zip(*[(1.0, intact, intact, intact), *reordered], strict=True)
    color = colors.get(reordered_label, "tab:blue")
    right.errorbar(taus, means, yerr=_yerr(means, lows, highs), **_LINE, color=color, label=reordered_label)
    right.set_xlabel("Kendall tau of the re-ordering (1: the original order)")
    right.set_title("(b) re-ordering units: bins of Kendall tau", fontsize=10)
    right.invert_xaxis()
    for ax in (left, right):
        ax.axhline(chance, linestyle=":", color="0.4", label="chance")
        ax.set_ylabel("test error (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    bottom = fig.add_subplot(grid[1, :])
    plot_differences(bottom, differences)
    bottom.set_title("(c) deciding: the cost of deleting k units at random", fontsize=10)
    bottom.set_xlabel("cost of B minus A (points of error, 95% interval)")
    return _finish(fig, path, title)


def _params_axis(ax: Axes) -> None:
    """A log-scale axis of parameter counts labelled 0.2M, 0.5M, 1M ... (no crowded minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # heavy: imported when drawn

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value / 1e6:g}M"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_width(
    points: Mapping[str, tuple[float, Sequence[float]]],
    series: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    differences: Differences,
    seconds: Mapping[str, Sequence[float]],
    paper: Mapping[str, tuple[float, float]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Wide ResNets: (a) our test error against parameters, ``points[label] = (parameters, per-seed
    errors)``, the mean with its seed range and each seed a dot, the ``series`` joined by a line, each
    (deep, wide) pair of ``pairs`` by a dotted one (deep-thin triangles, shallow-wide squares); (b) the
    paired comparisons; (c) seconds per epoch per net (mean, seed range), a measurement beside the
    verdict; (d) the paper's ``paper[label] = (parameters, error %)`` in a panel of its own."""
    fig = _figure(figsize=(11.0, 8.2))
    (ours, forest), (timing, published) = fig.subplots(2, 2)
    colors = _colors(len(pairs) + 1)
    means = {label: sum(errors) / len(errors) for label, (_, errors) in points.items()}
    ours.plot(
        [points[s][0] for s in series], [means[s] for s in series], "-", color=colors[0], label="width series"
    )
    for i, (deep, wide) in enumerate(pairs):
        color = colors[i + 1]
        ours.plot([points[deep][0], points[wide][0]], [means[deep], means[wide]], ":", color=color)
        ours.plot(
            [points[deep][0]], [means[deep]], "^", color=color, markersize=9, label=f"{deep} (deep-thin)"
        )
        ours.plot(
            [points[wide][0]],
            [means[wide]],
            "s",
            color=color,
            markersize=9,
            markerfacecolor="none",
            label=f"{wide} (shallow-wide)",
        )
    for label, (params, errors) in points.items():
        mean = means[label]
        ours.errorbar(
            [params],
            [mean],
            yerr=[[mean - min(errors)], [max(errors) - mean]],
            fmt="o",
            color="0.25",
            markersize=3,
            capsize=4,
            zorder=3,
        )
        ours.scatter([params] * len(errors), errors, s=10, color="black", alpha=0.6, zorder=4)
        ours.annotate(label, (params, mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
    _params_axis(ours)
    ours.set_xlabel("parameters (CIFAR-10 network)")
    ours.set_ylabel("test error (%)")
    ours.set_title("ours: mean, seed range, seeds", fontsize=9)
    ours.legend(fontsize=7)
    plot_differences(forest, differences)
    forest.set_title("paired comparisons (decide the verdict)", fontsize=9)
    labels = list(seconds)
    for x, label in enumerate(labels):
        values = list(seconds[label])
        mean = sum(values) / len(values)
        timing.bar([x], [mean], 0.6, color="tab:gray")
        timing.errorbar(
            [x], [mean], yerr=[[mean - min(values)], [max(values) - mean]], fmt="none", color="k", capsize=4
        )
    _label_axis(timing, labels)
    timing.set_ylabel("seconds per epoch")
    timing.set_title("time per epoch on this machine (measured, not judged)", fontsize=9)
    rows = sorted(paper.items(), key=lambda item: item[1][0])  # by parameters, smallest on top
    published.plot([error for _, (_, error) in rows], range(len(rows)), "o", color="0.35", markersize=6)
    published.set_yticks(
        range(len(rows)), labels=[f"{label} ({params / 1e6:.1f}M)" for label, (params, _) in rows], fontsize=8
    )
    published.invert_yaxis()
    published.set_xlabel("test error (%, CIFAR-10)")
    published.set_title("paper: Table 4 (CIFAR-10), by parameters", fontsize=9)
    for ax in (ours, timing, published):
        ax.grid(True, alpha=0.3)
    return _finish(fig, path, title)


def plot_cardinality(
    test: Mapping[str, Sequence[float]],
    train: Mapping[str, Sequence[float]],
    differences: Differences,
    paper: Mapping[str, float],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """ResNeXt Table 3 and Fig. 5: our test error (a) and final training error (b) by C x d (mean, seed
    range, each seed a dot; each axis fits our values), (c) the paired comparisons, (d) the paper's
    ImageNet top-1 errors ``paper[label]`` in a panel of their own."""
    fig = _figure(figsize=(10.5, 8.0))
    (test_ax, train_ax), (forest, published) = fig.subplots(2, 2)
    for ax, values, what in ((test_ax, test, "test error"), (train_ax, train, "final training error")):
        _seed_points(ax, list(values), values, "tab:blue")
        _label_axis(ax, list(values))
        ax.set_ylabel(f"{what} (%)")
        ax.set_title(f"ours: {what} (mean, seed range, seeds)", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    plot_differences(forest, differences)
    forest.set_title("paired comparisons of the series' ends", fontsize=9)
    labels = list(paper)
    published.plot(range(len(labels)), [paper[label] for label in labels], "o-", color="0.4")
    _label_axis(published, labels)
    published.set_ylabel("top-1 error (%, ImageNet)")
    published.set_title("paper: Table 3, ResNet-50 template, ImageNet", fontsize=9)
    published.grid(True, axis="y", alpha=0.3)
    return _finish(fig, path, title)


def plot_identity_1000(
    curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
    crossings: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    threshold: float,
    chance: float,
    title: str = "",
) -> Path:
    """Identity Mappings Fig. 1: training loss (left) and training error (right) against iterations, one
    colour per net, ``curves[label]["loss" | "error"] = (iterations, mean, min, max)`` over seeds (the
    range shaded). Dotted: the chance loss (left) and the ``threshold`` error (right), where each seed's
    first passage (``crossings[label]``, None: never) is marked. The legend sits below the panels, so it
    hides no point."""
    fig = _figure(figsize=(11.0, 4.8), layout="constrained")
    loss_ax, error_ax = fig.subplots(1, 2)
    for color, (label, series) in zip(_colors(len(curves)), curves.items(), strict=True):
        for ax, key in ((loss_ax, "loss"), (error_ax, "error")):
            xs, mean, low, high = series[key]
            ax.plot(
                xs, mean, "-", color=color, linewidth=1.6, marker="." if len(xs) < 3 else None, label=label
            )
            if len(xs) > 1:
                ax.fill_between(xs, low, high, color=color, alpha=0.2, linewidth=0)
        reached = [x for x in crossings.get(label, ()) if x is not None]
        error_ax.plot(reached, [threshold] * len(reached), "v", color=color, markersize=8)
    loss_ax.axhline(chance, linestyle=":", color="0.3", linewidth=1.0, label=f"chance (loss {chance:.2f})")
    error_ax.axhline(threshold, linestyle=":", color="0.3", linewidth=1.0, label=f"{threshold:g}% threshold")
    loss_ax.set_ylabel("training loss")
    error_ax.set_ylabel("training error (%)")
    loss_ax.set_title("training loss (Fig. 1's curves)", fontsize=9)
    error_ax.set_title(
        "training error (triangles: each seed's first passage below the threshold)", fontsize=9
    )
    for ax in (loss_ax, error_ax):
        ax.set_xlabel("iterations")
        ax.grid(True, alpha=0.3)
    handles, labels = loss_ax.get_legend_handles_labels()
    extra = error_ax.get_legend_handles_labels()
    # below the panels (constrained layout makes room), so the legend hides no point
    fig.legend(
        handles + extra[0][-1:], labels + extra[1][-1:], loc="outside lower center", ncol=4, fontsize=8
    )
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _seed_band(values: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """Seeds x points -> (mean, min, max) per point."""
    columns = list(zip(*values, strict=True))
    return [sum(c) / len(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def plot_refinement(
    measured: Mapping[str, Sequence[Refinement]],
    differences: Differences,
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """One row per net (``measured[label]``: one measurement per seed): ||F|| / ||h|| per unit and the
    cosine between successive units' changes (plotted between the two units, per stage), each the mean over
    seeds with the seed range shaded; squares: units whose shortcut is not the identity; dotted lines: stage
    boundaries. Below, the stage comparisons (later units' median - first unit) with their intervals."""
    rows = len(measured)
    fig = _figure(figsize=(11.0, 2.9 * rows + 0.45 * len(differences) + 1.6))
    grid = fig.add_gridspec(rows + 1, 2, height_ratios=[2.9] * rows + [0.45 * len(differences) + 0.9])
    colors = _colors(rows)
    for row, ((label, seeds), color) in enumerate(zip(measured.items(), colors, strict=True)):
        ratio_ax, cos_ax = fig.add_subplot(grid[row, 0]), fig.add_subplot(grid[row, 1])
        m = seeds[0]
        xs = list(range(1, len(m.names) + 1))
        mean, low, high = _seed_band([s.ratio for s in seeds])
        for k, idx in enumerate(m.stage_units().values()):  # one line per stage: units of one estimate
            ratio_ax.fill_between(
                [xs[i] for i in idx],
                [low[i] for i in idx],
                [high[i] for i in idx],
                color=color,
                alpha=0.25,
                linewidth=0,
            )
            ratio_ax.plot(
                [xs[i] for i in idx],
                [mean[i] for i in idx],
                "o-",
                markersize=3,
                color=color,
                label=f"{label}, {len(seeds)} seeds" if k == 0 else None,
            )
        projected = [(x, r) for x, r, p in zip(xs, mean, m.projected, strict=True) if p]
        if projected:
            ratio_ax.plot(
                *zip(*projected, strict=True),
                "s",
                markersize=7,
                markerfacecolor="none",
                color="k",
                label="shortcut not the identity",
            )
        ratio_ax.set_ylim(bottom=0)
        ratio_ax.set_ylabel("||F(x)|| / ||h(x)||")
        index = {name: i for i, name in enumerate(m.names)}
        cos_mean, cos_low, cos_high = _seed_band([s.cosine for s in seeds])
        for stage in dict.fromkeys(m.stages):
            picks = [j for j, p in enumerate(m.pairs) if stage_of(p.split("->")[0]) == stage]
            if picks:
                between = [index[m.pairs[j].split("->")[0]] + 1.5 for j in picks]
                cos_ax.fill_between(
                    between,
                    [cos_low[j] for j in picks],
                    [cos_high[j] for j in picks],
                    color=color,
                    alpha=0.25,
                    linewidth=0,
                )
                cos_ax.plot(between, [cos_mean[j] for j in picks], "o-", markersize=3, color=color)
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
        if row == rows - 1:
            ratio_ax.set_xlabel("unit (forward order)")
            cos_ax.set_xlabel("between units i and i+1")
    forest = fig.add_subplot(grid[rows, :])
    plot_differences(forest, differences)
    forest.set_xlabel("later units' median - first unit, ||F|| / ||h|| (95% interval over seeds and images)")
    forest.set_title("each stage: the later units against its first unit (paper: below 0)", fontsize=9)
    return _finish(fig, path, title)
