"""Origin identification by a linear map of VAE embeddings, and executable checks of its theory.

Paper: Wang et al., "Generalizable Origin Identification for Text-Guided Image-to-Image Diffusion Models"
(ID² / OriPID), ICML 2025, arXiv:2501.02376.

Setting: an origin image ``o`` and an image ``g`` generated from it are embedded by a VAE encoder ``E``
(flattened, ``n`` values each). A matrix ``W`` (n, m) is learned so that ``E(g) W`` and ``E(o) W`` are close
in cosine; a query ``g`` is then matched against a gallery of mapped origins.

What this module provides:

* the model: :class:`LinearMap` (``W`` as ``nn.Linear(n, m, bias=False)``) and :class:`MLPMap` (the
  paper's MLP ablation), trained by :func:`train_map` with a CosFace proxy classifier over origin ids
  (or a plain softmax classifier, the paper's loss ablation), and :func:`extract`;
* the theory as checks on tensors: :func:`lemma1_residual` (Lemma 1, Eq. 2 / 10-14),
  :func:`null_space_map` (Theorem 1's construction, Lemma 2), :func:`discriminant_map` (a construction that
  also keeps the origins apart), :func:`invariant_ratio` (how far a rank-m map is from Eq. 1, for Theorems 1 and
  2), :func:`singular_value_cosine` (Observation 1, Eq. 4), :func:`top_input_directions` and
  :func:`subspace_overlap` (whether two maps share directions, which the singular values cannot tell), and
  :func:`effective_dimension` (the ranks of the ablation are judged against it).

Conventions: a difference matrix ``T`` holds one difference ``E(g) - E(o)`` per **row**, shape (N, n), so
``T W`` is defined for ``W`` of shape (n, m). The paper writes "each column" but then multiplies ``T W``,
which only typechecks with rows.

Where the official code (WangWenhao0716/ID2) differs from the paper, we follow the code:

* the loss is not the triplet metric loss of Eq. 9 but a CosFace classification over origin ids
  (s = 64, m = 0.35, Xavier-uniform class weights, no label smoothing), trained jointly with ``W``;
* Adam at lr 3.5e-4, no weight decay, with a per-epoch LambdaLR (5 warm-up epochs from 0.01, 5 flat,
  15 cosine); :func:`official_schedule` stretches it over the step count, applied per step.

Left out here: the EMA of the weights (decay 0.9999) and the P x K batch sampler (4 images per origin);
batches are drawn uniformly without replacement from the per-step generator of :func:`helpers.training.fit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from helpers.cache import Checkpoint
from helpers.checks import check_matrix
from helpers.runtime import torch_generator
from helpers.training import fit

COSFACE_SCALE = 64.0
COSFACE_MARGIN = 0.35
LOSSES = ("cosface", "softmax")
# Stream of the seed generator used for initialisation; fit's per-step streams are 0 .. steps - 1.
_INIT_STREAM = 2**40


# --------------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------------


def cosface_logits(
    features: torch.Tensor,
    class_weights: torch.Tensor,
    labels: torch.Tensor,
    scale: float = COSFACE_SCALE,
    margin: float = COSFACE_MARGIN,
) -> torch.Tensor:
    """CosFace (large-margin cosine) logits: ``s (cos θ_j - m [j = y])``.

    ``cos θ_j = <f / |f|, w_j / |w_j|>`` for a feature ``f`` and the weight ``w_j`` of class ``j``.

    Args:
        features: (B, m) features.
        class_weights: (C, m) one proxy per class.
        labels: (B,) integer class of each feature, in [0, C).
        scale: ``s``.
        margin: ``m``, subtracted from the cosine of the true class only.

    Returns:
        (B, C) logits.
    """
    check_matrix(features, "features")
    check_matrix(class_weights, "class_weights", columns=features.shape[1])
    _check_labels(labels, features.shape[0], class_weights.shape[0])
    cosine = F.normalize(features, dim=1) @ F.normalize(class_weights, dim=1).T
    return scale * (cosine - margin * F.one_hot(labels, class_weights.shape[0]).to(cosine.dtype))


def cosface_loss(
    features: torch.Tensor,
    class_weights: torch.Tensor,
    labels: torch.Tensor,
    scale: float = COSFACE_SCALE,
    margin: float = COSFACE_MARGIN,
) -> torch.Tensor:
    """Mean CosFace loss over a batch.

    ``L = -log( e^{s(cos θ_y - m)} / (e^{s(cos θ_y - m)} + Σ_{j≠y} e^{s cos θ_j}) )``, i.e. cross-entropy on
    :func:`cosface_logits`.

    Args:
        features: (B, m) features.
        class_weights: (C, m) class proxies.
        labels: (B,) classes in [0, C).
        scale: ``s``.
        margin: ``m``.

    Returns:
        Scalar loss.
    """
    return F.cross_entropy(cosface_logits(features, class_weights, labels, scale, margin), labels)


# --------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------


class LinearMap(nn.Module):
    """The map ``z -> z W`` with ``W`` (n, m), stored as ``nn.Linear(n, m, bias=False)`` like the official code.

    Initialised as PyTorch initialises ``nn.Linear`` (Kaiming-uniform with ``a = √5``, i.e.
    ``U(-1/√n, 1/√n)``), but from a generator seeded by ``seed`` instead of the global one.
    """

    def __init__(self, n: int, m: int, seed: int = 0):
        super().__init__()
        _check_dims(n, m)
        self.fc = nn.Linear(n, m, bias=False)
        _default_init(self.fc.weight, None, torch_generator(seed, _INIT_STREAM))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, n) embeddings -> (B, m) features ``z W``."""
        return self.fc(z)

    @property
    def matrix(self) -> torch.Tensor:
        """``W`` as an (n, m) tensor (a detached copy of the transposed weight)."""
        return self.fc.weight.detach().T.clone()


class MLPMap(nn.Module):
    """The paper's MLP ablation: ``W`` followed by ``layers - 1`` residual blocks, ``h <- h + ReLU(h A + b) B``.

    The first layer is exactly :class:`LinearMap` (same initialisation for the same seed); each block's ``A``
    (m, m) and bias ``b`` take ``nn.Linear``'s default initialisation and its ``B`` (m, m, no bias) starts at
    zero, so the untrained MLP *is* the linear map and training can only add to it. The paper's MLP has
    residual connections too; without them and without a bias, a 2-layer ReLU MLP cannot even represent ``W``.
    """

    def __init__(self, n: int, m: int, layers: int = 2, seed: int = 0):
        super().__init__()
        _check_dims(n, m)
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= 4:
            raise ValueError(f"layers must be an integer in [1, 4], got {layers!r}")
        generator = torch_generator(seed, _INIT_STREAM)
        self.linear = nn.Linear(n, m, bias=False)
        _default_init(self.linear.weight, None, generator)
        self.blocks = nn.ModuleList()
        for _ in range(layers - 1):
            inner = nn.Linear(m, m)
            _default_init(inner.weight, inner.bias, generator)
            outer = nn.Linear(m, m, bias=False)
            nn.init.zeros_(outer.weight)
            self.blocks.append(nn.Sequential(inner, nn.ReLU(), outer))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, n) embeddings -> (B, m) features."""
        h = self.linear(z)
        for block in self.blocks:
            h = h + block(h)
        return h


class _ProxyClassifier(nn.Module):
    """The training head: CosFace proxies (Xavier-uniform, no bias) or a plain linear softmax classifier."""

    def __init__(self, m: int, num_classes: int, loss: str, generator: torch.Generator):
        super().__init__()
        self.loss = loss
        self.weight = nn.Parameter(torch.empty(num_classes, m))
        if loss == "cosface":
            nn.init.xavier_uniform_(self.weight, generator=generator)
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(torch.empty(num_classes))
            _default_init(self.weight, self.bias, generator)

    def logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss == "cosface":
            return cosface_logits(features, self.weight, labels)
        return F.linear(features, self.weight, self.bias)


class _Trainee(nn.Module):
    """Map and head together, so that ``fit`` optimises and checkpoints both."""

    def __init__(self, map_model: nn.Module, head: _ProxyClassifier):
        super().__init__()
        self.map = map_model
        self.head = head


# --------------------------------------------------------------------------------------------------------
# Training and extraction
# --------------------------------------------------------------------------------------------------------


def official_schedule(num_steps: int) -> Callable[[int], float]:
    """The official per-epoch LambdaLR (25 epochs) stretched over ``num_steps`` steps.

    With progress ``p = step / num_steps``: ``0.01 + 0.99 p / 0.2`` for ``p < 0.2`` (warm-up, epochs 0-4),
    ``1`` for ``0.2 <= p < 0.4`` (epochs 5-9), ``(1 + cos(π (p - 0.4) / 0.6)) / 2`` after (epochs 10-24).

    Returns:
        ``step -> learning-rate multiplier``, for ``fit(lr_schedule=...)``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")

    def multiplier(step: int) -> float:
        progress = step / num_steps
        if progress < 0.2:
            return 0.01 + 0.99 * progress / 0.2
        if progress < 0.4:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (progress - 0.4) / 0.6))

    return multiplier


def train_map(
    model: nn.Module,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    steps: int,
    seed: int,
    lr: float = 3.5e-4,
    batch_size: int = 256,
    loss: str = "cosface",
    schedule: bool = True,
    checkpoint: Checkpoint | None = None,
    desc: str = "map",
) -> tuple[nn.Module, dict[str, list[float]]]:
    """Train a map by classifying embeddings into their origin ids through a proxy head.

    Each step draws ``batch_size`` distinct rows from the per-step generator of :func:`helpers.training.fit`,
    maps them, and minimises the cross-entropy of the head's logits: :func:`cosface_logits` against jointly
    trained Xavier-uniform proxies (``loss="cosface"``) or a linear classifier with bias
    (``loss="softmax"``). Adam (no weight decay) updates the map and the head together; the head is dropped
    at the end. The run is resumable through ``checkpoint`` and fully determined by ``seed`` (which also
    initialises the head) and the map's own initialisation.

    Args:
        model: a (B, n) -> (B, m) module, e.g. :class:`LinearMap`; trained in place.
        embeddings: (N, n) float training embeddings (origins and/or generated images).
        labels: (N,) origin id of each row, in [0, num_classes).
        num_classes: number of origin ids.
        steps: optimisation steps.
        seed: seeds the head and the per-step batches.
        lr: Adam learning rate.
        batch_size: rows per step, at most N.
        loss: ``"cosface"`` or ``"softmax"``.
        schedule: multiply ``lr`` by :func:`official_schedule` (else constant).
        checkpoint: where to save and resume from.
        desc: progress-bar label (the loss is appended).

    Returns:
        ``(model, history)``: the trained map (in eval mode) and ``{"loss": [...], "accuracy": [...]}``, the
        per-step loss and the proxy-classification accuracy on the batch.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    check_matrix(embeddings, "embeddings")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    _check_labels(labels, embeddings.shape[0], num_classes)
    if not 1 <= batch_size <= embeddings.shape[0]:
        raise ValueError(f"batch_size must be in [1, {embeddings.shape[0]}] (the number of rows), got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    parameter = next(model.parameters())
    embeddings = embeddings.detach().to(parameter.device, parameter.dtype)
    labels = labels.detach().to(parameter.device, torch.int64)
    with torch.no_grad():
        m = model(embeddings[:1]).shape[1]
    head = _ProxyClassifier(m, num_classes, loss, torch_generator(seed, _INIT_STREAM + 1)).to(parameter)
    trainee = _Trainee(model, head)
    optimizer = torch.optim.Adam(trainee.parameters(), lr=lr, weight_decay=0.0)

    def make_batch(step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randperm(embeddings.shape[0], generator=generator)[:batch_size].to(parameter.device)
        return embeddings[rows], labels[rows]

    def loss_fn(net: _Trainee, batch, generator) -> tuple[torch.Tensor, dict[str, float]]:
        z, y = batch
        logits = net.head.logits(net.map(z), y)
        accuracy = (logits.argmax(dim=1) == y).float().mean().item()
        return F.cross_entropy(logits, y), {"accuracy": accuracy}

    history = fit(
        trainee,
        optimizer,
        loss_fn,
        make_batch,
        steps,
        seed=seed,
        checkpoint=checkpoint,
        lr_schedule=official_schedule(steps) if schedule else None,
        desc=f"{desc} ({loss})",
    )
    return model, history


def extract(model: nn.Module, embeddings: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Map embeddings to features without gradients, in eval mode, batch by batch.

    Args:
        model: a (B, n) -> (B, m) module.
        embeddings: (N, n) embeddings.
        batch_size: rows per forward pass.

    Returns:
        (N, m) features on the CPU, in the model's dtype.
    """
    check_matrix(embeddings, "embeddings")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parameter = next(model.parameters())
    model.eval()
    with torch.no_grad():
        chunks = [
            model(chunk.to(parameter.device, parameter.dtype)).cpu() for chunk in embeddings.split(batch_size)
        ]
    return torch.cat(chunks)


# --------------------------------------------------------------------------------------------------------
# Theorem checks
# --------------------------------------------------------------------------------------------------------


def lemma1_residual(
    x0_latent: torch.Tensor,
    eps: torch.Tensor,
    eps_pred: torch.Tensor,
    alpha_bar_t: float | torch.Tensor,
    z0_pred: torch.Tensor | None = None,
) -> float:
    """Lemma 1 (Eq. 2, proof Eqs. 10-14): the one-step denoising error is a scaled noise-prediction error.

    With ``z_0 = E(o)`` the clean latent, the forward process (Eq. 12) gives
    ``z_t = √ᾱ_t z_0 + √(1 - ᾱ_t) ε``; one reverse step predicts (Eq. 13)
    ``z'_0 = (z_t - √(1 - ᾱ_t) ε_θ) / √ᾱ_t``; Lemma 1 states (Eq. 14)
    ``z'_0 - z_0 = √(1 - ᾱ_t) / √ᾱ_t · (ε - ε_θ)``.
    Both sides are computed independently, and the residual ``max |lhs - rhs| / max |rhs|`` is returned. The
    left side uses ``z0_pred`` when given, the ``z'_0`` a sampler actually computed (e.g. a diffusers scheduler's
    ``pred_original_sample``, from the ``z_t`` of its own ``add_noise``): the check then tests that code against
    the lemma. Otherwise ``z'_0`` is formed here through ``z_t``, and the residual is rounding only: ~1e-7 in
    float32, ~1e-16 in float64, larger when ``ε_θ ≈ ε`` since the left side then cancels.

    Args:
        x0_latent: (B, ...) clean latents ``z_0``.
        eps: noise ``ε``, same shape.
        eps_pred: predicted noise ``ε_θ(z_t, t, c)``, same shape.
        alpha_bar_t: ``ᾱ_t`` in (0, 1): a float, a 0-d tensor or a (B,) tensor (one per sample), e.g.
            ``scheduler.alphas_cumprod[t]`` of a diffusers scheduler; cast to the latents' dtype.
        z0_pred: the sampler's one-step estimate ``z'_0``, same shape as ``x0_latent``, or ``None``.

    Returns:
        The maximum relative residual, a Python float.
    """
    given = {"eps": eps, "eps_pred": eps_pred} | ({} if z0_pred is None else {"z0_pred": z0_pred})
    for name, x in given.items():
        if x.shape != x0_latent.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)} but x0_latent has {tuple(x0_latent.shape)}")
    for name, x in {"x0_latent": x0_latent, **given}.items():
        if not x.is_floating_point() or not torch.isfinite(x).all():
            raise ValueError(f"{name} must be a finite floating-point tensor")
    alpha_bar = torch.as_tensor(alpha_bar_t, dtype=x0_latent.dtype, device=x0_latent.device)
    if alpha_bar.ndim == 1 and x0_latent.ndim >= 1 and alpha_bar.shape[0] == x0_latent.shape[0]:
        alpha_bar = alpha_bar.reshape(-1, *([1] * (x0_latent.ndim - 1)))
    elif alpha_bar.ndim != 0:
        raise ValueError(f"alpha_bar_t must be a scalar or one value per sample, got shape {tuple(alpha_bar.shape)}")
    if not torch.isfinite(alpha_bar).all() or not ((alpha_bar > 0) & (alpha_bar < 1)).all():
        raise ValueError("alpha_bar_t must lie in the open interval (0, 1)")
    if z0_pred is None:
        z_t = alpha_bar.sqrt() * x0_latent + (1 - alpha_bar).sqrt() * eps
        z0_pred = (z_t - (1 - alpha_bar).sqrt() * eps_pred) / alpha_bar.sqrt()
    lhs = z0_pred.to(x0_latent.dtype) - x0_latent
    rhs = (1 - alpha_bar).sqrt() / alpha_bar.sqrt() * (eps - eps_pred)
    scale = rhs.abs().max()
    if scale == 0:
        raise ValueError("eps_pred equals eps everywhere: both sides are zero and the residual is undefined")
    return ((lhs - rhs).abs().max() / scale).item()


def null_space_map(differences: torch.Tensor, m: int) -> torch.Tensor:
    """Theorem 1's constructive ``W`` (via Lemma 2): the ``m`` least-excited right-singular directions of ``T``.

    With ``T = U Σ V^*`` (rows of ``T`` = differences ``E(g) - E(o)``), the columns of ``V`` with the ``m``
    smallest singular values (zero ones included when N < n) span a near-null space of ``T``, and
    ``W = V[:, -m:]`` satisfies ``‖T W‖_F = sqrt(Σ of the m smallest σ_i²)``: Eq. 1 holds up to exactly that.
    ``W`` has orthonormal columns, so it is full rank as Lemma 2 requires.

    Args:
        differences: (N, n) matrix ``T``.
        m: number of output dimensions, ``1 <= m <= n``.

    Returns:
        (n, m) ``W``, in the dtype of ``T``.
    """
    check_matrix(differences, "differences")
    n = differences.shape[1]
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n:
        raise ValueError(f"m must be an integer in [1, {n}] (the embedding dimension), got {m!r}")
    _, _, vh = torch.linalg.svd(differences, full_matrices=True)
    return vh[-m:].T.contiguous()


def discriminant_map(differences: torch.Tensor, origins: torch.Tensor, m: int, ridge: float = 1e-6) -> torch.Tensor:
    """A ``W`` that keeps origins apart while hiding the generation shift: a generalised eigenproblem.

    Theorem 1 needs ``T W ≈ 0`` *and* ``E_o W`` spread out. The near-null space of ``T`` alone
    (:func:`null_space_map`) can fall where the origins do not vary either. Here ``W`` holds the ``m`` top
    generalised eigenvectors of ``C_o v = λ C_T v`` with ``C_o`` the covariance of the origins and
    ``C_T = TᵀT / N + ridge · tr(C_T)/n · I``: the directions with the largest ratio of origin spread to shift
    (Fisher's discriminant with origins as classes). Among maps with ``C_T``-orthonormal columns, it maximises
    ``tr(Wᵀ C_o W)``, i.e. the origins' spread against a fixed amount of shift, and its column space is the rank-m
    subspace with the smallest :func:`invariant_ratio` (the mean of the m smallest ``1/λ``; up to the ridge).

    Args:
        differences: (N, n) ``T``.
        origins: (M, n) origin embeddings.
        m: number of columns, ``1 <= m <= n``.
        ridge: relative ridge on ``C_T`` (it must be positive definite).

    Returns:
        (n, m) ``W`` in float64, columns ``C_T``-orthonormal.
    """
    check_matrix(differences, "differences")
    check_matrix(origins, "origins", columns=differences.shape[1])
    n = differences.shape[1]
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n:
        raise ValueError(f"m must be an integer in [1, {n}] (the embedding dimension), got {m!r}")
    if not ridge > 0:
        raise ValueError(f"ridge must be positive, got {ridge}")
    t = differences.double()
    centred = origins.double() - origins.double().mean(0)
    shift = t.T @ t / len(t)
    shift = shift + ridge * torch.trace(shift) / n * torch.eye(n, dtype=torch.float64)
    spread = centred.T @ centred / max(len(centred) - 1, 1)
    # Whiten by the shift (Cholesky), then an ordinary symmetric eigenproblem: C_T = L Lᵀ, A = L⁻¹ C_o L⁻ᵀ.
    lower = torch.linalg.cholesky(shift)
    whitened = torch.linalg.solve_triangular(lower, spread, upper=False)
    whitened = torch.linalg.solve_triangular(lower, whitened.T, upper=False)
    _, vectors = torch.linalg.eigh((whitened + whitened.T) / 2)
    return torch.linalg.solve_triangular(lower.T, vectors[:, -m:], upper=True)


def invariant_ratio(differences: torch.Tensor, origins: torch.Tensor, W: torch.Tensor) -> float:
    """How large the generation shift is against the origins' spread inside the column space of ``W`` (Theorem 1).

    With ``C_T = TᵀT / N`` (the shift's second moment) and ``C_o`` the covariance of the origins, the ratio is the
    mean generalised eigenvalue of the pair ``(Wᵀ C_T W, Wᵀ C_o W)``::

        r(W) = tr((Wᵀ C_o W)⁻¹ Wᵀ C_T W) / m

    Eq. 1 asks for ``T W ≈ 0`` while ``E_o W`` keeps the origins apart: ``r`` is small exactly then. It depends only
    on the subspace spanned by ``W``'s columns (``W G`` gives the same ``r`` for any invertible ``G``), so it
    cannot be moved by reweighting or rotating columns, and for ``m = n`` every invertible ``W`` scores the same
    ``tr(C_o⁻¹ C_T) / n``: compare maps at a rank ``m < n``. The subspace minimising it is that of
    :func:`discriminant_map`; a random subspace scores near the whole space's value.

    Args:
        differences: (N, n) ``T``, rows ``E(g) - E(o)`` (any number of translations per origin).
        origins: (M, n) origin embeddings.
        W: (n, m) map of rank m (its column space is what is measured).

    Returns:
        ``r``, a Python float (computed in float64).
    """
    check_matrix(differences, "differences")
    check_matrix(origins, "origins", columns=differences.shape[1])
    _check_map(W, "W", differences.shape[1])
    t, o, w = differences.double(), origins.double(), W.double()
    mapped_shift = t @ w
    mapped_origins = (o - o.mean(0)) @ w
    shift_moment = mapped_shift.T @ mapped_shift / len(t)
    spread = mapped_origins.T @ mapped_origins / max(len(o) - 1, 1)
    return (torch.trace(torch.linalg.solve(spread, shift_moment)) / w.shape[1]).item()


def top_input_directions(W: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` input directions that ``z -> z W`` amplifies most: the top-``k`` left singular vectors of ``W``.

    Args:
        W: (n, m) map.
        k: ``1 <= k <= min(n, m)``.

    Returns:
        (n, k) orthonormal columns, in float64.
    """
    check_matrix(W, "W")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(W.shape):
        raise ValueError(f"k must be an integer in [1, {min(W.shape)}], got {k!r}")
    left, _, _ = torch.linalg.svd(W.double(), full_matrices=False)
    return left[:, :k]


def subspace_overlap(A: torch.Tensor, B: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between the column spaces of ``A`` and ``B``.

    ``‖Q_Aᵀ Q_B‖_F² / k`` with ``Q`` orthonormal bases of the two k-dimensional spaces: 1 for the same space, 0 for
    orthogonal ones, ``k / n`` on average for two random k-dimensional subspaces of R^n.

    Args:
        A, B: (n, k) matrices of rank k.
    """
    check_matrix(A, "A")
    check_matrix(B, "B", columns=A.shape[1])
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"A has {A.shape[0]} rows but B has {B.shape[0]}")
    qa, _ = torch.linalg.qr(A.double())
    qb, _ = torch.linalg.qr(B.double())
    return (torch.linalg.norm(qa.T @ qb) ** 2 / A.shape[1]).item()


def effective_dimension(embeddings: torch.Tensor, fraction: float) -> int:
    """The number of principal directions that hold ``fraction`` of the centred variance of ``embeddings`` (N, n)."""
    check_matrix(embeddings, "embeddings")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    x = embeddings.double() - embeddings.double().mean(0)
    variance = torch.linalg.svdvals(x) ** 2
    cumulative = torch.cumsum(variance, 0) / variance.sum()
    return min(int((cumulative < fraction - 1e-12).sum().item()) + 1, len(variance))


def singular_value_cosine(W1: torch.Tensor, W2: torch.Tensor) -> float:
    """Observation 1 (Eq. 4): ``cos φ = v_1 · v_2 / (‖v_1‖ ‖v_2‖)`` between the singular-value vectors.

    ``v_i`` lists the singular values of ``W_i`` in decreasing order (the paper reports cos φ > 0.99 for
    maps trained on different diffusion models). The cosine ignores a common scale ``α`` (``Σ_1 = α Σ_2``).

    Args:
        W1: (n, m) map.
        W2: (n', m') map with ``min(n', m') = min(n, m)`` singular values.

    Returns:
        ``cos φ`` in [0, 1], a Python float.
    """
    check_matrix(W1, "W1")
    check_matrix(W2, "W2")
    v1 = torch.linalg.svdvals(W1.double())
    v2 = torch.linalg.svdvals(W2.double())
    if v1.shape != v2.shape:
        raise ValueError(f"W1 has {v1.numel()} singular values but W2 has {v2.numel()}")
    return F.cosine_similarity(v1, v2, dim=0).item()


# --------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------


def _default_init(weight: nn.Parameter, bias: nn.Parameter | None, generator: torch.Generator) -> None:
    """``nn.Linear.reset_parameters`` drawn from ``generator``: the ``(out, in)`` weight Kaiming-uniform (a = √5,
    i.e. U(±1/√in)), then the bias (if any) U(±1/√in)."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if bias is not None:
        bound = 1 / math.sqrt(weight.shape[1])
        nn.init.uniform_(bias, -bound, bound, generator=generator)


def _check_dims(n: int, m: int) -> None:
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if m > n:
        raise ValueError(f"m = {m} exceeds n = {n}: the map must not raise the dimension")


def _check_map(W: torch.Tensor, name: str, n: int) -> None:
    """Require an (n, m) map with m <= n."""
    check_matrix(W, name)
    if W.shape[0] != n:
        raise ValueError(f"{name} has {W.shape[0]} rows but the embeddings have dimension {n}")
    if W.shape[1] > n:
        raise ValueError(f"{name} has m = {W.shape[1]} > n = {n} columns")


def _check_labels(labels: torch.Tensor, rows: int, num_classes: int) -> None:
    """Require (rows,) integer labels in [0, num_classes)."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.shape[0] != rows:
        raise ValueError(f"labels must be a 1-D tensor of length {rows}, got {getattr(labels, 'shape', labels)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
