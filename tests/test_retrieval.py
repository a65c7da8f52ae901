"""Tests for helpers.retrieval: ranks and metrics against brute force and scikit-learn, k-NN vs argsort."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from helpers.retrieval import evaluate, knn, relevant_ranks

# Query (1, 0) against unit vectors at these angles (degrees): cosine rank = position in the list + 1.
ANGLES = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
# Gallery index of the item at each rank position, so indices and ranks differ.
RANK_TO_INDEX = np.array([3, 6, 0, 5, 1, 4, 2])


def angle_case() -> tuple[np.ndarray, np.ndarray]:
    """One query and a gallery whose item ``RANK_TO_INDEX[p]`` has rank ``p + 1``."""
    gallery = np.zeros((len(ANGLES), 2))
    radians = np.deg2rad(ANGLES)
    gallery[RANK_TO_INDEX] = np.stack([np.cos(radians), np.sin(radians)], axis=1)
    return np.array([[1.0, 0.0]]), gallery


def random_case(
    seed: int, max_relevant: int, num_queries: int = 30, gallery_size: int = 150, dim: int = 8
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Random features where each query is a noisy mean of its 1..max_relevant relevant items."""
    rng = np.random.default_rng(seed)
    gallery = rng.standard_normal((gallery_size, dim))
    relevant = [
        rng.choice(gallery_size, size=rng.integers(1, max_relevant + 1), replace=False)
        for _ in range(num_queries)
    ]
    queries = np.stack([gallery[r].mean(axis=0) for r in relevant]) + rng.standard_normal((num_queries, dim))
    return queries, gallery, relevant


def cosine(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(q, g) float64 cosine similarities."""
    unit = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (queries, gallery)]
    return unit[0] @ unit[1].T


def brute_force_ranks(scores: np.ndarray, relevant: list[np.ndarray]) -> list[np.ndarray]:
    """rank(i, r) = 1 + #{j : s(i, j) > s(i, r)}, valid without ties."""
    return [1 + (row[:, None] > row[r]).sum(axis=0) for row, r in zip(scores, relevant, strict=True)]


def brute_force_metrics(scores: np.ndarray, relevant: list[np.ndarray], ks: tuple[int, ...]) -> dict:
    """mAP from scikit-learn, acc@1 and Recall@k from a full argsort of every query's scores."""
    order = np.argsort(-scores, axis=1)
    labels = np.zeros(scores.shape, dtype=bool)
    for i, r in enumerate(relevant):
        labels[i, r] = True
    metrics = {
        "mAP": np.mean([average_precision_score(y, s) for y, s in zip(labels, scores, strict=True)]),
        "acc@1": np.mean(labels[np.arange(len(scores)), order[:, 0]]),
    }
    for k in ks:
        hits = np.take_along_axis(labels, order[:, :k], axis=1).sum(axis=1)
        metrics[f"recall@{k}"] = np.mean(hits / labels.sum(axis=1))
    return metrics


@pytest.mark.parametrize(
    ("relevant_ranks_listed", "expected"),
    [
        ([1], {"mAP": 1.0, "acc@1": 1.0, "recall@1": 1.0, "recall@3": 1.0, "recall@5": 1.0}),
        ([4], {"mAP": 0.25, "acc@1": 0.0, "recall@1": 0.0, "recall@3": 0.0, "recall@5": 1.0}),
        (
            [3, 1],
            {"mAP": (1 / 1 + 2 / 3) / 2, "acc@1": 1.0, "recall@1": 0.5, "recall@3": 1.0, "recall@5": 1.0},
        ),
        (
            [2, 7, 4],
            {
                "mAP": (1 / 2 + 2 / 4 + 3 / 7) / 3,
                "acc@1": 0.0,
                "recall@1": 0.0,
                "recall@3": 1 / 3,
                "recall@5": 2 / 3,
            },
        ),
    ],
)
def test_hand_made_cases(relevant_ranks_listed, expected):
    queries, gallery = angle_case()
    relevant = [RANK_TO_INDEX[np.array(relevant_ranks_listed) - 1]]
    assert evaluate(queries, gallery, relevant, ks=(1, 3, 5)) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_array_equal(relevant_ranks(queries, gallery, relevant)[0], relevant_ranks_listed)


def test_ties_count_against_relevant_items_then_listed_order():
    # Entries are exact binary fractions, so every float32 score is exact and the ties below are real.
    # Scores: 0.5, 0.5, 1.0, 0.0, 0.5.
    queries = np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    gallery = np.array(
        [
            [0.5, 0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5, 0.5],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.5, 0.5, -0.5, 0.5],
        ],
        dtype=np.float32,
    )
    assert relevant_ranks(queries, gallery, np.array([1]))[0] == 4  # behind item 2 and the tied items 0 and 4
    np.testing.assert_array_equal(relevant_ranks(queries, gallery, [np.array([4, 0, 1])])[0], [2, 3, 4])
    assert evaluate(queries, gallery, [[4, 0]], ks=(2,)) == {  # item 1 ties with both: ranks 3 and 4
        "mAP": pytest.approx((1 / 3 + 2 / 4) / 2),
        "acc@1": 0.0,
        "recall@2": 0.0,
    }


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("max_relevant", [1, 4])
@pytest.mark.parametrize("blocks", [(1024, 1024), (7, 16), (1, 1)])
def test_ranks_match_brute_force(seed, max_relevant, blocks):
    queries, gallery, relevant = random_case(seed, max_relevant, num_queries=12, gallery_size=60)
    ranks = relevant_ranks(queries, gallery, relevant, query_block=blocks[0], gallery_block=blocks[1])
    for got, expected in zip(ranks, brute_force_ranks(cosine(queries, gallery), relevant), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_relevant", [1, 3, 10])
def test_metrics_match_sklearn_and_argsort(seed, max_relevant):
    queries, gallery, relevant = random_case(seed, max_relevant)
    ks = (1, 5, 10, 50)
    expected = brute_force_metrics(cosine(queries, gallery), relevant, ks)
    assert evaluate(queries, gallery, relevant, ks=ks) == pytest.approx(expected, abs=1e-12)


def test_single_relevant_array_and_list_layouts_agree():
    queries, gallery, relevant = random_case(3, max_relevant=1)
    flat = np.concatenate(relevant)
    ranks = relevant_ranks(queries, gallery, flat)
    assert isinstance(ranks, np.ndarray) and ranks.shape == (len(queries),) and ranks.dtype == np.int64
    np.testing.assert_array_equal(relevant_ranks(queries, gallery, torch.from_numpy(flat)), ranks)
    np.testing.assert_array_equal(np.concatenate(relevant_ranks(queries, gallery, list(flat))), ranks)
    assert evaluate(queries, gallery, flat) == evaluate(queries, gallery, relevant)


def test_numpy_torch_dtypes_and_scaling_agree():
    queries, gallery, relevant = random_case(4, max_relevant=3)
    expected = evaluate(queries, gallery, relevant)
    scales = np.random.default_rng(0).uniform(0.1, 10.0, size=(len(gallery), 1))
    variants = [
        (queries.astype(np.float32), gallery.astype(np.float32)),
        (torch.from_numpy(queries), torch.from_numpy(gallery)),
        (torch.from_numpy(queries).float(), torch.from_numpy(gallery).float()),
        (np.asfortranarray(queries), np.asfortranarray(gallery)),
        (3.0 * queries, scales * gallery),
    ]
    for variant_queries, variant_gallery in variants:
        assert evaluate(variant_queries, variant_gallery, relevant) == expected


def test_knn_matches_argsort_and_evaluate_agrees_with_faiss():
    queries, gallery, _ = random_case(5, max_relevant=2)
    scores, indices = knn(queries, gallery, 5)
    exact = cosine(queries, gallery)
    assert scores.shape == indices.shape == (len(queries), 5)
    np.testing.assert_array_equal(indices, np.argsort(-exact, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.take_along_axis(exact, indices, axis=1), atol=1e-6)
    # faiss's own top-3 are exactly the items ranked 1, 2, 3 by evaluate.
    assert evaluate(queries, gallery, list(indices[:, :3]), ks=(3,)) == {
        "mAP": 1.0,
        "acc@1": 1.0,
        "recall@3": 1.0,
    }


def test_thread_setting_is_restored():
    queries, gallery, relevant = random_case(6, max_relevant=2)
    before = torch.get_num_threads()
    relevant_ranks(queries, gallery, relevant, num_threads=1)
    evaluate(queries, gallery, relevant)
    assert torch.get_num_threads() == before


def _arguments(**changes):
    """evaluate arguments for a small valid case, with the given ones replaced."""
    rng = np.random.default_rng(0)
    arguments = {
        "queries": rng.standard_normal((4, 3)),
        "gallery": rng.standard_normal((12, 3)),
        "relevant": [np.array([0]), np.array([1, 2]), np.array([3]), np.array([11])],
        "ks": (1, 5),
    }
    arguments.update(changes)
    return arguments


def _with_value(shape: tuple[int, int], value: float) -> np.ndarray:
    x = np.ones(shape)
    x[1, 2] = value
    return x


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (_arguments(queries=np.ones(3)), "queries must be a 2-D"),
        (_arguments(gallery=np.ones((2, 12, 3))), "gallery must be a 2-D"),
        (_arguments(gallery=np.ones((12, 4))), "dimension 3 but gallery has 4"),
        (_arguments(gallery=np.ones((0, 3))), "gallery is empty"),
        (_arguments(queries=np.ones((4, 3), dtype=np.int64)), "floating point"),
        (_arguments(queries=_with_value((4, 3), np.nan)), "queries contains nan or inf"),
        (_arguments(gallery=_with_value((12, 3), np.inf)), "gallery contains nan or inf"),
        (_arguments(gallery=np.eye(12, 3)), "all-zero row"),
        (_arguments(relevant=np.array([0, 1, 2])), "3 entries but there are 4 queries"),
        (
            _arguments(relevant=[np.array([0]), np.array([], dtype=int), np.array([3]), np.array([4])]),
            "query 1 has no",
        ),
        (_arguments(relevant=np.array([0, 1, 12, 3])), "index 12 of query 2 is outside the gallery"),
        (_arguments(relevant=np.array([0, -1, 2, 3])), "index -1 of query 1 is outside"),
        (
            _arguments(relevant=[np.array([0]), np.array([2, 2]), np.array([3]), np.array([4])]),
            "more than once",
        ),
        (_arguments(relevant=np.array([0.0, 1.0, 2.0, 3.0])), "must be integers"),
        (_arguments(relevant=[np.zeros((1, 1), dtype=int)] * 4), "integer or a 1-D array"),
        (_arguments(ks=(0, 5)), "every k in ks must be an integer in \\[1, 12\\]"),
        (_arguments(ks=(13,)), "got 13"),
        (_arguments(ks=(2.0,)), "every k in ks must be an integer"),
        (_arguments(ks=(True,)), "every k in ks must be an integer"),
    ],
)
def test_bad_inputs_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        evaluate(**arguments)


@pytest.mark.parametrize("k", [0, 13])
def test_knn_rejects_bad_k(k):
    arguments = _arguments()
    with pytest.raises(ValueError, match="k must be an integer in \\[1, 12\\]"):
        knn(arguments["queries"], arguments["gallery"], k)


@pytest.mark.parametrize("blocks", [(0, 16), (16, 0), (16, 2**24 + 1)])
def test_relevant_ranks_rejects_bad_blocks(blocks):
    arguments = _arguments()
    with pytest.raises(ValueError, match="query_block >= 1 and 1 <= gallery_block <= 2\\*\\*24"):
        relevant_ranks(
            arguments["queries"],
            arguments["gallery"],
            arguments["relevant"],
            query_block=blocks[0],
            gallery_block=blocks[1],
        )


def test_collapsed_features_score_at_the_bottom_not_perfectly():
    """Constant features tie every score: each query's exemplar lands behind the whole gallery."""
    queries, gallery = np.ones((5, 4), np.float32), np.ones((50, 4), np.float32)
    scores = evaluate(queries, gallery, np.arange(5), ks=(1,))
    assert scores["acc@1"] == 0.0 and scores["mAP"] == pytest.approx(1 / 50)
