"""Pictures of detections: boxes drawn on an image (PIL, for ``resnets detect predict --draw``), a grid of
test images with predicted and true boxes (the experiment's figure) and a run's curves (loss and AP).

The figures use matplotlib's ``Figure`` API (imported when a figure is drawn, as everywhere in the
package) and ``io.save_figure``; the single-image drawing needs only PIL.
"""

from __future__ import annotations

import io as _io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from ..io import save_figure, write_bytes

PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)
MASK_THRESHOLD = 0.5  # a mask's probabilities as a binary mask (torchvision's references)
MASK_OPACITY = 128  # of a drawn mask's colour, of 255


def to_pil(image: torch.Tensor) -> Image.Image:
    """A uint8 (or [0, 1] float) C x H x W image as an RGB PIL image."""
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    array = image.cpu().permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).convert("RGB")


def draw_boxes(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: Sequence[int],
    scores: Sequence[float],
    classes: Sequence[str],
    path: str | os.PathLike,
    scale: int = 1,
    masks: torch.Tensor | None = None,
) -> Path:
    """``image`` with each box, its class name and score, as a PNG (``scale``: enlarge small images).
    ``masks``: each object's mask (Mask R-CNN's N x 1 x H x W probabilities, or N x H x W), its pixels
    above 0.5 painted in the box's colour, half opaque."""
    picture = to_pil(image)
    if masks is not None:
        masks = masks[:, 0] if masks.dim() == 4 else masks
        for mask, label in zip(masks.cpu(), labels, strict=True):
            alpha = Image.fromarray(((mask > MASK_THRESHOLD).numpy() * MASK_OPACITY).astype("uint8"))
            picture.paste(Image.new("RGB", picture.size, PALETTE[(label - 1) % len(PALETTE)]), (0, 0), alpha)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    for box, label, score in zip(boxes.tolist(), labels, scores, strict=True):
        color = PALETTE[(label - 1) % len(PALETTE)]
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=color, width=max(1, scale // 2))
        draw.text((x0 + 2, max(0, y0 - 11)), f"{classes[label - 1]} {score:.2f}", fill=color)
    return save_png(picture, path)


def save_png(picture: Image.Image, path: str | os.PathLike) -> Path:
    """A PIL image written as a PNG, atomically."""
    buffer = _io.BytesIO()
    picture.save(buffer, format="PNG")
    return write_bytes(path, buffer.getvalue())


def detection_grid(
    rows: Mapping[str, Sequence[dict[str, Any]]],
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
) -> Path:
    """One row per detector, one column per test image: the image, its true boxes (white, dashed) and
    the detector's boxes above a score of 0.5 (coloured by class, named). Each entry of ``rows[name]``
    holds ``image`` (C x H x W), ``truth`` (N x 4), ``boxes``, ``labels``, ``scores``."""
    from matplotlib.figure import Figure  # heavy: imported when a figure is drawn
    from matplotlib.patches import Rectangle

    names = list(rows)
    columns = max(len(v) for v in rows.values())
    # 3 inches a canvas and 8-point labels on a dark band: readable at the README's width.
    fig = Figure(figsize=(3.0 * columns, 3.1 * len(names) + 0.4))
    axes = fig.subplots(len(names), columns, squeeze=False)
    for r, name in enumerate(names):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rows[name]):
                ax.set_axis_off()
                continue
            entry = rows[name][c]
            ax.imshow(to_pil(entry["image"]))
            for x0, y0, x1, y1 in entry["truth"].tolist():
                ax.add_patch(
                    Rectangle(
                        (x0, y0),
                        x1 - x0,
                        y1 - y0,
                        fill=False,
                        edgecolor="white",
                        linestyle="--",
                        linewidth=0.8,
                    )
                )
            for box, label, score in zip(
                entry["boxes"].tolist(), entry["labels"].tolist(), entry["scores"].tolist(), strict=True
            ):
                if score < 0.5:
                    continue
                color = tuple(v / 255 for v in PALETTE[(label - 1) % len(PALETTE)])
                x0, y0, x1, y1 = box
                ax.add_patch(
                    Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.2)
                )
                ax.text(
                    x0,
                    y0 - 1,
                    f"{classes[label - 1]} {score:.2f}",
                    color=color,
                    fontsize=8,
                    va="bottom",
                    bbox={"facecolor": "black", "alpha": 0.7, "pad": 0.6, "edgecolor": "none"},
                )
            if c == 0:
                ax.set_ylabel(name, fontsize=11)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def detection_curves(
    steps: Sequence[dict[str, Any]],
    epochs: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    title: str = "",
    metrics: Sequence[tuple[str, str]] = (("val_ap", "AP@[.5,.95]"), ("val_ap50", "AP@.5")),
    metric_axis: str = "validation AP (%)",
    loss_axis: str = "training loss (sum of the four)",
) -> Path:
    """A run's training loss (per logged step, or per epoch) and validation ``metrics`` (columns and
    labels; by default AP and AP50) against iterations."""
    from matplotlib.figure import Figure  # heavy: imported when a figure is drawn

    fig = Figure(figsize=(9, 3.4))
    loss_ax, ap_ax = fig.subplots(1, 2)
    points = [(s["iteration"], s["loss"]) for s in steps] or [
        (r["iteration"], r["train_loss"]) for r in epochs if r.get("train_loss") is not None
    ]
    if points:
        loss_ax.plot(*zip(*points, strict=True), linewidth=1)
    loss_ax.set(xlabel="iteration", ylabel=loss_axis, yscale="log")
    for key, label in metrics:
        rows = [(r["iteration"], r[key]) for r in epochs if r.get(key) is not None]
        if rows:
            ap_ax.plot(*zip(*rows, strict=True), marker="o", label=label)
    ap_ax.set(xlabel="iteration", ylabel=metric_axis)
    if ap_ax.get_legend_handles_labels()[0]:
        ap_ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
