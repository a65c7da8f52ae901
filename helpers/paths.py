"""Where the workbench reads and writes: figures, results, cache, data, executed notebooks.

The root is the repository that holds the ``helpers`` package (installed editable). Set
``WORKBENCH_ROOT`` to use another checkout, and ``WORKBENCH_OUTPUT`` to send results and figures to another
folder: ``make test`` runs the notebooks with ``WORKBENCH_OUTPUT=build/test-outputs``, so a test run never rewrites
the committed ``results/`` and ``figures/``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def project_root() -> Path:
    """The repository root: ``$WORKBENCH_ROOT`` when set, else the parent of ``helpers/``."""
    override = os.environ.get("WORKBENCH_ROOT")
    return Path(override).resolve() if override else Path(__file__).resolve().parent.parent


def output_root() -> Path:
    """Where results and figures go: ``$WORKBENCH_OUTPUT`` when set (relative to the repository root), else the
    repository root itself."""
    override = os.environ.get("WORKBENCH_OUTPUT")
    return (project_root() / override).resolve() if override else project_root()


def figures_dir(notebook: str) -> Path:
    """``figures/<notebook>/`` under :func:`output_root`."""
    return output_root() / "figures" / notebook


def results_dir() -> Path:
    """``results/`` under :func:`output_root`: one JSON file per notebook run."""
    return output_root() / "results"


def cache_dir() -> Path:
    """``cache/`` (git-ignored): trained models and generated datasets; ``$WORKBENCH_CACHE`` overrides."""
    override = os.environ.get("WORKBENCH_CACHE")
    return Path(override).resolve() if override else project_root() / "cache"


def data_dir() -> Path:
    """``data/`` (git-ignored): real datasets and weights a user downloads for the full scale."""
    return project_root() / "data"


def local_file(value: str) -> Path:
    """The local file a notebook parameter names: ``~`` expanded, a relative path taken from the repository root
    (``data/dino.pth``, whatever the working directory: notebooks run in ``notebooks/``), an absolute one kept."""
    return project_root() / Path(value).expanduser()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a flushed temporary file renamed over it, readable by all (``mode``).

    An interruption leaves the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, mode)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
