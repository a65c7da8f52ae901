"""Known-answer tests for helpers.metrics.omes on synthetic codes built from the ground-truth factors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers.data.factors import FactorGrid
from helpers.metrics import (
    OMESResult,
    active_dimensions,
    association_map,
    association_matrix,
    omes,
    omes_alpha_sweep,
    omes_noise_floor,
    sample_omes_pairs,
)

GRID = FactorGrid(("a", "b", "c"), (32, 32, 32))
NUM_PAIRS = 4000


def standardised(factors: np.ndarray, grid: FactorGrid) -> np.ndarray:
    """Factor values scaled to zero mean and unit variance under the uniform distribution."""
    sizes = np.asarray(grid.sizes)
    return (factors - (sizes - 1) / 2) / np.sqrt((sizes**2 - 1) / 12)


def linear_code(grid: FactorGrid, weights: np.ndarray, noise: float, seed: int = 0):
    """``represent`` with ``z = standardised(v) @ weights + noise * N(0, 1)``; ``weights`` is ``(K, D)``."""
    rng = np.random.default_rng(seed)

    def represent(factors: np.ndarray) -> np.ndarray:
        z = standardised(factors, grid) @ weights
        return z + noise * rng.normal(size=z.shape)

    return represent


def pairs_for(grid: FactorGrid, weights: np.ndarray, noise: float = 0.01, num_pairs: int = NUM_PAIRS, seed=0):
    return sample_omes_pairs(grid, linear_code(grid, weights, noise, seed), num_pairs, np.random.default_rng(seed))


def ceiling(size: int) -> float:
    """R of a perfect code of a factor with ``size`` values: pairs hold distinct values, rho = -1/(s-1)."""
    return (size - 2) / (size - 1)


# ---------------------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------------------


def test_oracle_scores_near_one():
    result = omes(pairs_for(GRID, np.eye(3)))
    assert result.score > 0.9 and result.modularity > 0.9 and result.compactness > 0.9
    # The ceiling of a perfect code is R = 30/31 for 32-valued factors; noise 0.01 costs almost nothing.
    assert result.score == pytest.approx(ceiling(32), abs=0.02)
    assert association_map(result) == {0: 0, 1: 1, 2: 2}


def test_perfect_code_follows_closed_form_and_size_ceiling():
    grid = FactorGrid(("a", "b", "c"), (3, 5, 12))
    result = omes(pairs_for(grid, np.eye(3), noise=0.0, num_pairs=20_000))
    r = np.diag(result.association)
    # Other factors' dimensions are identical within a pair: rho = 1, R = 0 exactly.
    assert np.all(result.association[~np.eye(3, dtype=bool)] == 0.0)
    np.testing.assert_allclose(r, [ceiling(s) for s in grid.sizes], atol=0.03)
    # With R diagonal: O_kk = 1 - (1 - r)/K, M_kk = 1 - (1 - r)/D, pooled = r * O_kk (both poolings).
    expected_o = r * (1 - (1 - r) / 3)
    np.testing.assert_allclose(result.overlap, expected_o, atol=1e-12)
    np.testing.assert_allclose(result.multiple_encoding, expected_o, atol=1e-12)
    np.testing.assert_allclose(
        omes(pairs_for(grid, np.eye(3), 0.0, 20_000), pooling="max").overlap, expected_o, atol=1e-12
    )


def test_binary_factor_reads_as_not_encoded():
    grid = FactorGrid(("flag", "x"), (2, 16))
    result = omes(pairs_for(grid, np.eye(2), noise=0.0, num_pairs=500))
    # The two values of a binary factor are always swapped in a pair: rho = -1, R = 0 even for a perfect code.
    assert result.association[0, 0] == 0.0
    assert result.per_factor[0] == 0.0
    assert association_map(result)[0] is None


def test_random_rotation_scores_clearly_lower():
    oracle = omes(pairs_for(GRID, np.eye(3)))
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    rotated = omes(pairs_for(GRID, rotation))
    assert rotated.score < oracle.score - 0.2
    assert rotated.modularity < oracle.modularity - 0.2 and rotated.compactness < oracle.compactness - 0.2


def test_duplicated_factor_lowers_compactness_only():
    weights = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # dims 0, 1 <- a
    result = omes(pairs_for(GRID, weights))
    # Factor a: each of its two dims has M = 1 - (0 + 1)/4 (ignoring the ceiling), against 1 for b and c.
    assert result.multiple_encoding[0] < 0.8 < result.multiple_encoding[1:].min()
    assert result.compactness < 0.9
    assert result.modularity > 0.9


def test_mixed_dimension_lowers_modularity():
    weights = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # dim 0 <- a + b, dim 1 <- c
    result = omes(pairs_for(GRID, weights))
    # Within a-pairs dim 0 keeps b's share of its variance, so R_0a ~ R_0b ~ 1/2 and they sum to ~1:
    # O_0a = 1 - (|1 - R_0a| + R_0b + 0)/3 ~ 2/3 for a and b alike, against ~1 for c on its own dim.
    np.testing.assert_allclose(result.association[0, :2].sum(), 1.0, atol=0.05)
    np.testing.assert_allclose(result.dim_overlap[0, :2], 2 / 3, atol=0.03)
    assert result.overlap[:2].max() < 0.5 < 0.9 < result.overlap[2]
    assert result.modularity < 0.7
    # Compactness falls as well: R of the shared dimension is only ~1/2 and pooling weights by R.
    assert result.multiple_encoding[:2].max() < 0.5 < 0.9 < result.multiple_encoding[2]


def test_exact_noise_floor_when_r_is_all_ones():
    # Columns with exactly zero Pearson correlation give R = 1 everywhere.
    base_a, base_b = np.array([1.0, -1.0, 1.0, -1.0]), np.array([1.0, 1.0, -1.0, -1.0])
    num_dims, num_factors = 4, 3
    z_a, z_b = np.tile(base_a[:, None], (1, num_dims)), np.tile(base_b[:, None], (1, num_dims))
    pairs = [(z_a, z_b)] * num_factors
    assert np.all(association_matrix(pairs) == 1.0)
    for pooling in ("avg", "max"):
        result = omes(pairs, pooling=pooling)
        assert result.modularity == pytest.approx(1 / 3)
        assert result.compactness == pytest.approx(1 / 4)
        assert result.score == pytest.approx(0.5 / 3 + 0.5 / 4)
        assert result.score == pytest.approx(omes_noise_floor(num_factors, num_dims))
    assert omes(pairs, alpha=0.2).score == pytest.approx(0.2 / 3 + 0.8 / 4)


def test_pure_noise_sits_at_the_floor():
    grid = FactorGrid(("a", "b", "c"), (8, 8, 8))
    rng = np.random.default_rng(7)
    pairs = sample_omes_pairs(grid, lambda f: rng.normal(size=(len(f), 5)), 5000, np.random.default_rng(1))
    result = omes(pairs)
    assert result.association.min() > 0.95
    assert result.score == pytest.approx(omes_noise_floor(3, 5), abs=0.02)
    assert result.score < 0.3


def test_alpha_extremes_and_sweep():
    pairs = pairs_for(GRID, np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.0], [0.2, 0.0, 1.0]]))
    one, zero = omes(pairs, alpha=1.0), omes(pairs, alpha=0.0)
    assert one.score == pytest.approx(one.modularity)
    assert zero.score == pytest.approx(zero.compactness)
    sweep = omes_alpha_sweep(pairs, alphas=[0.0, 0.3, 1.0], pooling="max")
    for alpha, swept in zip([0.0, 0.3, 1.0], sweep, strict=True):
        assert swept.alpha == alpha and swept.pooling == "max"
        assert swept.score == pytest.approx(omes(pairs, alpha=alpha, pooling="max").score)
    assert len(omes_alpha_sweep(pairs)) == 11


def test_unencoded_factor_scores_zero_without_division_by_zero():
    weights = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # factor c reaches no dimension
    with np.errstate(all="raise"):
        result = omes(pairs_for(GRID, weights, noise=0.0))
    assert np.all(result.association[:, 2] == 0.0)
    assert result.per_factor[2] == 0.0 and result.overlap[2] == 0.0 and result.multiple_encoding[2] == 0.0
    assert np.isfinite(result.score) and result.score == pytest.approx(result.per_factor[:2].sum() / 3)
    assert association_map(result)[2] is None
    # The official rule (argmax_j O_jk) still names a dimension for the unencoded factor.
    assert association_map(result, weighted=False)[2] is not None


def test_constant_dimension_gives_no_nan():
    base = linear_code(GRID, np.eye(3), 0.01)

    def represent(factors):
        return np.concatenate([np.full((len(factors), 1), 0.7), base(factors)], axis=1)

    pairs = sample_omes_pairs(GRID, represent, 1000, np.random.default_rng(0))
    with np.errstate(all="raise"):
        kept = omes(pairs, active=np.ones(4, dtype=bool))
    assert np.all(kept.association[0] == 0.0)  # rho := 1 for a constant dimension
    assert np.isfinite(kept.score) and np.all(np.isfinite(kept.dim_overlap))
    pruned = omes(pairs)  # the default mask drops it (std 0 < 0.05)
    assert pruned.active.tolist() == [False, True, True, True]
    assert np.all(np.isnan(pruned.association[0])) and np.all(np.isfinite(pruned.association[1:]))
    assert association_map(pruned) == {0: 1, 1: 2, 2: 3}  # indices into the full code
    assert association_map(pruned, weighted=False) == {0: 1, 1: 2, 2: 3}


def test_one_sided_constant_dimension_counts_as_moving():
    z_a = np.array([[1.0], [1.0], [1.0]])
    z_b = np.array([[0.0], [2.0], [5.0]])
    assert association_matrix([(z_a, z_b)])[0, 0] == 1.0


def test_max_pooling_takes_the_best_dimension():
    weights = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    pairs = pairs_for(GRID, weights)
    avg, best = omes(pairs), omes(pairs, pooling="max")
    products = best.dim_overlap * best.association
    np.testing.assert_allclose(best.overlap, products.max(axis=0))
    assert best.pooling == "max" and avg.pooling == "avg"
    assert best.overlap[0] >= avg.overlap[0] - 1e-12


def test_sample_omes_pairs_differ_in_one_factor_and_are_fresh():
    grid = FactorGrid(("a", "b", "c"), (4, 5, 6))
    rng = np.random.default_rng(0)

    def identity(factors):
        return factors.astype(float)

    pairs = sample_omes_pairs(grid, identity, 50, rng)
    assert len(pairs) == 3
    for k, (z_a, z_b) in enumerate(pairs):
        assert z_a.shape == z_b.shape == (50, 3)
        differs = z_a != z_b
        assert differs[:, k].all() and not np.delete(differs, k, axis=1).any()
    again = sample_omes_pairs(grid, identity, 50, rng)
    assert not np.array_equal(pairs[0][0], again[0][0])
    first = sample_omes_pairs(grid, identity, 50, np.random.default_rng(9))
    second = sample_omes_pairs(grid, identity, 50, np.random.default_rng(9))
    assert all(np.array_equal(x, y) for p, q in zip(first, second, strict=True) for x, y in zip(p, q, strict=True))


def test_active_dimensions_threshold():
    z = np.stack([np.zeros(100), 0.01 * np.arange(100) / 100, np.linspace(-1, 1, 100)], axis=1)
    assert active_dimensions(z).tolist() == [False, False, True]
    assert active_dimensions(z, threshold=0.0).tolist() == [True, True, True]


def test_result_is_immutable():
    result = omes(pairs_for(GRID, np.eye(3), num_pairs=200))
    assert isinstance(result, OMESResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.score = 1.0
    with pytest.raises(ValueError):
        result.association[0, 0] = 1.0


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------

GOOD = np.random.default_rng(0).normal(size=(10, 3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"pooling": "median"}, "pooling"),
        ({"active": np.zeros(3, dtype=bool)}, "empty"),
        ({"active": np.ones(4, dtype=bool)}, "shape"),
        ({"active": np.ones(3)}, "bool"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        omes([(GOOD, GOOD + 1.0)] * 2, **kwargs)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([], "non-empty"),
        ([(GOOD, GOOD[:, :2])], "same shape"),
        ([(GOOD, GOOD), (GOOD[:, :2], GOOD[:, :2])], "dims"),
        ([(GOOD[:1], GOOD[:1])], "at least 2"),
        ([(GOOD, np.where(GOOD > 1, np.nan, GOOD))], "non-finite"),
        ([(GOOD, np.where(GOOD > 1, np.inf, GOOD))], "non-finite"),
        ([(GOOD,)], "tuple"),
        ([(GOOD[0], GOOD[0])], "shape"),
    ],
)
def test_bad_pairs(pairs, message):
    with pytest.raises(ValueError, match=message):
        omes(pairs)


def test_all_dimensions_inactive_is_an_error():
    with pytest.raises(ValueError, match="no active dimension"):
        omes([(1e-4 * GOOD, 1e-4 * GOOD[::-1])])


def test_bad_sweep_and_floor_arguments():
    with pytest.raises(ValueError, match="alpha"):
        omes_alpha_sweep([(GOOD, GOOD + 1.0)], alphas=[0.5, 2.0])
    with pytest.raises(ValueError, match="at least one"):
        omes_alpha_sweep([(GOOD, GOOD + 1.0)], alphas=[])
    with pytest.raises(ValueError, match="K >= 1"):
        omes_noise_floor(0, 3)
    with pytest.raises(ValueError, match="num_pairs"):
        sample_omes_pairs(GRID, lambda f: f.astype(float), 1, np.random.default_rng(0))


def test_matches_a_loop_transcription_of_the_equations():
    rng = np.random.default_rng(5)
    mixing = rng.normal(size=(3, 4))
    pairs = pairs_for(GRID, mixing, noise=0.3, num_pairs=300)
    r = association_matrix(pairs)
    num_dims, num_factors = r.shape
    for pooling in ("avg", "max"):
        result = omes(pairs, alpha=0.3, pooling=pooling, active=np.ones(num_dims, dtype=bool))
        overlap, multiple = np.zeros(num_factors), np.zeros(num_factors)
        for k in range(num_factors):
            o = [1 - np.mean([abs(float(k == q) - r[j, q]) for q in range(num_factors)]) for j in range(num_dims)]
            m = [1 - np.mean([abs(float(j == i) - r[i, k]) for i in range(num_dims)]) for j in range(num_dims)]
            o_w, m_w = np.array(o) * r[:, k], np.array(m) * r[:, k]
            if pooling == "avg":
                overlap[k], multiple[k] = np.average(o_w, weights=r[:, k]), np.average(m_w, weights=r[:, k])
            else:
                overlap[k], multiple[k] = o_w.max(), m_w.max()
        np.testing.assert_allclose(result.overlap, overlap, atol=1e-12)
        np.testing.assert_allclose(result.multiple_encoding, multiple, atol=1e-12)
        assert result.score == pytest.approx(np.mean(0.3 * overlap + 0.7 * multiple), abs=1e-12)
    # R itself against numpy's full correlation matrix (the official route), cross block diagonal.
    z_a, z_b = pairs[1]
    full = np.corrcoef(z_a, z_b, rowvar=False)
    np.testing.assert_allclose(r[:, 1], np.round(1 - np.abs(np.diag(full[:num_dims, num_dims:])), 4), atol=1e-12)
