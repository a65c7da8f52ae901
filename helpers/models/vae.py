"""The VAE family of the OMES paper: β-VAE and the weakly supervised group VAE (label and adaptive forms).

Architecture after the official code's "efficient" VAE (Dapueto et al. 2024): three stride-2 4×4
convolutions with batch norm and LeakyReLU(0.02), LayerNorm on the flattened features, linear heads for
μ and log σ²; a mirrored decoder. The decoder outputs Bernoulli logits (the official ``(tanh + 1) / 2``
output is ``sigmoid(2·x)``, the same family; logits keep the cross-entropy numerically stable).

Group VAE (Hosoya 2019; Locatello et al. 2020, "Weakly-supervised disentanglement without compromises"):
the two images of a pair share every factor but one (or a few). Their posteriors q(z|x₁), q(z|x₂) are
averaged on the dimensions judged shared, μ̄ = (μ₁ + μ₂)/2 and σ̄² = (σ₁² + σ₂²)/2, and kept apart on the
others. Which dimensions are shared:

- ``"label"``: the index of the changed factor is known; latent dimension k stays private when factor k
  changed, every other dimension is averaged (the variant all the official OMES configs train).
- ``"adaptive"`` (Ada-GVAE): δⱼ = ½KL(q₁ⱼ‖q₂ⱼ) + ½KL(q₂ⱼ‖q₁ⱼ); per example, dimensions with
  δⱼ ≥ τ = (min δ + max δ)/2 stay private (disentanglement_lib thresholds each example, not the batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

AGGREGATIONS = ("label", "adaptive")


@dataclass(frozen=True)
class VAEConfig:
    """Shape of a convolutional VAE.

    Attributes:
        image_size: side of the square input (a multiple of 8).
        channels: image channels.
        latent_dim: number of latent dimensions.
        widths: channels of the three convolution blocks.
    """

    image_size: int = 64
    channels: int = 3
    latent_dim: int = 10
    widths: tuple[int, int, int] = (32, 64, 128)

    def __post_init__(self):
        if self.image_size < 8 or self.image_size % 8:
            raise ValueError(f"image_size must be a positive multiple of 8, got {self.image_size}")
        if self.latent_dim < 1 or self.channels < 1:
            raise ValueError(f"latent_dim and channels must be >= 1, got {self.latent_dim}, {self.channels}")


class Encoder(nn.Module):
    """``x: (n, C, S, S)`` → ``(mu, logvar)``, each ``(n, latent_dim)``."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        layers, in_channels = [], config.channels
        for width in config.widths:
            layers += [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.BatchNorm2d(width),
                       nn.LeakyReLU(0.02)]
            in_channels = width
        side = config.image_size // 8
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.LayerNorm(in_channels * side * side))
        self.mu = nn.Linear(in_channels * side * side, config.latent_dim)
        self.logvar = nn.Linear(in_channels * side * side, config.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """``z: (n, latent_dim)`` → Bernoulli logits ``(n, C, S, S)``."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = config.widths[::-1]
        self.side = config.image_size // 8
        self.project = nn.Sequential(nn.Linear(config.latent_dim, widths[0] * self.side**2), nn.LeakyReLU(0.02))
        layers = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1), nn.BatchNorm2d(w_out),
                       nn.LeakyReLU(0.02)]
        layers.append(nn.ConvTranspose2d(widths[-1], config.channels, 4, stride=2, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.project(z).unflatten(1, (-1, self.side, self.side)))


class VAE(nn.Module):
    """Encoder + decoder; :meth:`encode_mean` gives the representation the metrics score (μ)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """μ for ``x: (n, C, S, S)`` in eval mode, in batches → ``(n, latent_dim)`` on CPU."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        means = [self.encoder(x[i:i + batch_size].to(device))[0].cpu() for i in range(0, len(x), batch_size)]
        self.train(was_training)
        return torch.cat(means)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z = μ + σ·ε with ε ~ N(0, I) drawn from ``generator`` (on CPU, then moved)."""
    eps = torch.randn(mu.shape, generator=generator).to(mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per dimension: ½(μ² + σ² − log σ² − 1); shape of ``mu``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)


def gaussian_kl_between(mu1, logvar1, mu2, logvar2) -> torch.Tensor:
    """KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) per dimension: ½(log σ₂²/σ₁² + (σ₁² + (μ₁−μ₂)²)/σ₂² − 1)."""
    return 0.5 * (logvar2 - logvar1 + (logvar1.exp() + (mu1 - mu2).pow(2)) / logvar2.exp() - 1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """−log p(x | z) of a Bernoulli decoder, summed over pixels → ``(n,)``."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def beta_vae_loss(model: VAE, x: torch.Tensor, beta: float, generator: torch.Generator):
    """Negative ELBO with a β-weighted KL, averaged over the batch.

    L = E[−log p(x|z)] + β·KL(q(z|x) ‖ N(0, I)). Returns ``(loss, logs)``.
    """
    mu, logvar = model.encoder(x)
    reconstruction = bernoulli_nll(model.decoder(reparameterize(mu, logvar, generator)), x).mean()
    kl = gaussian_kl(mu, logvar).sum(1).mean()
    return reconstruction + beta * kl, {"reconstruction": reconstruction.item(), "kl": kl.item()}


def shared_dimensions(
    aggregation: str,
    latent_dim: int,
    changed: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which latent dimensions a pair shares → boolean ``(n, latent_dim)``.

    Args:
        aggregation: ``"label"`` or ``"adaptive"``.
        latent_dim: number of latent dimensions D.
        changed: ``(n,)`` index of the changed factor (``"label"``); dimension ``changed[i]`` is private.
        delta: ``(n, D)`` symmetric KL between the two posteriors (``"adaptive"``); per row, dimensions with
            δ ≥ (min δ + max δ)/2 are private.
    """
    if aggregation == "label":
        if changed is None:
            raise ValueError("the 'label' aggregation needs the changed-factor indices")
        if changed.ndim != 1 or (changed.numel() and (changed.min() < 0 or changed.max() >= latent_dim)):
            raise ValueError(f"changed must be (n,) indices in [0, {latent_dim - 1}]")
        return ~F.one_hot(changed.long(), latent_dim).bool()
    if aggregation == "adaptive":
        if delta is None or delta.ndim != 2 or delta.shape[1] != latent_dim:
            raise ValueError(f"the 'adaptive' aggregation needs delta of shape (n, {latent_dim})")
        threshold = 0.5 * (delta.min(1, keepdim=True).values + delta.max(1, keepdim=True).values)
        return delta < threshold
    raise ValueError(f"aggregation must be one of {', '.join(map(repr, AGGREGATIONS))}, got {aggregation!r}")


def group_vae_loss(
    model: VAE,
    x1: torch.Tensor,
    x2: torch.Tensor,
    beta: float,
    aggregation: str,
    generator: torch.Generator,
    changed: torch.Tensor | None = None,
):
    """Negative ELBO of the group VAE on pairs ``x1, x2: (n, C, S, S)``, averaged over pairs.

    L = ½(rec₁ + rec₂) + β·½(KL₁ + KL₂), where each image is decoded from its posterior after the shared
    dimensions are replaced by the pair's average. Returns ``(loss, logs)``; logs hold the mean number of
    shared dimensions.
    """
    mu1, logvar1 = model.encoder(x1)
    mu2, logvar2 = model.encoder(x2)
    delta = None
    if aggregation == "adaptive":
        delta = 0.5 * (gaussian_kl_between(mu1, logvar1, mu2, logvar2)
                       + gaussian_kl_between(mu2, logvar2, mu1, logvar1))
    shared = shared_dimensions(aggregation, mu1.shape[1], changed=changed, delta=delta)
    mean_mu = 0.5 * (mu1 + mu2)
    mean_logvar = torch.log(0.5 * (logvar1.exp() + logvar2.exp()))
    total_reconstruction, total_kl = 0.0, 0.0
    for mu, logvar, x in ((mu1, logvar1, x1), (mu2, logvar2, x2)):
        mu = torch.where(shared, mean_mu, mu)
        logvar = torch.where(shared, mean_logvar, logvar)
        z = reparameterize(mu, logvar, generator)
        total_reconstruction = total_reconstruction + 0.5 * bernoulli_nll(model.decoder(z), x).mean()
        total_kl = total_kl + 0.5 * gaussian_kl(mu, logvar).sum(1).mean()
    loss = total_reconstruction + beta * total_kl
    return loss, {"reconstruction": total_reconstruction.item(), "kl": total_kl.item(),
                  "shared_dims": shared.float().sum(1).mean().item()}
