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
