"""Peer disentanglement metrics as disentanglement_lib defines them, with its default settings.

Reference implementation: google-research/disentanglement_lib (Locatello et al., "Challenging common
assumptions in the unsupervised learning of disentangled representations", ICML 2019), modules
``evaluation/metrics/{beta_vae, factor_vae, mig, dci, sap_score, modularity_explicitness, utils}.py``;
default settings from ``config/unsupervised_study_v1/metric_configs/*.gin``. The metrics themselves come
from Higgins et al. (BetaVAE, ICLR 2017), Kim & Mnih (FactorVAE, ICML 2018), Chen et al. (MIG, NeurIPS
2018), Eastwood & Williams (DCI, ICLR 2018), Kumar et al. (SAP, ICLR 2018) and Ridgeway & Mozer
(Modularity, NeurIPS 2018). Our reading notes: ``papers/03_omes_transfer.md``.

Conventions: codes are ``(n, D)`` and factors ``(n, K)`` integer class indices (disentanglement_lib
stores the transposes). BetaVAE and FactorVAE need interventions and take ``(grid, represent, rng)``
where ``represent`` maps ``(n, K)`` factor rows to ``(n, D)`` codes; MIG, DCI, SAP and Modularity take
arrays, and each has a ``*_score(grid, represent, rng, ...)`` wrapper that samples them uniformly from
the grid first (disentanglement_lib's ``generate_batch_factor_code``). Randomness comes only from
``rng``; scikit-learn estimators get a ``random_state`` drawn from it. Every metric returns a dict of
floats keyed as in disentanglement_lib.

Departures from disentanglement_lib, all deliberate:

* Intervention batches are drawn for all points at once (same distribution, different random stream).
* FactorVAE's ``num_active_dims`` is the number of active dimensions (disentanglement_lib reports the
  length of the boolean mask, i.e. D).
* MIG raises on a factor with zero entropy in the sample instead of dividing by zero.
* Modularity returns the modularity score only, not the explicitness that shares its module.
* scikit-learn defaults are today's (LogisticRegression is lbfgs/multinomial since 0.22; it was
  liblinear/one-vs-rest when disentanglement_lib was written), so BetaVAE accuracies can differ
  slightly from published numbers.

scikit-learn versions: disentanglement_lib issue #33 reports MIG and Modularity values that change with
the scikit-learn version, because ``mutual_info_score`` changed behaviour. Here it always receives
integer labels (histogram bin indices and factor classes), and the tests check it against hand-computed
answers rather than against published numbers.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from helpers.data.factors import FactorGrid
from helpers.metrics._common import (
    ACTIVE_STD_THRESHOLD,
    Represent,
    active_dimensions,
    check_codes,
    represent_factors,
    sklearn_seed,
)
from helpers.parallel import fit_all

#: disentanglement_lib's ``discretizer.num_bins``.
NUM_BINS = 20
#: Added to importances before the entropies of DCI, as in disentanglement_lib.
DCI_EPS = 1e-11


# ----------------------------------------------------------------------------------------------------
# Sampling and validation
# ----------------------------------------------------------------------------------------------------


def sample_codes(
    grid: FactorGrid, represent: Represent, num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` factor rows drawn uniformly from ``grid`` and their codes.

    Returns:
        ``(codes, factors)``: ``(num_points, D)`` float64 and ``(num_points, K)`` int64.
    """
    _check_count(num_points, "num_points", 2)
    factors = grid.sample(num_points, rng)
    return represent_factors(represent, factors), factors


def _check_count(value: int, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_labelled(codes: np.ndarray, factors: np.ndarray, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(n, D)`` finite codes and ``(n, K)`` integer factors with the same n >= 2."""
    codes = check_codes(codes, f"codes{name}")
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] < 1 or not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors{name} must be an (n, K) integer array, got {factors.dtype} {factors.shape}")
    if len(codes) != len(factors):
        raise ValueError(f"codes{name} has {len(codes)} rows but factors{name} has {len(factors)}")
    if len(codes) < 2:
        raise ValueError(f"need at least 2 samples, got {len(codes)}")
    return codes, factors


def _check_split(
    codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    codes_train, factors_train = _check_labelled(codes_train, factors_train, "_train")
    codes_test, factors_test = _check_labelled(codes_test, factors_test, "_test")
    if codes_train.shape[1] != codes_test.shape[1] or factors_train.shape[1] != factors_test.shape[1]:
        raise ValueError(
            f"train (D={codes_train.shape[1]}, K={factors_train.shape[1]}) and test "
            f"(D={codes_test.shape[1]}, K={factors_test.shape[1]}) must have the same D and K"
        )
    return codes_train, factors_train, codes_test, factors_test


def _fixed_factor_batches(
    grid: FactorGrid, num_points: int, batch_size: int, rng: np.random.Generator, reference: str
) -> tuple[np.ndarray, np.ndarray]:
    """For each point a uniformly drawn factor k and a batch of factor rows, with factor k held fixed.

    Args:
        reference: ``"own_first_row"`` (FactorVAE: every row takes the value of factor k from the first
            row of its batch) or ``"paired_batch"`` (BetaVAE: returns a second batch whose row i takes
            factor k from row i of the first).

    Returns:
        ``(k, batch)``: ``(N,)`` factor indices and ``(N, B, K)`` rows (``"own_first_row"``) or
        ``(2, N, B, K)`` (``"paired_batch"``).
    """
    num_factors = grid.num_factors
    k = rng.integers(num_factors, size=num_points)
    fixed = (np.arange(num_factors) == k[:, None])[:, None, :]  # (N, 1, K)
    first = grid.sample(num_points * batch_size, rng).reshape(num_points, batch_size, num_factors)
    if reference == "own_first_row":
        return k, np.where(fixed, first[:, :1, :], first)
    second = grid.sample(num_points * batch_size, rng).reshape(num_points, batch_size, num_factors)
    return k, np.stack([first, np.where(fixed, first, second)])


def _represent_batches(represent: Represent, batches: np.ndarray) -> np.ndarray:
    """Codes of ``(..., K)`` factor rows, keeping the leading shape: ``(..., D)``."""
    codes = represent_factors(represent, batches.reshape(-1, batches.shape[-1]))
    return codes.reshape(*batches.shape[:-1], codes.shape[1])


# ----------------------------------------------------------------------------------------------------
# BetaVAE and FactorVAE (interventions)
# ----------------------------------------------------------------------------------------------------


def beta_vae_score(
    grid: FactorGrid,
    represent: Represent,
    rng: np.random.Generator,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
) -> dict[str, float]:
    """BetaVAE metric (Higgins et al. 2017), disentanglement_lib ``compute_beta_vae_sklearn``.

    Each point draws a factor k uniformly and two batches of ``batch_size`` factor rows where row i of
    the second batch copies factor k from row i of the first. Its feature is the ``(D,)`` vector
    ``mean_i |z1_i - z2_i|`` and its label k. A scikit-learn ``LogisticRegression`` (default settings)
    is fit on ``num_train`` points and scored on ``num_eval`` fresh points. Chance level is 1/K.

    Cost: ``2 * batch_size * (num_train + num_eval)`` codes (1.92 M at the defaults).

    Args:
        grid: ground-truth factors.
        represent: ``(n, K)`` factor rows -> ``(n, D)`` codes.
        rng: source of all randomness.
        batch_size, num_train, num_eval: disentanglement_lib defaults 64, 10,000, 5,000.

    Returns:
        ``{"train_accuracy", "eval_accuracy"}``.
    """
    _check_count(batch_size, "batch_size", 1)
    _check_count(num_train, "num_train", 2)
    _check_count(num_eval, "num_eval", 1)
    model = LogisticRegression(random_state=sklearn_seed(rng))
    x_train, y_train = _beta_vae_points(grid, represent, batch_size, num_train, rng)
    model.fit(x_train, y_train)
    x_eval, y_eval = _beta_vae_points(grid, represent, batch_size, num_eval, rng)
    return {
        "train_accuracy": float(model.score(x_train, y_train)),
        "eval_accuracy": float(model.score(x_eval, y_eval)),
    }


def _beta_vae_points(
    grid: FactorGrid, represent: Represent, batch_size: int, num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, D)`` mean absolute code differences and ``(N,)`` labels (the fixed factor)."""
    k, batches = _fixed_factor_batches(grid, num_points, batch_size, rng, "paired_batch")
    codes = _represent_batches(represent, batches)  # (2, N, B, D)
    return np.abs(codes[0] - codes[1]).mean(axis=1), k


def factor_vae_score(
    grid: FactorGrid,
    represent: Represent,
    rng: np.random.Generator,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_threshold: float = ACTIVE_STD_THRESHOLD,
) -> dict[str, float]:
    """FactorVAE metric (Kim & Mnih 2018), disentanglement_lib ``compute_factor_vae``.

    Global variances ``s_j^2`` come from ``num_variance_estimate`` uniform samples; dimensions with
    ``s_j < prune_threshold`` are dropped. Each point draws a factor k and a batch of ``batch_size`` rows
    that share its value; its vote is ``argmin_j var_batch(z_j) / s_j^2`` over active j. The classifier
    maps each active dimension to the factor with most training votes (majority vote); accuracy is the
    share of votes it gets right. Chance level is about 1/K. With no active dimension every score is 0.

    Cost: ``num_variance_estimate + batch_size * (num_train + num_eval)`` codes (970 k at the defaults).

    Args:
        grid, represent, rng: as in :func:`beta_vae_score`.
        batch_size: rows per vote, ``>= 2`` (default 64).
        num_train, num_eval: votes to fit and to score the classifier (10,000 and 5,000).
        num_variance_estimate: samples for the global variances (10,000).
        prune_threshold: minimum std of an active dimension (0.05).

    Returns:
        ``{"train_accuracy", "eval_accuracy", "num_active_dims"}``.
    """
    _check_count(batch_size, "batch_size", 2)
    _check_count(num_train, "num_train", 1)
    _check_count(num_eval, "num_eval", 1)
    codes, _ = sample_codes(grid, represent, num_variance_estimate, rng)
    global_variances = codes.var(axis=0, ddof=1)
    active = active_dimensions(codes, prune_threshold)
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}
    train_votes = _factor_vae_votes(grid, represent, batch_size, num_train, rng, global_variances, active)
    classifier = train_votes.argmax(axis=0)  # (D_active,) the factor each active dimension stands for
    eval_votes = _factor_vae_votes(grid, represent, batch_size, num_eval, rng, global_variances, active)
    columns = np.arange(len(classifier))
    return {
        "train_accuracy": float(train_votes[classifier, columns].sum() / train_votes.sum()),
        "eval_accuracy": float(eval_votes[classifier, columns].sum() / eval_votes.sum()),
        "num_active_dims": float(active.sum()),
    }


def _factor_vae_votes(
    grid: FactorGrid,
    represent: Represent,
    batch_size: int,
    num_points: int,
    rng: np.random.Generator,
    global_variances: np.ndarray,
    active: np.ndarray,
) -> np.ndarray:
    """``(K, D_active)`` vote counts: ``votes[k, j]`` = points with fixed factor k whose argmin is j."""
    k, batches = _fixed_factor_batches(grid, num_points, batch_size, rng, "own_first_row")
    local_variances = _represent_batches(represent, batches).var(axis=1, ddof=1)  # (N, D)
    argmin = (local_variances[:, active] / global_variances[active]).argmin(axis=1)
    votes = np.zeros((grid.num_factors, int(active.sum())), dtype=np.int64)
    np.add.at(votes, (k, argmin), 1)
    return votes


# ----------------------------------------------------------------------------------------------------
# Discretisation and mutual information (shared by MIG and Modularity)
# ----------------------------------------------------------------------------------------------------


def histogram_discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """disentanglement_lib ``_histogram_discretize``: equal-width bins over each dimension's range.

    ``out[:, j] = digitize(codes[:, j], edges_j[:-1])`` with ``edges_j`` the ``num_bins + 1`` edges of
    ``np.histogram(codes[:, j], num_bins)``, so labels run from 1 to ``num_bins`` (the maximum falls in
    the last bin).

    Args:
        codes: ``(n, D)``.
        num_bins: bins per dimension (default 20).

    Returns:
        ``(n, D)`` int64 bin labels.
    """
    codes = check_codes(codes)
    _check_count(num_bins, "num_bins", 1)
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, j], bins=num_bins)
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Entropy of each factor in nats, ``H(v_k) = I(v_k; v_k)`` (disentanglement_lib ``discrete_entropy``).

    Args:
        factors: ``(n, K)`` integer labels.

    Returns:
        ``(K,)``.
    """
    factors = np.asarray(factors)
    if factors.ndim != 2 or not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors must be an (n, K) integer array, got {factors.dtype} {factors.shape}")
    return np.array([mutual_info_score(column, column) for column in factors.T])


def mutual_information_matrix(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """``m_jk = I(v_k; bin(z_j))`` in nats, with :func:`histogram_discretize` and ``mutual_info_score``.

    Args:
        codes: ``(n, D)``.
        factors: ``(n, K)`` integer labels.
        num_bins: bins per code dimension (default 20).

    Returns:
        ``(D, K)``.
    """
    codes, factors = _check_labelled(codes, factors)
    binned = histogram_discretize(codes, num_bins)
    return np.array([[mutual_info_score(v, z) for v in factors.T] for z in binned.T])


# ----------------------------------------------------------------------------------------------------
# MIG and Modularity
# ----------------------------------------------------------------------------------------------------


def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> dict[str, float]:
    """Mutual Information Gap (Chen et al. 2018), disentanglement_lib ``_compute_mig``.

    ``MIG = mean_k (m_(1)k - m_(2)k) / H(v_k)`` with ``m_(1)k >= m_(2)k`` the two largest entries of
    column k of :func:`mutual_information_matrix`.

    Args:
        codes: ``(n, D)``, ``D >= 2``.
        factors: ``(n, K)`` integer labels, each taking at least 2 values in the sample.
        num_bins: bins per code dimension (default 20).

    Returns:
        ``{"discrete_mig"}``.
    """
    mi = mutual_information_matrix(codes, factors, num_bins)
    if mi.shape[0] < 2:
        raise ValueError("MIG needs at least 2 code dimensions")
    entropy = discrete_entropy(np.asarray(factors))
    if (entropy <= 0).any():
        raise ValueError(f"factors {np.flatnonzero(entropy <= 0).tolist()} are constant in the sample: H = 0")
    top = np.sort(mi, axis=0)[::-1]
    return {"discrete_mig": float(np.mean((top[0] - top[1]) / entropy))}


def mig_score(
    grid: FactorGrid,
    represent: Represent,
    rng: np.random.Generator,
    num_train: int = 10_000,
    num_bins: int = NUM_BINS,
) -> dict[str, float]:
    """:func:`mig` on ``num_train`` uniform samples (disentanglement_lib default 10,000)."""
    return mig(*sample_codes(grid, represent, num_train, rng), num_bins=num_bins)


def modularity_from_mutual_information(mutual_information: np.ndarray) -> float:
    """Modularity (Ridgeway & Mozer 2018) of a ``(D, K)`` mutual-information matrix, disentanglement_lib style.

    Per code j, with ``theta_j = max_k m_jk``:
    ``1 - (sum_k m_jk^2 - theta_j^2) / (theta_j^2 (K - 1))``, or 0 when ``theta_j = 0`` (a code that
    carries no information is not modular). The score is the mean over codes.

    Args:
        mutual_information: ``(D, K)`` non-negative, ``K >= 2``.
    """
    mi = np.asarray(mutual_information, dtype=np.float64)
    if mi.ndim != 2 or mi.shape[1] < 2 or not np.isfinite(mi).all() or (mi < 0).any():
        raise ValueError(f"need a finite non-negative (D, K >= 2) matrix, got shape {mi.shape}")
    squared = mi**2
    peak = squared.max(axis=1)
    per_code = np.zeros(len(mi))
    informative = peak > 0
    deviation = (squared.sum(axis=1) - peak)[informative] / (peak[informative] * (mi.shape[1] - 1))
    per_code[informative] = 1.0 - deviation
    return float(per_code.mean())


def modularity(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> dict[str, float]:
    """Modularity of codes, from the 20-bin :func:`mutual_information_matrix`.

    Returns:
        ``{"modularity_score"}``.
    """
    mi = mutual_information_matrix(codes, factors, num_bins)
    return {"modularity_score": modularity_from_mutual_information(mi)}


def modularity_score(
    grid: FactorGrid,
    represent: Represent,
    rng: np.random.Generator,
    num_train: int = 10_000,
    num_bins: int = NUM_BINS,
) -> dict[str, float]:
    """:func:`modularity` on ``num_train`` uniform samples (disentanglement_lib default 10,000)."""
    return modularity(*sample_codes(grid, represent, num_train, rng), num_bins=num_bins)


# ----------------------------------------------------------------------------------------------------
# DCI
# ----------------------------------------------------------------------------------------------------


def dci_disentanglement(importance: np.ndarray) -> float:
    """DCI disentanglement of a ``(D, K)`` importance matrix (Eastwood & Williams 2018).

    ``sum_j rho_j (1 - H_K(P_j.))`` with ``P_j. = R_j. / sum_k R_jk`` (entropy in base K, after adding
    1e-11 as disentanglement_lib does) and ``rho_j = sum_k R_jk / sum R``; uniform ``rho`` if R is all 0.
    """
    importance = _check_importance(importance)
    per_code = 1.0 - stats.entropy(importance.T + DCI_EPS, base=importance.shape[1])
    return float(np.sum(per_code * _share(importance, axis=1)))


def dci_completeness(importance: np.ndarray) -> float:
    """DCI completeness of a ``(D, K)`` importance matrix (Eastwood & Williams 2018).

    ``sum_k rho_k (1 - H_D(P_.k))`` with ``P_.k = R_.k / sum_j R_jk`` (entropy in base D, after adding
    1e-11) and ``rho_k = sum_j R_jk / sum R``; uniform ``rho`` if R is all 0.
    """
    importance = _check_importance(importance)
    per_factor = 1.0 - stats.entropy(importance + DCI_EPS, base=importance.shape[0])
    return float(np.sum(per_factor * _share(importance, axis=0)))


def _check_importance(importance: np.ndarray) -> np.ndarray:
    importance = np.asarray(importance, dtype=np.float64)
    if importance.ndim != 2 or min(importance.shape) < 2:
        raise ValueError(f"the importance matrix must be (D >= 2, K >= 2), got shape {importance.shape}")
    if not np.isfinite(importance).all() or (importance < 0).any():
        raise ValueError("the importance matrix must be finite and non-negative")
    return importance


def _share(importance: np.ndarray, axis: int) -> np.ndarray:
    """Relative importance of each code (``axis=1``) or factor (``axis=0``); uniform for an all-zero matrix."""
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return weights.sum(axis=axis) / weights.sum()


def dci(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, float]:
    """DCI with gradient-boosted trees, disentanglement_lib ``_compute_dci``.

    For each factor k a scikit-learn ``GradientBoostingClassifier`` (default settings: 100 depth-3 trees
    per class and stage) predicts ``v_k`` from the codes; ``|feature_importances_|`` fills column k of the
    ``(D, K)`` importance matrix. Informativeness is the mean accuracy over factors.

    Cost: one tree per class per stage, so the fit grows with ``sum_k s_k``. On the dSprites grid
    (113 classes in all) the defaults (10,000 / 5,000 points) took about 6 minutes on 2 shared CPU
    cores, and 1,000 / 500 points still about 45 s; pass smaller counts to :func:`dci_score` for checks.

    Args:
        codes_train, factors_train: ``(n, D)`` codes and ``(n, K)`` integer factors to fit on.
        codes_test, factors_test: ``(m, D)`` and ``(m, K)`` to score on.
        rng: seeds the classifiers.

    Returns:
        ``{"informativeness_train", "informativeness_test", "disentanglement", "completeness"}``.
    """
    codes_train, factors_train, codes_test, factors_test = _check_split(
        codes_train, factors_train, codes_test, factors_test
    )
    num_dims, num_factors = codes_train.shape[1], factors_train.shape[1]
    importance = np.zeros((num_dims, num_factors))
    train_accuracy, test_accuracy = np.zeros(num_factors), np.zeros(num_factors)
    models = fit_all([(GradientBoostingClassifier(random_state=sklearn_seed(rng)), codes_train, factors_train[:, k])
                      for k in range(num_factors)])
    for k, model in enumerate(models):
        importance[:, k] = np.abs(model.feature_importances_)
        train_accuracy[k] = np.mean(model.predict(codes_train) == factors_train[:, k])
        test_accuracy[k] = np.mean(model.predict(codes_test) == factors_test[:, k])
    return {
        "informativeness_train": float(train_accuracy.mean()),
        "informativeness_test": float(test_accuracy.mean()),
        "disentanglement": dci_disentanglement(importance),
        "completeness": dci_completeness(importance),
    }


def dci_score(
    grid: FactorGrid,
    represent: Represent,
    rng: np.random.Generator,
    num_train: int = 10_000,
    num_test: int = 5_000,
) -> dict[str, float]:
    """:func:`dci` on fresh uniform train and test samples (disentanglement_lib: 10,000 and 5,000)."""
    return dci(*sample_codes(grid, represent, num_train, rng), *sample_codes(grid, represent, num_test, rng), rng)


# ----------------------------------------------------------------------------------------------------
# SAP
# ----------------------------------------------------------------------------------------------------


def sap(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Separated Attribute Predictability (Kumar et al. 2018) for discrete factors, disentanglement_lib style.

    ``S_jk`` is the test accuracy of ``LinearSVC(C=0.01, class_weight="balanced")`` predicting ``v_k``
    from code dimension j alone; ``SAP = mean_k (S_(1)k - S_(2)k)``, the gap between the two best
    dimensions of each factor. A linear classifier on one scalar cannot isolate the middle values of an
    ordinal factor, so even an ideal code scores well below 1 on factors with many values.

    Args:
        codes_train, factors_train: ``(n, D)``, ``D >= 2``, and ``(n, K)`` to fit on.
        codes_test, factors_test: ``(m, D)`` and ``(m, K)`` to score on.
        rng: seeds the classifiers.

    Returns:
        ``{"SAP_score"}``.
    """
    codes_train, factors_train, codes_test, factors_test = _check_split(
        codes_train, factors_train, codes_test, factors_test
    )
    num_dims, num_factors = codes_train.shape[1], factors_train.shape[1]
    if num_dims < 2:
        raise ValueError("SAP needs at least 2 code dimensions")
    scores = np.zeros((num_dims, num_factors))
    for j in range(num_dims):
        for k in range(num_factors):
            classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=sklearn_seed(rng))
            classifier.fit(codes_train[:, j : j + 1], factors_train[:, k])
            scores[j, k] = np.mean(classifier.predict(codes_test[:, j : j + 1]) == factors_test[:, k])
    top = np.sort(scores, axis=0)
    return {"SAP_score": float(np.mean(top[-1] - top[-2]))}


def sap_score(
    grid: FactorGrid,
    represent: Represent,
    rng: np.random.Generator,
    num_train: int = 10_000,
    num_test: int = 5_000,
) -> dict[str, float]:
    """:func:`sap` on fresh uniform train and test samples (disentanglement_lib: 10,000 and 5,000)."""
    return sap(*sample_codes(grid, represent, num_train, rng), *sample_codes(grid, represent, num_test, rng), rng)
