"""Progress bars: widgets in JupyterLab, plain text lines in headless runs.

``make`` runs notebooks headless (papermill, nbval) with ``WORKBENCH_HEADLESS=1``: there a widget has no one to
show it and would be saved as a frozen ``0%`` picture, so the bars are tqdm's text bars, which the executed
notebook keeps as one final line each once :mod:`helpers.executed` has tidied it. Anywhere else ``tqdm.auto``
chooses: an ipywidgets bar in a Jupyter kernel, a text bar in a terminal.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm import std
from tqdm.auto import tqdm as auto_tqdm

HEADLESS_VARIABLE = "WORKBENCH_HEADLESS"


def progress_bar(iterable: Any = None, **kwargs: Any) -> std.tqdm:
    """``tqdm(iterable, **kwargs)``, as a text bar when :data:`HEADLESS_VARIABLE` is set to a non-empty value other
    than ``0``, else as ``tqdm.auto`` picks."""
    headless = os.environ.get(HEADLESS_VARIABLE, "") not in ("", "0")
    bar = std.tqdm if headless else auto_tqdm
    return bar(iterable, **kwargs)
