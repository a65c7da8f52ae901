import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cross_decomposition import CCA

from helpers import attribution as at
from helpers.cache import Checkpoint
from helpers.retrieval import evaluate


def _top1(queries: torch.Tensor, gallery: torch.Tensor) -> float:
    """Fraction of rows i whose cosine nearest neighbour among the gallery rows is row i."""
    scores = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T
    return (scores.argmax(dim=1) == torch.arange(queries.shape[0])).float().mean().item()


# --------------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------------


def test_infomax_loss_matches_hand_computation():
    H = torch.tensor([[2.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # det 2
    z = torch.tensor([[0.5, -1.0], [1.0, 0.0]], dtype=torch.float64)
    y = z @ H.T  # rows (0, -1) and (2, 0)
    torch.testing.assert_close(y, torch.tensor([[0.0, -1.0], [2.0, 0.0]], dtype=torch.float64))
    # −log|det H| − (1/N) Σ_n Σ_i (−2 log cosh y_ni), N = 2
    hand = -math.log(2.0) + (2.0 / 2.0) * sum(math.log(math.cosh(v)) for v in (0.0, -1.0, 2.0, 0.0))
    assert at.infomax_loss(y, H).item() == pytest.approx(hand, abs=1e-12)
    # log cosh is stable far out: log cosh u ≈ |u| − log 2
    big = at.log_cosh(torch.tensor([1000.0, -1000.0]))
    torch.testing.assert_close(big, torch.full((2,), 1000.0 - math.log(2.0)))


def test_penalty_and_ad_loss():
    generator = torch.Generator().manual_seed(0)
    Q = at.random_orthogonal(5, generator)
    assert at.orthogonality_penalty(Q).item() == pytest.approx(0.0, abs=1e-10)
    assert at.orthogonality_penalty(2 * torch.eye(3)).item() == pytest.approx(27.0)  # ‖4I − I‖² = 9 · 3
    # the anchor penalty charges a rotation (here a permutation) that orthogonality lets pass for free
    swap = torch.eye(3)[[1, 0, 2]]
    assert at.orthogonality_penalty(swap).item() == 0.0 and at.anchor_penalty(swap).item() == pytest.approx(4.0)
    assert at.anchor_penalty(2 * torch.eye(3)).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="penalty must be one of"):
        at.head_penalty(swap, "ridge")
    z_s, z_e = torch.randn(20, 3, generator=generator), torch.randn(30, 3, generator=generator)
    H_s, H_e = torch.randn(3, 3, generator=generator), torch.randn(3, 3, generator=generator)
    expected = (at.infomax_loss(z_s @ H_s.T, H_s) + at.infomax_loss(z_e @ H_e.T, H_e)
                + 0.3 * (at.orthogonality_penalty(H_s) + at.orthogonality_penalty(H_e)))
    torch.testing.assert_close(at.ad_loss(z_s, z_e, H_s, H_e, 0.3), expected)


@pytest.mark.parametrize("scale", [0.1, 2.0])
@pytest.mark.parametrize("penalty_name", at.PENALTIES)
def test_closed_form_gradient_matches_autograd(scale, penalty_name):
    generator = torch.Generator().manual_seed(1)
    H = (torch.eye(6, dtype=torch.float64) + scale * torch.randn(6, 6, generator=generator, dtype=torch.float64))
    H.requires_grad_()
    z = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    reference = at.infomax_loss(z @ H.T, H) + 0.2 * at.head_penalty(H, penalty_name)
    (expected,) = torch.autograd.grad(reference, H)
    loss, infomax, penalty = at.head_objective(H, z, 0.2, penalty_name)
    (gradient,) = torch.autograd.grad(loss, H)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-10)
    assert infomax + 0.2 * penalty == pytest.approx(reference.item(), rel=1e-10)
    torch.testing.assert_close(gradient, expected, rtol=1e-8, atol=1e-10)


def test_closed_form_gradient_ill_conditioned_float32():
    # cond(H) = 1e3: the float32 Gram matrix would lose the small direction, so the float64 path is taken.
    generator = torch.Generator().manual_seed(2)
    Q = at.random_orthogonal(5, generator).double()
    H64 = (Q * torch.tensor([1.0, 2.0, 0.5, 1.0, 1e-3], dtype=torch.float64)) @ Q.T
    z = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    H64.requires_grad_()
    (expected,) = torch.autograd.grad(at.infomax_loss(z @ H64.T, H64), H64)
    H32 = H64.detach().float().requires_grad_()
    loss, _, _ = at.head_objective(H32, z.float(), 0.0)
    (gradient,) = torch.autograd.grad(loss, H32)
    torch.testing.assert_close(gradient.double(), expected, rtol=1e-3, atol=1e-2)


# --------------------------------------------------------------------------------------------------------
# Heads and training: theory checks on planted problems
# --------------------------------------------------------------------------------------------------------


def test_infomax_recovers_planted_sources():
    _, z, s, _, A = at.planted_two_domain(2000, 5, noise=0.0, seed=0)
    white, (_, W) = at.whiten(z)
    unmixing, history = at.train_infomax(white, epochs=10, batch_size=256, lr=0.05, seed=0)
    with torch.no_grad():
        y = unmixing(white)
    assert at.mean_corr_coef(s, y) > 0.95
    assert at.amari_distance(unmixing.H.detach() @ W.T, A) < 0.1
    assert history["infomax"][-1] < history["infomax"][0]


def test_identity_init_keeps_alignment_random_init_scrambles():
    # A roughly aligned backbone: A_E = A_S + small perturbation, so raw features already retrieve well.
    z_s, z_e, sources, _, _ = at.planted_two_domain(2000, 6, noise=0.05, seed=1, mismatch=0.05)
    kwargs = {"lam": 0.1, "epochs": 30, "batch_size": 500, "lr": 0.02, "seed": 1}
    accuracy, recovery = {}, {}
    for init in ("identity", "random"):
        heads, _ = at.train_heads(z_s, z_e, init=init, **kwargs)
        with torch.no_grad():
            accuracy[init] = _top1(heads.map(z_s[:500], "s"), heads.map(z_e[:500], "e"))
            recovery[init] = min(at.mean_corr_coef(sources, heads.map(z, d)) for z, d in ((z_s, "s"), (z_e, "e")))
    assert accuracy["identity"] > 0.9
    assert accuracy["random"] < 0.1
    # both unmix the sources (the raw features do not: MCC 0.63), so the alignment is not the untrained start's
    assert recovery["identity"] > 0.9 and recovery["random"] > 0.8
    assert at.mean_corr_coef(sources, z_s) < 0.7


def test_head_diagnostics_known_answers():
    z_s, z_e, _, _, _ = at.planted_two_domain(2000, 4, noise=0.05, seed=0, mismatch=0.05)
    start = at.head_diagnostics(at.Heads(4), z_s, z_e)
    assert start["shift"] == 0.0 and start["whiteness_gap"] > 0.3  # mixed Laplace sources are not white
    whitening = at.Heads(4)
    with torch.no_grad():  # heads that are the ZCA whitening of each domain: white outputs
        for z, domain in ((z_s, "s"), (z_e, "e")):
            _, (mean, W) = at.whiten(z)
            whitening.matrix(domain).copy_(W.T)
            (whitening.mean_s if domain == "s" else whitening.mean_e).copy_(mean)
    white = at.head_diagnostics(whitening, z_s, z_e)
    assert white["whiteness_gap"] < 1e-4 and white["shift"] > 0.1
    with torch.no_grad():  # one global scale does not count: cosine retrieval ignores it
        whitening.H_s.mul_(3.0)
    assert at.head_diagnostics(whitening, z_s, z_e)["whiteness_gap"] < 1e-4


def test_heads_init():
    identity = at.Heads(4)
    assert torch.equal(identity.H_s, torch.eye(4)) and torch.equal(identity.H_e, torch.eye(4))
    random = at.Heads(4, init="random", seed=3)
    same = at.Heads(4, init="same_random", seed=3)
    for H in (random.H_s, random.H_e, same.H_s):
        assert at.orthogonality_penalty(H.detach()).item() < 1e-10
    assert not torch.allclose(random.H_s, random.H_e)
    assert torch.equal(same.H_s, same.H_e)
    assert torch.equal(at.Heads(4, init="random", seed=3).H_e, random.H_e)
    z = torch.randn(7, 4)
    torch.testing.assert_close(identity.map(z, "e"), z)


def test_train_heads_centres_and_records_eval():
    generator = torch.Generator().manual_seed(0)
    z_s = torch.randn(100, 3, generator=generator) + 5.0
    z_e = torch.randn(60, 3, generator=generator) - 2.0  # unpaired domains of different sizes
    heads, history = at.train_heads(z_s, z_e, lam=0.1, epochs=3, batch_size=32, lr=0.01, seed=0,
                                    record_every=4, eval_fn=lambda heads: float(heads.H_s.sum()))
    num_steps = 3 * math.ceil(100 / 32)
    assert len(history["loss"]) == len(history["infomax_s"]) == len(history["penalty"]) == num_steps
    assert history["eval_step"] == [0.0, 4.0, 8.0, 12.0]
    assert history["eval"][-1] == pytest.approx(float(heads.H_s.detach().sum()))
    torch.testing.assert_close(heads.mean_s, z_s.mean(dim=0))
    torch.testing.assert_close(heads.map(z_e, "e").mean(dim=0), torch.zeros(3), atol=1e-5, rtol=0)


def test_train_heads_deterministic_and_resumable(tmp_path):
    z_s, z_e, _, _, _ = at.planted_two_domain(300, 4, noise=0.1, seed=2, mismatch=0.1)
    kwargs = {"lam": 0.05, "epochs": 4, "batch_size": 32, "lr": 0.01, "seed": 5, "record_every": 1,
              "eval_fn": lambda heads: float(heads.H_e.sum())}
    reference, history = at.train_heads(z_s, z_e, **kwargs)
    again, history_again = at.train_heads(z_s, z_e, **kwargs)
    assert torch.equal(reference.H_s, again.H_s) and torch.equal(reference.H_e, again.H_e)
    assert history == history_again

    checkpoint = Checkpoint(tmp_path / "heads.ckpt")
    calls = []

    def failing_eval(heads):
        calls.append(None)
        if len(calls) == 28:  # during step 27
            raise KeyboardInterrupt
        return float(heads.H_e.sum())

    with pytest.raises(KeyboardInterrupt):
        at.train_heads(z_s, z_e, checkpoint=checkpoint, checkpoint_every=10, **{**kwargs, "eval_fn": failing_eval})
    assert checkpoint.load()["step"] == 20
    resumed, history_resumed = at.train_heads(z_s, z_e, checkpoint=checkpoint, checkpoint_every=10, **kwargs)
    assert torch.equal(resumed.H_s, reference.H_s) and torch.equal(resumed.H_e, reference.H_e)
    assert history_resumed == history


# --------------------------------------------------------------------------------------------------------
# Whitening, scores, CCA, planted data
# --------------------------------------------------------------------------------------------------------


def test_whitening_gives_identity_covariance():
    z_s, _, _, _, _ = at.planted_two_domain(500, 4, noise=0.1, seed=0)
    z = z_s.double() * torch.tensor([1.0, 10.0, 0.1, 3.0], dtype=torch.float64) + 7.0
    white, (mean, W) = at.whiten(z, eps=0.0)
    torch.testing.assert_close(white.T @ white / z.shape[0], torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(W, W.T)
    torch.testing.assert_close(at.apply_whitening(z, mean, W), white)
    # ε is relative to the features' scale: a regularised whitening of c·z is that of z
    shrunk, _ = at.whiten(z, eps=0.1)
    torch.testing.assert_close(at.whiten(1e-3 * z, eps=0.1)[0], shrunk)
    assert torch.linalg.eigvalsh(shrunk.T @ shrunk / z.shape[0]).max() < 1.0


def test_mean_corr_coef():
    rng = np.random.default_rng(0)
    s = rng.laplace(size=(3000, 4))
    copy = s[:, [2, 0, 3, 1]] * np.array([-1.0, 2.0, -0.5, 3.0]) + 1.0
    assert at.mean_corr_coef(s, copy) == pytest.approx(1.0)
    assert at.mean_corr_coef(torch.from_numpy(s), torch.from_numpy(copy)) == pytest.approx(1.0)
    assert at.mean_corr_coef(s, rng.normal(size=(3000, 4))) < 0.06
    # averaged over the true sources: one estimate for four sources recovers a quarter
    assert at.mean_corr_coef(s, s[:, :1]) == pytest.approx(0.25)
    assert at.mean_corr_coef(s[:, :1], s) == pytest.approx(1.0)


def test_amari_distance():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 5))
    scaled_permutation = np.eye(5)[[3, 1, 4, 0, 2]] * np.array([2.0, -1.0, 0.5, 3.0, -4.0])
    assert at.amari_distance(scaled_permutation @ np.linalg.inv(A), A) == pytest.approx(0.0, abs=1e-9)
    assert at.amari_distance(np.eye(5), scaled_permutation) == 0.0
    assert at.amari_distance(rng.normal(size=(5, 5)), A) > 0.1


def test_cca_decomposition_matches_sklearn():
    rng = np.random.default_rng(0)
    n = 2000
    shared = rng.normal(size=(n, 3))
    # Canonical correlations about 0.9, 0.6, 0.3, then mixed differently in each view.
    rho = np.array([0.9, 0.6, 0.3])
    x = np.hstack([shared, rng.normal(size=(n, 1))]) @ rng.normal(size=(4, 4))
    y = np.hstack([rho * shared + np.sqrt(1 - rho**2) * rng.normal(size=(n, 3)), rng.normal(size=(n, 1))])
    y = y @ rng.normal(size=(4, 4))
    result = at.cca_decomposition(x, y)
    assert np.allclose(result.correlations[:3], rho, atol=0.05)
    # The two-step route satisfies CCA's constraints and attains its objective.
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    C_xx, C_yy, C_xy = xc.T @ xc / n, yc.T @ yc / n, xc.T @ yc / n
    assert np.allclose(result.U.T @ C_xx @ result.U, np.eye(4), atol=1e-8)
    assert np.allclose(result.V.T @ C_yy @ result.V, np.eye(4), atol=1e-8)
    assert np.trace(result.U.T @ C_xy @ result.V) == pytest.approx(result.correlations.sum())
    assert np.allclose(result.W_x @ C_xx @ result.W_x, np.eye(4), atol=1e-8)  # within-domain whitening
    assert np.allclose(result.R_x.T @ result.R_x, np.eye(4), atol=1e-8)  # cross-domain rotation
    # Against scikit-learn's iterative CCA: the correlations of its canonical scores.
    x_scores, y_scores = CCA(n_components=3, max_iter=2000, tol=1e-10).fit(x, y).transform(x, y)
    sklearn_corr = [np.corrcoef(x_scores[:, k], y_scores[:, k])[0, 1] for k in range(3)]
    assert np.allclose(result.correlations[:3], sklearn_corr, atol=1e-2)
    ours_x, ours_y = result.transform(x, y)
    ours_corr = [np.corrcoef(ours_x[:, k], ours_y[:, k])[0, 1] for k in range(4)]
    assert np.allclose(ours_corr, result.correlations, atol=1e-8)


def test_cross_correlation_and_order_alignment():
    generator = torch.Generator().manual_seed(0)
    y = torch.randn(500, 3, generator=generator, dtype=torch.float64)
    same_order = at.cross_correlation(y, 2.0 * y + 1.0)
    np.testing.assert_allclose(same_order, np.eye(3), atol=0.15)
    np.testing.assert_allclose(np.diagonal(same_order), 1.0, atol=1e-12)
    permuted = -y[:, [2, 0, 1]]
    assert at.order_alignment(y, permuted) < 0.15  # each source is there, in another order and sign
    assert at.mean_corr_coef(y, permuted) == pytest.approx(1.0)  # which MCC ignores
    assert at.order_alignment(y, y) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="row-paired"):
        at.cross_correlation(y, y[:10])
    with pytest.raises(ValueError, match="same number of columns"):
        at.order_alignment(y, y[:, :2])


def test_fit_fastica_recovers_sources_per_domain():
    _, z, s, _, _ = at.planted_two_domain(2000, 4, noise=0.0, seed=3)
    ica = at.fit_fastica(z, seed=0)
    assert at.mean_corr_coef(s, ica.transform(z.double().numpy())) > 0.95
    again = at.fit_fastica(z, seed=0)
    np.testing.assert_array_equal(ica.components_, again.components_)


def test_planted_outputs_identity_aligns_fastica_and_random_do_not():
    z_s, z_e, _, _, _ = at.planted_two_domain(2500, 6, noise=0.05, seed=1, mismatch=0.05)
    outputs = at.planted_outputs(z_s, z_e, num_train=2000, lam=0.1, epochs=30, batch_size=500, lr=0.02, seed=1)
    assert set(outputs) == {"raw", "whitening", "A&D identity", "A&D random", "A&D same random",
                            "FastICA per domain", "CCA on pairs"}
    assert all(a.shape == b.shape == (500, 6) for a, b in outputs.values())
    alignment = {name: at.order_alignment(*pair) for name, pair in outputs.items()}
    assert alignment["A&D identity"] > 0.9 and alignment["CCA on pairs"] > 0.9
    assert alignment["A&D random"] < 0.5
    # FastICA starts both domains from the same seeded matrix, so it may keep part of the order, never all
    assert alignment["FastICA per domain"] < alignment["A&D identity"] - 0.2
    with pytest.raises(ValueError, match="num_train"):
        at.planted_outputs(z_s, z_e, num_train=2500, lam=0.1, epochs=1, batch_size=10, lr=0.01, seed=0)
    with pytest.raises(ValueError, match="num_train"):
        at.planted_outputs(z_s, z_e[:100], num_train=50, lam=0.1, epochs=1, batch_size=10, lr=0.01, seed=0)


def test_planted_two_domain():
    z_s, z_e, s, A_s, A_e = at.planted_two_domain(400, 3, noise=0.0, seed=4, mismatch=0.1)
    assert z_s.shape == z_e.shape == s.shape == (400, 3) and A_s.shape == A_e.shape == (3, 3)
    torch.testing.assert_close(z_s, s @ A_s.T, atol=1e-5, rtol=1e-5)
    assert 0 < torch.linalg.matrix_norm(A_e - A_s) < 0.5
    again = at.planted_two_domain(400, 3, noise=0.0, seed=4, mismatch=0.1)
    assert all(torch.equal(a, b) for a, b in zip(again, (z_s, z_e, s, A_s, A_e), strict=True))
    independent = at.planted_two_domain(400, 3, noise=0.2, seed=4)
    assert torch.linalg.matrix_norm(independent[4] - independent[3]) > 0.5
    kurtosis = (s**4).mean(dim=0) / (s**2).mean(dim=0) ** 2  # Laplace: 6, a Gaussian: 3
    assert (kurtosis > 4.5).all()
    # near the axes: ε = 0 is no mixing at all; otherwise each domain has its own A = I + εG/√d
    _, _, _, A_s0, A_e0 = at.planted_two_domain(50, 3, noise=0.0, seed=4, near_axis=0.0)
    assert torch.equal(A_s0, torch.eye(3)) and torch.equal(A_e0, torch.eye(3))
    _, _, _, A_s, A_e = at.planted_two_domain(50, 8, noise=0.0, seed=4, near_axis=0.5)
    assert 0.3 < torch.linalg.matrix_norm(A_s - torch.eye(8)) / 8**0.5 < 0.7 and not torch.equal(A_s, A_e)
    with pytest.raises(ValueError, match="not both"):
        at.planted_two_domain(50, 3, noise=0.0, seed=4, near_axis=0.5, mismatch=0.1)
    with pytest.raises(ValueError, match="near_axis must be >= 0"):
        at.planted_two_domain(50, 3, noise=0.0, seed=4, near_axis=-1.0)


def test_identity_start_beats_whitening_only_when_the_mixings_lie_near_the_axes():
    """The mechanism behind A&D's identity start, on planted data: near-axis mixings (each domain its own) leave
    whitened domains in different orientations, and only ICA from the identity puts both on the sources in one
    order; with a shared random orientation whitening alone already aligns them."""
    train = dict(lam=0.1, epochs=30, batch_size=500, lr=0.02, seed=0)

    def held_out_map(**mixing):
        z_s, z_e, *_ = at.planted_two_domain(4000, 6, noise=0.05, seed=0, **mixing)
        out = at.planted_outputs(z_s, z_e, num_train=3000, **train)
        return {m: evaluate(*out[m], np.arange(1000))["mAP"] for m in ("whitening", "A&D identity")}

    near_axis = held_out_map(near_axis=0.5)
    assert near_axis["A&D identity"] > 0.9 and near_axis["whitening"] < 0.7
    shared = held_out_map(mismatch=0.1)
    assert shared["whitening"] > 0.9


# --------------------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------------------


def test_bad_inputs():
    z = torch.randn(10, 3)
    with pytest.raises(ValueError, match="same dimension"):
        at.train_heads(z, torch.randn(10, 4), lam=0.1, epochs=1, batch_size=4, lr=0.01, seed=0)
    with pytest.raises(ValueError, match="square"):
        at.infomax_loss(z, torch.randn(3, 4))
    with pytest.raises(ValueError, match="square"):
        at.orthogonality_penalty(torch.randn(2, 3))
    with pytest.raises(ValueError, match="columns"):
        at.infomax_loss(torch.randn(10, 4), torch.eye(3))
    with pytest.raises(ValueError, match="init"):
        at.Heads(3, init="orthogonal")
    with pytest.raises(ValueError, match="init"):
        at.train_heads(z, z, lam=0.1, epochs=1, batch_size=4, lr=0.01, seed=0, init="xavier")
    with pytest.raises(ValueError, match="lam"):
        at.train_heads(z, z, lam=-0.1, epochs=1, batch_size=4, lr=0.01, seed=0)
    with pytest.raises(ValueError, match="lam"):
        at.ad_loss(z, z, torch.eye(3), torch.eye(3), -1.0)
    with pytest.raises(ValueError, match="epochs"):
        at.train_heads(z, z, lam=0.1, epochs=0, batch_size=4, lr=0.01, seed=0)
    with pytest.raises(ValueError, match="lr"):
        at.train_infomax(z, epochs=1, batch_size=4, lr=0.0, seed=0)
    with pytest.raises(ValueError, match="domain"):
        at.Heads(3).map(z, "x")
    with pytest.raises(ValueError, match="rows"):
        at.mean_corr_coef(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(ValueError, match="square"):
        at.amari_distance(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="paired"):
        at.cca_decomposition(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(ValueError, match="mismatch"):
        at.planted_two_domain(10, 2, noise=0.0, seed=0, mismatch=-1.0)
