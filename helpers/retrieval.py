"""Retrieval by cosine similarity: exact k-NN and rank-based metrics for queries against a gallery.

Evaluation protocol (AbC / ID²): each query ``i`` has a set ``R_i`` of one or more relevant gallery items.
Features are compared by cosine similarity ``s(i, j) = <q_i / |q_i|, g_j / |g_j|>``, computed in float32
like faiss.

Rank convention (ties count against the relevant item). The rank of a relevant item ``r`` of query ``i`` is::

    rank(i, r) = 1 + #{j not in R_i : s(i, j) >= s(i, r)} + #{r' in R_i listed before r in the order below}

where ``R_i`` is ordered by decreasing score, equal scores keeping the order in which they were listed. With
one relevant item this is ``1 + #{other gallery items scoring at least as high}``; with several, the relevant
items get distinct ranks, so every precision below is at most 1. Exact ties practically never occur with
continuous features, but a collapsed representation (every feature equal) ties everything: it then scores
at the bottom instead of perfectly. Scores that differ by float32 rounding only (about 1e-7) may be ordered
either way, as in any float32 search.

Metrics, with ``rank_i(1) < ... < rank_i(n_i)`` the sorted ranks of the ``n_i`` relevant items of query i::

    AP_i       = (1 / n_i) * sum_j  j / rank_i(j)          mAP = mean_i AP_i
    recall@k   = mean_i  #{j : rank_i(j) <= k} / n_i
    acc@1      = mean_i  [rank_i(1) == 1]

Ranks come from a single blocked pass over the gallery, without sorting it: the relevant scores are dot
products computed first; then each (query chunk x gallery block) score tile is one GEMM, after which the
relevant entries are masked out and the entries above each relevant score are counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import faiss
import numpy as np
import torch

Features = np.ndarray | torch.Tensor
Relevant = np.ndarray | torch.Tensor | Sequence

QUERY_BLOCK = 1024
GALLERY_BLOCK = 1024


def knn(queries: Features, gallery: Features, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-nearest neighbours with faiss ``IndexFlatIP`` on L2-normalised float32 copies.

    Args:
        queries: (q, d) floating-point features.
        gallery: (g, d) floating-point features.
        k: number of neighbours, ``1 <= k <= g``.

    Returns:
        ``(scores, indices)``: (q, k) float32 cosine similarities in decreasing order and the (q, k) int64
        gallery indices they belong to.
    """
    queries, gallery = _features(queries, gallery)
    _check_k(k, gallery.shape[0], "k")
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(_unit_rows(gallery, "gallery").numpy())
    return index.search(_unit_rows(queries, "queries").numpy(), k)


def relevant_ranks(
    queries: Features,
    gallery: Features,
    relevant: Relevant,
    *,
    query_block: int = QUERY_BLOCK,
    gallery_block: int = GALLERY_BLOCK,
    num_threads: int | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Rank of every relevant gallery item among all gallery items, by decreasing cosine similarity.

    ``rank(i, r) = 1 + #{j not in R_i : s(i, j) >= s(i, r)} + #{relevant items of i ordered before r}``
    (see the module docstring for the tie convention). Costs one GEMM over the gallery plus a comparison
    pass per relevant item on each score tile; peak extra memory is two ``query_block x gallery_block``
    tiles plus one normalised gallery block.

    Args:
        queries: (q, d) floating-point features (numpy or torch, any float dtype).
        gallery: (g, d) floating-point features.
        relevant: (q,) integer array with one relevant gallery index per query, or a sequence of q integer
            arrays (or ints) with one or more distinct relevant gallery indices each.
        query_block: queries per score tile.
        gallery_block: gallery items per score tile, at most 2**24.
        num_threads: torch threads for the pass (default: the cores available to this process); the
            previous setting is restored afterwards.

    Returns:
        Ranks in the layout of ``relevant``: a (q,) int64 array for a 1-D array, else a list of q int64
        arrays, ``ranks[i][j]`` being the rank of ``relevant[i][j]``.
    """
    if query_block < 1 or not 1 <= gallery_block <= 2**24:
        raise ValueError(
            f"need query_block >= 1 and 1 <= gallery_block <= 2**24, got {query_block}, {gallery_block}"
        )
    queries, gallery = _features(queries, gallery)
    indices, counts = _relevant_matrix(relevant, queries.shape[0], gallery.shape[0])
    ranks = _rank_matrix(queries, gallery, indices, counts, query_block, gallery_block, num_threads)
    if _is_flat_array(relevant):
        return ranks[:, 0]
    return [row[:n] for row, n in zip(ranks, counts, strict=True)]


def evaluate(
    queries: Features, gallery: Features, relevant: Relevant, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """mAP, acc@1 and Recall@k of cosine retrieval with any number of relevant items per query.

    With ``rank_i(1) < ... < rank_i(n_i)`` the sorted ranks of query i's relevant items
    (:func:`relevant_ranks`)::

        mAP      = mean_i (1 / n_i) sum_j j / rank_i(j)
        recall@k = mean_i #{j : rank_i(j) <= k} / n_i
        acc@1    = mean_i [rank_i(1) == 1]

    Args:
        queries: (q, d) floating-point features (numpy or torch, float32 or float64).
        gallery: (g, d) floating-point features.
        relevant: (q,) integer array with one relevant gallery index per query, or a sequence of q integer
            arrays with one or more distinct relevant gallery indices each.
        ks: cut-offs for Recall@k, positive integers no larger than g.

    Returns:
        ``{"mAP": ..., "acc@1": ..., "recall@{k}": ... for k in ks}`` as Python floats.
    """
    queries, gallery = _features(queries, gallery)
    for k in ks:
        _check_k(k, gallery.shape[0], "every k in ks")
    indices, counts = _relevant_matrix(relevant, queries.shape[0], gallery.shape[0])
    ranks = _rank_matrix(queries, gallery, indices, counts, QUERY_BLOCK, GALLERY_BLOCK, None)
    valid = np.arange(indices.shape[1]) < counts[:, None]
    ordered = np.sort(np.where(valid, ranks, np.inf), axis=1)
    position = np.arange(1, indices.shape[1] + 1)
    metrics = {
        "mAP": float(np.mean((position / ordered).sum(axis=1) / counts)),
        "acc@1": float(np.mean(ordered[:, 0] == 1)),
    }
    for k in ks:
        metrics[f"recall@{k}"] = float(np.mean((ordered <= k).sum(axis=1) / counts))
    return metrics


def _rank_matrix(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    indices: np.ndarray,
    counts: np.ndarray,
    query_block: int,
    gallery_block: int,
    num_threads: int | None,
) -> np.ndarray:
    """Ranks of the relevant items, laid out like ``indices``.

    Args:
        queries: (q, d) validated features.
        gallery: (g, d) validated features.
        indices: (q, m) relevant gallery indices; row i holds ``counts[i]`` of them, then padding.
        counts: (q,) number of relevant items per query, each >= 1.

    Returns:
        (q, m) int64 ranks, 0 in the padding.
    """
    num_queries, slots = indices.shape
    valid = np.arange(slots) < counts[:, None]
    rows, cols = np.nonzero(valid)
    with _torch_threads(num_threads), torch.inference_mode():
        unit_queries = _unit_rows(queries, "queries")
        relevant_rows = _unit_rows(gallery[torch.from_numpy(indices[valid])], "gallery")
        scores = np.full((num_queries, slots), -np.inf, dtype=np.float32)
        scores[valid] = (unit_queries[torch.from_numpy(rows)] * relevant_rows).sum(dim=1).numpy()
        # Relevant items by decreasing score (stable: equal scores keep their listed order), and queries by
        # decreasing number of relevant items, so that slot s only concerns the first active[s] queries.
        slot_order = np.argsort(-scores, axis=1, kind="stable")
        query_order = np.argsort(-counts, kind="stable")
        query_position = np.argsort(query_order)
        above = _count_above(
            unit_queries[torch.from_numpy(query_order)],
            gallery,
            np.take_along_axis(scores, slot_order, axis=1)[query_order],
            (counts[:, None] > np.arange(slots)).sum(axis=0),
            query_position[rows],
            indices[valid],
            query_block,
            gallery_block,
        )
    ranks = np.zeros_like(indices)
    np.put_along_axis(ranks, slot_order, np.arange(1, slots + 1) + above[query_position], axis=1)
    return np.where(valid, ranks, 0)


def _count_above(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    thresholds: np.ndarray,
    active: np.ndarray,
    excluded_rows: np.ndarray,
    excluded_cols: np.ndarray,
    query_block: int,
    gallery_block: int,
) -> np.ndarray:
    """Count gallery scores at or above each query's thresholds, in one blocked pass over the gallery.

    ``above[i, s] = #{j : (i, j) not excluded, <queries_i, unit(gallery_j)> >= thresholds[i, s]}`` for
    ``i < active[s]``, else 0. Each (query chunk x gallery block) tile is one GEMM; the excluded entries
    are set to -inf, then slot s costs one comparison and one row sum over the tile's first active rows.
    The comparison writes 1.0 / 0.0 floats, which torch vectorises (a bool output is several times slower);
    their float32 row sums are exact integers since a block has at most 2**24 columns.

    Args:
        queries: (q, d) L2-normalised float32 queries.
        gallery: (g, d) features, normalised block by block.
        thresholds: (q, m) float32 thresholds.
        active: (m,) non-increasing number of leading queries that use each threshold slot.
        excluded_rows: (p,) query index of each (query, gallery item) pair left out of the counts.
        excluded_cols: (p,) gallery index of each such pair.

    Returns:
        (q, m) int64 counts.
    """
    num_queries, slots = thresholds.shape
    num_chunks = -(-num_queries // query_block)
    num_blocks = -(-gallery.shape[0] // gallery_block)
    # Sort the excluded pairs by tile (block-major, as the loops run) so each tile's pairs are one slice.
    tile_of_pair = excluded_cols // gallery_block * num_chunks + excluded_rows // query_block
    pair_order = np.argsort(tile_of_pair, kind="stable")
    tile_bounds = np.searchsorted(tile_of_pair[pair_order], np.arange(num_blocks * num_chunks + 1))
    tile_rows = torch.from_numpy(excluded_rows[pair_order] % query_block)
    tile_cols = torch.from_numpy(excluded_cols[pair_order] % gallery_block)
    thresholds = torch.from_numpy(thresholds)
    above = torch.zeros((num_queries, slots), dtype=torch.float64)
    score_buffer = torch.empty(query_block * gallery_block, dtype=torch.float32)
    indicator_buffer = torch.empty(query_block * gallery_block, dtype=torch.float32)
    for block_index in range(num_blocks):
        start = block_index * gallery_block
        block = _unit_rows(gallery[start : start + gallery_block], "gallery")
        width = block.shape[0]
        for chunk_index in range(num_chunks):
            first = chunk_index * query_block
            chunk = queries[first : first + query_block]
            height = chunk.shape[0]
            tile = torch.matmul(chunk, block.T, out=score_buffer[: height * width].view(height, width))
            tile_index = block_index * num_chunks + chunk_index
            lo, hi = tile_bounds[tile_index : tile_index + 2]
            tile[tile_rows[lo:hi], tile_cols[lo:hi]] = -torch.inf
            for slot in range(slots):
                rows = min(int(active[slot]) - first, height)
                if rows <= 0:
                    break
                indicator = torch.ge(
                    tile[:rows],
                    thresholds[first : first + rows, slot, None],
                    out=indicator_buffer[: rows * width].view(rows, width),
                )
                above[first : first + rows, slot] += indicator.sum(dim=1)
    return above.numpy().astype(np.int64)


def _features(queries: Features, gallery: Features) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate (q, d) queries and (g, d) gallery features; return them as CPU tensors, dtype unchanged."""
    tensors = []
    for name, x in (("queries", queries), ("gallery", gallery)):
        x = torch.as_tensor(x).detach().cpu()
        if x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (n, d) array, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got dtype {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
        tensors.append(x)
    queries, gallery = tensors
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]} but gallery has {gallery.shape[1]}")
    return queries, gallery


def _unit_rows(x: torch.Tensor, name: str) -> torch.Tensor:
    """(n, d) rows divided by their L2 norms, as a C-contiguous float32 tensor.

    Raises:
        ValueError: if a row holds nan or inf (or its norm overflows the dtype) or is all zero.
    """
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    if not torch.isfinite(norms).all():
        raise ValueError(f"{name} contains nan or inf values (or a row whose norm overflows {x.dtype})")
    if (norms == 0).any():
        raise ValueError(f"{name} has an all-zero row, whose cosine similarity is undefined")
    return (x / norms).to(torch.float32).contiguous()


def _is_flat_array(relevant: Relevant) -> bool:
    return isinstance(relevant, np.ndarray | torch.Tensor) and relevant.ndim == 1


def _relevant_matrix(
    relevant: Relevant, num_queries: int, gallery_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``relevant`` and pad it into an index matrix.

    Returns:
        ``(indices, counts)``: (q, m) int64 gallery indices, row i holding ``counts[i] >= 1`` distinct
        indices followed by zero padding, with m the largest count.
    """
    if _is_flat_array(relevant):
        rows = [np.asarray(relevant)]
        counts = np.ones(len(relevant), dtype=np.int64)
    else:
        rows = [np.atleast_1d(np.asarray(row)) for row in relevant]
        counts = np.array([row.size for row in rows], dtype=np.int64)
    if len(counts) != num_queries:
        raise ValueError(f"relevant has {len(counts)} entries but there are {num_queries} queries")
    for i, row in enumerate(rows):
        if row.ndim != 1:
            raise ValueError(f"relevant entry {i} must be an integer or a 1-D array, got shape {row.shape}")
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f"query {empty[0]} has no relevant gallery item")
    values = np.concatenate(rows)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"relevant gallery indices must be integers, got dtype {values.dtype}")
    indices = np.zeros((num_queries, counts.max()), dtype=np.int64)
    valid = np.arange(indices.shape[1]) < counts[:, None]
    indices[valid] = values
    bad = valid & ((indices < 0) | (indices >= gallery_size))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"relevant index {indices[i, j]} of query {i} is outside the gallery [0, {gallery_size})"
        )
    ordered = np.sort(np.where(valid, indices, -1), axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if repeated.any():
        i = np.argwhere(repeated)[0, 0]
        raise ValueError(
            f"query {i} lists a relevant gallery index more than once: {indices[i, : counts[i]]}"
        )
    return indices, counts


def _check_k(k: int, gallery_size: int, name: str) -> None:
    """Require ``k`` to be an integer in [1, gallery_size]."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= gallery_size:
        raise ValueError(f"{name} must be an integer in [1, {gallery_size}] (the gallery size), got {k!r}")


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run torch with ``num_threads`` intra-op threads (default: all available cores), then restore."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads or _available_cores())
    try:
        yield
    finally:
        torch.set_num_threads(previous)
