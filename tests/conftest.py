"""Shared test settings: offline, headless, and no writes into the repository's cache."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
