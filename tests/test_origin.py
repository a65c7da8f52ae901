import math

import pytest
import torch

from helpers.cache import Checkpoint
from helpers.origin import (
    LinearMap,
    MLPMap,
    cosface_logits,
    cosface_loss,
    discriminant_map,
    effective_dimension,
    extract,
    invariant_ratio,
    lemma1_residual,
    null_space_map,
    official_schedule,
    singular_value_cosine,
    subspace_overlap,
    top_input_directions,
    train_map,
)
from helpers.retrieval import evaluate
from helpers.runtime import torch_generator


def _planted(num_origins, copies, shift, seed, noise=0.05):
    """Origins o ~ N(0, I_n); generated g = o + A z + noise, z ~ N(0, 9 I_r): a rank-r generator shift."""
    g = torch_generator(seed, 0)
    origins = torch.randn(num_origins, shift.shape[0], generator=g)
    z = 3.0 * torch.randn(num_origins, copies, shift.shape[1], generator=g)
    generated = origins[:, None] + z @ shift.T + noise * torch.randn(num_origins, copies, shift.shape[0], generator=g)
    return origins, generated


def _low_rank(rows, n, rank, seed):
    g = torch_generator(seed, 1)
    return torch.randn(rows, rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, n, generator=g, dtype=torch.float64
    )


# ---- CosFace -------------------------------------------------------------------------------------------


def test_cosface_matches_hand_computation():
    features = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # unit: (0.6, 0.8), (1, 0)
    weights = torch.tensor([[2.0, 0.0], [0.0, 5.0], [-1.0, 1.0]])  # unit: (1, 0), (0, 1), (-1, 1)/√2
    labels = torch.tensor([1, 0])
    s, m = 64.0, 0.35
    cos = [[0.6, 0.8, 0.2 / math.sqrt(2)], [1.0, 0.0, -1 / math.sqrt(2)]]
    expected_logits = torch.tensor([[s * cos[0][0], s * (cos[0][1] - m), s * cos[0][2]],
                                    [s * (cos[1][0] - m), s * cos[1][1], s * cos[1][2]]])
    torch.testing.assert_close(cosface_logits(features, weights, labels), expected_logits)
    per_sample = []
    for i, y in enumerate(labels.tolist()):
        target = math.exp(s * (cos[i][y] - m))
        others = sum(math.exp(s * cos[i][j]) for j in range(3) if j != y)
        per_sample.append(-math.log(target / (target + others)))
    assert cosface_loss(features, weights, labels).item() == pytest.approx(sum(per_sample) / 2, rel=1e-5)
    # Invariant to the norms of features and weights; margin 0 and scale 1 give softmax over cosines.
    assert cosface_loss(7 * features, 0.1 * weights, labels).item() == pytest.approx(sum(per_sample) / 2, rel=1e-5)
    plain = torch.nn.functional.cross_entropy(torch.tensor(cos), labels)
    assert cosface_loss(features, weights, labels, scale=1.0, margin=0.0).item() == pytest.approx(plain.item())


# ---- maps, schedule, extraction ------------------------------------------------------------------------


def test_maps_have_seeded_default_init_and_the_right_shapes():
    linear = LinearMap(64, 16, seed=3)
    assert linear.matrix.shape == (64, 16)
    assert linear.matrix.abs().max() <= 1 / math.sqrt(64)  # nn.Linear's U(-1/√n, 1/√n)
    torch.testing.assert_close(LinearMap(64, 16, seed=3).matrix, linear.matrix, rtol=0, atol=0)
    assert not torch.equal(LinearMap(64, 16, seed=4).matrix, linear.matrix)
    x = torch.randn(5, 64)
    torch.testing.assert_close(MLPMap(64, 16, layers=1, seed=3)(x), linear(x), rtol=0, atol=0)
    # the residual MLP starts as the linear map (its blocks' last layers are zero) and has a bias inside each block
    deep = MLPMap(64, 16, layers=4, seed=3)
    torch.testing.assert_close(deep(x), linear(x), rtol=0, atol=0)
    assert len(deep.blocks) == 3 and all(block[0].bias is not None for block in deep.blocks)
    with torch.no_grad():
        deep.blocks[0][2].weight.fill_(0.1)
    assert not torch.allclose(deep(x), linear(x))


def test_official_schedule_shape():
    f = official_schedule(100)
    assert f(0) == pytest.approx(0.01)
    assert f(10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(20) == f(39) == 1.0
    assert f(70) == pytest.approx(0.5)
    assert 0 < f(99) < 1e-3


def test_extract_is_batch_independent():
    model = LinearMap(32, 8)
    x = torch.randn(50, 32)
    torch.testing.assert_close(extract(model, x, batch_size=7), extract(model, x, batch_size=1000))
    torch.testing.assert_close(extract(model, x), x @ model.matrix)


# ---- training on a planted generator shift -------------------------------------------------------------


def test_planted_shift_is_learned_and_removed():
    n, rank, m, classes, copies = 64, 8, 32, 200, 4
    shift = torch.randn(n, rank, generator=torch_generator(0, 9))
    origins, generated = _planted(classes, copies, shift, seed=0)
    embeddings = torch.cat([origins, generated.reshape(-1, n)])
    labels = torch.cat([torch.arange(classes), torch.arange(classes).repeat_interleave(copies)])
    # lr above the official 3.5e-4, which is tuned for 50,000 steps, not 300.
    model, history = train_map(LinearMap(n, m), embeddings, labels, classes, 300, seed=0, lr=3e-3, batch_size=128)
    assert history["loss"][-1] < 0.05 * history["loss"][0]
    assert history["accuracy"][-1] == 1.0

    # Unseen origins, one query each, against their origins plus 1,000 distractors.
    test_origins, test_generated = _planted(300, 1, shift, seed=1)
    distractors = torch.randn(1000, n, generator=torch_generator(2, 0))
    queries, gallery, relevant = test_generated[:, 0], torch.cat([test_origins, distractors]), torch.arange(300)
    raw = evaluate(queries, gallery, relevant)
    mapped = evaluate(extract(model, queries), extract(model, gallery), relevant)
    assert raw["mAP"] < 0.5 and mapped["mAP"] > 0.95 and mapped["acc@1"] > raw["acc@1"] + 0.5

    # The trained rank-m map's column space avoids the planted shift; a random subspace of that rank does not.
    differences = (test_generated - test_origins[:, None]).reshape(-1, n)
    trained = invariant_ratio(differences, test_origins, model.matrix)
    random = invariant_ratio(differences, test_origins, torch.randn(n, m, generator=torch_generator(3, 0)))
    assert trained < 0.05 * random


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    n, classes = 16, 10
    embeddings = torch.randn(40, n, generator=torch_generator(5, 0))
    labels = torch.arange(40) % classes

    def run(checkpoint=None):
        model, _ = train_map(MLPMap(n, 8, layers=2), embeddings, labels, classes, 300, seed=1, lr=1e-2,
                             batch_size=16, loss="softmax", checkpoint=checkpoint)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    reference = run()
    torch.testing.assert_close(run(), reference, rtol=0, atol=0)

    class Interrupted(Exception):
        pass

    class FailAfterFirstSave(Checkpoint):
        def save(self, state):
            super().save(state)
            raise Interrupted

    path = tmp_path / "w.ckpt"
    with pytest.raises(Interrupted):
        run(FailAfterFirstSave(path))
    assert Checkpoint(path).load()["step"] == 250
    torch.testing.assert_close(run(Checkpoint(path)), reference, rtol=0, atol=0)


# ---- theorem checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.float64, 1e-13)])
def test_lemma1_identity_holds_to_rounding(dtype, tolerance):
    g = torch_generator(0, 0)
    x0, eps, eps_pred = (torch.randn(4, 4, 8, 8, generator=g, dtype=dtype) for _ in range(3))
    for alpha_bar in (0.98, torch.tensor(0.3), torch.tensor([0.9, 0.5, 0.1, 0.01])):
        assert lemma1_residual(x0, eps, eps_pred, alpha_bar) < tolerance


@pytest.mark.slow
def test_lemma1_check_fails_for_a_wrong_one_step_estimate():
    """Given the sampler's z'_0, the check can fail: an estimate that is not Eq. 13 leaves a large residual."""
    generator = torch.Generator().manual_seed(0)
    x0, eps, eps_pred = (torch.randn(4, 3, 5, 5, generator=generator, dtype=torch.float64) for _ in range(3))
    alpha_bar = torch.tensor(0.6, dtype=torch.float64)
    z_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    right = (z_t - (1 - alpha_bar).sqrt() * eps_pred) / alpha_bar.sqrt()
    wrong = z_t - (1 - alpha_bar).sqrt() * eps_pred  # forgets to divide by √ᾱ
    assert lemma1_residual(x0, eps, eps_pred, alpha_bar, z0_pred=right) < 1e-12
    assert lemma1_residual(x0, eps, eps_pred, alpha_bar, z0_pred=wrong) > 0.1
    with pytest.raises(ValueError, match="z0_pred"):
        lemma1_residual(x0, eps, eps_pred, alpha_bar, z0_pred=right[:2])


def test_lemma1_with_a_diffusers_schedule():
    scheduling = pytest.importorskip("diffusers.schedulers.scheduling_ddpm")
    alphas_cumprod = scheduling.DDPMScheduler(beta_schedule="scaled_linear").alphas_cumprod
    g = torch_generator(1, 0)
    x0, eps, eps_pred = (torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (10, 500, 999):
        assert lemma1_residual(x0, eps, eps_pred, alphas_cumprod[t]) < 1e-12
    assert lemma1_residual(x0, eps, eps_pred, alphas_cumprod[torch.tensor([10, 500, 999])]) < 1e-12


def test_null_space_map_annihilates_an_exact_low_rank_shift():
    n, rank, m = 64, 10, 32
    differences = _low_rank(200, n, rank, seed=0)
    origins = torch.randn(200, n, generator=torch_generator(0, 2), dtype=torch.float64)
    W = null_space_map(differences, m)
    assert W.shape == (n, m)
    torch.testing.assert_close(W.T @ W, torch.eye(m, dtype=torch.float64))  # orthonormal: full rank
    assert torch.linalg.norm(differences @ W) < 1e-10 * torch.linalg.norm(differences)
    assert invariant_ratio(differences, origins, W) < 1e-12
    random_W = torch.randn(n, m, generator=torch_generator(0, 3), dtype=torch.float64)
    assert invariant_ratio(differences, origins, random_W) > 0.01
    # Fewer rows than dimensions: the zero singular values count as null space too.
    few = null_space_map(differences[:5], n - 5)
    assert torch.linalg.norm(differences[:5] @ few) < 1e-10 * torch.linalg.norm(differences[:5])


def test_invariant_ratio_depends_only_on_the_subspace():
    g = torch_generator(0, 6)
    n, m = 12, 4
    origins = torch.randn(300, n, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, n, dtype=torch.float64)
    differences = torch.randn(500, n, generator=g, dtype=torch.float64) * torch.linspace(2, 0.1, n, dtype=torch.float64)
    W = torch.randn(n, m, generator=g, dtype=torch.float64)
    mixing = torch.randn(m, m, generator=g, dtype=torch.float64)  # any invertible reparametrisation
    assert invariant_ratio(differences, origins, W @ mixing) == pytest.approx(invariant_ratio(differences, origins, W))
    # Known answer: the subspace of coordinates 0-3 scores tr(C_o⁻¹ C_T)/m on those coordinates, which for these
    # nearly diagonal covariances is about the mean of the per-coordinate ratios.
    axes = torch.eye(n, dtype=torch.float64)[:, :m]
    kept = differences[:, :m]
    expected = (torch.linalg.solve(torch.cov(origins[:, :m].T), kept.T @ kept / len(kept)).trace() / m).item()
    assert invariant_ratio(differences, origins, axes) == pytest.approx(expected)
    per_coordinate = (kept**2).mean(0) / origins[:, :m].var(0)
    assert expected == pytest.approx(per_coordinate.mean().item(), rel=0.1)
    # at m = n every invertible map scores the same
    square = torch.randn(n, n, generator=g, dtype=torch.float64)
    identity = torch.eye(n, dtype=torch.float64)
    whole = invariant_ratio(differences, origins, identity)
    assert invariant_ratio(differences, origins, square) == pytest.approx(whole)
    # twice the same translations (two per origin) give the same ratio
    assert invariant_ratio(torch.cat([differences, differences]), origins, W) == pytest.approx(
        invariant_ratio(differences, origins, W))


def test_discriminant_map_minimises_the_invariant_ratio():
    g = torch_generator(0, 7)
    n, m = 16, 5
    def correlated(rows):
        return torch.randn(rows, n, generator=g, dtype=torch.float64) @ torch.randn(n, n, generator=g,
                                                                                   dtype=torch.float64)

    origins, differences = correlated(400), correlated(400)
    best = invariant_ratio(differences, origins, discriminant_map(differences, origins, m, ridge=1e-12))
    for k in range(20):
        other = torch.randn(n, m, generator=torch_generator(1, k), dtype=torch.float64)
        assert best <= invariant_ratio(differences, origins, other) + 1e-9


def test_top_input_directions_and_subspace_overlap():
    g = torch_generator(0, 8)
    n = 20
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    W = q @ torch.diag(torch.arange(n, 0, -1, dtype=torch.float64)) @ q.T  # singular values n, n-1, ..., 1
    top = top_input_directions(W, 3)
    assert subspace_overlap(top, q[:, :3]) == pytest.approx(1.0)
    assert subspace_overlap(top, q[:, 3:6]) == pytest.approx(0.0, abs=1e-12)
    assert subspace_overlap(q[:, :4], q[:, 2:6]) == pytest.approx(0.5)  # two shared directions of four
    assert subspace_overlap(top, top @ torch.randn(3, 3, generator=g, dtype=torch.float64)) == pytest.approx(1.0)
    # two random k-dimensional subspaces of R^n overlap by about k / n
    overlaps = [subspace_overlap(torch.randn(200, 20, generator=torch_generator(2, k)),
                                 torch.randn(200, 20, generator=torch_generator(3, k))) for k in range(10)]
    assert sum(overlaps) / 10 == pytest.approx(20 / 200, rel=0.15)


def test_effective_dimension():
    x = torch.zeros(50, 6, dtype=torch.float64)
    x[:, :3] = torch.randn(50, 3, generator=torch_generator(0, 9), dtype=torch.float64) * torch.tensor([10.0, 3.0, 1.0],
                                                                                                          dtype=torch.float64)
    assert effective_dimension(x, 1.0) == 3
    assert effective_dimension(x, 0.5) == 1
    assert effective_dimension(x + 5.0, 0.5) == 1  # centred: a constant offset adds no dimension


def test_singular_value_cosine():
    g = torch_generator(0, 4)
    W = torch.randn(32, 8, generator=g, dtype=torch.float64)
    q_left, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    q_right, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert singular_value_cosine(W, 3.0 * q_left @ W @ q_right) == pytest.approx(1.0, abs=1e-12)
    spiky = torch.diag(torch.tensor([10.0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.float64))
    flat = torch.eye(8, dtype=torch.float64)
    assert singular_value_cosine(spiky, flat) == pytest.approx(17 / (math.sqrt(107) * math.sqrt(8)))


# ---- bad input -----------------------------------------------------------------------------------------


def _train(**overrides):
    args = {"model": LinearMap(8, 4), "embeddings": torch.randn(10, 8), "labels": torch.arange(10) % 3,
            "num_classes": 3, "steps": 2, "seed": 0, "batch_size": 4}
    args.update(overrides)
    return train_map(**args)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: LinearMap(8, 16), "exceeds"),
        (lambda: MLPMap(8, 4, layers=5), "layers"),
        (lambda: _train(loss="triplet"), "loss must be"),
        (lambda: _train(labels=torch.tensor([0, 1, 2, 3, 0, 1, 2, 0, 1, 2])), "labels must lie"),
        (lambda: _train(labels=torch.arange(9) % 3), "length 10"),
        (lambda: _train(embeddings=torch.full((10, 8), math.nan)), "nan or inf"),
        (lambda: _train(batch_size=11), "batch_size"),
        (lambda: cosface_loss(torch.randn(2, 4), torch.randn(3, 5), torch.tensor([0, 1])), "columns"),
        (lambda: lemma1_residual(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), 0.5), "shape"),
        (lambda: lemma1_residual(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3), 1.0), r"\(0, 1\)"),
        (lambda: null_space_map(torch.randn(5, 8), 9), "m must be"),
        (lambda: invariant_ratio(torch.randn(5, 8), torch.randn(5, 7), torch.randn(8, 2)), "columns"),
        (lambda: invariant_ratio(torch.randn(5, 8), torch.randn(5, 8), torch.randn(7, 4)), "rows"),
        (lambda: invariant_ratio(torch.randn(5, 8), torch.randn(5, 8), torch.randn(8, 9)), "m = 9"),
        (lambda: singular_value_cosine(torch.randn(8, 4), torch.randn(8, 3)), "singular values"),
        (lambda: top_input_directions(torch.randn(8, 4), 5), "k must be"),
        (lambda: subspace_overlap(torch.randn(8, 4), torch.randn(9, 4)), "rows"),
        (lambda: effective_dimension(torch.randn(8, 4), 0.0), "fraction"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_discriminant_map_keeps_origins_apart_where_the_null_space_does_not():
    generator = torch.Generator().manual_seed(0)
    n = 20
    # origins vary in dims 0-9 only; the shift lives in dims 0-4, with some noise in 5-9 and less in 10-19
    spread = torch.randn(400, 10, generator=generator)
    origins = torch.cat([spread, 1e-4 * torch.randn(400, 10, generator=generator)], 1)
    shift = torch.zeros(400, n)
    shift[:, :5] = torch.randn(400, 5, generator=generator)
    noise = torch.cat([torch.full((10,), 1e-1), torch.full((10,), 1e-2)])
    T = shift + noise * torch.randn(400, n, generator=generator)
    null_ratio = invariant_ratio(T, origins, null_space_map(T, 5))
    discriminant = discriminant_map(T, origins, 5)
    assert discriminant.shape == (n, 5) and discriminant.dtype == torch.float64
    disc_ratio = invariant_ratio(T, origins, discriminant)
    assert null_ratio > 0.3 and disc_ratio < 0.2 * null_ratio  # the null space: origins barely vary there
    # the chosen directions are the origin dims free of shift (5-9)
    assert discriminant[5:10].norm() > 10 * discriminant[:5].norm()
    with pytest.raises(ValueError, match="m must be"):
        discriminant_map(T, origins, 0)
    with pytest.raises(ValueError, match="ridge"):
        discriminant_map(T, origins, 3, ridge=0)
