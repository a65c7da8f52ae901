"""Diff-CA's stage 2: a transformer that splits conditioning tokens into salient and common parts.

A learnable CLS token is prepended to the K tokens ``Z`` (no positional encoding: the tokens are a set); the
salient code ``Ẑ_S`` (K × d) is a linear projection of the CLS output (the paper's Fig. 3: "Linear proj → K×d";
its §F.1 reading, one d-vector broadcast over the tokens, cannot express a change that differs from token to
token), and the common code ``Ẑ_C`` is the K other outputs. Training (:func:`train_separator`) minimises

    L = L_rec + w_pin L_pin + w_cyc L_cyc + L_adv

with the losses of :mod:`helpers.contrastive`, each a mean per token element (``reduction="mean"``, ours: summed,
the paper's norms leave the adversary's cross-entropy and the target pinning term negligible against the other
three at our token sizes). ``L_cyc`` re-encodes swapped tokens ``Ẑ_C^a + Ẑ_S^b`` with an EMA copy of the
separator, and ``L_adv`` is the cross-entropy of an adversary (a 2-layer MLP on all K common tokens, flattened)
that predicts the dataset label from ``Ẑ_C`` through a gradient-reversal layer, whose weight ``λ_adv`` self-tunes
to hold the adversary's rolling accuracy near a target (:func:`helpers.contrastive.adversary_weight_step`). The
EMA copy, ``λ_adv`` and the rolling accuracy live in the trained module, so a checkpoint resumes the run exactly.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from helpers import contrastive as ca
from helpers.cache import Checkpoint
from helpers.runtime import seeded
from helpers.training import adam, fit


class Separator(nn.Module):
    """``Z (B, K, d) -> (Ẑ_S (B, K, d), Ẑ_C (B, K, d))``: a CLS-token transformer encoder without positions.

    Args:
        dim: token width d.
        num_tokens: K.
        depth: encoder layers (5 in the paper).
        heads: attention heads.
        hidden: feed-forward width (512 in the paper).
        seed: seeds the initialisation.
    """

    def __init__(self, dim: int, num_tokens: int, depth: int = 2, heads: int = 4, hidden: int = 128, seed: int = 0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.num_tokens = num_tokens
        with seeded(seed):
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
            layer = nn.TransformerEncoderLayer(dim, heads, hidden, dropout=0.0, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.salient_head = nn.Linear(dim, num_tokens * dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dim = self.cls.shape[-1]
        if tokens.dim() != 3 or tokens.shape[1:] != (self.num_tokens, dim):
            raise ValueError(f"tokens must be (B, {self.num_tokens}, {dim}), got {tuple(tokens.shape)}")
        out = self.encoder(torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1))
        return self.salient_head(out[:, 0]).view_as(tokens), out[:, 1:]


class SeparatorTraining(nn.Module):
    """Everything stage 2 trains and tracks: the separator, its EMA copy, the adversary, ``λ_adv`` and ``ā``."""

    def __init__(self, separator: Separator, ema_decay: float = 0.999, initial_lambda: float = 1.0, seed: int = 0):
        super().__init__()
        dim = separator.cls.shape[-1]
        self.separator = separator
        self.ema = copy.deepcopy(separator).requires_grad_(False)
        with seeded(seed + 1):  # the adversary's initialisation, apart from the separator's
            self.adversary = nn.Sequential(nn.Flatten(), nn.Linear(separator.num_tokens * dim, dim), nn.ReLU(),
                                           nn.Linear(dim, 1))
        self.ema_decay = ema_decay
        self.register_buffer("lambda_adv", torch.tensor(float(initial_lambda), dtype=torch.float64))
        self.register_buffer("rolling_accuracy", torch.tensor(0.5, dtype=torch.float64))

    @torch.no_grad()
    def update_ema(self) -> None:
        """``θ_EMA ← m θ_EMA + (1 − m) θ`` for every parameter (m = ``ema_decay``)."""
        for ema, online in zip(self.ema.parameters(), self.separator.parameters(), strict=True):
            ema.lerp_(online, 1.0 - self.ema_decay)


def separator_losses(training: SeparatorTraining, tokens: torch.Tensor, y: torch.Tensor,
                     salient_from: torch.Tensor, *, weight_pin: float = 1.0, weight_pin_target: float = 0.1,
                     weight_cyc: float = 1.0, target_accuracy: float = 0.8,
                     lambda_rate: float = 0.999) -> tuple[torch.Tensor, dict[str, float]]:
    """The stage-2 objective on one batch, and the update of ``λ_adv`` from the adversary's batch accuracy.

    Args:
        training: the modules and state.
        tokens: (B, K, d) conditioning tokens ``Z``.
        y: (B,) dataset labels (0 background, 1 target).
        salient_from: (B,) the item whose salient code each swap takes (:func:`helpers.contrastive.swap_tokens`).
        weight_pin, weight_cyc: ``w_pin``, ``w_cyc``.
        weight_pin_target: the weight of the target's term inside ``L_pin`` (0.1 in the paper).
        target_accuracy: the adversary accuracy ``λ_adv`` holds.
        lambda_rate: the multiplicative step of ``λ_adv`` (0.999 in the paper, tuned for 50k+ steps).

    Returns:
        ``(loss, logs)`` with logs ``rec``, ``pin``, ``cyc``, ``adv``, ``adv_acc`` (batch), ``lambda_adv``.
    """
    salient, common = training.separator(tokens)
    rec = ca.reconstruction_loss(tokens, salient, common, reduction="mean")
    pin = ca.pinning_loss(salient, y, weight_target=weight_pin_target, reduction="mean")
    mixed = ca.swap_tokens(salient, common, salient_from)
    salient_mix, common_mix = training.ema(mixed)
    cyc = ca.cycle_loss(salient_mix, common_mix, salient[salient_from], common, reduction="mean")
    logits = training.adversary(ca.grad_reverse(common, float(training.lambda_adv)))[:, 0]
    adv = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
    accuracy = float(((logits > 0).long() == y).float().mean())
    value, rolling = ca.adversary_weight_step(float(training.lambda_adv), float(training.rolling_accuracy), accuracy,
                                              target=target_accuracy, rate=lambda_rate)
    training.lambda_adv.fill_(value)
    training.rolling_accuracy.fill_(rolling)
    loss = rec + weight_pin * pin + weight_cyc * cyc + adv
    return loss, {"rec": rec.item(), "pin": pin.item(), "cyc": cyc.item(), "adv": adv.item(), "adv_acc": accuracy,
                  "lambda_adv": value}


def train_separator(tokens: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int,
                    depth: int = 2, heads: int = 4, hidden: int = 128, weight_pin: float = 1.0,
                    weight_pin_target: float = 0.1, weight_cyc: float = 1.0, target_accuracy: float = 0.8,
                    lambda_rate: float = 0.999, ema_decay: float = 0.999, checkpoint: Checkpoint | None = None,
                    device: str | torch.device = "cpu") -> tuple[Separator, dict[str, list[float]]]:
    """Train a :class:`Separator` on tokens ``(N, K, d)`` with labels ``y`` ``(N,)`` (AdamW, resumable).

    Each step draws ``batch_size`` rows and a random pairing for the swaps from the step's generator, updates
    the EMA copy, then takes one AdamW step on the separator and the adversary together (the gradient
    reversal makes one backward pass serve both).

    Returns:
        ``(separator, history)``: the trained separator (eval mode) and the per-step logs of
        :func:`separator_losses` plus ``loss``.
    """
    if tokens.dim() != 3 or y.shape != (len(tokens),):
        raise ValueError(f"need tokens (N, K, d) and y (N,), got {tuple(tokens.shape)} and {tuple(y.shape)}")
    if not 2 <= batch_size <= len(tokens):
        raise ValueError(f"batch_size must be in [2, {len(tokens)}], got {batch_size}")
    model = Separator(tokens.shape[-1], tokens.shape[1], depth, heads, hidden, seed=seed)
    training = SeparatorTraining(model, ema_decay, seed=seed).to(device)
    data, labels = tokens.to(device, torch.float32), y.to(device)
    parameters = list(training.separator.parameters()) + list(training.adversary.parameters())

    def make_batch(step: int, generator: torch.Generator):
        rows = torch.randperm(len(data), generator=generator)[:batch_size].to(device)
        return data[rows], labels[rows], torch.randperm(batch_size, generator=generator).to(device)

    def loss_fn(net: SeparatorTraining, batch, generator):
        net.update_ema()
        return separator_losses(net, *batch, weight_pin=weight_pin, weight_pin_target=weight_pin_target,
                                weight_cyc=weight_cyc,
                                target_accuracy=target_accuracy, lambda_rate=lambda_rate)

    history = fit(training, adam(parameters, lr, decoupled=True), loss_fn, make_batch, steps, seed=seed,
                  checkpoint=checkpoint, desc="separator")
    return training.separator.eval(), history
