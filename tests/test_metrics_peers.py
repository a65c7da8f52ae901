"""Tests for helpers.metrics.peers: hand-computed answers for the building blocks, then the
disentanglement_lib sanity checks (identity scores high, noise low, a zero code does not crash)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.data.factors import FactorGrid
from helpers.metrics import (
    beta_vae_score,
    dci,
    dci_completeness,
    dci_disentanglement,
    dci_score,
    discrete_entropy,
    factor_vae_score,
    histogram_discretize,
    mig,
    mig_score,
    modularity,
    modularity_from_mutual_information,
    modularity_score,
    mutual_information_matrix,
    sample_codes,
    sap,
    sap_score,
)

GRID = FactorGrid(("a", "b", "c"), (5, 5, 5))
LN2 = np.log(2.0)


def identity(factors: np.ndarray) -> np.ndarray:
    return factors.astype(np.float64)


def noise_code(num_dims: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return lambda factors: rng.normal(size=(len(factors), num_dims))


def zero_code(factors: np.ndarray) -> np.ndarray:
    return np.zeros((len(factors), 3))


# ---------------------------------------------------------------------------------------------------
# Building blocks against hand-computed answers (guards against scikit-learn behaviour changes, #33)
# ---------------------------------------------------------------------------------------------------


def test_histogram_discretize_labels_bins_one_to_num_bins():
    codes = np.stack([np.arange(20.0), np.full(20, 3.0), np.linspace(0, 1, 20) ** 2], axis=1)
    binned = histogram_discretize(codes)
    assert binned[:, 0].tolist() == list(range(1, 21))  # one value per bin, the maximum in bin 20
    assert len(np.unique(binned[:, 1])) == 1
    assert binned.min() >= 1 and binned.max() <= 20
    assert histogram_discretize(np.array([[0.0], [0.49], [0.51], [1.0]]), num_bins=2)[:, 0].tolist() == [1, 1, 2, 2]


def test_entropy_and_mutual_information_known_values():
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 5)
    np.testing.assert_allclose(discrete_entropy(factors), [LN2, LN2])
    np.testing.assert_allclose(discrete_entropy(np.arange(4)[:, None]), [np.log(4.0)])
    codes = np.stack([factors[:, 0] * 2.5, 1.0 - factors[:, 1], np.zeros(len(factors))], axis=1)
    expected = np.array([[LN2, 0.0], [0.0, LN2], [0.0, 0.0]])
    np.testing.assert_allclose(mutual_information_matrix(codes, factors), expected, atol=1e-12)


def test_mig_known_values():
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 5)
    perfect = factors.astype(float)
    assert mig(perfect, factors)["discrete_mig"] == pytest.approx(1.0)
    # Factor a copied into two dimensions: its gap is 0, factor b keeps 1.
    doubled = np.concatenate([perfect, perfect[:, :1]], axis=1)
    assert mig(doubled, factors)["discrete_mig"] == pytest.approx(0.5)


def test_modularity_known_values():
    assert modularity_from_mutual_information(np.eye(3)) == pytest.approx(1.0)
    assert modularity_from_mutual_information(np.ones((2, 3))) == pytest.approx(0.0)
    # Row [1, 0.5]: 1 - 0.25 / (1 * 1); a zero row scores 0 by disentanglement_lib's rule.
    assert modularity_from_mutual_information(np.array([[1.0, 0.5], [0.0, 0.0]])) == pytest.approx(0.375)


def test_dci_known_values():
    assert dci_disentanglement(np.eye(3)) == pytest.approx(1.0, abs=1e-8)
    assert dci_completeness(np.eye(3)) == pytest.approx(1.0, abs=1e-8)
    assert dci_disentanglement(np.ones((3, 4))) == pytest.approx(0.0, abs=1e-8)
    assert dci_completeness(np.ones((3, 4))) == pytest.approx(0.0, abs=1e-8)
    # Two codes that both serve factor 0: each code is pure, but factor 0 is spread over 2 = D codes.
    both = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert dci_disentanglement(both) == pytest.approx(1.0, abs=1e-8)
    assert dci_completeness(both) == pytest.approx(0.0, abs=1e-8)
    # An all-zero matrix falls back to uniform weights and scores 0, not NaN.
    assert dci_disentanglement(np.zeros((3, 2))) == pytest.approx(0.0, abs=1e-8)
    assert dci_completeness(np.zeros((3, 2))) == pytest.approx(0.0, abs=1e-8)


# ---------------------------------------------------------------------------------------------------
# Sanity on synthetic representations of a 5 x 5 x 5 grid
# ---------------------------------------------------------------------------------------------------


def test_beta_vae():
    high = beta_vae_score(GRID, identity, np.random.default_rng(0), num_train=300, num_eval=300)
    low = beta_vae_score(GRID, noise_code(3), np.random.default_rng(0), num_train=300, num_eval=600)
    assert high["eval_accuracy"] > 0.99
    assert low["eval_accuracy"] == pytest.approx(1 / 3, abs=0.08)  # chance = 1/K; 4 standard errors


def test_factor_vae():
    kwargs = {"num_train": 300, "num_eval": 600, "num_variance_estimate": 1000}
    high = factor_vae_score(GRID, identity, np.random.default_rng(0), **kwargs)
    low = factor_vae_score(GRID, noise_code(3), np.random.default_rng(0), **kwargs)
    assert high["eval_accuracy"] > 0.99 and high["num_active_dims"] == 3.0
    # Each noise dimension wins about a third of every factor's votes: accuracy near chance 1/K.
    assert low["eval_accuracy"] < 0.45


def test_mig():
    # Discretised identity: each of the 5 values falls in its own bin, so m_kk = H(v_k) and the
    # off-diagonal MI is estimation bias of order (bins - 1)(classes - 1)/(2n).
    assert mig_score(GRID, identity, np.random.default_rng(0), num_train=2000)["discrete_mig"] > 0.95
    assert mig_score(GRID, noise_code(5), np.random.default_rng(0), num_train=2000)["discrete_mig"] < 0.05


def test_modularity():
    assert modularity_score(GRID, identity, np.random.default_rng(0), num_train=2000)["modularity_score"] > 0.95
    # Noise is not scored near 0: every MI entry is a bias term of similar size, and the ratio of the
    # second-largest to the largest stays ~0.7 whatever n is, so the noise level is ~0.3 for 5-valued
    # factors and 20 bins (mean over 10 dims keeps the spread small).
    noise = modularity_score(GRID, noise_code(10), np.random.default_rng(0), num_train=2000)
    assert noise["modularity_score"] < 0.45


def test_dci():
    grid = FactorGrid(("a", "b", "c"), (4, 4, 4))
    high = dci_score(grid, identity, np.random.default_rng(0), num_train=300, num_test=300)
    low = dci_score(grid, noise_code(3), np.random.default_rng(0), num_train=300, num_test=300)
    assert high["disentanglement"] > 0.9 and high["completeness"] > 0.9
    assert high["informativeness_test"] > 0.99
    assert low["disentanglement"] < 0.1 and low["completeness"] < 0.1
    assert low["informativeness_test"] < 0.4  # chance is 1/4


def test_sap():
    high = sap_score(GRID, identity, np.random.default_rng(0), num_train=1000, num_test=1000)
    low = sap_score(GRID, noise_code(3), np.random.default_rng(0), num_train=1000, num_test=1000)
    # One linear threshold family on a scalar cannot pick out the middle values of a 5-valued factor,
    # so even the identity stays far from 1 (about 0.38 here); noise has no gap at all.
    assert high["SAP_score"] > 0.25
    assert low["SAP_score"] < 0.05


def test_zero_representation_is_handled():
    rng = np.random.default_rng(0)
    factor_vae = factor_vae_score(GRID, zero_code, rng, num_train=50, num_eval=50, num_variance_estimate=200)
    assert factor_vae == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}
    beta_vae = beta_vae_score(GRID, zero_code, rng, num_train=100, num_eval=100)
    assert np.isfinite(beta_vae["eval_accuracy"])
    codes, factors = sample_codes(GRID, zero_code, 500, rng)
    assert mig(codes, factors)["discrete_mig"] == 0.0
    assert modularity(codes, factors)["modularity_score"] == 0.0
    assert sap(codes, factors, codes, factors, rng)["SAP_score"] == 0.0
    scores = dci(codes[:100], factors[:100], codes[100:200], factors[100:200], rng)
    assert scores["disentanglement"] == pytest.approx(0.0, abs=1e-8)
    assert scores["completeness"] == pytest.approx(0.0, abs=1e-8)


def test_same_seed_same_scores():
    first = sap_score(GRID, noise_code(3, seed=1), np.random.default_rng(4), num_train=200, num_test=200)
    second = sap_score(GRID, noise_code(3, seed=1), np.random.default_rng(4), num_train=200, num_test=200)
    assert first == second


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------

CODES = np.random.default_rng(0).normal(size=(20, 3))
FACTORS = np.random.default_rng(1).integers(0, 3, size=(20, 2))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mig(CODES[:10], FACTORS), "rows"),
        (lambda: mig(CODES, FACTORS.astype(float)), "integer"),
        (lambda: mig(CODES[:, :1], FACTORS), "2 code dimensions"),
        (lambda: mig(CODES, np.zeros((20, 2), dtype=int)), "constant"),
        (lambda: mig(np.where(CODES > 1, np.nan, CODES), FACTORS), "non-finite"),
        (lambda: sap(CODES[:, :1], FACTORS, CODES[:, :1], FACTORS, np.random.default_rng(0)), "2 code"),
        (lambda: dci(CODES, FACTORS, CODES[:, :2], FACTORS, np.random.default_rng(0)), "same D"),
        (lambda: dci_disentanglement(-np.eye(2)), "non-negative"),
        (lambda: modularity_from_mutual_information(np.ones((3, 1))), "K >= 2"),
        (lambda: histogram_discretize(CODES, num_bins=0), "num_bins"),
        (lambda: beta_vae_score(GRID, identity, np.random.default_rng(0), batch_size=0), "batch_size"),
        (lambda: factor_vae_score(GRID, identity, np.random.default_rng(0), batch_size=1), "batch_size"),
        (lambda: mig_score(GRID, identity, np.random.default_rng(0), num_train=1), "num_points"),
        (lambda: mig_score(GRID, lambda f: f[:, :1].astype(float)[:-1], np.random.default_rng(0), 10), "rows"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
