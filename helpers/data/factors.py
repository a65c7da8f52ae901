"""Discrete factor grids: the ground truth every procedural dataset is rendered from.

A grid is the Cartesian product of K factors with ``sizes[k]`` values each. A sample is an integer
row ``(K,)`` of class indices. All randomness comes from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FactorGrid:
    """A grid of K discrete factors.

    Attributes:
        names: factor names, length K.
        sizes: number of values of each factor, length K.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    def __post_init__(self):
        if len(self.names) != len(self.sizes):
            raise ValueError(f"FactorGrid: {len(self.names)} names but {len(self.sizes)} sizes")
        if any(int(s) < 1 for s in self.sizes):
            raise ValueError(f"FactorGrid: every factor size must be >= 1, got {self.sizes}")

    @property
    def num_factors(self) -> int:
        return len(self.sizes)

    @property
    def num_combinations(self) -> int:
        return int(np.prod(self.sizes, dtype=np.int64))

    def index(self, name: str) -> int:
        """Position of the factor called ``name``."""
        if name not in self.names:
            raise ValueError(f"unknown factor {name!r}; valid: {', '.join(self.names)}")
        return self.names.index(name)

    def validate(self, factors: np.ndarray) -> np.ndarray:
        """Check that ``factors`` is an ``(n, K)`` integer array inside the grid; return it as int64."""
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(f"factors must have shape (n, {self.num_factors}), got {factors.shape}")
        if not np.issubdtype(factors.dtype, np.integer):
            raise ValueError(f"factors must be integer class indices, got dtype {factors.dtype}")
        upper = np.asarray(self.sizes)
        bad = (factors < 0) | (factors >= upper)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"factor {self.names[col]!r} must lie in [0, {upper[col] - 1}], got {factors[row, col]} (row {row})"
            )
        return factors.astype(np.int64, copy=False)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor rows drawn uniformly over the grid: ``(n, K)`` int64."""
        check_count(n)
        return np.stack([rng.integers(0, s, size=n) for s in self.sizes], axis=1).astype(np.int64)

    def pairs_differing_in(self, factor: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs that share every factor but ``factor``, whose values differ.

        Returns:
            ``(a, b)``, each ``(n, K)`` int64, with ``a[:, j] == b[:, j]`` for ``j != factor`` and
            ``a[:, factor] != b[:, factor]``.
        """
        check_count(n)
        if not 0 <= factor < self.num_factors:
            raise ValueError(f"factor index must lie in [0, {self.num_factors - 1}], got {factor}")
        size = self.sizes[factor]
        if size < 2:
            raise ValueError(f"factor {self.names[factor]!r} has a single value: no pair can differ in it")
        a = self.sample(n, rng)
        b = a.copy()
        # A uniform non-zero offset modulo the size gives a uniformly drawn *different* value.
        b[:, factor] = (a[:, factor] + rng.integers(1, size, size=n)) % size
        return a, b

    def weak_pairs(
        self, n: int, rng: np.random.Generator, num_changed: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs for weakly supervised training: ``num_changed`` factors, chosen at random, differ.

        Unlike disentanglement_lib's ``simple_dynamics`` the changed values always differ from the old
        ones (a resample there may return the same value, which makes the label wrong for that pair).

        Returns:
            ``(a, b, changed)``: ``a`` and ``b`` ``(n, K)`` int64; ``changed`` ``(n, num_changed)`` int64,
            the indices of the changed factors (sorted per row). Factors of size 1 are never chosen.
        """
        check_count(n)
        variable = np.flatnonzero(np.asarray(self.sizes) > 1)
        if not 1 <= num_changed <= len(variable):
            raise ValueError(f"num_changed must lie in [1, {len(variable)}], got {num_changed}")
        a = self.sample(n, rng)
        b = a.copy()
        # Random subset of `num_changed` variable factors per row: argsort of uniform keys.
        keys = rng.random((n, len(variable)))
        changed = np.sort(variable[np.argsort(keys, axis=1)[:, :num_changed]], axis=1)
        sizes = np.asarray(self.sizes)[changed]
        rows = np.arange(n)[:, None]
        b[rows, changed] = (a[rows, changed] + rng.integers(1, sizes)) % sizes
        return a, b, changed.astype(np.int64)


def check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"the number of samples must be a non-negative integer, got {n!r}")


def coarsen(grid: FactorGrid, counts: dict[str, int]) -> tuple[FactorGrid, np.ndarray]:
    """Keep ``counts[name]`` evenly spaced values of the named factors (every s/c-th value).

    A cheaper grid for the small scale: a coarse row ``f`` is the full-grid row ``f * strides``.

    Returns:
        ``(coarse grid, strides (K,) int64)``.
    """
    strides = np.ones(grid.num_factors, dtype=np.int64)
    sizes = list(grid.sizes)
    for name, count in counts.items():
        k = grid.index(name)
        if not 1 <= count <= grid.sizes[k] or grid.sizes[k] % count:
            raise ValueError(f"factor {name!r} has {grid.sizes[k]} values: keep a divisor of it, not {count}")
        strides[k] = grid.sizes[k] // count
        sizes[k] = count
    return FactorGrid(grid.names, tuple(sizes)), strides
