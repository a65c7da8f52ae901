import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from helpers.parallel import fit_all


def _tasks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    return [(GradientBoostingClassifier(n_estimators=10, random_state=seed), x, (x[:, k] > 0).astype(int))
            for seed, k in ((1, 0), (2, 1), (3, 2))]


def test_fit_all_in_workers_matches_fitting_here_in_order():
    here = fit_all(_tasks(), n_jobs=1)
    workers = fit_all(_tasks(), n_jobs=2)
    x = _tasks()[0][1]
    for a, b in zip(here, workers, strict=True):
        np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    # Each model learned its own target: the tasks came back in order.
    assert [model.score(x, y) for model, (_, _, y) in zip(workers, _tasks(), strict=True)] == [1.0, 1.0, 1.0]


def test_fit_all_rejects_a_bad_worker_count_and_accepts_no_tasks():
    with pytest.raises(ValueError, match="n_jobs"):
        fit_all([(LogisticRegression(), np.zeros((2, 1)), np.array([0, 1]))], n_jobs=0)
    assert fit_all([]) == []
