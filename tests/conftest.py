"""Shared test settings: offline, headless, one torch thread.

Tests use tiny tensors: one thread is faster than two there and does not fight a notebook kernel (nbval)
or another process for the machine's cores.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402  (after the environment is set)
from demo_results import write_demo_notebook  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def demo_root(tmp_path_factory, monkeypatch):
    """A repository root holding the notebook ``00_demo`` (its provenance is read from there)."""
    root = tmp_path_factory.mktemp("root")
    write_demo_notebook(root)
    monkeypatch.setenv("WORKBENCH_ROOT", str(root))
    return root

