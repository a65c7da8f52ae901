"""Fitting many small scikit-learn models at once, one per CPU core.

The metrics fit one classifier per factor (DCI) or per factor and input (the transfer classifiers). Each of
those fits is small, so scikit-learn's own threading keeps two cores only half busy; fitting the models in
parallel worker processes (joblib's ``loky`` backend, one thread each) nearly halves the wall time on two
cores. Each model carries its own ``random_state``, so the fitted models do not depend on the number of
workers or on the order in which they finish.
"""

from __future__ import annotations

from collections.abc import Sequence

import joblib
import numpy as np


def _fit(model, x: np.ndarray, y: np.ndarray):
    return model.fit(x, y)


def fit_all(tasks: Sequence[tuple[object, np.ndarray, np.ndarray]], n_jobs: int | None = None) -> list:
    """Fit every ``(model, x, y)`` of ``tasks``; returns the fitted models in the order of ``tasks``.

    Args:
        tasks: unfitted scikit-learn estimators with their ``(n, D)`` inputs and ``(n,)`` targets.
        n_jobs: worker processes; ``None`` uses every core joblib counts (cgroup quotas included), and
            one worker (or a single task) fits in this process.
    """
    n_jobs = joblib.cpu_count() if n_jobs is None else n_jobs
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive integer or None, got {n_jobs!r}")
    n_jobs = min(n_jobs, len(tasks))
    if n_jobs <= 1:
        return [_fit(model, x, y) for model, x, y in tasks]
    return joblib.Parallel(n_jobs=n_jobs, backend="loky")(joblib.delayed(_fit)(model, x, y) for model, x, y in tasks)
