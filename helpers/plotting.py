"""One figure style and one writer of figures.

:func:`savefig` is the only place figures are written: PNG, ``figures/<notebook>/<name>.png``, fixed
metadata (no software version or date), written atomically, so a rerun with the same numbers gives the
same bytes.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from helpers.paths import figures_dir, write_atomic

DPI = 110
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def use_style() -> None:
    """The workbench style: seaborn's white grid, readable labels, a colour-blind-safe palette."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "savefig.bbox": "tight",
        "axes.titlesize": "medium",
        "image.cmap": "viridis",
    })


def savefig(fig: plt.Figure, notebook: str, name: str, directory: Path | None = None) -> Path:
    """Write ``fig`` as ``<directory>/<name>.png`` (default ``figures/<notebook>/``) and return the path.

    The figure stays open so the notebook still shows it.
    """
    if not _NAME.match(name) or name.endswith(".png"):
        raise ValueError(f"figure name must be a plain name without extension or folders, got {name!r}")
    folder = Path(directory) if directory is not None else figures_dir(notebook)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    path = folder / f"{name}.png"
    write_atomic(path, buffer.getvalue())
    return path


def image_grid(images, ncols: int, titles=None, row_labels=None, size: float = 1.1) -> plt.Figure:
    """A grid of images without axes.

    Args:
        images: ``(n, C, H, W)`` (C = 1 or 3) or ``(n, H, W)`` array in [0, 1].
        ncols: images per row.
        titles: optional title per image.
        row_labels: optional label per row, written left of it.
        size: inches per image.
    """
    images = np.asarray(images)
    if images.ndim == 4:
        images = images.transpose(0, 2, 3, 1)
        images = images[..., 0] if images.shape[-1] == 1 else images
    if images.ndim not in (3, 4) or ncols < 1:
        raise ValueError(f"images must be (n, C, H, W) or (n, H, W) and ncols >= 1; got {images.shape}, {ncols}")
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if index < len(images):
            ax.imshow(np.clip(images[index], 0, 1), cmap="gray", vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[index], fontsize="small")
        else:
            ax.axis("off")
    for row, label in enumerate(row_labels or []):
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    return fig


def heatmap_panels(panels: dict, xticklabels, xlabel: str, ylabel: str, colorbar_label: str,
                   vmin: float = 0.0, vmax: float = 1.0) -> plt.Figure:
    """Side-by-side annotated heatmaps sharing one colour scale, one panel per ``{title: (rows, cols)}``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels) + 1, 3.2), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], panels.items(), strict=True):
        sns.heatmap(np.asarray(matrix), ax=ax, vmin=vmin, vmax=vmax, cmap="viridis", annot=True, fmt=".2f",
                    annot_kws={"fontsize": 6}, cbar=ax is axes[0, -1],
                    cbar_kws={"label": colorbar_label}, xticklabels=xticklabels)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel if ax is axes[0, 0] else "")
    return fig
