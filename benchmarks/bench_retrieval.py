"""Benchmark of ``helpers.retrieval.evaluate`` against the raw faiss search it must keep pace with.

Each query's relevant items are noisy copies of a base vector, planted at random gallery positions; the
query itself is another noisy copy. Reported times are the minimum over ``--repeats`` interleaved runs:

* faiss: ``IndexFlatIP.search(queries, 10)`` on L2-normalised features (index built outside the timing);
* evaluate: the full ``evaluate`` (mAP, acc@1, Recall@{1,5,10}) from the raw features, normalisation
  and validation included;
* numpy: score matrix of the L2-normalised features per query chunk (``@``) plus ``argpartition`` top 10,
  for reference.

Usage::

    python benchmarks/bench_retrieval.py                      # 5,000 x 200,000 x 512, one relevant each
    python benchmarks/bench_retrieval.py --queries 500 --gallery 20000 --relevant 5 --repeats 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import faiss
import numpy as np

from helpers.retrieval import evaluate

TOP_K = 10


def make_data(
    num_queries: int, gallery_size: int, dim: int, relevant: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Gaussian gallery with ``relevant`` noisy copies of each query's base vector planted in it.

    Returns:
        ``(queries (q, dim), gallery (g, dim), relevant)``: float32 features and q arrays of gallery indices.
    """
    rng = np.random.default_rng(seed)
    gallery = rng.standard_normal((gallery_size, dim), dtype=np.float32)
    base = rng.standard_normal((num_queries, dim), dtype=np.float32)
    positions = rng.permutation(gallery_size)[: num_queries * relevant].reshape(num_queries, relevant)
    noisy = noise * rng.standard_normal((num_queries, relevant + 1, dim), dtype=np.float32)
    gallery[positions] = base[:, None] + noisy[:, 1:]
    queries = base + noisy[:, 0]
    return queries, gallery, list(positions)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, d) rows scaled to unit L2 norm."""
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_top_k(unit_queries: np.ndarray, unit_gallery: np.ndarray, k: int, chunk: int = 500) -> np.ndarray:
    """(q, k) unordered indices of the top-k scores: ``@`` per query chunk, then ``argpartition``."""
    return np.concatenate(
        [
            np.argpartition(-(unit_queries[start : start + chunk] @ unit_gallery.T), k, axis=1)[:, :k]
            for start in range(0, len(unit_queries), chunk)
        ]
    )


def best_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Minimum wall-clock seconds of each run over ``repeats`` rounds.

    The runs are interleaved within each round, so that load from other processes on a shared machine
    affects them alike.
    """
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--gallery", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--relevant", type=int, default=1, help="relevant gallery items per query")
    parser.add_argument("--noise", type=float, default=2.0, help="noise std on each copy of a base vector")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-numpy", action="store_true", help="do not time the numpy reference")
    args = parser.parse_args(argv)
    if args.queries * args.relevant > args.gallery:
        parser.error("the gallery must hold queries x relevant planted items")

    queries, gallery, relevant = make_data(
        args.queries, args.gallery, args.dim, args.relevant, args.noise, args.seed
    )
    unit_queries, unit_gallery = unit_rows(queries), unit_rows(gallery)
    index = faiss.IndexFlatIP(args.dim)
    index.add(unit_gallery)
    print(
        f"{args.queries} queries x {args.gallery} gallery x dim {args.dim}, "
        f"{args.relevant} relevant per query; min over {args.repeats} interleaved repeats"
    )
    metrics = evaluate(queries, gallery, relevant)
    print("metrics:", {name: round(value, 4) for name, value in metrics.items()})

    faiss_name = f"faiss IndexFlatIP.search(q, {TOP_K})"
    runs = {
        faiss_name: lambda: index.search(unit_queries, TOP_K),
        "evaluate (mAP, acc@1, recall@k)": lambda: evaluate(queries, gallery, relevant),
    }
    if not args.skip_numpy:
        runs[f"numpy @ + argpartition top {TOP_K}"] = lambda: numpy_top_k(unit_queries, unit_gallery, TOP_K)
    times = best_times(runs, args.repeats)
    for name, seconds in times.items():
        print(f"{name:36s} {seconds:8.3f} s   {seconds / times[faiss_name]:5.2f} x faiss")


if __name__ == "__main__":
    main()
