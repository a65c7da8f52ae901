"""Tested helpers behind the workbench notebooks.

Organised by concern: ``config`` (parameter validation and scale presets), ``runtime`` (seeding,
determinism, device), ``cache`` (train-or-load with atomic, checksummed files), ``plotting``,
``results`` (claims tables), ``data`` (procedural datasets and real-file loaders), ``retrieval``,
``metrics`` and ``models`` (every ``nn.Module``); one module per paper concept on top of those, and one study
module per notebook (``*_study``: its presets, cached steps and scores).
"""

import os

# Nothing in the workbench may wait on a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
