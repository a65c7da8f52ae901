"""Two speed-ups of notebooks 03 and 04, each against what it replaced, on the same work.

* ``helpers.parallel.fit_all``: the 20 factor classifiers of one transfer evaluation of notebook 03
  (histogram GBT and MLP [256, 256], on all 10 dimensions and on one dimension per factor, 5 factors,
  1,000 codes) and the 5 ``GradientBoostingClassifier`` fits of DCI (200 codes), fitted in worker processes
  against one after the other in this process. The codes are a noisy, rotated oracle on notebook 03's grid.
* ``helpers.training.adam``: the fused AdamW step against PyTorch's per-tensor loop, on the parameters and
  gradients of notebook 04's stage-1 UNet (its trainable tensors).

Each timing is the median of ``--repeats`` runs after one warm-up (which also starts the workers). Both pairs
compute the same result (checked before timing): the fits are identical, the optimiser steps agree to rounding.

Usage::

    python benchmarks/bench_training_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingClassifier

from helpers.data.factors import FactorGrid
from helpers.models import flow
from helpers.parallel import fit_all
from helpers.transfer_study import CLASSIFIERS, factor_classifier

GRID = FactorGrid(("shape", "scale", "orientation", "pos_x", "pos_y"), (3, 6, 10, 8, 8))


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def classifier_tasks(num_codes: int, kind: str) -> list[tuple[object, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    factors = GRID.sample(num_codes, rng)
    oracle = factors / (np.array(GRID.sizes) - 1)
    codes = np.concatenate([oracle, np.zeros_like(oracle)], axis=1) @ np.linalg.qr(rng.normal(size=(10, 10)))[0]
    codes += 0.1 * rng.normal(size=codes.shape)
    if kind == "dci":
        return [(GradientBoostingClassifier(random_state=k), codes, factors[:, k]) for k in range(GRID.num_factors)]
    tasks = []
    for columns in (list(range(10)), None):
        for k in range(GRID.num_factors):
            x = codes[:, columns if columns is not None else [k]]
            tasks += [(factor_classifier(classifier, k), x, factors[:, k]) for classifier in CLASSIFIERS]
    return tasks


def bench_fits(repeats: int) -> None:
    cases = (("transfer classifiers (20 fits)", 1000, "transfer"), ("DCI (5 fits)", 200, "dci"))
    for name, num_codes, kind in cases:
        def fit_with(n_jobs: int | None = None, num_codes: int = num_codes, kind: str = kind) -> list:
            return fit_all(classifier_tasks(num_codes, kind), n_jobs=n_jobs)

        inputs = [x for _, x, _ in classifier_tasks(num_codes, kind)]
        for a, b, x in zip(fit_with(1), fit_with(None), inputs, strict=True):
            assert np.array_equal(a.predict(x), b.predict(x)), "parallel fits differ from serial ones"
        one, workers = median_seconds(lambda f=fit_with: f(1), repeats), median_seconds(fit_with, repeats)
        print(f"{name:32s} one by one {one:6.2f} s   in workers {workers:6.2f} s   speed-up {one / workers:4.2f}x")


def bench_optimiser(repeats: int, steps: int = 20) -> None:
    unet = flow.make_token_unet(sample_size=4, channels=32, token_dim=32, num_tokens=8)
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    optimisers = {fused: torch.optim.AdamW(params, lr=1e-3, fused=fused) for fused in (False, True)}
    seconds = {fused: median_seconds(lambda o=o: [o.step() for _ in range(steps)], repeats) / steps
               for fused, o in optimisers.items()}
    print(f"AdamW step ({len(params)} tensors)        per-tensor loop {1e3 * seconds[False]:6.2f} ms   "
          f"fused {1e3 * seconds[True]:6.2f} ms   speed-up {seconds[False] / seconds[True]:4.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    bench_fits(args.repeats)
    bench_optimiser(args.repeats)


if __name__ == "__main__":
    main()
