"""Unsupervised synthetic-image attribution by per-domain Infomax heads (A&D), and the theory behind it.

Paper: Liu, Chen, Sun, Liu, Zhang, "Unsupervised Synthetic Image Attribution: Alignment and Disentanglement"
(A&D), arXiv:2601.22663. No official code exists; the substrate is the AbC benchmark
(PeterWang512/GenDataAttribution): one identity-initialised linear head per domain on frozen backbone
features, cosine retrieval.

Setting: a frozen self-supervised backbone embeds synthetic images (domain S) and training exemplars
(domain E). Two linear heads ``H_S`` and ``H_E`` (d, d) map each centred feature ``z`` to ``H z``; they are
trained **without pairs**, each by Infomax ICA on its own domain, plus an orthogonality penalty:

    L = L_IM(H_S) + L_IM(H_E) + λ (‖H_Sᵀ H_S − I‖²_F + ‖H_Eᵀ H_E − I‖²_F)
    L_IM(H) = −log|det H| − (1/N) Σ_n Σ_i log p(y_{n,i}),   y_n = H z_n,   log p(u) = −2 log cosh u

(``log p`` up to its constant ``−log 2``: ``p(u) = sech²(u) / 2`` is the logistic density of scale 1/2, so
this is the Bell–Sejnowski Infomax with the tanh score). The paper's argument: CCA, the supervised answer,
splits into within-domain whitening (which ICA provides) and cross-domain alignment (which contrastive
backbones roughly provide already); identity initialisation of both heads keeps the two domains' component
orders aligned, while different random initialisations scramble them.

What this module provides:

* the loss: :func:`infomax_loss`, :func:`orthogonality_penalty`, :func:`ad_loss` (reference forms, autograd),
  and :func:`head_objective` (the same value with a closed-form gradient, used for training); the ablation's
  :func:`anchor_penalty` ``‖H − I‖²_F`` in place of the orthogonality penalty, either picked by name with
  :func:`head_penalty` (:data:`PENALTIES`);
* the heads and their training: :class:`Unmixing` (one domain), :class:`Heads` (two domains),
  :func:`train_infomax` and :func:`train_heads` (through :func:`helpers.training.fit`: per-step generators,
  resumable checkpoints, a progress bar);
* per-domain ZCA whitening: :func:`whiten`, :func:`apply_whitening`;
* source-recovery scores: :func:`mean_corr_coef` (MCC) and :func:`amari_distance`;
* the CCA decomposition: :func:`cca_decomposition`;
* a planted problem with a known answer: :func:`planted_two_domain`.

Conventions: data matrices hold one sample per **row**, (N, d); matrices act on column vectors as in the
paper (``y_n = H z_n``, ``z_n = A s_n``), so in row form ``Y = Z Hᵀ`` and ``Z = S Aᵀ``; the global system
of a head on a mixture is ``P = H A`` (what :func:`amari_distance` scores).

Choices where the paper is silent: the tanh prior (not the logistic one, nor extended Infomax); inputs
centred by each domain's full-data mean but not whitened; Adam on the Euclidean gradient (not the natural
gradient of MNE's Infomax), in float32; minibatches drawn independently per domain (the domains are unpaired
and may differ in size); "random" initialisation = Haar-random orthogonal matrices (so that only the
mismatch, not the scale, differs from the identity).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import FastICA
from torch import nn

from helpers.cache import Checkpoint
from helpers.checks import check_matrix
from helpers.runtime import torch_generator
from helpers.training import fit

UNMIXING_INITS = ("identity", "random")
HEAD_INITS = ("identity", "random", "same_random")
# the term that keeps each head near where it started: the paper's ‖HᵀH − I‖² (rotations, permutations included, cost
# nothing) or the ablation ‖H − I‖², which also resists a drift towards another order
PENALTIES = ("orthogonality", "anchor")
DOMAINS = ("s", "e")
# Stream of the seed generators used for initialisation and data; fit's per-step streams are 0 .. steps - 1.
_INIT_STREAM = 2**40
_DATA_STREAM = 2**41
_LOG2 = math.log(2.0)

ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------------


def log_cosh(u: torch.Tensor) -> torch.Tensor:
    """``log cosh u``, stable for large ``|u|``: ``u + softplus(−2u) − log 2``."""
    return u + F.softplus(-2.0 * u) - _LOG2


def infomax_loss(y: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Infomax ICA loss (negative log-likelihood per sample, up to a constant) of one domain.

    ``L_IM = −log|det H| − (1/N) Σ_n Σ_i log p(y_{n,i})`` with ``log p(u) = −2 log cosh u``, i.e.
    ``L_IM = −log|det H| + (2/N) Σ_n Σ_i log cosh y_{n,i}``.

    Args:
        y: (N, d) outputs ``y = z Hᵀ`` of the head on centred features ``z``.
        H: (d, d) the head.

    Returns:
        The scalar loss.
    """
    _check_square(H, "H")
    check_matrix(y, "y", columns=H.shape[0])
    _, logabsdet = torch.linalg.slogdet(H)
    return -logabsdet + 2.0 * log_cosh(y).sum() / y.shape[0]


def orthogonality_penalty(H: torch.Tensor) -> torch.Tensor:
    """``‖Hᵀ H − I‖²_F`` for a (d, d) matrix ``H``: zero exactly when ``H`` is orthogonal."""
    _check_square(H, "H")
    gram = H.T @ H
    return (gram - torch.eye(H.shape[0], dtype=H.dtype, device=H.device)).pow(2).sum()


def anchor_penalty(H: torch.Tensor) -> torch.Tensor:
    """``‖H − I‖²_F`` for a (d, d) matrix ``H``: zero only at the identity, so unlike :func:`orthogonality_penalty` a
    rotation or a permutation of the outputs costs something (an ablation; the paper's penalty is orthogonality)."""
    _check_square(H, "H")
    return (H - torch.eye(H.shape[0], dtype=H.dtype, device=H.device)).pow(2).sum()


def head_penalty(H: torch.Tensor, penalty: str = "orthogonality") -> torch.Tensor:
    """:func:`orthogonality_penalty` or :func:`anchor_penalty` of ``H``, by name (:data:`PENALTIES`)."""
    return _penalty_function(penalty)(H)


def _penalty_function(penalty: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The penalty named ``penalty`` (one of :data:`PENALTIES`); ValueError for any other name."""
    _check_penalty(penalty)
    return orthogonality_penalty if penalty == "orthogonality" else anchor_penalty


def ad_loss(z_s: torch.Tensor, z_e: torch.Tensor, H_s: torch.Tensor, H_e: torch.Tensor, lam: float,
            penalty: str = "orthogonality") -> torch.Tensor:
    """The A&D objective on centred features of both domains.

    ``L = L_IM(H_S; z_S) + L_IM(H_E; z_E) + λ (‖H_Sᵀ H_S − I‖²_F + ‖H_Eᵀ H_E − I‖²_F)`` (``penalty="anchor"``:
    ``‖H − I‖²_F`` in place of ``‖Hᵀ H − I‖²_F``).

    Args:
        z_s: (N_s, d) centred synthetic-domain features (subtract the domain mean first; :func:`train_heads`
            uses each domain's full-data mean).
        z_e: (N_e, d) centred exemplar-domain features (unpaired with ``z_s``; ``N_e`` may differ).
        H_s: (d, d) synthetic-domain head.
        H_e: (d, d) exemplar-domain head.
        lam: ``λ >= 0``, weight of the penalty.
        penalty: one of :data:`PENALTIES`.

    Returns:
        The scalar loss.
    """
    _check_lam(lam)
    penalty_of = _penalty_function(penalty)
    _check_square(H_s, "H_s")
    _check_square(H_e, "H_e")
    if H_s.shape != H_e.shape:
        raise ValueError(f"H_s and H_e must have the same shape, got {tuple(H_s.shape)} and {tuple(H_e.shape)}")
    check_matrix(z_s, "z_s", columns=H_s.shape[0])
    check_matrix(z_e, "z_e", columns=H_s.shape[0])
    loss = infomax_loss(z_s @ H_s.T, H_s) + infomax_loss(z_e @ H_e.T, H_e)
    if lam > 0:
        loss = loss + lam * (penalty_of(H_s) + penalty_of(H_e))
    return loss


class _HeadObjective(torch.autograd.Function):
    """``L_IM(H; z) + λ ‖Hᵀ H − I‖²_F`` with its gradient in closed form, for training.

    Same value as ``infomax_loss(z @ H.T, H) + lam * orthogonality_penalty(H)``, 1.4–1.6 times as fast as
    autograd at d = 512: the d³ work is one Gram matrix ``G = Hᵀ H``, its Cholesky factor ``L`` and inverse,
    and one product, with

        log|det H| = Σ_i log L_ii,    ∂L/∂H = (2/N) tanh(Y)ᵀ z + H (4λ (G − I) − G⁻¹)

    (``H G⁻¹ = H⁻ᵀ`` is the gradient of ``log|det H|``). With ``penalty="anchor"`` the penalty is ``‖H − I‖²_F``,
    gradient ``2λ (H − I)``. Forward returns ``(loss, L_IM, penalty)``; only the loss is differentiable.
    """

    @staticmethod
    def forward(ctx, H: torch.Tensor, z: torch.Tensor, lam: float, penalty_name: str):
        y = z @ H.T
        data = 2.0 * log_cosh(y).sum() / z.shape[0]
        data_grad = (2.0 / z.shape[0]) * (torch.tanh(y).T @ z)
        gram = H.T @ H
        logabsdet, gram_inverse = _logdet_and_inverse_gram(H, gram)
        identity = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        if penalty_name == "orthogonality":
            penalty = (gram - identity).pow(2).sum()
            penalty_grad = 4.0 * lam * (H @ (gram - identity))
        else:
            penalty = (H - identity).pow(2).sum()
            penalty_grad = 2.0 * lam * (H - identity)
        infomax = data - logabsdet
        ctx.save_for_backward(data_grad - H @ gram_inverse + penalty_grad)
        ctx.mark_non_differentiable(infomax, penalty)
        return infomax + lam * penalty, infomax, penalty

    @staticmethod
    def backward(ctx, grad_loss, _grad_infomax, _grad_penalty):
        (grad,) = ctx.saved_tensors
        return grad_loss * grad, None, None, None


def head_objective(H: torch.Tensor, z: torch.Tensor, lam: float,
                   penalty: str = "orthogonality") -> tuple[torch.Tensor, float, float]:
    """One head's training objective ``L_IM(H; z) + λ ‖Hᵀ H − I‖²_F`` with a closed-form gradient.

    Args:
        H: (d, d) the head (a parameter).
        z: (N, d) centred features.
        lam: ``λ >= 0``.
        penalty: one of :data:`PENALTIES` (``"anchor"``: ``‖H − I‖²_F``).

    Returns:
        ``(loss, L_IM, penalty)``: the differentiable scalar loss, and its two terms as floats.
    """
    _check_lam(lam)
    _check_penalty(penalty)
    _check_square(H, "H")
    check_matrix(z, "z", columns=H.shape[0], finite=False)
    loss, infomax, penalty = _HeadObjective.apply(H, z.to(H), float(lam), penalty)
    return loss, infomax.item(), penalty.item()


def _logdet_and_inverse_gram(H: torch.Tensor, gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log|det H|, (Hᵀ H)⁻¹)`` through the Cholesky factor of ``gram = Hᵀ H``.

    The Gram matrix squares the condition number, so when the factor fails or its diagonal spans more than
    a factor of 100 (``cond(H) >= 100``) the factorisation is redone in float64 from ``H``.
    """
    if gram.dtype != torch.float64:
        factor, info = torch.linalg.cholesky_ex(gram)
        diagonal = torch.diagonal(factor)
        if info.item() == 0 and (diagonal.max() <= 100.0 * diagonal.min()).item():
            return torch.log(diagonal).sum(), torch.cholesky_inverse(factor)
    H64 = H.double()
    factor, info = torch.linalg.cholesky_ex(H64.T @ H64)
    if info.item() != 0:
        raise ValueError("the head became singular (Hᵀ H is not positive definite): lower lr or raise lam")
    logabsdet, inverse = torch.log(torch.diagonal(factor)).sum(), torch.cholesky_inverse(factor)
    return logabsdet.to(H.dtype), inverse.to(H.dtype)


# --------------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------------


def random_orthogonal(d: int, generator: torch.Generator) -> torch.Tensor:
    """A (d, d) Haar-random orthogonal matrix (QR of a Gaussian matrix with the signs of ``diag R`` fixed)."""
    _check_dim(d)
    gaussian = torch.randn(d, d, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))).float()


class Unmixing(nn.Module):
    """One domain's linear head: ``y = H (z − μ)``, with ``H`` (d, d) trained and ``μ`` (d,) a buffer.

    Args:
        d: feature dimension.
        init: ``"identity"`` (``H = I``) or ``"random"`` (a Haar-random orthogonal matrix from ``seed``).
        seed: seeds the random initialisation.
    """

    def __init__(self, d: int, init: str = "identity", seed: int = 0):
        super().__init__()
        _check_dim(d)
        if init not in UNMIXING_INITS:
            raise ValueError(f"init must be one of {UNMIXING_INITS}, got {init!r}")
        start = torch.eye(d) if init == "identity" else random_orthogonal(d, torch_generator(seed, _INIT_STREAM))
        self.H = nn.Parameter(start)
        self.register_buffer("mean", torch.zeros(d))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, d) features → (N, d) outputs ``(z − μ) Hᵀ``."""
        check_matrix(z, "z", columns=self.H.shape[0], finite=False)
        return (z.to(self.H) - self.mean) @ self.H.T


class Heads(nn.Module):
    """The two A&D heads: ``z̃_S = H_S (z_S − μ_S)`` and ``z̃_E = H_E (z_E − μ_E)``.

    Args:
        d: feature dimension.
        init: ``"identity"`` (both ``I``, the paper's choice), ``"random"`` (each its own Haar-random
            orthogonal matrix: mismatched, the ablation that "fails completely") or ``"same_random"`` (one
            Haar-random orthogonal matrix for both: random but matched).
        seed: seeds the random initialisations.
    """

    def __init__(self, d: int, init: str = "identity", seed: int = 0):
        super().__init__()
        _check_dim(d)
        if init not in HEAD_INITS:
            raise ValueError(f"init must be one of {HEAD_INITS}, got {init!r}")
        if init == "identity":
            start_s = start_e = torch.eye(d)
        elif init == "same_random":
            start_s = start_e = random_orthogonal(d, torch_generator(seed, _INIT_STREAM))
        else:
            start_s = random_orthogonal(d, torch_generator(seed, _INIT_STREAM))
            start_e = random_orthogonal(d, torch_generator(seed, _INIT_STREAM + 1))
        self.H_s = nn.Parameter(start_s.clone())
        self.H_e = nn.Parameter(start_e.clone())
        self.register_buffer("mean_s", torch.zeros(d))
        self.register_buffer("mean_e", torch.zeros(d))

    def matrix(self, domain: str) -> torch.Tensor:
        """``H_S`` (``domain="s"``) or ``H_E`` (``"e"``), (d, d)."""
        _check_domain(domain)
        return self.H_s if domain == "s" else self.H_e

    def map(self, z: torch.Tensor, domain: str) -> torch.Tensor:
        """Map (N, d) features of ``domain`` (``"s"`` synthetic, ``"e"`` exemplar) to ``(z − μ) Hᵀ``, (N, d)."""
        _check_domain(domain)
        H = self.matrix(domain)
        check_matrix(z, "z", columns=H.shape[0], finite=False)
        mean = self.mean_s if domain == "s" else self.mean_e
        return (z.to(H) - mean) @ H.T


def train_heads(
    z_s: torch.Tensor,
    z_e: torch.Tensor,
    *,
    lam: float,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    init: str = "identity",
    penalty: str = "orthogonality",
    record_every: int | None = None,
    eval_fn: Callable[[Heads], float] | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 250,
    device: str | torch.device = "cpu",
) -> tuple[Heads, dict[str, list[float]]]:
    """Train the two A&D heads without pairs: minimise :func:`ad_loss` by Adam on minibatches.

    Each domain is centred by its own full-data mean (stored in the heads as ``mean_s``/``mean_e``). Each
    step draws ``batch_size`` distinct rows of each domain, independently (the domains are unpaired), from
    the per-step generator of :func:`helpers.training.fit`; a domain with fewer rows than ``batch_size``
    is used whole. An epoch is ``ceil(max(N_s, N_e) / batch_size)`` steps. The run is fully determined by
    ``seed`` and resumable through ``checkpoint``.

    Args:
        z_s: (N_s, d) synthetic-domain features.
        z_e: (N_e, d) exemplar-domain features.
        lam: ``λ >= 0``, weight of the penalty.
        epochs: number of epochs, >= 1.
        batch_size: rows per domain per step, >= 1.
        lr: Adam learning rate, > 0.
        seed: seeds the initialisation (for random inits) and the per-step batches.
        init: see :class:`Heads`.
        penalty: one of :data:`PENALTIES`: the paper's ``‖Hᵀ H − I‖²`` or the anchor ``‖H − I‖²`` (an ablation).
        record_every: steps between calls of ``eval_fn`` (default: once per epoch).
        eval_fn: ``heads -> float`` (e.g. retrieval mAP), called under ``no_grad`` after 0, ``record_every``,
            ``2 record_every``, … updates and after the last one.
        checkpoint: where to save and resume from.
        checkpoint_every: steps between checkpoints.
        device: where to train.

    Returns:
        ``(heads, history)``: the trained heads (eval mode, on ``device``) and ``{"loss", "infomax_s",
        "infomax_e", "penalty": [value per step]}``, plus ``"eval_step"`` (updates done) and
        ``"eval"`` (the value of ``eval_fn``, which must not be nan) when ``eval_fn`` is given.
        ``"penalty"`` is the unweighted penalty sum of both heads. Training runs in float32.
    """
    check_matrix(z_s, "z_s")
    check_matrix(z_e, "z_e")
    if z_s.shape[1] != z_e.shape[1]:
        raise ValueError(f"z_s and z_e must have the same dimension, got {z_s.shape[1]} and {z_e.shape[1]}")
    heads = Heads(z_s.shape[1], init=init, seed=seed)
    return heads, _train(heads, [z_s, z_e], ["H_s", "H_e"], ["mean_s", "mean_e"], ["s", "e"], lam=lam,
                         penalty=penalty, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                         record_every=record_every, eval_fn=eval_fn, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every, device=device,
                         desc=f"A&D heads (λ={lam:g}{'' if penalty == 'orthogonality' else ', ' + penalty})")


def train_infomax(
    z: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    lam: float = 0.0,
    init: str = "identity",
    record_every: int | None = None,
    eval_fn: Callable[[Unmixing], float] | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 250,
    device: str | torch.device = "cpu",
) -> tuple[Unmixing, dict[str, list[float]]]:
    """Single-domain Infomax ICA: minimise ``L_IM(H; z − μ) + λ ‖Hᵀ H − I‖²_F`` by Adam on minibatches.

    Same training as :func:`train_heads` (one domain, one head; see there for the arguments). With whitened
    inputs and ``λ = 0`` this is plain Infomax ICA with the tanh score, which recovers super-Gaussian
    sources up to permutation, sign and scale.

    Returns:
        ``(unmixing, history)`` with history keys ``"loss"``, ``"infomax"``, ``"penalty"`` (and
        ``"eval_step"``, ``"eval"`` when ``eval_fn`` is given).
    """
    check_matrix(z, "z")
    unmixing = Unmixing(z.shape[1], init=init, seed=seed)
    return unmixing, _train(unmixing, [z], ["H"], ["mean"], [""], lam=lam, penalty="orthogonality", epochs=epochs,
                            batch_size=batch_size, lr=lr, seed=seed, record_every=record_every, eval_fn=eval_fn,
                            checkpoint=checkpoint, checkpoint_every=checkpoint_every, device=device,
                            desc=f"Infomax (λ={lam:g})")


def _train(
    module: nn.Module,
    data: list[torch.Tensor],
    matrices: list[str],
    means: list[str],
    suffixes: list[str],
    *,
    lam: float,
    penalty: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    record_every: int | None,
    eval_fn: Callable[[nn.Module], float] | None,
    checkpoint: Checkpoint | None,
    checkpoint_every: int,
    device: str | torch.device,
    desc: str,
) -> dict[str, list[float]]:
    """Shared loop: centre each domain, then ``Σ_k L_IM(H_k) + λ Σ_k ‖H_kᵀ H_k − I‖²`` (or the anchor penalty)
    through ``fit``."""
    _check_lam(lam)
    _check_penalty(penalty)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if record_every is not None and (isinstance(record_every, bool) or not isinstance(record_every, int)
                                     or record_every < 1):
        raise ValueError(f"record_every must be a positive integer or None, got {record_every!r}")
    module.to(device)
    sizes = [x.shape[0] for x in data]
    steps_per_epoch = math.ceil(max(sizes) / batch_size)
    num_steps = epochs * steps_per_epoch
    every = record_every if record_every is not None else steps_per_epoch
    centred = []
    with torch.no_grad():
        for x, mean_name in zip(data, means, strict=True):
            x = x.detach().to(device, torch.float32)
            mean = x.mean(dim=0)
            getattr(module, mean_name).copy_(mean)
            centred.append(x - mean)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    names = [f"infomax_{s}" if s else "infomax" for s in suffixes]

    def make_batch(step: int, generator: torch.Generator) -> tuple[int, list[torch.Tensor]]:
        batch = []
        for x in centred:
            if x.shape[0] <= batch_size:
                batch.append(x)
            else:
                rows = torch.randperm(x.shape[0], generator=generator)[:batch_size].to(device)
                batch.append(x[rows])
        return step, batch

    def loss_fn(net: nn.Module, step_batch, generator) -> tuple[torch.Tensor, dict[str, float]]:
        step, batch = step_batch
        logs: dict[str, float] = {}
        if eval_fn is not None:
            # Before this step's update: the heads after ``step`` updates.
            logs["eval"] = _evaluate(eval_fn, net) if step % every == 0 else math.nan
        total = torch.zeros((), device=device)
        penalty_sum = 0.0
        for x, matrix_name, name in zip(batch, matrices, names, strict=True):
            loss, logs[name], one_penalty = head_objective(getattr(net, matrix_name), x, lam, penalty)
            total = total + loss
            penalty_sum += one_penalty
        logs["penalty"] = penalty_sum
        return total, logs

    history = fit(module, optimizer, loss_fn, make_batch, num_steps, seed=seed, checkpoint=checkpoint,
                  checkpoint_every=checkpoint_every, desc=desc)
    if eval_fn is not None:
        per_step = history.pop("eval")
        history["eval_step"] = [float(step) for step, value in enumerate(per_step) if not math.isnan(value)]
        history["eval"] = [value for value in per_step if not math.isnan(value)]
        history["eval_step"].append(float(num_steps))
        history["eval"].append(_evaluate(eval_fn, module))
    return history


def _evaluate(eval_fn: Callable[[nn.Module], float], module: nn.Module) -> float:
    with torch.no_grad():
        value = float(eval_fn(module))
    if math.isnan(value):
        raise ValueError("eval_fn returned nan")
    return value


# --------------------------------------------------------------------------------------------------------
# Whitening
# --------------------------------------------------------------------------------------------------------


def whiten(z: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """ZCA whitening of one domain: ``ẑ = (z − μ) W`` with ``W = C^{-1/2} = V diag((λ + ε λ̄)^{-1/2}) Vᵀ``.

    ``C = (1/N) Σ_n (z_n − μ)(z_n − μ)ᵀ = V diag(λ) Vᵀ`` is the (biased) covariance and ``λ̄`` its mean eigenvalue,
    so ``ẑ`` has identity covariance (exactly ``V diag(λ / (λ + ε λ̄)) Vᵀ``). ``ε`` is relative to the features'
    scale: whitening ``c z`` gives the same ``ẑ`` for every ``c > 0``. ZCA is the symmetric whitening: of all
    whitening maps it moves the data least, so it keeps the feature axes (and a cross-domain alignment) as far as
    possible.
    Computed in float64; returned in ``z``'s dtype.

    Args:
        z: (N, d) features of one domain, N >= 2.
        eps: ``ε >= 0``; ``ε λ̄`` is added to the eigenvalues (a rank-deficient covariance needs ``ε > 0``).

    Returns:
        ``(ẑ, (μ, W))``: the (N, d) whitened features, and the (d,) mean and the symmetric (d, d) ``W`` to
        whiten new data of the same domain with :func:`apply_whitening`.
    """
    check_matrix(z, "z")
    if z.shape[0] < 2:
        raise ValueError(f"whitening needs at least 2 rows, got {z.shape[0]}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    x = z.detach().to(torch.float64)
    mean = x.mean(dim=0)
    centred = x - mean
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / x.shape[0])
    eigenvalues = eigenvalues.clamp_min(0.0)
    eigenvalues = eigenvalues + eps * eigenvalues.mean()
    if (eigenvalues <= 0).any():
        raise ValueError("the covariance is singular: pass eps > 0")
    W = (eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T
    return (centred @ W).to(z.dtype), (mean.to(z.dtype), W.to(z.dtype))


def apply_whitening(z: torch.Tensor, mean: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``(z − μ) W`` for (N, d) features, with ``(μ, W)`` from :func:`whiten`."""
    _check_square(W, "W")
    check_matrix(z, "z", columns=W.shape[0], finite=False)
    if mean.shape != (W.shape[0],):
        raise ValueError(f"mean must have shape ({W.shape[0]},), got {tuple(mean.shape)}")
    return (z - mean.to(z)) @ W.to(z)


# --------------------------------------------------------------------------------------------------------
# Source-recovery scores
# --------------------------------------------------------------------------------------------------------


def mean_corr_coef(true: ArrayLike, est: ArrayLike) -> float:
    """Mean correlation coefficient (MCC) between true and estimated sources.

    ``MCC = (1/d) Σ_{(i, j) ∈ M} |ρ(s_i, ŝ_j)|`` where ``ρ`` is the Pearson correlation over samples and
    ``M`` the one-to-one matching of ``min(d, d̂)`` pairs maximising the sum
    (:func:`scipy.optimize.linear_sum_assignment`). It averages over the ``d`` true sources, so a source left
    without an estimate (``d̂ < d``) counts 0. 1 for a permuted, rescaled, sign-flipped copy; near 0 for
    independent noise. A constant column correlates 0 with everything.

    Args:
        true: (N, d) true sources.
        est: (N, d̂) estimated sources.
    """
    a, b = _numpy_matrix(true, "true"), _numpy_matrix(est, "est")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"true and est must have the same number of rows, got {a.shape[0]} and {b.shape[0]}")
    if a.shape[0] < 2:
        raise ValueError("correlations need at least 2 rows")
    corr = _abs_correlation(a, b)
    rows, cols = linear_sum_assignment(corr, maximize=True)
    return float(corr[rows, cols].sum() / a.shape[1])


@torch.no_grad()
def head_diagnostics(heads: Heads, z_s: torch.Tensor, z_e: torch.Tensor) -> dict[str, float]:
    """How far trained heads moved from the identity, and how white they make each domain.

    ``shift``: the mean over the two domains of ``‖H − I‖_F / ‖I‖_F`` (0 at the identity start).
    ``whiteness_gap``: the mean over the domains of ``‖C / c̄ − I‖_F / ‖I‖_F``, with ``C`` the covariance of the
    head's outputs ``y = H (z − μ)`` on that domain's (N, d) features and ``c̄ = tr(C) / d``: 0 when the outputs
    are white up to one global scale (which cosine retrieval ignores, and which Infomax's fixed prior sets to
    its own value). Untrained identity heads give the centred features' own gap.
    """
    eye = torch.eye(heads.H_s.shape[0], dtype=torch.float64)
    shifts, gaps = [], []
    for z, domain in ((z_s, "s"), (z_e, "e")):
        H = heads.matrix(domain).double()
        y = heads.map(z, domain).double()
        shifts.append(float(torch.linalg.norm(H - eye) / torch.linalg.norm(eye)))
        covariance = torch.cov(y.T, correction=0)
        covariance = covariance / (torch.trace(covariance) / len(covariance))
        gaps.append(float(torch.linalg.norm(covariance - eye) / torch.linalg.norm(eye)))
    return {"shift": float(np.mean(shifts)), "whiteness_gap": float(np.mean(gaps))}


def amari_distance(W_est: ArrayLike, A_true: ArrayLike) -> float:
    """Normalised Amari index of the global system ``P = W A`` (column convention: ``y = W z``, ``z = A s``).

    ``d(P) = 1 / (2 d (d − 1)) [Σ_i (Σ_j |p_ij| / max_k |p_ik| − 1) + Σ_j (Σ_i |p_ij| / max_k |p_kj| − 1)]``

    in [0, 1]; 0 exactly when ``P`` is a scaled permutation (the sources are recovered up to order, sign and
    scale). For whitened inputs pass the whitening too: ``W = H W_whitenᵀ`` (``W_whiten`` is symmetric).

    Args:
        W_est: (d, d) estimated unmixing matrix.
        A_true: (d, d) true mixing matrix.
    """
    W, A = _numpy_matrix(W_est, "W_est"), _numpy_matrix(A_true, "A_true")
    for name, m in (("W_est", W), ("A_true", A)):
        if m.shape[0] != m.shape[1]:
            raise ValueError(f"{name} must be square, got shape {m.shape}")
    if W.shape != A.shape:
        raise ValueError(f"W_est and A_true must have the same shape, got {W.shape} and {A.shape}")
    d = W.shape[0]
    if d < 2:
        raise ValueError("the Amari distance needs d >= 2")
    P = np.abs(W @ A)
    if (P.max(axis=1) == 0).any() or (P.max(axis=0) == 0).any():
        raise ValueError("W_est @ A_true has a zero row or column (singular)")
    rows = (P.sum(axis=1) / P.max(axis=1) - 1.0).sum()
    cols = (P.sum(axis=0) / P.max(axis=0) - 1.0).sum()
    return float((rows + cols) / (2.0 * d * (d - 1)))


def cross_correlation(y_s: ArrayLike, y_e: ArrayLike) -> np.ndarray:
    """``|ρ(y_S,i, y_E,j)|`` over row-paired samples: (d_s, d_e) absolute Pearson correlations.

    On a planted problem (rows share their sources) the two domains' outputs are aligned component by
    component when this matrix is close to diagonal; a permuted diagonal means each domain found the
    sources but in its own order (the permutation problem).

    Args:
        y_s: (N, d_s) outputs of domain S.
        y_e: (N, d_e) outputs of domain E, row-paired with ``y_s``.
    """
    a, b = _numpy_matrix(y_s, "y_s"), _numpy_matrix(y_e, "y_e")
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError(f"y_s and y_e must be row-paired with at least 2 rows, got {a.shape[0]} and {b.shape[0]}")
    return _abs_correlation(a, b)


def order_alignment(y_s: ArrayLike, y_e: ArrayLike) -> float:
    """Mean of the diagonal of :func:`cross_correlation`: 1 when component i of both domains is the same
    source; near ``1/d``-ish levels when the orders are scrambled (compare :func:`mean_corr_coef`, which
    matches components first and so ignores the order)."""
    corr = cross_correlation(y_s, y_e)
    if corr.shape[0] != corr.shape[1]:
        raise ValueError(f"y_s and y_e must have the same number of columns, got {corr.shape}")
    return float(np.diagonal(corr).mean())


def fit_fastica(z: ArrayLike, seed: int, max_iter: int = 1000) -> FastICA:
    """scikit-learn's FastICA on one domain: ``d`` components (logcosh contrast, unit-variance whitening).

    The baseline "ICA without the shared initialisation": each domain's components come out in an order of
    FastICA's choosing, so two domains fitted separately are not aligned.

    Args:
        z: (N, d) features of one domain.
        seed: ``random_state`` of FastICA's initial unmixing matrix.
        max_iter: iteration limit.
    """
    x = _numpy_matrix(z, "z")
    return FastICA(n_components=x.shape[1], whiten="unit-variance", max_iter=max_iter, random_state=seed).fit(x)


# --------------------------------------------------------------------------------------------------------
# CCA = within-domain whitening + cross-domain alignment
# --------------------------------------------------------------------------------------------------------


class CCADecomposition(NamedTuple):
    """The two-step CCA of :func:`cca_decomposition` (numpy float64).

    ``correlations`` (k,): canonical correlations, decreasing; ``W_x`` (p, p), ``W_y`` (q, q): the
    within-domain whitenings ``C_xx^{-1/2}``, ``C_yy^{-1/2}``; ``R_x`` (p, k), ``R_y`` (q, k): the
    cross-domain alignment (singular vectors of the whitened cross-covariance); ``U = W_x R_x`` (p, k),
    ``V = W_y R_y`` (q, k): the canonical directions; ``mean_x``, ``mean_y``: the centring.
    """

    correlations: np.ndarray
    W_x: np.ndarray
    W_y: np.ndarray
    R_x: np.ndarray
    R_y: np.ndarray
    U: np.ndarray
    V: np.ndarray
    mean_x: np.ndarray
    mean_y: np.ndarray

    def transform(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Canonical scores ``((x − μ_x) U, (y − μ_y) V)`` of paired (N, p) and (N, q) data."""
        return (_numpy_matrix(x, "x") - self.mean_x) @ self.U, (_numpy_matrix(y, "y") - self.mean_y) @ self.V


def cca_decomposition(x: ArrayLike, y: ArrayLike, reg: float = 0.0) -> CCADecomposition:
    """CCA as within-domain whitening followed by cross-domain alignment.

    CCA solves ``max tr(Uᵀ C_xy V)`` s.t. ``Uᵀ C_xx U = I``, ``Vᵀ C_yy V = I``. Substituting
    ``U = C_xx^{-1/2} R_x`` and ``V = C_yy^{-1/2} R_y`` turns the constraints into ``R_xᵀ R_x = I``,
    ``R_yᵀ R_y = I`` and the objective into ``tr(R_xᵀ M R_y)`` with ``M = C_xx^{-1/2} C_xy C_yy^{-1/2}``, the
    cross-covariance of the whitened domains: maximised by the top singular vectors of ``M``
    (von Neumann's trace inequality), with the singular values as canonical correlations. So CCA = whitening
    each domain on its own (no pairs needed) + one rotation that aligns the domains (the only step that
    needs pairs).

    Args:
        x: (N, p) first view.
        y: (N, q) second view, row-paired with ``x``.
        reg: ``r >= 0`` added to the diagonal of ``C_xx`` and ``C_yy`` (ridge-regularised CCA).

    Returns:
        :class:`CCADecomposition` with ``k = min(p, q)`` components.
    """
    a, b = _numpy_matrix(x, "x"), _numpy_matrix(y, "y")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x and y must be row-paired (same number of rows), got {a.shape[0]} and {b.shape[0]}")
    if a.shape[0] < 2:
        raise ValueError("CCA needs at least 2 rows")
    if not reg >= 0:
        raise ValueError(f"reg must be >= 0, got {reg}")
    mean_x, mean_y = a.mean(axis=0), b.mean(axis=0)
    a, b = a - mean_x, b - mean_y
    n = a.shape[0]
    W_x = _inverse_sqrt(a.T @ a / n + reg * np.eye(a.shape[1]), "C_xx")
    W_y = _inverse_sqrt(b.T @ b / n + reg * np.eye(b.shape[1]), "C_yy")
    M = W_x @ (a.T @ b / n) @ W_y
    left, singular, right_t = np.linalg.svd(M, full_matrices=False)
    R_x, R_y = left, right_t.T
    return CCADecomposition(singular, W_x, W_y, R_x, R_y, W_x @ R_x, W_y @ R_y, mean_x, mean_y)


def _inverse_sqrt(C: np.ndarray, name: str) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh(C)
    if eigenvalues.min() <= 1e-12 * max(eigenvalues.max(), 1e-300):
        raise ValueError(f"{name} is singular: pass reg > 0")
    return (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T


# --------------------------------------------------------------------------------------------------------
# Planted problem
# --------------------------------------------------------------------------------------------------------


def planted_two_domain(
    n: int,
    d: int,
    *,
    noise: float,
    seed: int,
    mismatch: float | None = None,
    near_axis: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two domains mixing the same independent super-Gaussian sources differently.

    ``s_n ~ Laplace(0, 1/√2)^d`` (unit variance, independent); ``z_{S,n} = A_S s_n + σ ε_{S,n}`` and
    ``z_{E,n} = A_E s_n + σ ε_{E,n}`` with standard Gaussian ``ε``; in row form ``z_S = s A_Sᵀ + σ E_S``.
    Row ``n`` of both domains shares source ``n`` (the pairing that A&D never sees and retrieval scores).
    ``A_S = Q_1 diag(c) Q_2`` with Haar-random orthogonal ``Q`` and ``c`` log-uniform in [1/2, 2] (a
    well-conditioned random mixing). ``A_E`` is drawn the same way, independently (``mismatch=None``), or is
    ``A_S + δ G / √d`` with ``G`` standard Gaussian (``mismatch=δ``: a backbone that already aligns the
    domains roughly, the paper's assumption).

    ``near_axis=ε`` draws both mixings near the feature axes instead, each on its own: ``A = I + ε G / √d``. Then
    whitening alone leaves each domain in its own orientation (the polar factors of ``A_S`` and ``A_E`` differ),
    while ICA started at the identity rotates both to the sources, which lie near the axes, in one order: the
    condition A&D's identity start needs.

    Args:
        n: samples per domain.
        d: dimension (sources = features).
        noise: ``σ >= 0``, standard deviation of the additive noise.
        seed: seeds everything.
        mismatch: ``δ >= 0`` or ``None``, see above.
        near_axis: ``ε >= 0`` or ``None`` (the default: random orientations), see above; not with ``mismatch``.

    Returns:
        ``(z_s, z_e, s, A_s, A_e)``: (n, d), (n, d), (n, d), (d, d), (d, d) float32 tensors.
    """
    _check_dim(n, "n")
    _check_dim(d, "d")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if mismatch is not None and not mismatch >= 0:
        raise ValueError(f"mismatch must be >= 0 or None, got {mismatch}")
    if near_axis is not None and not near_axis >= 0:
        raise ValueError(f"near_axis must be >= 0 or None, got {near_axis}")
    if near_axis is not None and mismatch is not None:
        raise ValueError("give mismatch (random orientation) or near_axis, not both")
    generator = torch_generator(seed, _DATA_STREAM)

    def mixing() -> torch.Tensor:
        q1, q2 = random_orthogonal(d, generator).double(), random_orthogonal(d, generator).double()
        scales = torch.exp((torch.rand(d, generator=generator, dtype=torch.float64) * 2 - 1) * math.log(2.0))
        return (q1 * scales) @ q2

    def near_identity() -> torch.Tensor:
        return torch.eye(d, dtype=torch.float64) + near_axis * torch.randn(d, d, generator=generator,
                                                                            dtype=torch.float64) / math.sqrt(d)

    if near_axis is not None:
        A_s, A_e = near_identity(), near_identity()
    elif mismatch is None:
        A_s, A_e = mixing(), mixing()
    else:
        A_s = mixing()
        A_e = A_s + mismatch * torch.randn(d, d, generator=generator, dtype=torch.float64) / math.sqrt(d)
    exponential = torch.empty(2, n, d, dtype=torch.float64).exponential_(generator=generator)
    s = (exponential[0] - exponential[1]) / math.sqrt(2.0)
    z_s = s @ A_s.T + noise * torch.randn(n, d, generator=generator, dtype=torch.float64)
    z_e = s @ A_e.T + noise * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return z_s.float(), z_e.float(), s.float(), A_s.float(), A_e.float()


def whiten_per_domain(train_s: torch.Tensor, train_e: torch.Tensor, z_s: torch.Tensor,
                      z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA-whiten ``z_s`` (N_s, d) and ``z_e`` (N_e, d) with the statistics of their own domain's training rows
    (:func:`whiten` on ``train_s``, ``train_e``): the baseline "whitening alone", no pairs. Float64."""
    _, (mean_s, W_s) = whiten(train_s.double())
    _, (mean_e, W_e) = whiten(train_e.double())
    return apply_whitening(z_s.double(), mean_s, W_s), apply_whitening(z_e.double(), mean_e, W_e)


def fastica_per_domain(train_s: torch.Tensor, train_e: torch.Tensor, z_s: torch.Tensor, z_e: torch.Tensor,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``z_s`` and ``z_e`` in the sources of a FastICA fitted on their own domain's training rows
    (:func:`fit_fastica`): the baseline "ICA without the shared initialisation". Float64 arrays."""
    ica_s, ica_e = fit_fastica(train_s, seed), fit_fastica(train_e, seed)
    return ica_s.transform(z_s.double().numpy()), ica_e.transform(z_e.double().numpy())


def planted_outputs(
    z_s: torch.Tensor,
    z_e: torch.Tensor,
    *,
    num_train: int,
    lam: float,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every method of notebook 01's theory section on a planted two-domain problem.

    The first ``num_train`` rows of each domain train the unsupervised methods (each domain on its own; the
    heads draw their batches independently per domain, so the row pairing is never used); CCA alone uses
    the training *pairs* (the supervised upper bound). All methods map the remaining held-out rows.

    Args:
        z_s, z_e: (N, d) row-paired domains from :func:`planted_two_domain`.
        num_train: rows used for fitting, ``2 <= num_train < N``.
        lam, epochs, batch_size, lr, seed: the heads' training (:func:`train_heads`).

    Returns:
        method name → ``(y_s, y_e)`` held-out outputs, (N − num_train, d) float64 each, for ``"raw"``
        (features as they are), ``"whitening"`` (per-domain ZCA), ``"A&D identity"``, ``"A&D random"``
        (mismatched random inits), ``"A&D same random"``, ``"FastICA per domain"`` and ``"CCA on pairs"``.
    """
    check_matrix(z_s, "z_s")
    check_matrix(z_e, "z_e", columns=z_s.shape[1])
    if z_s.shape[0] != z_e.shape[0] or not 2 <= num_train < z_s.shape[0]:
        raise ValueError(f"need row-paired domains and 2 <= num_train < N, got N = {z_s.shape[0]} and "
                         f"{z_e.shape[0]}, num_train = {num_train}")
    train_s, train_e = z_s[:num_train], z_e[:num_train]
    test_s, test_e = z_s[num_train:].double(), z_e[num_train:].double()
    outputs = {"raw": (test_s.numpy(), test_e.numpy())}
    outputs["whitening"] = tuple(y.numpy() for y in whiten_per_domain(train_s, train_e, test_s, test_e))
    for init, name in (("identity", "A&D identity"), ("random", "A&D random"), ("same_random", "A&D same random")):
        heads, _ = train_heads(train_s, train_e, lam=lam, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                               init=init)
        with torch.no_grad():
            outputs[name] = (heads.map(test_s, "s").double().numpy(), heads.map(test_e, "e").double().numpy())
    outputs["FastICA per domain"] = fastica_per_domain(train_s, train_e, test_s, test_e, seed)
    outputs["CCA on pairs"] = cca_decomposition(train_s, train_e).transform(test_s, test_e)
    return outputs


# --------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------


def _check_dim(value: int, name: str = "d") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_penalty(penalty: str) -> None:
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")


def _check_lam(lam: float) -> None:
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not lam >= 0 or math.isinf(lam):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS} (synthetic, exemplar), got {domain!r}")


def _check_square(H: torch.Tensor, name: str) -> None:
    check_matrix(H, name, finite=False)
    if H.shape[0] != H.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(H.shape)}")


def _numpy_matrix(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains nan or inf values")
    return array


def _abs_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(p, q) absolute Pearson correlations between the columns of row-paired (N, p) and (N, q) arrays."""
    return np.abs(_standardise(a).T @ _standardise(b)) / a.shape[0]


def _standardise(x: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit (biased) standard deviation; constant columns become 0."""
    centred = x - x.mean(axis=0)
    std = centred.std(axis=0)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)
