"""OMES (Overlap Multiple Encoding Score), an intervention-based disentanglement metric.

Reference: J. Dapueto, N. Noceti, F. Odone, "Transferring disentangled representations: bridging the
gap between synthetic and real images", NeurIPS 2024, arXiv:2409.18017. The computation follows the
authors' code (JacopoDapueto/transfer_disentanglement, ``src/evaluation/metrics/omes.py``) step by step.
Our reading notes: ``papers/03_omes_transfer.md``.

For every factor k we are given P_k pairs of codes ``(z_a, z_b)`` whose ground-truth factors agree
everywhere except in factor k. With D code dimensions and K factors:

1. Association: ``R_jk = 1 - |rho_jk|`` with ``rho_jk`` the Pearson correlation of ``z_a[:, j]`` and
   ``z_b[:, j]`` over the factor-k pairs, rounded to 4 decimals as in the official code. R near 1 means
   that dimension j moves when factor k moves; R near 0 means it stays put.
2. Inactive dimensions (std < 0.05, disentanglement_lib's ``prune_dims`` threshold) are dropped; D below
   is the number of active dimensions.
3. Per-dimension scores, with Kronecker deltas:
   ``O_jk = 1 - (1/K) sum_k' |delta_kk' - R_jk'|`` (overlap: does dim j encode factor k *only*?) and
   ``M_jk = 1 - (1/D) sum_j' |delta_jj' - R_j'k|`` (multiple encoding: is factor k encoded in dim j
   *only*?). Because ``0 <= R <= 1`` these equal ``1 - (1 + rowsum_j(R) - 2 R_jk) / K`` and
   ``1 - (1 + colsum_k(R) - 2 R_jk) / D``.
4. Pooling over dimensions, weighting by ``R_jk``: ``"avg"``: ``O_k = sum_j R_jk (O_jk R_jk) / sum_j R_jk``;
   ``"max"``: ``O_k = max_j O_jk R_jk``; the same for ``M_k``.
5. ``S_k = alpha O_k + (1 - alpha) M_k`` and ``OMES = mean_k S_k``; modularity is ``mean_k O_k``
   (alpha = 1), compactness ``mean_k M_k`` (alpha = 0).

Where this module departs from the official code (its faults, see the notes):

* A dimension that is constant over both members of the factor-k pairs has an undefined correlation
  (the official code yields NaN). We set ``rho = 1`` (the dimension did not move, ``R = 0``). If only one
  member is constant the covariance is exactly zero and we set ``rho = 0`` (``R = 1``).
* A factor that no active dimension encodes (``sum_j R_jk = 0``) makes the official weighted average
  divide by zero; here its pooled ``O_k`` and ``M_k`` are 0, so ``S_k = 0``.
* The official code caches pairs on disk by file name and so can reuse pairs built from one
  representation for another; :func:`sample_omes_pairs` draws fresh pairs on every call.
* The official factor-to-dimension association returns row positions *after* inactive rows were
  deleted; :func:`association_map` returns indices into the full code.
* The final score is returned unrounded (the official code rounds it to 4 decimals); R is rounded as
  there, so scores agree with the official ones to that precision.

Two properties worth knowing when reading OMES values:

* Noise floor. Codes independent of the factors give ``rho ~ 0`` hence ``R ~ 1`` everywhere. With R
  all ones, ``O_jk = 1/K`` and ``M_jk = 1/D`` for every j, k, both poolings give ``O_k = 1/K`` and
  ``M_k = 1/D``, and ``OMES = alpha/K + (1 - alpha)/D`` (:func:`omes_noise_floor`). With P pairs the
  finite-sample ``|rho|`` is about ``sqrt(2 / (pi P))``, so measured noise scores lie within a few
  ``1/sqrt(P)`` of the floor.
* Ceiling for small factors. The pairs differ in factor k, so its two values are two *distinct* draws
  from the s_k values. For any function f of the value, ``corr(f(a), f(b)) = -1/(s_k - 1)``, so even a
  perfect, noise-free code of factor k has ``R = (s_k - 2)/(s_k - 1)``: 0.5 for dSprites' 3 shapes and
  0 for a binary factor, which OMES therefore reports as not encoded at all. The official pairs also
  drop equal values, so this holds there too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from helpers.data.factors import FactorGrid
from helpers.metrics._common import (
    ACTIVE_STD_THRESHOLD,
    Represent,
    active_dimensions,
    check_codes,
    represent_factors,
)

POOLINGS = ("avg", "max")
#: The official code rounds R to this many decimals.
R_DECIMALS = 4
#: alpha values of :func:`omes_alpha_sweep` by default: 0, 0.1, ..., 1.
SWEEP_ALPHAS = tuple(i / 10 for i in range(11))

Pairs = Sequence[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class OMESResult:
    """OMES and its parts for one alpha and pooling. Arrays are read-only.

    Attributes:
        score: ``mean_k S_k``.
        per_factor: ``(K,)`` ``S_k = alpha O_k + (1 - alpha) M_k``.
        modularity: ``mean_k O_k``.
        compactness: ``mean_k M_k``.
        overlap: ``(K,)`` pooled overlap scores ``O_k``.
        multiple_encoding: ``(K,)`` pooled multiple-encoding scores ``M_k``.
        association: ``(D, K)`` matrix ``R`` over *all* D dimensions; rows of inactive dimensions are NaN
            (they were not evaluated; their R would say nothing reliable).
        dim_overlap: ``(D, K)`` ``O_jk``; NaN on inactive rows.
        dim_multiple_encoding: ``(D, K)`` ``M_jk``; NaN on inactive rows.
        active: ``(D,)`` bool mask of the dimensions that entered the computation.
        alpha: the weight of overlap (modularity) against multiple encoding (compactness).
        pooling: ``"avg"`` or ``"max"``.
    """

    score: float
    per_factor: np.ndarray
    modularity: float
    compactness: float
    overlap: np.ndarray
    multiple_encoding: np.ndarray
    association: np.ndarray
    dim_overlap: np.ndarray
    dim_multiple_encoding: np.ndarray
    active: np.ndarray
    alpha: float
    pooling: str


@dataclass(frozen=True)
class _Parts:
    """Everything OMES needs that does not depend on alpha (full-D arrays, NaN on inactive rows)."""

    association: np.ndarray
    dim_overlap: np.ndarray
    dim_multiple_encoding: np.ndarray
    active: np.ndarray
    overlap: np.ndarray
    multiple_encoding: np.ndarray
    pooling: str


def omes_noise_floor(num_factors: int, num_active_dims: int, alpha: float = 0.5) -> float:
    """OMES of a code that ignores the factors: R = 1 everywhere gives ``alpha/K + (1 - alpha)/D``.

    Derivation: with ``R_jk = 1``, ``O_jk = 1 - (K - 1)/K = 1/K`` and ``M_jk = 1 - (D - 1)/D = 1/D``;
    all weights are 1, so both poolings return those values and ``S_k = alpha/K + (1 - alpha)/D``.

    Args:
        num_factors: K >= 1.
        num_active_dims: D >= 1.
        alpha: in [0, 1].
    """
    _check_alpha(alpha)
    if num_factors < 1 or num_active_dims < 1:
        raise ValueError(f"need K >= 1 and D >= 1, got K={num_factors}, D={num_active_dims}")
    return alpha / num_factors + (1.0 - alpha) / num_active_dims


def association_matrix(pairs: Pairs) -> np.ndarray:
    """The ``(D, K)`` matrix ``R_jk = 1 - |rho_jk|`` over all dimensions, rounded to 4 decimals.

    ``rho_jk`` is the Pearson correlation between ``z_a[:, j]`` and ``z_b[:, j]`` over the factor-k pairs,
    computed directly per dimension (the diagonal of the cross-correlation block, without forming the
    full ``2D x 2D`` matrix). Constant dimensions: ``rho = 1`` if both members are constant, ``rho = 0``
    if exactly one is (see the module docstring).

    Args:
        pairs: K tuples ``(z_a, z_b)`` of ``(P_k, D)`` codes, ``P_k >= 2``; member i of both arrays differ
            only in factor k.

    Returns:
        ``(D, K)`` float64 in [0, 1].
    """
    return _association(_check_pairs(pairs))


def omes(pairs: Pairs, alpha: float = 0.5, pooling: str = "avg", active: np.ndarray | None = None) -> OMESResult:
    """OMES of a representation from intervention pairs (see the module docstring for the equations).

    Args:
        pairs: K tuples ``(z_a, z_b)``, each ``(P_k, D)``, ``P_k >= 2``: codes of pairs that differ only in
            factor k (e.g. from :func:`sample_omes_pairs`).
        alpha: weight of overlap (modularity) in ``S_k = alpha O_k + (1 - alpha) M_k``, in [0, 1].
        pooling: ``"avg"`` (R-weighted mean of ``O_jk R_jk``) or ``"max"`` (``max_j O_jk R_jk``).
        active: ``(D,)`` bool mask of the dimensions to score; None estimates it with
            :func:`active_dimensions` on all codes in ``pairs`` (every member is a uniform draw from the
            grid, so together they sample the representation).

    Returns:
        :class:`OMESResult`.
    """
    _check_alpha(alpha)
    return _result(_parts(pairs, pooling, active), alpha)


def omes_alpha_sweep(
    pairs: Pairs, alphas: Sequence[float] = SWEEP_ALPHAS, pooling: str = "avg", active: np.ndarray | None = None
) -> tuple[OMESResult, ...]:
    """OMES for several alphas; R and the pooled ``O_k``, ``M_k`` are computed once.

    (The official ``get_score`` sweeps ``[1.0, 0.9, ..., 0.2, 1.0, 0.0]`` for both poolings.)

    Args:
        pairs, pooling, active: as in :func:`omes`.
        alphas: values in [0, 1].

    Returns:
        one :class:`OMESResult` per alpha, in the order given.
    """
    alphas = list(alphas)
    if not alphas:
        raise ValueError("alphas must hold at least one value")
    for alpha in alphas:
        _check_alpha(alpha)
    parts = _parts(pairs, pooling, active)
    return tuple(_result(parts, alpha) for alpha in alphas)


def association_map(result: OMESResult, weighted: bool = True) -> dict[int, int | None]:
    """The dimension OMES associates with each factor (used to prune the code for factor classifiers).

    Weighted (default): factor k maps to ``argmax_j O_jk R_jk`` over active dims, the dimension that
    contributes most to the ``"max"`` pooled overlap, or to None when that maximum is about 0 (no active
    dimension encodes k). ``weighted=False`` reproduces the official rule ``argmax_j O_jk`` (None when
    that is about 0). The official rule ignores whether dim j encodes k at all: a dimension that encodes
    nothing scores ``O_jk = 1 - 1/K`` and can win for a factor that no dimension encodes.

    Args:
        result: an :class:`OMESResult`.
        weighted: use ``O_jk R_jk`` (True) or the official ``O_jk`` (False).

    Returns:
        ``{factor index: dimension index in the full code, or None}``.
    """
    scores = result.dim_overlap * result.association if weighted else result.dim_overlap
    best = np.where(result.active[:, None], scores, -np.inf).argmax(axis=0)
    values = scores[best, np.arange(scores.shape[1])]
    return {k: None if np.isclose(values[k], 0.0) else int(best[k]) for k in range(scores.shape[1])}


def sample_omes_pairs(
    grid: FactorGrid, represent: Represent, num_pairs: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fresh intervention pairs for :func:`omes`: ``num_pairs`` pairs per factor.

    For each factor k, :meth:`FactorGrid.pairs_differing_in` draws factor rows ``a, b`` that agree
    everywhere except in k (where they differ), and both are mapped through ``represent``. The official
    code instead groups an existing sample by the other factors and subsamples at most 100,000 pairs.

    Args:
        grid: the ground-truth factor grid (every factor needs at least 2 values).
        represent: maps ``(n, K)`` factor rows to ``(n, D)`` codes.
        num_pairs: pairs per factor, ``>= 2``.
        rng: the only source of randomness.

    Returns:
        K tuples ``(z_a, z_b)`` of ``(num_pairs, D)`` float64 codes.
    """
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, (int, np.integer)) or num_pairs < 2:
        raise ValueError(f"num_pairs must be an integer >= 2, got {num_pairs!r}")
    pairs = []
    for k in range(grid.num_factors):
        a, b = grid.pairs_differing_in(k, num_pairs, rng)
        codes = represent_factors(represent, np.concatenate([a, b]))
        pairs.append((codes[:num_pairs], codes[num_pairs:]))
    return pairs


def _check_alpha(alpha: float) -> None:
    if not np.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")


def _check_pairs(pairs: Pairs) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate the pairs: K >= 1 tuples of equal-shape ``(P_k, D)`` finite arrays, same D, ``P_k >= 2``."""
    if isinstance(pairs, np.ndarray) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise ValueError("pairs must be a non-empty list with one (z_a, z_b) tuple per factor")
    checked = []
    for k, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"pairs[{k}] must be a (z_a, z_b) tuple, got {len(pair)} items")
        z_a = check_codes(pair[0], f"pairs[{k}][0]")
        z_b = check_codes(pair[1], f"pairs[{k}][1]")
        if z_a.shape != z_b.shape:
            raise ValueError(f"pairs[{k}]: z_a {z_a.shape} and z_b {z_b.shape} must have the same shape")
        if z_a.shape[0] < 2:
            raise ValueError(f"pairs[{k}] holds {z_a.shape[0]} pair(s); a correlation needs at least 2")
        if checked and z_a.shape[1] != checked[0][0].shape[1]:
            raise ValueError(f"pairs[{k}] has {z_a.shape[1]} dims but pairs[0] has {checked[0][0].shape[1]}")
        checked.append((z_a, z_b))
    return checked


def _association(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """R of validated pairs: ``(D, K)``, rounded to :data:`R_DECIMALS`."""
    rho = np.stack([_pair_correlation(z_a, z_b) for z_a, z_b in pairs], axis=1)
    return np.round(1.0 - np.abs(rho), R_DECIMALS)


def _pair_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-dimension Pearson correlation of ``x[:, j]`` and ``y[:, j]``: ``(P, D), (P, D) -> (D,)``."""
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    sxy = np.einsum("ij,ij->j", xc, yc)
    sx = np.sqrt(np.einsum("ij,ij->j", xc, xc))
    sy = np.sqrt(np.einsum("ij,ij->j", yc, yc))
    # Exact constancy (max == min) is tested as well: the centred values of a constant column can be a
    # rounding error away from 0.
    const_x = (np.ptp(x, axis=0) == 0) | (sx == 0)
    const_y = (np.ptp(y, axis=0) == 0) | (sy == 0)
    varying = ~const_x & ~const_y
    rho = np.where(const_x & const_y, 1.0, 0.0)
    rho[varying] = sxy[varying] / (sx[varying] * sy[varying])
    return np.clip(rho, -1.0, 1.0)


def _resolve_active(active: np.ndarray | None, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    num_dims = pairs[0][0].shape[1]
    if active is None:
        active = active_dimensions(np.concatenate([z for pair in pairs for z in pair], axis=0))
        if not active.any():
            raise ValueError(
                f"no active dimension: every dimension has std < {ACTIVE_STD_THRESHOLD}; "
                "rescale the codes or pass an explicit `active` mask"
            )
        return active
    active = np.asarray(active)
    if active.dtype != np.bool_ or active.shape != (num_dims,):
        raise ValueError(f"active must be a bool array of shape ({num_dims},), got {active.dtype} {active.shape}")
    if not active.any():
        raise ValueError("active mask is empty: at least one dimension must be active")
    return active


def _dimension_scores(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``O_jk`` and ``M_jk`` of the active rows ``r`` ``(D, K)``, literally as in the equations."""
    num_dims, num_factors = r.shape
    # [j, k, k'] = |delta_kk' - R_jk'|, averaged over k'.
    overlap = 1.0 - np.abs(np.eye(num_factors)[None, :, :] - r[:, None, :]).mean(axis=2)
    # [j, j', k] = |delta_jj' - R_j'k|, averaged over j'.
    multiple = 1.0 - np.abs(np.eye(num_dims)[:, :, None] - r[None, :, :]).mean(axis=1)
    return overlap, multiple


def _pool(scores: np.ndarray, r: np.ndarray, pooling: str) -> np.ndarray:
    """Pool ``(D, K)`` per-dimension scores to ``(K,)``; a factor with ``sum_j R_jk = 0`` gets 0."""
    weighted = scores * r
    if pooling == "max":
        return weighted.max(axis=0)
    mass = r.sum(axis=0)
    pooled = np.zeros(r.shape[1])
    np.divide((weighted * r).sum(axis=0), mass, out=pooled, where=mass > 0)
    return pooled


def _parts(pairs: Pairs, pooling: str, active: np.ndarray | None) -> _Parts:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    pairs = _check_pairs(pairs)
    active = _resolve_active(active, pairs)
    association = _association(pairs)
    r = association[active]
    overlap, multiple = _dimension_scores(r)

    def full(rows: np.ndarray) -> np.ndarray:
        out = np.full(association.shape, np.nan)
        out[active] = rows
        return _frozen(out)

    association[~active] = np.nan
    return _Parts(
        association=_frozen(association),
        dim_overlap=full(overlap),
        dim_multiple_encoding=full(multiple),
        active=_frozen(active.copy()),
        overlap=_frozen(_pool(overlap, r, pooling)),
        multiple_encoding=_frozen(_pool(multiple, r, pooling)),
        pooling=pooling,
    )


def _result(parts: _Parts, alpha: float) -> OMESResult:
    per_factor = alpha * parts.overlap + (1.0 - alpha) * parts.multiple_encoding
    return OMESResult(
        score=float(per_factor.mean()),
        per_factor=_frozen(per_factor),
        modularity=float(parts.overlap.mean()),
        compactness=float(parts.multiple_encoding.mean()),
        overlap=parts.overlap,
        multiple_encoding=parts.multiple_encoding,
        association=parts.association,
        dim_overlap=parts.dim_overlap,
        dim_multiple_encoding=parts.dim_multiple_encoding,
        active=parts.active,
        alpha=float(alpha),
        pooling=parts.pooling,
    )


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array
