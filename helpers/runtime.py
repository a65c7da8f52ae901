"""Seeding, deterministic torch settings, device selection and thread count.

Every random function in ``helpers`` takes an explicit generator; :func:`setup` also seeds the global
generators so that third-party code called from a notebook is reproducible too.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Runtime:
    """What :func:`setup` chose: the seed, the torch device and the CPU thread count."""

    seed: int
    device: torch.device
    threads: int

    def rng(self, stream: int = 0) -> np.random.Generator:
        """A fresh numpy generator for this seed; distinct ``stream`` values give independent streams."""
        return np.random.default_rng([self.seed, stream])

    def torch_generator(self, stream: int = 0) -> torch.Generator:
        """A fresh CPU torch generator for this seed and stream (sample on CPU, then move: identical on GPU)."""
        return torch_generator(self.seed, stream)


def torch_generator(seed: int, stream: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, stream)`` through numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@contextlib.contextmanager
def seeded(seed: int):
    """Run the block (e.g. building a model, whose initialisers draw from torch's global generator) with
    the global generator seeded by ``seed``, and restore its previous state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def select_device(name: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; ``"cpu"``; ``"cuda"`` or ``"cuda:N"`` (must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"DEVICE={name!r} but no CUDA device is available; use 'auto' or 'cpu'")
        return torch.device(name)
    raise ValueError(f"DEVICE must be one of {', '.join(map(repr, DEVICE_CHOICES))} or 'cuda:N', got {name!r}")


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (for code that does not take a generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global generator, for third-party code)
    torch.manual_seed(seed)


def make_deterministic(threads: int | None = None) -> int:
    """Deterministic torch kernels and a fixed CPU thread count; returns the thread count used.

    Same seed, scale and machine then give identical numbers. ``threads=None`` uses every core.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    count = threads if threads is not None else (os.cpu_count() or 1)
    if count < 1:
        raise ValueError(f"THREADS must be >= 1, got {count}")
    torch.set_num_threads(count)
    return count


def setup(seed: int, device: str = "auto", threads: int | None = None) -> Runtime:
    """Seed everything, switch on determinism and pick the device: the first call of every notebook."""
    seed_everything(seed)
    count = make_deterministic(threads)
    return Runtime(seed=seed, device=select_device(device), threads=count)
