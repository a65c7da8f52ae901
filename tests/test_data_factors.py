import numpy as np
import pytest

from helpers.data.factors import FactorGrid

GRID = FactorGrid(("shape", "scale", "fixed", "pos"), (3, 6, 1, 32))


def test_sample_covers_the_grid_deterministically():
    a = GRID.sample(5000, np.random.default_rng(0))
    assert a.shape == (5000, 4) and a.dtype == np.int64
    assert np.array_equal(a, GRID.sample(5000, np.random.default_rng(0)))
    for k, size in enumerate(GRID.sizes):
        assert set(np.unique(a[:, k])) == set(range(size))
    assert GRID.num_combinations == 3 * 6 * 32 and GRID.index("pos") == 3


@pytest.mark.parametrize("factor", [0, 1, 3])
def test_pairs_differ_only_in_the_chosen_factor(factor):
    a, b = GRID.pairs_differing_in(factor, 2000, np.random.default_rng(1))
    others = [k for k in range(GRID.num_factors) if k != factor]
    assert np.array_equal(a[:, others], b[:, others])
    assert np.all(a[:, factor] != b[:, factor])
    # The new value is uniform over the other values: every one of them appears.
    assert len(np.unique(b[:, factor])) == GRID.sizes[factor]


@pytest.mark.parametrize("num_changed", [1, 2])
def test_weak_pairs_change_exactly_the_reported_factors(num_changed):
    a, b, changed = GRID.weak_pairs(3000, np.random.default_rng(2), num_changed=num_changed)
    assert changed.shape == (3000, num_changed)
    differs = a != b
    assert np.array_equal(differs.sum(1), np.full(3000, num_changed))
    assert np.array_equal(np.sort(np.flatnonzero(differs[0])), changed[0])
    assert np.all(np.take_along_axis(differs, changed, axis=1))
    assert 2 not in changed  # the single-valued factor never changes
    assert set(np.unique(changed)) == {0, 1, 3}


def test_validation_errors():
    with pytest.raises(ValueError, match="2 names but 1 sizes"):
        FactorGrid(("a", "b"), (2,))
    with pytest.raises(ValueError, match=r"must have shape \(n, 4\)"):
        GRID.validate(np.zeros((3, 5), dtype=int))
    with pytest.raises(ValueError, match="integer class indices"):
        GRID.validate(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"'scale' must lie in \[0, 5\], got 6"):
        GRID.validate(np.array([[0, 6, 0, 0]]))
    with pytest.raises(ValueError, match="single value"):
        GRID.pairs_differing_in(2, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_changed must lie in"):
        GRID.weak_pairs(10, np.random.default_rng(0), num_changed=4)
    with pytest.raises(ValueError, match="non-negative integer"):
        GRID.sample(-1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown factor 'colour'"):
        GRID.index("colour")


def test_coarsen_keeps_evenly_spaced_values():
    from helpers.data.factors import coarsen

    coarse, strides = coarsen(GRID, {"pos": 8, "scale": 3})
    assert coarse.sizes == (3, 3, 1, 8) and strides.tolist() == [1, 2, 1, 4]
    full = coarse.sample(500, np.random.default_rng(0)) * strides
    GRID.validate(full)
    assert set(np.unique(full[:, 3])) == set(range(0, 32, 4))
    with pytest.raises(ValueError, match="keep a divisor of it, not 5"):
        coarsen(GRID, {"pos": 5})
