"""Input handling shared by the OMES and peer-metric modules.

A *representation* here is a callable ``represent(factors) -> codes`` that maps ``(n, K)`` integer
factor rows of a :class:`helpers.data.factors.FactorGrid` to ``(n, D)`` codes, e.g. render the images
and take the encoder means (disentanglement_lib scores mean representations).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Represent = Callable[[np.ndarray], np.ndarray]

#: disentanglement_lib's ``prune_dims`` threshold on the standard deviation of a code dimension (OMES, FactorVAE).
ACTIVE_STD_THRESHOLD = 0.05
#: Rows per call of ``represent``; bounds memory when a call renders and encodes images.
CHUNK_ROWS = 8192


def check_codes(codes: np.ndarray, name: str = "codes") -> np.ndarray:
    """Validate a ``(n, D)`` array of finite codes; return it as float64."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n, D) with D >= 1, got {codes.shape}")
    if not (np.issubdtype(codes.dtype, np.number) and not np.issubdtype(codes.dtype, np.complexfloating)):
        raise ValueError(f"{name} must be real numbers, got dtype {codes.dtype}")
    codes = codes.astype(np.float64, copy=False)
    if not np.isfinite(codes).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return codes


def represent_factors(represent: Represent, factors: np.ndarray) -> np.ndarray:
    """Codes of ``factors`` computed in chunks of :data:`CHUNK_ROWS` rows.

    Args:
        represent: maps ``(m, K)`` factor rows to ``(m, D)`` codes.
        factors: ``(n, K)`` integer factor rows.

    Returns:
        ``(n, D)`` float64 codes; a ValueError if ``represent`` returns a wrong shape or non-finite values.
    """
    if len(factors) == 0:
        raise ValueError("represent_factors needs at least one factor row")
    chunks = []
    for start in range(0, len(factors), CHUNK_ROWS):
        rows = factors[start : start + CHUNK_ROWS]
        out = check_codes(represent(rows), "represent(factors)")
        if out.shape[0] != len(rows):
            raise ValueError(f"represent returned {out.shape[0]} rows for {len(rows)} factor rows")
        if chunks and out.shape[1] != chunks[0].shape[1]:
            raise ValueError(f"represent returned {out.shape[1]} dims, earlier {chunks[0].shape[1]}")
        chunks.append(out)
    return np.concatenate(chunks, axis=0)


def sklearn_seed(rng: np.random.Generator) -> int:
    """An integer ``random_state`` for scikit-learn, drawn from ``rng``."""
    return int(rng.integers(0, 2**31 - 1))


def active_dimensions(z: np.ndarray, threshold: float = ACTIVE_STD_THRESHOLD) -> np.ndarray:
    """Dimensions whose standard deviation reaches ``threshold`` (disentanglement_lib ``prune_dims``).

    The official OMES code estimates the std on 10,000 codes drawn with replacement; this function uses
    the codes it is given (sample std, ``ddof=1``).

    Args:
        z: ``(n, D)`` codes, ``n >= 2``.
        threshold: minimum std of an active dimension, ``>= 0``.

    Returns:
        ``(D,)`` bool, True where ``std(z[:, j]) >= threshold``.
    """
    z = check_codes(z, "z")
    if z.shape[0] < 2:
        raise ValueError(f"active_dimensions needs at least 2 codes to estimate a std, got {z.shape[0]}")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    return z.std(axis=0, ddof=1) >= threshold
