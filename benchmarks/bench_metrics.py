"""Timing of OMES (Dapueto et al., NeurIPS 2024) and of the disentanglement_lib peer metrics.

The representation is an oracle plus noise on the dSprites grid (sizes 3, 6, 40, 32, 32): 10 code
dimensions, the first five carry one factor each, scaled to [0, 1]; every dimension gets N(0, 0.01^2)
noise, so the last five are inactive (std < 0.05), as collapsed VAE dimensions are.

* OMES: ``omes`` and ``omes_alpha_sweep`` on 10 dims x 5 factors x 100,000 pairs per factor (pair
  generation not timed); the median of ``--repeats`` runs is compared with the 2 s budget.
* Peers: each metric at disentanglement_lib's default settings. A probe at 1/10 of the default sample
  counts runs first; when ten times its time exceeds 60 s, the defaults are not run (unless ``--full``)
  and the probe's time and scores are printed, marked as a reduced setting. In practice this applies to
  DCI, whose gradient-boosted trees fit one tree per class and stage (113 classes on dSprites).

Usage::

    python benchmarks/bench_metrics.py            # OMES + peers (DCI reduced)
    python benchmarks/bench_metrics.py --full     # peers at defaults whatever the cost
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from helpers.data.factors import FactorGrid
from helpers.metrics import (
    beta_vae_score,
    dci_score,
    factor_vae_score,
    mig_score,
    modularity_score,
    omes,
    omes_alpha_sweep,
    sample_omes_pairs,
    sap_score,
)

DSPRITES = FactorGrid(("shape", "scale", "orientation", "pos_x", "pos_y"), (3, 6, 40, 32, 32))
NUM_DIMS = 10
NOISE = 0.01
OMES_PAIRS = 100_000
OMES_BUDGET_S = 2.0
PEER_BUDGET_S = 60.0
PROBE_FRACTION = 10

#: metric -> (function, disentanglement_lib default sample counts).
PEERS: dict[str, tuple[Callable[..., dict[str, float]], dict[str, int]]] = {
    "BetaVAE": (beta_vae_score, {"num_train": 10_000, "num_eval": 5_000}),
    "FactorVAE": (factor_vae_score, {"num_train": 10_000, "num_eval": 5_000, "num_variance_estimate": 10_000}),
    "MIG": (mig_score, {"num_train": 10_000}),
    "Modularity": (modularity_score, {"num_train": 10_000}),
    "DCI": (dci_score, {"num_train": 10_000, "num_test": 5_000}),
    "SAP": (sap_score, {"num_train": 10_000, "num_test": 5_000}),
}


def oracle_code(grid: FactorGrid, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """``represent``: factor k / (s_k - 1) in dimension k (k < K), zeros above, plus N(0, NOISE^2)."""
    scale = 1.0 / (np.asarray(grid.sizes) - 1)

    def represent(factors: np.ndarray) -> np.ndarray:
        codes = np.zeros((len(factors), NUM_DIMS))
        codes[:, : grid.num_factors] = factors * scale
        return codes + NOISE * rng.normal(size=codes.shape)

    return represent


def timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def bench_omes(repeats: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pairs = sample_omes_pairs(DSPRITES, oracle_code(DSPRITES, rng), OMES_PAIRS, rng)
    runs = [timed(lambda: omes(pairs)) for _ in range(repeats)]
    seconds = statistics.median(t for t, _ in runs)
    result = runs[-1][1]
    verdict = "yes" if seconds < OMES_BUDGET_S else "NO"
    print(
        f"OMES {NUM_DIMS} dims x {DSPRITES.num_factors} factors x {OMES_PAIRS:,} pairs: {seconds:.3f} s "
        f"(median of {repeats}); under {OMES_BUDGET_S:g} s: {verdict}; score {result.score:.4f}, "
        f"{int(result.active.sum())} active dims"
    )
    sweep_s = statistics.median(timed(lambda: omes_alpha_sweep(pairs))[0] for _ in range(repeats))
    print(f"OMES alpha sweep (11 alphas, same pairs): {sweep_s:.3f} s (median of {repeats})")


def bench_peer(name: str, full: bool, seed: int) -> None:
    function, defaults = PEERS[name]
    represent = oracle_code(DSPRITES, np.random.default_rng([seed, 1]))
    counts = defaults
    if not full:
        probe = {key: value // PROBE_FRACTION for key, value in defaults.items()}
        probe_s, probe_scores = timed(lambda: function(DSPRITES, represent, np.random.default_rng(seed), **probe))
        if probe_s * PROBE_FRACTION > PEER_BUDGET_S:
            print(
                f"{name:<10} REDUCED {probe}: {probe_s:7.2f} s  {format_scores(probe_scores)}  "
                f"(defaults {defaults} estimated ~{probe_s * PROBE_FRACTION:.0f} s > {PEER_BUDGET_S:g} s: "
                "not run; use --full)"
            )
            return
    seconds, scores = timed(lambda: function(DSPRITES, represent, np.random.default_rng(seed), **counts))
    print(f"{name:<10} defaults {counts}: {seconds:7.2f} s  {format_scores(scores)}")


def format_scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{key}={value:.3f}" for key, value in scores.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="OMES timing runs (median reported)")
    parser.add_argument("--full", action="store_true", help="run every peer at its defaults, however slow")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["omes", *PEERS], nargs="*", help="subset of benchmarks to run")
    args = parser.parse_args(argv)
    selected = args.only or ["omes", *PEERS]
    if "omes" in selected:
        bench_omes(args.repeats, args.seed)
    for name in PEERS:
        if name in selected:
            bench_peer(name, args.full, args.seed)


if __name__ == "__main__":
    main()
