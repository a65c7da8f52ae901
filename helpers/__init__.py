"""Tested helpers behind the workbench notebooks.

Organised by concern: ``config`` (scale presets and parameter validation), ``runtime`` (seeding,
determinism, device), ``cache`` (train-or-load with atomic, checksummed files), ``plotting``,
``results`` (claims tables), ``data`` (procedural datasets and real-file loaders), ``retrieval``
and ``metrics``; one module per paper concept on top of those.
"""

import os

# Nothing in the workbench may wait on a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
