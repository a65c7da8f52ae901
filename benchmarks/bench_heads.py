"""Benchmark of A&D head training (``helpers.attribution.train_heads``) at the size issue 5 names.

Two unpaired domains of ``--rows`` × ``--dim`` planted features, ``--epochs`` epochs, for each batch size in
``--batches``; prints seconds per run, steps per second, and the ratio of the closed-form objective
(``head_objective``, what training uses) to autograd on the reference ``ad_loss`` for one step.

Usage::

    python benchmarks/bench_heads.py                        # 10,000 x 512, 30 epochs, batches 256 and 1024
    python benchmarks/bench_heads.py --rows 2000 --dim 128 --epochs 5 --batches 256
"""

from __future__ import annotations

import argparse
import time

import torch

from helpers import attribution as at


def _one_step_seconds(z_s: torch.Tensor, z_e: torch.Tensor, batch: int, closed_form: bool, repeats: int = 5) -> float:
    d = z_s.shape[1]
    H_s, H_e = (torch.eye(d, requires_grad=True) for _ in range(2))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        if closed_form:
            loss = at.head_objective(H_s, z_s[:batch], 0.1)[0] + at.head_objective(H_e, z_e[:batch], 0.1)[0]
        else:
            loss = at.ad_loss(z_s[:batch], z_e[:batch], H_s, H_e, 0.1)
        loss.backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    args = parser.parse_args()
    z_s, z_e, *_ = at.planted_two_domain(args.rows, args.dim, noise=0.1, seed=0, mismatch=0.1)
    print(f"threads {torch.get_num_threads()}, {args.rows} x {args.dim} per domain, {args.epochs} epochs")
    for batch in args.batches:
        start = time.perf_counter()
        _, history = at.train_heads(z_s, z_e, lam=0.1, epochs=args.epochs, batch_size=batch, lr=1e-3, seed=0)
        seconds = time.perf_counter() - start
        steps = len(history["loss"])
        ratio = _one_step_seconds(z_s, z_e, batch, False) / _one_step_seconds(z_s, z_e, batch, True)
        print(f"batch {batch:5d}: {seconds:6.1f} s for {steps} steps ({steps / seconds:5.1f} steps/s); "
              f"autograd / closed form per step: {ratio:.2f}x")


if __name__ == "__main__":
    main()
