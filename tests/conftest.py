"""Shared test settings: offline, headless, one torch thread.

Tests use tiny tensors: one thread is faster than two there and does not fight a notebook kernel (nbval)
or another process for the machine's cores.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402  (after the environment is set)

torch.set_num_threads(1)
