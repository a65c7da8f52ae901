"""Contrastive analysis (CA): the losses of Diff-CA's separator and the baselines' building blocks (notebook 04).

CA splits the factors of a *target* dataset (label Y = 1) into those it shares with a *background* dataset
(Y = 0, the common factors C) and those only the target has (the salient factors S), from the dataset label
alone. Diff-CA (Soumm, Fournier Montgieux, He, Gori, Newson) works on conditioning tokens ``Z`` of an
image-conditioned diffusion model, assumed additive, ``Z = Z_S + Z_C`` with ``Z_S = 0`` on the background; a
separator predicts ``(Ẑ_S, Ẑ_C)`` under three conditions (its Theorem 1): they sum to ``Z``, ``Ẑ_S = 0``
exactly on the background (pinning), and ``Ẑ_S ⟂ Ẑ_C``. No official code exists; the formulas below follow
section 5 of the reference notes.

What this module provides (token tensors are ``(B, K, d)``; a salient code may also be ``(B, d)``, broadcast
over the K tokens):

* the separator's losses: :func:`reconstruction_loss`, :func:`pinning_loss`, :func:`cycle_loss`, and the
  swap :func:`swap_tokens`;
* the adversary's gradient reversal: :func:`grad_reverse` and the self-tuning weight :func:`adversary_weight_step`;
* the baselines: :func:`cpca` (contrastive PCA with ``eigh``) and the latent splitter of He et al. 2025
  (:class:`LatentSplitter`, :func:`splitter_loss` with :func:`mmd_rbf`, :func:`train_splitter`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helpers.cache import Checkpoint
from helpers.checks import check_matrix
from helpers.runtime import seeded
from helpers.training import adam, fit


def _broadcast_salient(salient: torch.Tensor, common: torch.Tensor) -> torch.Tensor:
    """A ``(B, d)`` salient code repeated over the K tokens of ``common`` ``(B, K, d)``; ``(B, K, d)`` as is."""
    if salient.dim() == 2 and common.dim() == 3:
        salient = salient[:, None, :]
    if salient.shape[0] != common.shape[0] or salient.shape[-1] != common.shape[-1]:
        raise ValueError(f"salient {tuple(salient.shape)} and common {tuple(common.shape)} codes do not match")
    return salient.expand_as(common)


def _labels(y: torch.Tensor, batch: int) -> torch.Tensor:
    if y.shape != (batch,):
        raise ValueError(f"y must have shape ({batch},), got {tuple(y.shape)}")
    if not torch.isin(y.to(torch.int64), torch.tensor([0, 1], device=y.device)).all():
        raise ValueError("y must hold dataset labels 0 (background) and 1 (target)")
    return y.to(torch.bool)


REDUCTIONS = ("sum", "mean")


def _squared_norm(x: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per item of x (B, …): ``‖x‖²`` (``"sum"``, the paper's norms) or its mean per element (``"mean"``)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    squares = x.pow(2).flatten(1)
    return squares.sum(1) if reduction == "sum" else squares.mean(1)


def reconstruction_loss(tokens: torch.Tensor, salient: torch.Tensor, common: torch.Tensor,
                        reduction: str = "sum") -> torch.Tensor:
    """``L_rec = E_b ‖Z − (Ẑ_S + Ẑ_C)‖²``: squared error summed over tokens and channels (``reduction="mean"``:
    averaged over them), mean over the batch.

    Args:
        tokens: ``Z`` (B, K, d).
        salient: ``Ẑ_S`` (B, d) or (B, K, d).
        common: ``Ẑ_C`` (B, K, d).
    """
    if tokens.shape != common.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and common {tuple(common.shape)} must have one shape")
    residual = tokens - (_broadcast_salient(salient, common) + common)
    return _squared_norm(residual, reduction).mean()


def pinning_loss(salient: torch.Tensor, y: torch.Tensor, weight_background: float = 1.0,
                 weight_target: float = 0.1, reduction: str = "sum") -> torch.Tensor:
    """``L_pin = E[w_0 1{Y=0} ‖Ẑ_S‖² + w_1 1{Y=1} exp(−‖Ẑ_S‖²)]`` (weights 1 and 0.1 in the paper).

    The background term pins the salient code to zero where the target's factors are absent; the target term
    keeps it away from zero (without it, ``Ẑ_S = 0`` everywhere meets the other conditions). With the paper's
    norm (``reduction="sum"``) the target term vanishes once ``‖Ẑ_S‖`` passes about 1.5, small against tokens of
    norm ≈ 12; with ``"mean"`` (squares averaged per element) it keeps pushing until the salient code is about as
    large per element as the tokens are.

    Args:
        salient: ``Ẑ_S`` (B, …), squared norm taken over all but the batch dimension.
        y: (B,) dataset labels, 0 = background, 1 = target.
    """
    is_target = _labels(y, salient.shape[0])
    squared = _squared_norm(salient, reduction)
    per_item = torch.where(is_target, weight_target * torch.exp(-squared), weight_background * squared)
    return per_item.mean()


def swap_tokens(salient: torch.Tensor, common: torch.Tensor, salient_from: torch.Tensor) -> torch.Tensor:
    """Tokens with the common part of each item and the salient part of item ``salient_from[b]``.

    ``Z^mix_b = Ẑ_C[b] + Ẑ_S[salient_from[b]]`` (B, K, d): "common of A + salient of B". With
    ``salient_from = arange(B)`` it is exactly ``Ẑ_C + Ẑ_S``.
    """
    if salient_from.shape != (common.shape[0],):
        raise ValueError(f"salient_from must have shape ({common.shape[0]},), got {tuple(salient_from.shape)}")
    return common + _broadcast_salient(salient, common)[salient_from]


def cycle_loss(salient_mix: torch.Tensor, common_mix: torch.Tensor, salient_b: torch.Tensor,
               common_a: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """``L_cyc = E[‖Ẑ_C^mix − Ẑ_C^a‖² + ‖Ẑ_S^mix − Ẑ_S^b‖²]``: re-encoding the swap returns its parts (norms
    as in :func:`reconstruction_loss`).

    Args:
        salient_mix, common_mix: the (EMA) separator's outputs on ``Z^mix = Ẑ_C^a + Ẑ_S^b``.
        salient_b: ``Ẑ_S^b``, the salient code put into the mix (same shape as ``salient_mix``).
        common_a: ``Ẑ_C^a``, the common code put into the mix (same shape as ``common_mix``).
    """
    if salient_mix.shape != salient_b.shape or common_mix.shape != common_a.shape:
        raise ValueError("each re-encoded part must have the shape of the part put into the mix")
    return (_squared_norm(common_mix - common_a, reduction) + _squared_norm(salient_mix - salient_b, reduction)).mean()


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``−weight`` on the way back (Ganin and Lempitsky's GRL).

    An adversary fed ``grad_reverse(Ẑ_C, λ)`` learns to predict Y from ``Ẑ_C`` while the separator upstream
    receives ``−λ`` times that gradient, i.e. minimises ``L − λ L_adv``.
    """
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    return _GradReverse.apply(x, float(weight))


def adversary_weight_step(value: float, rolling_accuracy: float, batch_accuracy: float, *, target: float = 0.8,
                          rate: float = 0.999, momentum: float = 0.95, maximum: float = 5.0) -> tuple[float, float]:
    """One update of Diff-CA's self-tuning GRL weight ``λ_adv``, which holds the adversary's accuracy near a target.

    ``ā ← m ā + (1 − m) acc`` with ``acc`` the adversary's batch accuracy; then ``λ ← λ / r`` if ``ā > target``
    (the common code still leaks the label: reverse harder) and ``λ ← λ · r`` otherwise, capped at ``maximum``
    (the paper reports λ within [0, 5]).

    Direction: the reference notes state the opposite (``λ ×= 0.999`` when ``ā > target``). A stronger
    reversal lowers the adversary's accuracy, so that reading is a positive feedback loop that drives λ to
    zero or to its cap and cannot hold the accuracy at a target; we take the reading under which it can.

    Args:
        value: the current λ, > 0.
        rolling_accuracy: the current ``ā`` (start at 0.5, a coin-flip adversary).
        batch_accuracy: this step's accuracy, in [0, 1].
        target: the accuracy to hold (0.70–0.80 in the paper).
        rate: the multiplicative step r (0.999).
        momentum: the rolling-average momentum m (0.95).
        maximum: the cap of λ.

    Returns:
        ``(λ', ā')``.
    """
    if not 0.0 <= batch_accuracy <= 1.0:
        raise ValueError(f"batch_accuracy must be in [0, 1], got {batch_accuracy}")
    if not 0.5 <= target < 1.0 or not 0 < rate < 1 or not 0 <= momentum < 1 or not 0 < value <= maximum:
        raise ValueError("need 0.5 <= target < 1, 0 < rate < 1, 0 <= momentum < 1 and 0 < value <= maximum")
    rolling = momentum * rolling_accuracy + (1.0 - momentum) * batch_accuracy
    new_value = value / rate if rolling > target else value * rate
    return min(new_value, maximum), rolling


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Biased squared MMD with the Gaussian kernel ``k(a, b) = exp(−‖a − b‖² / (2σ²))``:
    ``mean K_xx + mean K_yy − 2 mean K_xy`` (He et al. 2025's CS-DiffusionAE, σ = 1).

    Args:
        x: (n, d) samples; y: (m, d) samples.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return _biased_mmd(x, y, torch.tensor([1.0 / (2.0 * sigma**2)], dtype=torch.float64))


# The bandwidths of MM-cVAE's kernel mixture (suinleelab/MM-cVAE): k(a, b) = Σ_γ exp(−γ ‖a − b‖²).
MM_CVAE_GAMMAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 100.0,
                  1e3, 1e4, 1e5, 1e6)


def mmd_mixture(x: torch.Tensor, y: torch.Tensor, gammas: tuple[float, ...] = MM_CVAE_GAMMAS) -> torch.Tensor:
    """Biased squared MMD with MM-cVAE's kernel mixture ``k(a, b) = Σ_γ exp(−γ ‖a − b‖²)``, floored at 0 as
    the official code does.

    Args:
        x: (n, d) samples; y: (m, d) samples; gammas: the positive inverse bandwidths γ.
    """
    if not gammas or min(gammas) <= 0:
        raise ValueError(f"gammas must be positive, got {gammas}")
    return _biased_mmd(x, y, torch.tensor(gammas, dtype=torch.float64)).clamp_min(0.0)


def _biased_mmd(x: torch.Tensor, y: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """``mean K_xx + mean K_yy − 2 mean K_xy`` for ``k(a, b) = Σ_γ exp(−γ ‖a − b‖²)``."""
    check_matrix(x, "x", finite=False)
    check_matrix(y, "y", columns=x.shape[1], finite=False)
    gammas = gammas.to(x)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        squared = torch.cdist(a, b).pow(2)
        return torch.exp(-gammas[:, None, None] * squared).sum(0).mean()

    return kernel(x, x) + kernel(y, y) - 2.0 * kernel(x, y)


def standardiser(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The standardisation of the set ``x`` (n, p) that :func:`cpca` applies, as a map of rows (m, p) → (m, p):
    minus ``x``'s mean, over its standard deviation (ddof 1; a constant feature maps to 0)."""
    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
    return lambda rows: np.divide(rows - mean, std, out=np.zeros_like(rows, dtype=np.float64), where=std > 0)


def cpca(target: np.ndarray | torch.Tensor, background: np.ndarray | torch.Tensor, alpha: float,
         num_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Contrastive PCA: the top eigenvectors of ``C_t − α C_b`` (Abid et al. 2018).

    Each set is standardised on its own (zero mean, unit variance per feature; constant features stay 0),
    as the reference implementation does; ``C = XᵀX / (n − 1)``. Uses ``eigh`` on the symmetric difference
    (the reference implementation's ``eig`` can return complex values).

    Args:
        target: (n_t, p) target set.
        background: (n_b, p) background set.
        alpha: ``α >= 0``, how much background variance to subtract (α = 0 is PCA of the target).
        num_components: k, 1 <= k <= p.

    Returns:
        ``(components, eigenvalues)``: (p, k) orthonormal directions (each with its largest-magnitude entry
        positive, a fixed sign) and their (k,) eigenvalues, decreasing.
    """
    t, b = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
            for x in (target, background))
    for name, x in (("target", t), ("background", b)):
        if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
            raise ValueError(f"{name} must be a finite (n, p) array with n >= 2, got shape {x.shape}")
    if t.shape[1] != b.shape[1]:
        raise ValueError(f"target and background must have the same features, got {t.shape[1]} and {b.shape[1]}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not 1 <= num_components <= t.shape[1]:
        raise ValueError(f"num_components must be in [1, {t.shape[1]}], got {num_components}")

    def covariance(x: np.ndarray) -> np.ndarray:
        scaled = standardiser(x)(x)
        return scaled.T @ scaled / (len(x) - 1)

    eigenvalues, eigenvectors = np.linalg.eigh(covariance(t) - alpha * covariance(b))
    order = np.argsort(eigenvalues)[::-1][:num_components]
    components = eigenvectors[:, order]
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(num_components)])
    return components * np.where(signs == 0, 1.0, signs), eigenvalues[order]



# --------------------------------------------------------------------------------------------------------
# Identifiability on a known additive model (Diff-CA's Theorem 1, linear case)
# --------------------------------------------------------------------------------------------------------

CONDITIONS = ("sum", "pinning", "independence", "invariance")


def additive_model(n_background: int, n_target: int, *, dim: int, salient_dim: int, common_dim: int,
                   seed: int) -> dict[str, torch.Tensor]:
    """``Z = Z_S + Z_C`` with ``Z_S = A_S s`` (zero on the background) and ``Z_C = A_C c``.

    ``s`` (salient_dim) and ``c`` (common_dim) are independent unit-variance Laplace sources; ``A_S``
    (dim × salient_dim) and ``A_C`` (dim × common_dim) are standard Gaussian, so the two subspaces are
    neither orthogonal nor aligned. Rows: the background first, then the target.

    Returns:
        ``{"Z", "Z_s", "Z_c": (n, dim) float64, "y": (n,) int64}``.
    """
    if salient_dim < 1 or common_dim < 1 or salient_dim + common_dim > dim:
        raise ValueError(f"need 1 <= salient_dim, 1 <= common_dim and salient_dim + common_dim <= dim, got "
                         f"{salient_dim}, {common_dim}, {dim}")
    if n_background < 2 or n_target < 2:
        raise ValueError("need at least 2 background and 2 target rows")
    generator = torch.Generator().manual_seed(seed)
    n = n_background + n_target

    def laplace(rows: int, cols: int) -> torch.Tensor:
        exponential = torch.empty(2, rows, cols, dtype=torch.float64).exponential_(generator=generator)
        return (exponential[0] - exponential[1]) / 2**0.5

    A_s = torch.randn(dim, salient_dim, generator=generator, dtype=torch.float64)
    A_c = torch.randn(dim, common_dim, generator=generator, dtype=torch.float64)
    s = torch.cat([torch.zeros(n_background, salient_dim, dtype=torch.float64), laplace(n_target, salient_dim)])
    Z_s, Z_c = s @ A_s.T, laplace(n, common_dim) @ A_c.T
    y = torch.cat([torch.zeros(n_background, dtype=torch.int64), torch.ones(n_target, dtype=torch.int64)])
    return {"Z": Z_s + Z_c, "Z_s": Z_s, "Z_c": Z_c, "y": y}


def fit_linear_separator(Z: torch.Tensor, y: torch.Tensor, *, conditions: tuple[str, ...] = CONDITIONS,
                         steps: int = 1000, lr: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear separator ``Ẑ_S = Z Pᵀ``, ``Ẑ_C = Z Qᵀ`` trained (Adam, full batch) under the chosen conditions.

    ``"sum"``: :func:`reconstruction_loss` (``Ẑ_S + Ẑ_C = Z``); ``"pinning"``: :func:`pinning_loss` (weights 1
    and 0.1); ``"independence"``: the squared Frobenius norm of the cross-covariance of ``Ẑ_S`` and ``Ẑ_C`` on
    the target rows, the linear stand-in for ``Ẑ_S ⟂ Ẑ_C``; ``"invariance"``: ``Ẑ_C`` has the same mean and
    covariance on both datasets (squared distances), the linear stand-in for what Diff-CA's adversary asks:
    that the dataset label cannot be read from ``Ẑ_C``. Both maps start at ``I / 2`` (no side favoured).

    Args:
        Z: (n, dim) tokens; y: (n,) labels (0 background, 1 target).
        conditions: a subset of :data:`CONDITIONS`.

    Returns:
        ``(P, Q)``, (dim, dim) each, detached.
    """
    unknown = set(conditions) - set(CONDITIONS)
    if unknown or not conditions:
        raise ValueError(f"conditions must be a non-empty subset of {CONDITIONS}, got {conditions}")
    check_matrix(Z, "Z")
    is_target = _labels(y, Z.shape[0])
    Z = Z.double()
    P = torch.nn.Parameter(torch.eye(Z.shape[1], dtype=torch.float64) / 2)
    Q = torch.nn.Parameter(torch.eye(Z.shape[1], dtype=torch.float64) / 2)
    optimizer = torch.optim.Adam([P, Q], lr=lr)
    scale = Z.pow(2).sum(1).mean()  # second-moment terms are divided by it: every term in units of ‖Z‖²
    for _ in range(steps):
        optimizer.zero_grad()
        salient, common = Z @ P.T, Z @ Q.T
        loss = torch.zeros((), dtype=torch.float64)
        if "sum" in conditions:
            loss = loss + reconstruction_loss(Z[:, None], salient, common[:, None])
        if "pinning" in conditions:
            loss = loss + pinning_loss(salient, y)
        if "independence" in conditions:
            s_t, c_t = salient[is_target], common[is_target]
            cross = (s_t - s_t.mean(0)).T @ (c_t - c_t.mean(0)) / len(s_t)
            loss = loss + cross.pow(2).sum() / scale
        if "invariance" in conditions:
            c_b, c_t = common[~is_target], common[is_target]
            loss = loss + ((c_b.mean(0) - c_t.mean(0)).pow(2).sum()
                           + (torch.cov(c_b.T) - torch.cov(c_t.T)).pow(2).sum() / scale)
        loss.backward()
        optimizer.step()
    return P.detach(), Q.detach()


def oblique_separator(Z: torch.Tensor, y: torch.Tensor, *, salient_dim: int,
                      common_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed-form linear split that the identifiability conditions single out, from second moments.

    The background covariance spans the common subspace ``U_C`` (its top ``common_dim`` eigenvectors), and ``W``
    is an orthonormal basis of its orthogonal complement. The target's excess covariance ``Δ = Σ_t − Σ_b`` is
    ``A_S Σ_s A_Sᵀ`` plus the sampling noise of the two common covariances, which lives in ``U_C``; seen through
    ``W`` that noise vanishes, so the salient subspace is ``U_S = Δ W V`` with ``V`` the top ``salient_dim``
    eigenvectors of ``Wᵀ Δ W`` (taking ``Δ``'s own top eigenvectors instead lets the common noise compete with
    a weak salient direction). The salient map is the oblique projector onto ``U_S`` along ``U_C``:
    ``P = U_S (Wᵀ U_S)⁺ Wᵀ``, so ``P U_C = 0`` (pinning) and ``P U_S = U_S``; ``Q = I − P`` (sum). The reference
    answer for :func:`fit_linear_separator`.

    Returns:
        ``(P, Q)``, (dim, dim) float64.
    """
    check_matrix(Z, "Z")
    is_target = _labels(y, Z.shape[0])
    dim = Z.shape[1]
    if salient_dim < 1 or common_dim < 1 or salient_dim + common_dim > dim:
        raise ValueError(f"need 1 <= salient_dim, 1 <= common_dim, salient_dim + common_dim <= {dim}")
    Z = Z.double()
    cov_b, cov_t = torch.cov(Z[~is_target].T), torch.cov(Z[is_target].T)
    _, vectors_b = torch.linalg.eigh(cov_b)
    complement = vectors_b[:, : dim - common_dim]  # eigh sorts ascending: all but the top common_dim
    excess = cov_t - cov_b
    _, vectors_excess = torch.linalg.eigh(complement.T @ excess @ complement)
    salient = excess @ complement @ vectors_excess[:, -salient_dim:]
    P = salient @ torch.linalg.pinv(complement.T @ salient) @ complement.T
    return P, torch.eye(dim, dtype=torch.float64) - P


def separation_errors(P: torch.Tensor, Q: torch.Tensor, model: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative errors of a linear separator on :func:`additive_model` data.

    ``salient``: ``‖Ẑ_S − Z_S‖² / ‖Z_S‖²`` over the target rows; ``common``: ``‖Ẑ_C − Z_C‖² / ‖Z_C‖²`` over all
    rows; ``background_salient``: ``‖Ẑ_S‖² / ‖Z‖²`` over the background rows (0 when pinned).
    """
    Z, is_target = model["Z"], model["y"].bool()
    salient, common = Z @ P.T, Z @ Q.T
    return {
        "salient": float((salient - model["Z_s"])[is_target].pow(2).sum() / model["Z_s"][is_target].pow(2).sum()),
        "common": float((common - model["Z_c"]).pow(2).sum() / model["Z_c"].pow(2).sum()),
        "background_salient": float(salient[~is_target].pow(2).sum() / Z[~is_target].pow(2).sum()),
    }


# --------------------------------------------------------------------------------------------------------
# Baseline: the latent splitter of He et al. 2025 (CS-DiffusionAE)
# --------------------------------------------------------------------------------------------------------


def balanced_rows(y: torch.Tensor, batch_size: int):
    """A sampler of balanced batches: ``draw(generator)`` returns ``batch_size`` background rows then
    ``batch_size`` target rows of ``y`` (N,), each drawn without replacement (the CA baselines' batches)."""
    is_target = _labels(y, y.shape[0])
    rows_t, rows_b = torch.nonzero(is_target)[:, 0], torch.nonzero(~is_target)[:, 0]
    if min(len(rows_t), len(rows_b)) < batch_size or batch_size < 2:
        raise ValueError(f"batch_size must be in [2, {min(len(rows_t), len(rows_b))}], got {batch_size}")

    def draw(generator: torch.Generator) -> torch.Tensor:
        return torch.cat([rows_b[torch.randperm(len(rows_b), generator=generator)[:batch_size]],
                          rows_t[torch.randperm(len(rows_t), generator=generator)[:batch_size]]])

    return draw


class LatentSplitter(nn.Module):
    """Two parallel MLPs on a latent ``z`` (D,): ``c = net_c(z)`` (common) and ``s = net_s(z)`` (salient).

    Each stack is ``layers`` Linear + LeakyReLU(0.2) blocks of width ``hidden`` and a final Linear to D.
    """

    def __init__(self, dim: int, hidden: int = 128, layers: int = 2, seed: int = 0):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")

        def stack() -> nn.Sequential:
            blocks: list[nn.Module] = []
            width = dim
            for _ in range(layers):
                blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
                width = hidden
            return nn.Sequential(*blocks, nn.Linear(width, dim))

        with seeded(seed):
            self.net_c, self.net_s = stack(), stack()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net_c(z), self.net_s(z)


def median_bandwidth(x: torch.Tensor, *, max_rows: int = 1000, seed: int = 0) -> float:
    """The median heuristic for a Gaussian kernel's σ: ``2σ² = median ‖a − b‖²`` over pairs of distinct rows of
    ``x`` (N, D), so that the kernel is ``e⁻¹`` at the median distance. Uses at most ``max_rows`` rows, drawn
    without replacement from ``seed``."""
    check_matrix(x, "x")
    if len(x) < 2:
        raise ValueError(f"need at least 2 rows, got {len(x)}")
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_rows]
    sample = x[rows].double()
    squared = torch.cdist(sample, sample).pow(2)
    median = float(squared[torch.triu_indices(len(sample), len(sample), offset=1).unbind()].median())
    if median <= 0:
        raise ValueError("the rows of x are all equal: no bandwidth")
    return (median / 2) ** 0.5


def splitter_loss(model: LatentSplitter, z: torch.Tensor, y: torch.Tensor, *, weight_mmd: float = 0.2,
                  sigma: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """He et al.'s objective on one batch of latents ``z`` (B, D) with labels ``y`` (needs both labels):

    ``MSE(c_bg, z_bg) + MSE(c_t + s_t, z_t) + MSE(s_bg, 0) + w_mmd · MMD_rbf(c_t, z_bg)`` (MSE = mean over
    entries; unit weights, ``w_mmd = 0.2`` and the kernel's ``σ = 1`` as in their scripts).
    """
    is_target = _labels(y, z.shape[0])
    if is_target.all() or not is_target.any():
        raise ValueError("a splitter batch needs background and target items")
    common, salient = model(z)
    background, target = ~is_target, is_target
    terms = {
        "rec_bg": F.mse_loss(common[background], z[background]),
        "rec_t": F.mse_loss(common[target] + salient[target], z[target]),
        "s_bg": salient[background].pow(2).mean(),
        "mmd": mmd_rbf(common[target], z[background], sigma),
    }
    loss = terms["rec_bg"] + terms["rec_t"] + terms["s_bg"] + weight_mmd * terms["mmd"]
    return loss, {name: value.item() for name, value in terms.items()}


def train_splitter(z: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int,
                   hidden: int = 128, layers: int = 2, weight_mmd: float = 0.2, sigma: float = 1.0,
                   checkpoint: Checkpoint | None = None) -> tuple[LatentSplitter, dict[str, list[float]]]:
    """Train a :class:`LatentSplitter` on latents ``(N, D)`` (Adam; each batch holds ``batch_size`` items of each
    label, drawn from the step's generator; resumable through ``checkpoint``). ``sigma``: the MMD kernel's
    bandwidth (their σ = 1 only suits latents whose distances are of order 1; see :func:`median_bandwidth`)."""
    check_matrix(z, "z")
    draw_rows = balanced_rows(y, batch_size)
    model = LatentSplitter(z.shape[1], hidden, layers, seed=seed)
    data = z.float()

    def make_batch(step: int, generator: torch.Generator):
        rows = draw_rows(generator)
        return data[rows], y[rows]

    def loss_fn(net, batch, generator):
        return splitter_loss(net, *batch, weight_mmd=weight_mmd, sigma=sigma)

    history = fit(model, adam(model.parameters(), lr), loss_fn, make_batch, steps, seed=seed,
                  checkpoint=checkpoint, desc="latent splitter")
    return model.eval(), history
