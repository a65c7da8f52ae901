"""Input checks shared by helpers modules: one-line ValueErrors that name the argument."""

from __future__ import annotations

import torch


def check_matrix(x: torch.Tensor, name: str, columns: int | None = None, finite: bool = True) -> None:
    """Require a non-empty floating-point (rows, columns) tensor, finite unless ``finite=False``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D torch tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if columns is not None and x.shape[1] != columns:
        raise ValueError(f"{name} has {x.shape[1]} columns, expected {columns}")
    if finite and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains nan or inf values")


def one_line(error: BaseException, limit: int = 300) -> str:
    """``error``'s message on one line (whitespace collapsed, cut at ``limit`` characters), or its type's name when
    the message is empty: for one-line errors that wrap another library's."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"
