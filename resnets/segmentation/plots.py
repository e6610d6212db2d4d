"""Figures of segmenters: masks drawn over images, one row per segmenter (the ground truth first)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..io import save_figure
from .predict import class_colours, overlay


def segmentation_grid(
    rows: Mapping[str, Sequence[tuple[torch.Tensor, torch.Tensor]]],
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
) -> Path:
    """One row per name (e.g. "ground truth", then each segmenter), one column per image: the image
    (uint8 C x H x W) with the mask's classes (H x W) over it, and a legend of the classes drawn."""
    from matplotlib.figure import Figure  # heavy: imported when a figure is drawn
    from matplotlib.patches import Patch

    names = list(rows)
    columns = max(len(v) for v in rows.values())
    fig = Figure(figsize=(2.6 * columns + 1.8, 2.6 * len(names) + 0.5))
    axes = fig.subplots(len(names), columns, squeeze=False)
    drawn: set[int] = set()
    for r, name in enumerate(names):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rows[name]):
                ax.set_axis_off()
                continue
            image, mask = rows[name][c]
            ax.imshow(overlay(image, mask), interpolation="nearest")
            drawn.update(int(k) for k in mask.unique().tolist() if k > 0)
            if c == 0:
                ax.set_ylabel(name, fontsize=10)
    colours = class_colours()
    legend = [Patch(color=colours[k] / 255, label=classes[k]) for k in sorted(drawn) if k < len(classes)]
    if legend:
        fig.legend(handles=legend, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    return save_figure(fig, path)
